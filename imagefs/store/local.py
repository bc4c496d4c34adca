"""The embedded default store: a local directory of content-addressed files.

Layout: <path>/blobs/<algo>/<first two hex digits>/<hex>, mode 0444, and
<path>/tmp/ for copies in progress. A blob appears only by rename after its
bytes are fsynced, and the directory is fsynced after the rename, so a crash
leaves either the whole blob or none (plus, at worst, a temp file that fsck
removes). Holes survive: a staged file on the same filesystem is renamed, one
elsewhere is copied extent by extent with SEEK_DATA/SEEK_HOLE.
"""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from ..errors import NotFound
from . import BlobReader, BlobStore, validate_key

COPY_CHUNK = 8 << 20


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
    local_reads = True

    def __init__(self, name: str, path: Path):
        super().__init__(name)
        self.root = Path(path)
        self.blobs = self.root / "blobs"
        self.tmp = self.root / "tmp"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(exist_ok=True)

    def _path(self, key: str) -> Path:
        algo, hexdigest = validate_key(key).split(":")
        return self.blobs / algo / hexdigest[:2] / hexdigest

    def put(self, key: str, staged: Path) -> bool:
        final = self._path(key)
        if final.exists():
            os.unlink(staged)
            return False
        final.parent.mkdir(parents=True, exist_ok=True)
        if os.stat(staged).st_dev == os.stat(self.root).st_dev:
            fd = os.open(staged, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.chmod(staged, 0o444)
            os.rename(staged, final)
        else:
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
            os.rename(temp, final)
            os.unlink(staged)
        fsync_dir(final.parent)
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

    def blob_path(self, key: str) -> Path:
        """The file holding a blob (benchmarks compare against reading it natively)."""
        return self._path(key)
