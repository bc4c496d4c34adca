"""umount + mount keeps every image, field and property."""

import os
import random

import pytest

from conftest import getfattr_dump, getfattr_value, run, setfattr

pytestmark = pytest.mark.fuse


def _everything(library) -> dict:
    """Every entry of the tree: full xattr dicts, link targets, stat data and digests."""
    out = {}
    for path in sorted(library.mnt.glob("*/*")):
        key = str(path.relative_to(library.mnt))
        if path.is_symlink():
            out[key] = {"link": os.readlink(path)}
            continue
        entry = {"xattrs": getfattr_dump(path), "stat": run("stat", "-c", "%s %a %Y %Z %b", path).stdout}
        for name in ("status", "id", "created_at"):  # listed or not, these are always readable
            entry[name] = getfattr_value(path, f"user.image.{name}")
        if path.parent.name in ("active", "deactivated"):
            entry["sha512sum"] = run("sha512sum", path).stdout.split()[0]
        out[key] = entry
    return out


def test_remount_keeps_every_image_field_and_property(library, tmp_path):
    mnt = library.mnt
    for i, name in enumerate(["plain", "rich", "hidden", "renamed-later", "twin-a", "twin-b"]):
        source = tmp_path / name
        source.write_bytes(random.Random(i if not name.startswith("twin") else 99).randbytes(20_000 + 1000 * i))
        if name == "rich":
            for attr, value in {"user.image.os_distro": "centos", "user.image.hw_scsi_model": "virtio-scsi",
                                "user.image.disk_format": "raw"}.items():
                assert setfattr(source, attr, value).returncode == 0
        run("cp", "--preserve=xattr", source, mnt / "incoming" / name)
    rich = library.path("active", "rich")
    for attr, value in {"user.image.min_ram": "2048", "user.image.min_disk": "8", "user.image.visibility": "private",
                        "user.image.protected": "true", "user.image.os_hidden": "true", "user.image.tags": "x,y,z",
                        "user.image.description": "kept\nacross mounts"}.items():
        assert setfattr(rich, attr, value).returncode == 0
    run("mv", library.path("active", "hidden"), library.path("deactivated", "hidden"))
    run("mv", library.path("active", "renamed-later"), library.path("active", "renamed"))
    run("touch", mnt / "incoming" / "queued")
    assert setfattr(mnt / "incoming" / "queued", "user.image.disk_format", "qcow2").returncode == 0
    bad = mnt / "incoming" / "bad"
    run("touch", bad)
    assert setfattr(bad, "user.image.size", "5").returncode == 0
    run("cp", tmp_path / "plain", bad)

    before = _everything(library)
    assert set(before) >= {"active/plain", "active/rich", "deactivated/hidden", "active/renamed", "active/twin-a",
                           "active/twin-b", "incoming/queued", "queued/queued", "killed/bad"}
    assert before["active/rich"]["xattrs"]["user.image.tags"] == "x,y,z"
    library.remount()
    after = _everything(library)
    assert after == before
