"""The embedded default store: a local directory of content-addressed files.

Layout: <path>/blobs/<algo>/<first two hex digits>/<hex>, mode 0444, and
<path>/tmp/ for copies in progress. A blob appears only by rename after its
bytes are fsynced, and the directory is fsynced after the rename, so a crash
leaves either the whole blob or none (plus, at worst, a temp file that fsck
removes). Holes survive: a staged file on the same filesystem is renamed, one
elsewhere is copied extent by extent with SEEK_DATA/SEEK_HOLE.

<path>/imagefs-store holds the marker `initialise` wrote. Every write checks
it first, and directories are created only below <path>/blobs (never with
parents), so when a share is unmounted under us nothing lands on the bare
mount point: the store simply refuses, and the probe reports why.
"""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from ..crashpoints import crash_point
from ..errors import NotFound, StoreUnavailable
from ..mounts import mounted_fstype
from . import BlobReader, BlobStore, validate_key

COPY_CHUNK = 8 << 20
MARKER_FILE = "imagefs-store"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_range(source_fd: int, target_fd: int, count: int, offset: int) -> int:
    """copy_file_range, or pread+pwrite where the kernel refuses it: since Linux 5.19 it
    answers EXDEV between filesystems of different types (tmpfs staging, ext4 store)."""
    try:
        return os.copy_file_range(source_fd, target_fd, count, offset, offset)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
            raise
    chunk = os.pread(source_fd, count, offset)
    return os.pwrite(target_fd, chunk, offset) if chunk else 0


def copy_sparse(source: Path, target_fd: int) -> None:
    """Copy data extents only, so holes stay holes; the length is kept exactly."""
    with open(source, "rb", buffering=0) as src:
        fd = src.fileno()
        end = os.fstat(fd).st_size
        offset = 0
        while offset < end:
            try:
                data = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError as e:
                if e.errno != errno.ENXIO:  # ENXIO: only a hole remains
                    raise
                break
            hole = os.lseek(fd, data, os.SEEK_HOLE)
            while data < hole:
                n = _copy_range(fd, target_fd, min(COPY_CHUNK, hole - data), data)
                if n == 0:
                    break
                data += n
            offset = hole
        os.ftruncate(target_fd, end)


class _FileReader(BlobReader):
    def __init__(self, path: Path):
        self.fd = os.open(path, os.O_RDONLY)

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self.fd, length, offset)

    def close(self) -> None:
        os.close(self.fd)


class LocalDirStore(BlobStore):
    def __init__(self, name: str, path: Path, *, require_mount: bool = False):
        super().__init__(name)
        self.root = Path(path)
        self.blobs = self.root / "blobs"
        self.tmp = self.root / "tmp"
        self.require_mount = require_mount
        self.local_reads = not require_mount  # a share can hang: read it from worker threads

    def initialise(self, marker: str) -> None:
        if self.require_mount and mounted_fstype(self.root) is None:
            raise StoreUnavailable(f"{self.root} is not a mount point (require_mount)")
        found = self._read_marker()
        if found is not None and found != marker:
            raise StoreUnavailable(f"{self.root} holds another library's store (marker {found})")
        self.root.mkdir(parents=True, exist_ok=True)
        self.blobs.mkdir(exist_ok=True)
        self.tmp.mkdir(exist_ok=True)
        if found is None:
            temp = self.tmp / f"{MARKER_FILE}.{uuid.uuid4().hex}"
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
            try:
                os.write(fd, f"{marker}\n".encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(temp, self.root / MARKER_FILE)
            fsync_dir(self.root)
        self.marker = marker

    def _read_marker(self) -> str | None:
        try:
            return (self.root / MARKER_FILE).read_text().strip()
        except FileNotFoundError:
            return None

    def probe(self) -> None:
        if self.require_mount and mounted_fstype(self.root) is None:
            raise StoreUnavailable(f"{self.root} is not a mount point")
        found = self._read_marker()
        if found is None or found != self.marker:
            raise StoreUnavailable(f"store marker {self.root / MARKER_FILE} is missing" if found is None
                                   else f"{self.root} holds another store (marker {found})")
        if os.statvfs(self.root).f_flag & os.ST_RDONLY:
            raise StoreUnavailable(f"{self.root} is mounted read-only")

    def _check_marker(self) -> None:
        """Before every write: a directory without the marker is not the store (an unmounted share)."""
        if self.marker is None or not os.path.exists(self.root / MARKER_FILE):
            raise StoreUnavailable(f"store marker {self.root / MARKER_FILE} is missing: not writing there")

    def _path(self, key: str) -> Path:
        algo, hexdigest = validate_key(key).split(":")
        return self.blobs / algo / hexdigest[:2] / hexdigest

    def put(self, key: str, staged: Path) -> bool:
        self._check_marker()
        final = self._path(key)
        if final.exists():
            os.unlink(staged)
            return False
        for directory in (final.parent.parent, final.parent):  # no parents: blobs/ exists only in the real store
            if not directory.is_dir():
                directory.mkdir(exist_ok=True)
                fsync_dir(directory.parent)  # the new directory's entry outlives a power cut too
        if not (os.stat(staged).st_dev == os.stat(self.root).st_dev and self._rename_in(staged, final)):
            temp = self.tmp / f"{uuid.uuid4().hex}.tmp"
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
            try:
                copy_sparse(staged, fd)
                os.fsync(fd)
            except BaseException:
                os.unlink(temp)  # ENOSPC or EIO mid-copy: leave no half blob behind in tmp/
                raise
            finally:
                os.close(fd)
            crash_point("store.put.synced")
            os.rename(temp, final)
            os.unlink(staged)
        crash_point("store.put.renamed")
        fsync_dir(final.parent)
        return True

    @staticmethod
    def _rename_in(staged: Path, final: Path) -> bool:
        """The staged file becomes the blob by rename (same filesystem); False where the kernel
        refuses (EXDEV: the store is another mount of the same filesystem, e.g. a bind mount)."""
        fd = os.open(staged, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(staged, 0o444)
        crash_point("store.put.synced")
        try:
            os.rename(staged, final)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            return False
        return True

    def read(self, key: str, offset: int, length: int) -> bytes:
        try:
            with open(self._path(key), "rb", buffering=0) as f:
                return os.pread(f.fileno(), length, offset)
        except FileNotFoundError:
            raise NotFound(f"no blob {key}") from None

    def open_reader(self, key: str) -> BlobReader:
        try:
            return _FileReader(self._path(key))
        except FileNotFoundError:
            raise NotFound(f"no blob {key}") from None

    def delete(self, key: str) -> None:
        self._check_marker()
        path = self._path(key)
        try:
            os.unlink(path)
        except FileNotFoundError:
            raise NotFound(f"no blob {key}") from None
        fsync_dir(path.parent)

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"no blob {key}") from None

    def allocated(self, key: str) -> int:
        try:
            return self._path(key).stat().st_blocks * 512
        except FileNotFoundError:
            raise NotFound(f"no blob {key}") from None

    def list(self) -> Iterator[str]:
        for algo_dir in self.blobs.iterdir():
            for prefix in algo_dir.iterdir():
                for blob in prefix.iterdir():
                    yield f"{algo_dir.name}:{blob.name}"

    def url(self, key: str) -> str:
        return self._path(key).as_uri()

    def leftovers(self, before_ns: int | None = None) -> list[str]:
        found = []
        if not self.tmp.is_dir():
            return found
        for entry in os.scandir(self.tmp):
            try:
                if before_ns is None or entry.stat(follow_symlinks=False).st_mtime_ns < before_ns:
                    found.append(entry.name)
            except FileNotFoundError:
                pass  # a put under way just renamed it into place
        return sorted(found)

    def remove_leftover(self, name: str) -> None:
        if "/" in name or name in (".", ".."):
            raise ValueError(f"not a temp file name: {name!r}")
        try:
            os.unlink(self.tmp / name)
        except FileNotFoundError:
            pass

    def blob_path(self, key: str) -> Path:
        """The file holding a blob (benchmarks compare against reading it natively)."""
        return self._path(key)
