"""Uploads with rsync: temp dot-file + rename (the default), --inplace, and -X carrying xattrs."""

import hashlib
import random

import pytest

from conftest import getfattr_dump, run, setfattr

pytestmark = pytest.mark.fuse


def _source(tmp_path, name, size, seed):
    path = tmp_path / name
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def _all_names(library) -> list[str]:
    return sorted(str(p.relative_to(library.mnt)) for p in library.mnt.glob("*/*"))


def test_rsync_default_finalizes_at_the_rename(library, tmp_path):
    source = _source(tmp_path, "disk.raw", 2 * 1024 * 1024 + 7, 0)
    for args in (["rsync"], ["rsync", "-a"]):
        name = f"disk{len(args)}"
        result = run(*args, source, library.mnt / "incoming" / name, check=False)
        assert result.returncode == 0, result.stderr
        active = library.path("active", name)
        assert run("cmp", source, active).returncode == 0
        attrs = getfattr_dump(active)
        assert attrs["user.image.name"] == name
        assert attrs["user.image.os_hash_value"] == hashlib.sha512(source.read_bytes()).hexdigest()
    # the temp dot-file became the image: nothing else was created, killed or left behind
    names = _all_names(library)
    assert [n for n in names if not n.startswith("by-id/")] == ["active/disk1", "active/disk2"]
    assert len([n for n in names if n.startswith("by-id/")]) == 2


def test_rsync_inplace_writes_incoming_N_directly(library, tmp_path):
    """--inplace writes incoming/N itself (no rename): the last close finalizes, and rsync's
    own stat/chmod/utimes of incoming/N after that close must not fail the transfer."""
    for args in (["--inplace"], ["-a", "--inplace"]):
        name = f"disk{len(args)}"
        source = _source(tmp_path, name, 2 * 1024 * 1024 + len(args), len(args))
        result = run("rsync", *args, source, library.mnt / "incoming" / name, check=False)
        active = library.path("active", name)
        assert run("cmp", source, active).returncode == 0
        assert getfattr_dump(active)["user.image.checksum"] == hashlib.md5(source.read_bytes()).hexdigest()
        assert result.returncode == 0, result.stderr
    assert [n for n in _all_names(library) if not n.startswith("by-id/")] == ["active/disk1", "active/disk2"]


def test_rsync_X_carries_image_properties(library, tmp_path):
    for args in (["-X"], ["-aX"]):
        name = "disk" + args[0].strip("-")
        source = _source(tmp_path, name, 500_000, len(args[0]))
        data = source.read_bytes()
        declared = {
            "user.image.os_distro": "fedora",
            "user.image.hw_disk_bus": "scsi",
            "user.image.min_ram": "2048",
            "user.image.disk_format": "raw",
            "user.image.checksum": hashlib.md5(data).hexdigest(),
        }
        for attr, value in declared.items():
            assert setfattr(source, attr, value).returncode == 0
        result = run("rsync", *args, source, library.mnt / "incoming" / name, check=False)
        attrs = getfattr_dump(library.path("active", name))
        for attr, value in declared.items():
            assert attrs.get(attr) == value, (args, attr)
        assert result.returncode == 0, result.stderr
