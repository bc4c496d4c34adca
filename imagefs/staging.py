"""A staged upload: the file in the staging directory that incoming/N writes go to.

The write path stays on the trio thread (a pwrite into the page cache is
short); hashing runs behind it in worker threads (hashing.StreamHasher), and
the staged file is fdatasync'ed every `flush_every_mib` in a worker thread so
that the fsync at finalize only has the tail left to write. All-zero chunks
are not written at all (the file grows by ftruncate), so a raw image with
empty regions is thin on disk whichever way it was copied in.

Format inspection (formats.FormatDetector) sees the same chunks as the
hasher, in order, on the trio thread (it only copies the few header regions
it asked for, so a chunk costs it a little bookkeeping); forward gaps are fed
as zeros to both. When the writes stop being sequential, both fall back to
the staged file at finalize: one sequential read (in worker threads) feeds
a fresh hasher and detector, chunk by chunk, as the stream would have.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import trio

from .formats import Detection, FormatDetector
from .hashing import READ_CHUNK, Digests, StreamHasher

log = logging.getLogger(__name__)

_ZEROS: dict[int, bytes] = {}
FSYNC_LIMITER = trio.CapacityLimiter(4)


def _zeros(length: int) -> bytes:
    zeros = _ZEROS.get(length)
    if zeros is None:
        if len(_ZEROS) > 64:
            _ZEROS.clear()
        zeros = _ZEROS[length] = bytes(length)
    return zeros


def _is_zero(chunk: bytes) -> bool:
    return chunk == _zeros(len(chunk))


class StagingQuota:
    """Bytes the staged files of all uploads may occupy together ([upload] staging_quota_mib, 0: no limit).

    Charged as a file grows (holes included: they may be filled later), given back when it is
    discarded or taken by the store. Past the limit a write fails with EDQUOT."""

    def __init__(self, limit: int = 0):
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> None:
        if self.limit and self.used + size > self.limit:
            raise OSError(errno.EDQUOT, f"staging quota of {self.limit >> 20} MiB exceeded")
        self.used += size

    def give(self, size: int) -> None:
        self.used -= size


class StagedUpload:
    def __init__(self, path: Path, algorithm: str, *, flush_every: int, zero_holes: bool, spawn,
                 quota: StagingQuota | None = None):
        self.path = path
        self._quota = quota or StagingQuota()
        self.algorithm = algorithm
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self.size = 0  # logical length
        self._file_size = 0  # what the file on disk is, holes included
        self.sequential = True
        self._next = 0
        self._hasher: StreamHasher | None = StreamHasher(algorithm)
        self.extra_algorithms: list[str] = []  # more digests wanted (the signature's hash method)
        self._detector: FormatDetector | None = FormatDetector()
        self._detector_error: BaseException | None = None  # an inspector bug: reported at finalize
        self._flush_every = flush_every
        self._unflushed = 0
        self._zero_holes = zero_holes
        self._spawn = spawn
        self._syncing = False
        self.writers = 0  # open handles that may write
        self.writer_pids: set[int] = set()
        self._lock = trio.StrictFIFOLock()
        self.written = False  # any data has arrived: the image is saving
        self.finalize_on_close = False  # set by the rsync-style rename while writers remain
        self.abandoned = False
        self.error: OSError | None = None  # set when the upload was killed: what its writers get

    def add_writer(self, pid: int) -> None:
        self.writers += 1
        self.writer_pids.add(pid)

    def stream_digest(self, algorithm: str) -> bool:
        """Also compute `algorithm` (hashlib name) over the data, in the same pass as md5 and os_hash.

        Only possible before the first byte streams: returns False after that, and the
        caller hashes the staged file once at finalize (the cost of a late declaration).
        """
        if algorithm not in self.extra_algorithms:
            self.extra_algorithms.append(algorithm)
        return self._hasher is not None and self._hasher.add(algorithm)

    async def write(self, offset: int, data: bytes) -> int:
        # One write at a time per upload: the hash must see the bytes in file order.
        async with self._lock:
            return await self._write(offset, data)

    async def _write(self, offset: int, data: bytes) -> int:
        if self.error is not None:
            raise self.error
        if self.abandoned:
            return len(data)  # unlinked: like writing to an unlinked file, the data goes nowhere
        end = offset + len(data)
        self._grow(end)
        try:
            if self._zero_holes and offset >= self._file_size and _is_zero(data):
                # Only past the end of the file: zeros over data already written must be written.
                if end > self._file_size:
                    os.ftruncate(self.fd, end)
            else:
                os.pwrite(self.fd, data, offset)
        except OSError:  # ENOSPC, EIO: the caller kills the upload; the file did not grow
            self._quota.give(max(0, end - self._file_size))
            raise
        self._file_size = max(self._file_size, end)
        self.size = max(self.size, end)
        self.written = True
        if self.sequential and offset >= self._next:
            # A forward gap is a hole: zeros in the data, so the stream stays hashable in order.
            await self._feed_zeros(offset - self._next)
            self._next = end
            self._inspect(data)
            await self._hasher.feed(data, self._spawn)
        elif self.sequential:
            log.debug("%s: rewrite at %d below %d: hashing at finalize instead", self.path.name, offset, self._next)
            self._stop_streaming()
        self._unflushed += len(data)
        if self._unflushed >= self._flush_every and not self._syncing:
            self._unflushed = 0
            self._syncing = True
            self._spawn(self._flush)
        return len(data)

    def _grow(self, end: int) -> None:
        if end > self._file_size:
            self._quota.take(end - self._file_size)

    async def sync(self) -> None:
        """fsync(2) of an upload: its staged data reaches the disk."""
        if self.fd >= 0:
            await trio.to_thread.run_sync(os.fdatasync, self.fd, limiter=FSYNC_LIMITER)

    async def _flush(self) -> None:
        try:
            await self.sync()
        except OSError as e:  # finalize's own fsync will report it
            log.warning("%s: background fdatasync failed: %s", self.path.name, e)
        finally:
            self._syncing = False

    async def truncate(self, size: int) -> None:
        async with self._lock:
            await self._truncate(size)

    async def _truncate(self, size: int) -> None:
        self._grow(size)
        try:
            os.ftruncate(self.fd, size)
        except OSError:
            self._quota.give(max(0, size - self._file_size))
            raise
        if size < self._file_size:
            self._quota.give(self._file_size - size)
        if size == 0:  # open(O_TRUNC) of an upload: start over
            self.sequential, self._next = True, 0
            self._hasher = StreamHasher(self.algorithm, self.extra_algorithms)
            self._detector, self._detector_error = FormatDetector(), None
        elif self.sequential and size >= self.size == self._next:
            await self._feed_zeros(size - self._next)
            self._next = size
        elif self.sequential:
            self._stop_streaming()
        self.size = self._file_size = size
        self.written = self.written or size > 0

    async def _feed_zeros(self, length: int) -> None:
        while length > 0:
            n = min(length, 1 << 20)
            zeros = _zeros(n)
            self._inspect(zeros)
            await self._hasher.feed(zeros, self._spawn)
            length -= n

    def _inspect(self, chunk: bytes) -> None:
        """Feed the format detector. Inspectors raise only FormatError on bad data (the detector
        handles it); anything else is a bug in one: kept for finalize, which then fails, never the write."""
        if self._detector is None or self._detector_error is not None:
            return
        try:
            self._detector.feed(chunk)
        except Exception as e:
            log.exception("%s: format inspection failed", self.path.name)
            self._detector_error = e

    def _stop_streaming(self) -> None:
        self.sequential = False
        self._hasher = None
        self._detector = None

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self.fd, max(0, min(length, self.size - offset)), offset)

    async def finish(self) -> tuple[Digests, Detection]:
        """The digests and the format detection of everything written.

        Sequential writes: both come from the stream (no read of the file). Otherwise the
        file is read once now, and each chunk goes to the hashers and the detector exactly
        as the stream's would have.
        """
        if not self.sequential:
            return await self._scan()
        digests = await self._hasher.finish()
        if self._detector_error is not None:
            raise self._detector_error
        return digests, self._detector.finish()

    async def _scan(self) -> tuple[Digests, Detection]:
        hasher, detector = StreamHasher(self.algorithm, self.extra_algorithms), FormatDetector()
        with open(self.path, "rb", buffering=0) as f:
            while chunk := await trio.to_thread.run_sync(f.read, READ_CHUNK):
                detector.feed(chunk)
                await hasher.feed(chunk, self._spawn)
        return await hasher.finish(), detector.finish()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def discard(self) -> None:
        """Drop the staged file (gone already if the store took it) and give back its quota."""
        self.close()
        self._quota.give(self._file_size)
        self._file_size = 0
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
