"""A store that goes away, hangs or fills up, on real mounts (issue 5, SPEC §8).

The store directory is a mount of its own made by the test (a bind mount of a
backing directory, bindfs, a small tmpfs), so it can be unmounted, stopped and
filled under a working library. Everything the tests mount is unmounted in
their teardown, also when they fail.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import signal
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import Library, assert_refused, getfattr_value, imagefs, mounted, run, wait_for

from imagefs.catalog import Catalog
from imagefs.mounts import mounted_fstype

pytestmark = pytest.mark.fuse

MiB = 1 << 20


def mode(lib: Library) -> str:
    return os.getxattr(lib.mnt, "user.imagefs.mode").decode()


def status_and_reason(lib: Library, name: str) -> tuple[str, str]:
    catalog = Catalog(lib.config.catalog_path, readonly=True)
    try:
        image = catalog.find(name)
    finally:
        catalog.close()
    return str(image.status), image.reason or ""


def tree_of(path: Path) -> list[str]:
    """`find path` as an operator would look at the bare mount point."""
    return sorted(run("find", path).stdout.split())


@contextmanager
def bind_mounted(backing: Path, target: Path):
    backing.mkdir(parents=True, exist_ok=True)
    target.mkdir(parents=True, exist_ok=True)
    run("mount", "--bind", backing, target)
    try:
        yield
    finally:
        if mounted_fstype(target) is not None:
            subprocess.run(["umount", "-l", str(target)], capture_output=True)


@contextmanager
def bindfs_mounted(backing: Path, target: Path):
    """`target` served by a bindfs process of backing/ (yielded, to be SIGSTOPped: a hung store)."""
    backing.mkdir(parents=True, exist_ok=True)
    target.mkdir(parents=True, exist_ok=True)
    bindfs = subprocess.Popen(["bindfs", "-f", "--no-allow-other", str(backing), str(target)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: os.path.ismount(target), timeout=10)
        yield bindfs
    finally:
        if bindfs.poll() is None:
            os.kill(bindfs.pid, signal.SIGCONT)
        subprocess.run(["fusermount", "-u", str(target)], capture_output=True)
        subprocess.run(["umount", "-l", str(target)], capture_output=True)
        bindfs.terminate()
        bindfs.wait(timeout=10)


needs_bindfs = pytest.mark.skipif(shutil.which("bindfs") is None, reason="bindfs is not installed (tools/install.sh)")


def store_config(store: Path, **extra) -> str:
    lines = ["[stores.local]", f'path = "{store}"', "require_mount = true", "probe_interval = 0.2"]
    lines += [f"{key} = {value}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


def random_file(path: Path, size: int, seed: int) -> Path:
    path.write_bytes(hashlib.shake_256(str(seed).encode()).digest(size))
    return path


class SlowWriter(threading.Thread):
    """An upload in flight: writes 256 KiB every 20 ms until told to stop; records how it ended."""

    def __init__(self, path: Path):
        super().__init__(daemon=True)
        self.path = path
        self.error: int | None = None
        self.written = 0
        self.stop = threading.Event()

    def run(self) -> None:
        chunk = os.urandom(256 * 1024)
        try:
            with open(self.path, "wb") as f:
                while not self.stop.is_set():
                    f.write(chunk)
                    f.flush()
                    self.written += len(chunk)
                    time.sleep(0.02)
        except OSError as e:
            self.error = e.errno


@contextmanager
def running(threads):
    """Start the threads; stop and join them however the block ends (nothing keeps the mount busy)."""
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        for thread in threads:
            thread.stop.set()
        for thread in threads:
            thread.join(timeout=30)


class Reader(threading.Thread):
    """Reads one open image over and over; every pass must give the expected sha512."""

    def __init__(self, path: Path, expected: str):
        super().__init__(daemon=True)
        self.path, self.expected = path, expected
        self.passes = 0
        self.bad: list[str] = []
        self.stop = threading.Event()
        self.opened = threading.Event()

    def run(self) -> None:
        try:
            with open(self.path, "rb", buffering=0) as f:
                self.opened.set()
                while not self.stop.is_set():
                    f.seek(0)
                    digest = hashlib.sha512()
                    while chunk := f.read(128 * 1024):
                        digest.update(chunk)
                    if digest.hexdigest() != self.expected:
                        self.bad.append("digest differs")
                    self.passes += 1
        except OSError as e:
            self.bad.append(f"{e.strerror}")
            self.opened.set()


def test_store_unmounted_under_uploads_and_readers_then_back(tmp_path):
    backing, store = tmp_path / "backing", tmp_path / "share"
    with bind_mounted(backing, store):
        with mounted(Library(tmp_path / "lib", store_config(store))) as lib:
            assert mode(lib) == "read-write"
            sources = [random_file(tmp_path / f"img{i}.raw", 3 * MiB + i, i) for i in range(2)]
            expected = {s.name: hashlib.sha512(s.read_bytes()).hexdigest() for s in sources}
            for source in sources:
                lib.upload(source)
            # Drop the page cache's copy of the images: the readers really read the store.
            run("sh", "-c", "echo 1 > /proc/sys/vm/drop_caches")
            readers = [Reader(lib.path("active", s.name), expected[s.name]) for s in sources for _ in range(4)]
            writers = [SlowWriter(lib.mnt / "incoming" / f"inflight{i}.raw") for i in range(4)]
            with running(readers + writers):
                share_goes_away(lib, store, sources, expected, readers, writers)

            run("mount", "--bind", backing, store)  # back

            assert wait_for(lambda: mode(lib) == "read-write", timeout=10), mode(lib)
            third = random_file(tmp_path / "after.raw", MiB, 9)
            active = lib.upload(third)
            assert run("sha512sum", active).stdout.split()[0] == hashlib.sha512(third.read_bytes()).hexdigest()
            for source in sources:
                got = run("sha512sum", lib.path("active", source.name)).stdout.split()[0]
                assert got == expected[source.name]


def share_goes_away(lib, store, sources, expected, readers, writers):
    """The share unmounted under 4 uploads and 8 readers: read-only, uploads killed, nothing written there."""
    for reader in readers:
        assert reader.opened.wait(10)
    assert wait_for(lambda: all(w.written > MiB for w in writers), timeout=30)
    before = tree_of(store)
    assert any(p.endswith("imagefs-store") for p in before)

    run("umount", "-l", store)  # the share goes away; its open files stay readable

    assert wait_for(lambda: mode(lib).startswith("read-only:"), timeout=10), mode(lib)
    assert "is not a mount point" in mode(lib)  # require_mount is checked first
    for writer in writers:
        writer.join(timeout=30)
        assert writer.error in (errno.EROFS, errno.EIO), writer.error
    for i in range(4):
        status, reason = status_and_reason(lib, f"inflight{i}.raw")
        assert status == "killed" and reason.startswith("store unavailable:"), (status, reason)
    assert_refused(run("cp", sources[0], lib.mnt / "incoming" / "new.raw", check=False), errno.EROFS)
    assert_refused(run("touch", lib.mnt / "incoming" / "touched", check=False), errno.EROFS)
    # Nothing was written on the bare mount point.
    assert tree_of(store) == [str(store)]
    # The open files of reachable data still read right; a new open of unreachable data is EIO.
    passes = [r.passes for r in readers]
    assert wait_for(lambda: all(r.passes > p for r, p in zip(readers, passes)), timeout=30), \
        [(r.passes, r.bad) for r in readers]
    for reader in readers:
        reader.stop.set()
        reader.join(timeout=30)
        assert not reader.is_alive() and reader.bad == [], reader.bad
    run("sh", "-c", "echo 1 > /proc/sys/vm/drop_caches")
    assert_refused(run("cat", lib.path("active", sources[0].name), check=False), errno.EIO)
    # Listings and metadata still answer.
    assert sorted(os.listdir(lib.mnt / "active")) == sorted(expected)
    assert lib.attr(lib.path("active", sources[1].name), "os_hash_value") == expected[sources[1].name]


def test_mount_with_the_share_missing_starts_read_only_and_never_touches_the_bare_directory(tmp_path):
    backing, store = tmp_path / "backing", tmp_path / "share"
    store.mkdir()
    backing.mkdir()
    lib = Library(tmp_path / "lib", store_config(store))
    try:
        lib.mount()
        assert mode(lib).startswith("read-only:") and "not a mount point" in mode(lib)
        assert_refused(run("cp", "/etc/hostname", lib.mnt / "incoming" / "x", check=False), errno.EROFS)
        with bind_mounted(backing, store):
            assert wait_for(lambda: mode(lib) == "read-write", timeout=10), mode(lib)
            assert (backing / "imagefs-store").exists()  # initialised on the share, not the bare directory
            active = lib.upload(random_file(tmp_path / "first.raw", MiB, 1))
            assert lib.attr(active, "size") == str(MiB)
            lib.remount()
            assert mode(lib) == "read-write"
            lib.umount()
            lib.check()
        assert list(store.iterdir()) == []
        # The bare directory again, at mount: the recorded marker is missing, so read-only, nothing written.
        lib.mount()
        assert mode(lib).startswith("read-only:")
        assert os.listdir(lib.mnt / "active") == ["first.raw"]
        assert_refused(run("cat", lib.path("active", "first.raw"), check=False), errno.EIO)
        assert list(store.iterdir()) == []
    finally:
        lib.force_unmount()


@needs_bindfs
def test_a_hung_store_does_not_freeze_the_mount(tmp_path):
    """The store behind a FUSE server that stops answering (bindfs, SIGSTOPped)."""
    store = tmp_path / "share"
    with bindfs_mounted(tmp_path / "backing", store) as bindfs:
        with mounted(Library(tmp_path / "lib", store_config(store, timeout=1.0))) as lib:
            assert mode(lib) == "read-write"
            source = random_file(tmp_path / "img.raw", 2 * MiB, 3)
            active = lib.upload(source)
            digest = hashlib.sha512(source.read_bytes()).hexdigest()
            run("sh", "-c", "echo 1 > /proc/sys/vm/drop_caches")

            os.kill(bindfs.pid, signal.SIGSTOP)
            cat = None
            try:
                cat = subprocess.Popen(["cat", str(active)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                       text=True)
                assert wait_for(lambda: mode(lib).startswith("read-only:"), timeout=15), mode(lib)
                assert "did not answer" in mode(lib)
                # The mount answers while the store hangs: listing, stat, getfattr, the CLI.
                assert os.listdir(lib.mnt / "active") == ["img.raw"]
                assert os.stat(active).st_size == 2 * MiB
                assert lib.attr(active, "os_hash_value") == digest
                assert_refused(run("cat", active, check=False, timeout=30), errno.EIO)  # fails fast
                assert cat.wait(timeout=30) != 0  # the read that was waiting gave up with EIO
                status = imagefs("status", "--data-dir", lib.data, "--config", lib.config_path, timeout=30).stdout
                assert "read-only: store local did not answer" in status and "free space unknown" in status
            finally:
                os.kill(bindfs.pid, signal.SIGCONT)
                if cat is not None and cat.poll() is None:
                    cat.kill()
                    cat.wait()
            assert wait_for(lambda: mode(lib) == "read-write", timeout=15), mode(lib)
            assert run("sha512sum", active).stdout.split()[0] == digest
            lib.upload(random_file(tmp_path / "after.raw", MiB, 4))


@contextmanager
def tmpfs(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_staging_full_kills_that_upload_only(tmp_path):
    with tmpfs(tmp_path / "staging", "8m") as staging:
        config = f'[upload]\nstaging_dir = "{staging}"\n'
        with mounted(Library(tmp_path / "lib", config)) as lib:
            small = lib.upload(random_file(tmp_path / "small.raw", MiB, 1))
            result = run("cp", random_file(tmp_path / "big.raw", 16 * MiB, 2), lib.mnt / "incoming", check=False)
            assert_refused(result, errno.ENOSPC)
            status, reason = status_and_reason(lib, "big.raw")
            assert status == "killed" and reason == "staging: No space left on device", (status, reason)
            assert list(staging.iterdir()) == []  # its staged data freed
            assert run("sha512sum", small).stdout.split()[0] == lib.attr(small, "os_hash_value")
            assert mode(lib) == "read-write"
            lib.upload(random_file(tmp_path / "next.raw", 2 * MiB, 3))
            assert sorted(os.listdir(lib.mnt / "active")) == ["next.raw", "small.raw"]


def test_store_full_kills_the_upload_at_finalize(tmp_path):
    with tmpfs(tmp_path / "store", "6m") as store:
        config = f'[stores.local]\npath = "{store}"\n'
        with mounted(Library(tmp_path / "lib", config)) as lib:
            first = lib.upload(random_file(tmp_path / "first.raw", 2 * MiB, 1))
            run("cp", random_file(tmp_path / "big.raw", 8 * MiB, 2), lib.mnt / "incoming")
            assert wait_for(lambda: status_and_reason(lib, "big.raw")[0] == "killed")
            assert "No space left on device" in status_and_reason(lib, "big.raw")[1]
            assert list((store / "tmp").iterdir()) == []  # no half blob left behind
            assert run("sha512sum", first).stdout.split()[0] == lib.attr(first, "os_hash_value")
            assert mode(lib) == "read-write"  # a full store is no failing store
            lib.upload(random_file(tmp_path / "fits.raw", MiB, 3))


def test_staging_quota(tmp_path):
    with mounted(Library(tmp_path / "lib", "[upload]\nstaging_quota_mib = 4\n")) as lib:
        result = run("cp", random_file(tmp_path / "big.raw", 6 * MiB, 1), lib.mnt / "incoming", check=False)
        assert_refused(result, errno.EDQUOT)
        status, reason = status_and_reason(lib, "big.raw")
        assert status == "killed" and "staging quota of 4 MiB exceeded" in reason, (status, reason)
        lib.upload(random_file(tmp_path / "a.raw", 3 * MiB, 2))  # the quota was given back
        lib.upload(random_file(tmp_path / "b.raw", 3 * MiB, 3))
        assert sorted(os.listdir(lib.mnt / "active")) == ["a.raw", "b.raw"]


@needs_bindfs
def test_another_store_hanging_leaves_the_default_stores_data_and_uploads_alone(tmp_path):
    """Images stay in the store their data went to; [stores] default only says where new data goes.
    Store `old` (behind bindfs) hangs: its images give EIO, everything else carries on read-write."""
    share = tmp_path / "share"
    stores = (f'[stores.old]\npath = "{share}"\nrequire_mount = true\ntimeout = 1.0\n'
              f'[stores.new]\npath = "{tmp_path / "new"}"\n')
    with bindfs_mounted(tmp_path / "backing", share) as bindfs:
        lib = Library(tmp_path / "lib", '[stores]\ndefault = "old"\n' + stores)
        with mounted(lib):
            first = random_file(tmp_path / "first.raw", MiB, 1)
            lib.upload(first)
            assert lib.attr(lib.path("active", "first.raw"), "size") == str(MiB)
            lib.umount()
            lib.config_path.write_text('[stores]\ndefault = "new"\n' + stores)
            lib.mount()
            second = random_file(tmp_path / "second.raw", MiB, 2)
            lib.upload(second)
            again = lib.upload(first, "first-again.raw")  # the same bytes: deduplicated into store old
            assert getfattr_value(again, "user.imagefs.stores") == "old"
            assert getfattr_value(lib.path("active", "second.raw"), "user.imagefs.stores") == "new"
            run("sh", "-c", "echo 1 > /proc/sys/vm/drop_caches")

            os.kill(bindfs.pid, signal.SIGSTOP)
            try:
                assert_refused(run("cat", lib.path("active", "first.raw"), check=False, timeout=30), errno.EIO)
                assert mode(lib) == "read-write"  # the default store is fine
                got = run("sha512sum", lib.path("active", "second.raw"), timeout=30).stdout.split()[0]
                assert got == hashlib.sha512(second.read_bytes()).hexdigest()
                third = lib.upload(random_file(tmp_path / "third.raw", MiB, 3))
                assert getfattr_value(third, "user.imagefs.stores") == "new"
                assert sorted(os.listdir(lib.mnt / "active")) == ["first-again.raw", "first.raw", "second.raw",
                                                                  "third.raw"]
            finally:
                os.kill(bindfs.pid, signal.SIGCONT)
            digest = hashlib.sha512(first.read_bytes()).hexdigest()
            assert wait_for(lambda: run("sha512sum", lib.path("active", "first.raw"), check=False).stdout[:128]
                            == digest, timeout=15)
