"""mv and rm in the status directories: deactivate/reactivate, rename, delete, protected, shared blobs."""

import errno
import hashlib
import os
import random

import pytest

from conftest import assert_refused, blob_files, getfattr_dump, getfattr_value, run, setfattr, wait_for

pytestmark = pytest.mark.fuse


def _upload(library, tmp_path, name, size=100_000, seed=None):
    data = random.Random(name if seed is None else seed).randbytes(size)
    source = tmp_path / f"{name}.src"
    source.write_bytes(data)
    run("cp", source, library.mnt / "incoming" / name)
    active = library.path("active", name)
    assert active.exists()  # the lookup waits for the finalize the kernel's release started
    return active, hashlib.sha512(data).hexdigest()


def _sha512sum(path) -> str:
    return run("sha512sum", path).stdout.split()[0]


def _statuses(library) -> dict[str, list[str]]:
    return {d: sorted(os.listdir(library.mnt / d)) for d in ("incoming", "active", "deactivated", "killed")}


def test_deactivate_and_reactivate_with_mv(library, tmp_path):
    active, digest = _upload(library, tmp_path, "img")
    image_id = getfattr_value(active, "user.image.id")
    deactivated = library.path("deactivated", "img")
    run("mv", active, deactivated)
    assert _statuses(library) == {"incoming": [], "active": [], "deactivated": ["img"], "killed": []}
    assert getfattr_value(deactivated, "user.image.status") == "deactivated"
    assert run("stat", "-c", "%a", deactivated).stdout.strip() == "400"  # readable by admins only
    assert _sha512sum(deactivated) == digest  # we are root: an admin
    assert run("readlink", library.mnt / "by-id" / image_id).stdout.strip() == "../deactivated/img"
    run("mv", deactivated, active)
    assert _statuses(library) == {"incoming": [], "active": ["img"], "deactivated": [], "killed": []}
    assert getfattr_value(active, "user.image.status") == "active"
    assert run("stat", "-c", "%a", active).stdout.strip() == "444"
    assert _sha512sum(active) == digest


def test_mv_renames_and_refuses_a_taken_live_name(library, tmp_path):
    a, digest_a = _upload(library, tmp_path, "a")
    b, digest_b = _upload(library, tmp_path, "b")
    run("mv", a, library.path("active", "renamed"))
    renamed = library.path("active", "renamed")
    assert getfattr_value(renamed, "user.image.name") == "renamed"
    assert _sha512sum(renamed) == digest_a
    assert sorted(os.listdir(library.mnt / "active")) == ["b", "renamed"]

    run("touch", library.mnt / "incoming" / "queued-name")
    run("mv", b, library.path("deactivated", "b"))
    before = {name: getfattr_dump(library.path(*name.split("/"))) for name in ("active/renamed", "deactivated/b")}
    attempts = [
        (renamed, library.path("active", "b")),  # b is live (deactivated)
        (renamed, library.path("deactivated", "b")),
        (library.path("deactivated", "b"), library.path("active", "renamed")),
        (renamed, library.path("active", "queued-name")),  # live names include uploads
    ]
    for source, target in attempts:
        assert_refused(run("mv", "-T", source, target, check=False), errno.EEXIST)
    # an upload under a live name is refused too
    assert_refused(run("cp", tmp_path / "a.src", library.mnt / "incoming" / "renamed", check=False), errno.EEXIST)
    assert_refused(setfattr(renamed, "user.image.name", "b"), errno.EEXIST)
    after = {name: getfattr_dump(library.path(*name.split("/"))) for name in ("active/renamed", "deactivated/b")}
    assert after == before
    assert _sha512sum(library.path("deactivated", "b")) == digest_b


def test_rm_deletes_the_image_and_frees_its_blob(library, tmp_path):
    active, _ = _upload(library, tmp_path, "gone")
    keep, keep_digest = _upload(library, tmp_path, "keep")
    image_id = getfattr_value(active, "user.image.id")
    assert len(blob_files(library)) == 2
    run("rm", active)
    assert not active.exists()
    assert not (library.mnt / "by-id" / image_id).exists()
    assert image_id not in os.listdir(library.mnt / "by-id")
    assert run("find", library.mnt, "-name", "gone").stdout == ""
    assert wait_for(lambda: len(blob_files(library)) == 1), blob_files(library)  # freed in the background
    assert _sha512sum(keep) == keep_digest


def test_protected_image_refuses_rm(library, tmp_path):
    active, digest = _upload(library, tmp_path, "precious")
    assert setfattr(active, "user.image.protected", "true").returncode == 0
    before = getfattr_dump(active)
    assert_refused(run("rm", "-f", active, check=False), errno.EPERM)
    assert getfattr_dump(active) == before
    assert _sha512sum(active) == digest
    assert len(blob_files(library)) == 1
    assert setfattr(active, "user.image.protected", "false").returncode == 0
    run("rm", active)
    assert not active.exists()
    assert wait_for(lambda: blob_files(library) == [])


def test_identical_uploads_share_one_blob(library, tmp_path):
    first, digest = _upload(library, tmp_path, "first", seed=7)
    second, digest2 = _upload(library, tmp_path, "second", seed=7)
    assert digest == digest2
    assert getfattr_value(first, "user.image.id") != getfattr_value(second, "user.image.id")
    (blob,) = blob_files(library)
    assert blob.name == digest
    run("rm", first)
    library.remount()  # a wrongly freed blob would be gone by now: blob deletion runs in the background
    assert _sha512sum(second) == digest
    assert blob_files(library) == [blob]
    run("rm", second)
    assert wait_for(lambda: blob_files(library) == [])
