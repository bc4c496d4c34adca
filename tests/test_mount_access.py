"""What non-admins may do on the mount (admins are root until the access policy lands)."""

from __future__ import annotations

import os

import pytest

import shutil
import tempfile
from pathlib import Path

from conftest import Library, mounted, run

pytestmark = pytest.mark.fuse

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]


def as_nobody(*args):
    return run(*NOBODY, *args, check=False)


@pytest.fixture
def library():
    """A library other users can reach (pytest's own temp dirs are private to root)."""
    root = Path(tempfile.mkdtemp(prefix="imagefs-access-"))
    os.chmod(root, 0o755)
    with mounted(Library(root)) as lib:
        yield lib
    shutil.rmtree(root)


@pytest.fixture
def active(library, tmp_path):
    source = tmp_path / "disk.raw"
    source.write_bytes(os.urandom(200_000))
    path = library.upload(source)
    assert path.exists()
    return path


def test_anyone_reads_active_data_but_only_admins_deactivate(library, active):
    assert as_nobody("sha512sum", active).stdout.split()[0] == library.attr(active, "os_hash_value")
    moved = as_nobody("mv", active, library.mnt / "deactivated" / active.name)
    assert moved.returncode != 0 and "Operation not permitted" in moved.stderr
    assert library.attr(active, "status") == "active"


def test_deactivated_data_is_for_admins_only(library, active):
    run("mv", active, library.mnt / "deactivated" / active.name)
    hidden = library.mnt / "deactivated" / active.name
    denied = as_nobody("sha512sum", hidden)
    assert denied.returncode != 0 and "Permission denied" in denied.stderr
    assert hidden.read_bytes()  # root is an admin
    assert os.stat(hidden).st_mode & 0o777 == 0o400


def test_only_the_owner_or_an_admin_deletes_or_changes_an_image(library, active):
    assert library.attr(active, "owner") == "root"
    removed = as_nobody("rm", "-f", active)
    assert removed.returncode != 0 and "Operation not permitted" in removed.stderr
    changed = as_nobody("setfattr", "-n", "user.image.os_distro", "-v", "x", active)
    assert changed.returncode != 0 and "Operation not permitted" in changed.stderr
    assert active.exists()


def test_a_non_admin_uploads_as_its_own_project_and_cannot_publicize(library, tmp_path):
    upload = library.mnt / "incoming" / "mine.raw"
    made = run(*NOBODY, "sh", "-c", f"head -c 100000 /dev/urandom > {upload}", check=False)
    assert made.returncode == 0, made.stderr
    active = library.mnt / "active" / "mine.raw"
    assert library.attr(active, "owner") == "nobody"
    public = as_nobody("setfattr", "-n", "user.image.visibility", "-v", "public", active)
    assert public.returncode != 0 and "Operation not permitted" in public.stderr
    assert as_nobody("setfattr", "-n", "user.image.visibility", "-v", "community", active).returncode == 0
    assert library.attr(active, "visibility") == "community"
    assert as_nobody("rm", active).returncode == 0  # the owner deletes its own image
    assert not active.exists()
