"""Declared size/checksum/os_hash_value (setfattr on incoming/N before the data) and uploads with no data."""

import hashlib
import random

import pytest

from conftest import blob_files, getfattr_dump, getfattr_value, run, setfattr, staged_files

pytestmark = pytest.mark.fuse


def test_declared_mismatches_kill_the_image_with_a_reason(library, tmp_path):
    data = random.Random(0).randbytes(300_000)
    source = tmp_path / "src.raw"
    source.write_bytes(data)
    declarations = {
        "badmd5": ("user.image.checksum", hashlib.md5(data + b"x").hexdigest(), "checksum"),
        "badsha": ("user.image.os_hash_value", hashlib.sha512(data[:-1]).hexdigest(), "os_hash_value"),
        "badsize": ("user.image.size", str(len(data) + 1), "size"),
    }
    for name, (attr, value, _) in declarations.items():
        incoming = library.mnt / "incoming" / name
        run("touch", incoming)
        assert setfattr(incoming, attr, value).returncode == 0
        assert getfattr_value(incoming, attr) == value  # the declaration shows before the data
        run("cp", source, incoming)
    for name, (attr, value, field) in declarations.items():
        assert not library.path("active", name).exists()
        attrs = getfattr_dump(library.path("killed", name))
        assert attrs["user.image.status"] == "killed"
        reason = attrs["user.imagefs.reason"]
        assert field in reason and value in reason, reason
        link = library.mnt / "by-id" / attrs["user.image.id"]
        assert link.resolve() == library.path("killed", name).resolve()
    assert sorted(p.name for p in (library.mnt / "killed").iterdir()) == sorted(declarations)
    assert blob_files(library) == []
    assert staged_files(library) == []


def test_declared_values_that_match_make_the_image_active(library, tmp_path):
    data = random.Random(1).randbytes(300_000)
    source = tmp_path / "src.raw"
    source.write_bytes(data)
    incoming = library.mnt / "incoming" / "good"
    run("touch", incoming)
    for attr, value in (
        ("user.image.size", str(len(data))),
        ("user.image.checksum", hashlib.md5(data).hexdigest().upper()),  # hex digits in either case
        ("user.image.os_hash_value", hashlib.sha512(data).hexdigest()),
    ):
        assert setfattr(incoming, attr, value).returncode == 0
    run("cp", source, incoming)
    attrs = getfattr_dump(library.path("active", "good"))
    assert attrs["user.image.checksum"] == hashlib.md5(data).hexdigest()
    assert attrs["user.image.status"] == "active"


def test_touch_only_stays_queued(library):
    run("touch", library.mnt / "incoming" / "empty")
    for where in ("incoming", "queued"):
        path = library.path(where, "empty")
        assert path.stat().st_size == 0
        assert getfattr_value(path, "user.image.status") == "queued"
    listing = run("find", library.mnt, "-name", "empty").stdout.split()
    assert sorted(listing) == sorted(str(library.path(d, "empty")) for d in ("incoming", "queued"))
    assert not library.path("active", "empty").exists()
    assert not library.path("killed", "empty").exists()
    # touch again (open, utimes, close with no data): still nothing to finalize
    run("touch", library.mnt / "incoming" / "empty")
    assert getfattr_value(library.path("queued", "empty"), "user.image.status") == "queued"
    # and rm abandons it: killed with a reason, its staging file gone
    image_id = getfattr_value(library.path("queued", "empty"), "user.image.id")
    run("rm", library.mnt / "incoming" / "empty")
    assert getfattr_value(library.path("killed", "empty"), "user.image.id") == image_id
    assert getfattr_value(library.path("killed", "empty"), "user.imagefs.reason") != ""
    assert [p.name for p in (library.mnt / "queued").iterdir()] == []
    assert staged_files(library) == []
