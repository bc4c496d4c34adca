"""Crash consistency: the daemon SIGKILLed at each named crash point, and at random moments.

After every crash the next `imagefs mount` recovers the stale mount by itself,
the library is fsck-clean (once the background recovery has freed what the
crash left in the store), and every active image's bytes match its
os_hash_value (sha512sum vs getfattr).
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

from conftest import getfattr_value, run, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from crash_harness import CrashLibrary, crash_round  # noqa: E402

from imagefs.crashpoints import POINTS  # noqa: E402

pytestmark = pytest.mark.fuse

UPLOAD_POINTS = ("store.put.synced", "store.put.renamed", "finalize.stored", "finalize.activated")
DELETE_POINTS = ("delete.committed", "delete.freeing")
RENAME_POINTS = ("rename.before", "rename.after")


@pytest.fixture
def lib(tmp_path):
    lib = CrashLibrary(tmp_path)
    try:
        yield lib
    finally:
        lib.umount()


def source(tmp_path: Path, name: str, size: int = 300_000) -> Path:
    path = tmp_path / f"{name}.src"
    path.write_bytes(os.urandom(size))
    return path


def assert_recovered(lib: CrashLibrary) -> None:
    """Remounted after a crash: fsck clean, every active image's sha512sum its os_hash_value."""
    result = lib.settled_fsck()
    assert result.returncode == 0, result.stdout + result.stderr + lib.log_tail()
    for path in sorted((lib.mnt / "active").iterdir()):
        digest = run("sha512sum", path).stdout.split()[0]
        assert digest == getfattr_value(path, "user.image.os_hash_value"), path


def crash_and_remount(lib: CrashLibrary, point: str, action) -> None:
    pid = lib.mount(crash_at=point)
    action()
    assert lib.wait_dead(), f"the daemon did not die at {point}"
    assert f"crash point {point}: SIGKILL" in lib.log_tail(50)
    assert pid != lib.mount()  # the stale mount is recovered by `imagefs mount` itself
    assert_recovered(lib)


def test_every_point_is_in_the_code_and_crashed_at_here():
    code = "".join(p.read_text() for p in (Path(__file__).parent.parent / "imagefs").rglob("*.py"))
    for point in POINTS:
        assert f'crash_point("{point}")' in code, point
    assert sorted(UPLOAD_POINTS + DELETE_POINTS + RENAME_POINTS) == sorted(POINTS)


@pytest.mark.parametrize("point", UPLOAD_POINTS)
def test_crash_during_finalize(lib, tmp_path, point):
    src = source(tmp_path, "img")
    crash_and_remount(lib, point, lambda: run("cp", src, lib.mnt / "incoming" / "img", check=False))
    if point == "finalize.activated":  # committed before the crash: active, its data intact
        assert (lib.mnt / "active" / "img").read_bytes() == src.read_bytes()
    else:  # not committed: the upload was interrupted, the blob it left is freed
        assert getfattr_value(lib.mnt / "killed" / "img", "user.imagefs.reason") == "interrupted"
        assert not (lib.mnt / "active" / "img").exists()
        assert list((lib.data / "store" / "blobs").rglob("*/*/*")) == []


def test_crash_before_rename_of_a_copied_blob_leaves_a_temp_file_that_is_removed(tmp_path):
    """Staging on another filesystem than the store: put copies to the store's tmp/ first."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the temp dir")
    staging = Path(os.environ.get("IMAGEFS_TEST_SHM", shm)) / f"imagefs-crash-{os.getpid()}-{random.randrange(1 << 30)}"
    lib = CrashLibrary(tmp_path)
    lib.data.mkdir()
    (lib.data / "staging").symlink_to(staging)  # the default staging dir, on tmpfs
    staging.mkdir()
    try:
        src = source(tmp_path, "img")

        def cp_and_check_the_temp_file():
            run("cp", src, lib.mnt / "incoming" / "img", check=False)
            assert lib.wait_dead()
            assert len(os.listdir(lib.data / "store" / "tmp")) == 1  # the crash left the copy behind

        crash_and_remount(lib, "store.put.synced", cp_and_check_the_temp_file)
        assert os.listdir(lib.data / "store" / "tmp") == []
    finally:
        lib.umount()
        for f in staging.iterdir():
            f.unlink()
        staging.rmdir()


@pytest.mark.parametrize("point", DELETE_POINTS)
def test_crash_during_delete(lib, tmp_path, point):
    lib.mount()
    run("cp", source(tmp_path, "keep"), lib.mnt / "incoming" / "keep")
    run("cp", source(tmp_path, "gone"), lib.mnt / "incoming" / "gone")
    assert wait_for(lambda: len(os.listdir(lib.mnt / "active")) == 2)
    lib.umount()
    crash_and_remount(lib, point, lambda: run("rm", lib.mnt / "active" / "gone", check=False))
    assert sorted(os.listdir(lib.mnt / "active")) == ["keep"]  # the catalog committed the delete first
    assert len(list((lib.data / "store" / "blobs").rglob("*/*/*"))) == 1  # the orphan is freed


@pytest.mark.parametrize("point", RENAME_POINTS)
def test_crash_during_rename_and_status_change(lib, tmp_path, point):
    lib.mount()
    run("cp", source(tmp_path, "a"), lib.mnt / "incoming" / "a")
    assert wait_for(lambda: (lib.mnt / "active" / "a").exists())
    lib.umount()
    crash_and_remount(lib, point, lambda: run("mv", lib.mnt / "active" / "a", lib.mnt / "deactivated" / "b",
                                              check=False))
    # name and status change in one transaction: the old pair or the new one, never a mix
    expected = {"rename.before": ("active", "a"), "rename.after": ("deactivated", "b")}[point]
    found = [(d, n) for d in ("active", "deactivated") for n in os.listdir(lib.mnt / d)]
    assert found == [expected]


def test_random_moment_kills(lib):
    rng = random.Random(os.environ.get("IMAGEFS_CRASH_SEED", 5))
    lib.mount()
    for round_no in range(1, 3):
        problems = crash_round(lib, rng, round_no, max_delay=1.0)
        assert problems == [], problems
    assert_recovered(lib)
