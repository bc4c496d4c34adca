"""An image copied out of the mount with its xattrs (cp -a, rsync -X) and back in under another name.

The exported file carries every user.image.* attribute of the image it came from, name, id and
status included; copying it back in replays them as setxattr on the new upload.
"""

import hashlib
import os
import random

import pytest

from conftest import getfattr_dump, run, setfattr

pytestmark = pytest.mark.fuse

def _export(library, tmp_path):
    """Upload `orig`, give it a property, copy it out with its xattrs, then delete it (its name is free)."""
    source = tmp_path / "orig.src"
    source.write_bytes(random.Random(0).randbytes(150_000))
    run("cp", source, library.mnt / "incoming" / "orig")
    active = library.path("active", "orig")
    assert setfattr(active, "user.image.os_distro", "alpine").returncode == 0
    exported = tmp_path / "exported.raw"
    run("cp", "-a", active, exported)
    assert getfattr_dump(exported)["user.image.name"] == "orig"
    run("rm", active)
    return exported, hashlib.sha512(source.read_bytes()).hexdigest()


def test_cp_a_of_an_exported_image_lands_under_the_name_copied_to(library, tmp_path):
    exported, digest = _export(library, tmp_path)
    # The computed fields it carries (id, name, status, ...) are read-only (EPERM, which cp -a does not
    # report); the properties arrive and the image lands under the name it was copied to.
    run("cp", "-a", exported, library.mnt / "incoming" / "copy")
    assert os.listdir(library.mnt / "active") == ["copy"]
    attrs = getfattr_dump(library.path("active", "copy"))
    assert attrs["user.image.os_hash_value"] == digest
    assert attrs["user.image.os_distro"] == "alpine"


def test_rsync_aX_of_an_exported_image_is_finalized_under_its_new_name(library, tmp_path):
    exported, digest = _export(library, tmp_path)
    run("rsync", "-aX", exported, library.mnt / "incoming" / "copy", check=False)  # read-only fields: EPERM
    assert os.listdir(library.mnt / "saving") == []
    assert os.listdir(library.mnt / "incoming") == []
    assert os.listdir(library.mnt / "active") == ["copy"]
    attrs = getfattr_dump(library.path("active", "copy"))
    assert attrs["user.image.os_hash_value"] == digest
    assert attrs["user.image.os_distro"] == "alpine"
