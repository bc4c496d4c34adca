"""Hashes of image data: md5 `checksum` and the `os_hash_algo` digest.

While an upload streams sequentially, chunks are queued to a StreamHasher
whose batches run in worker threads (hashlib releases the GIL), md5 and the
os_hash digest side by side, so the writer never waits for hashing unless it
runs more than MAX_PENDING ahead. When the stream stops being sequential,
the staged file is read once at finalize instead (StagedUpload.finish).

Extra algorithms (the image signature's hash method, when it is declared
before the data) stream alongside and end up in `Digests.extra`; one that
arrives after the first byte cannot join, and whoever needs it hashes the
file at finalize. Hashing always runs in worker threads under HASH_LIMITER,
never on the trio thread.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import trio

# Hashing threads in the whole daemon: more would only make uploads fight over cores.
HASH_LIMITER = trio.CapacityLimiter(max(2, os.cpu_count() or 2))
MAX_PENDING = 64 << 20  # bytes queued before writers wait (per upload)
READ_CHUNK = 4 << 20


@dataclass(frozen=True)
class Digests:
    checksum: str  # md5 hex
    os_hash_algo: str
    os_hash_value: str
    extra: dict[str, bytes] = field(default_factory=dict)  # hashlib name -> digest, of extra algorithms

    def digest(self, algorithm: str) -> bytes | None:
        """The raw digest for a hashlib algorithm name, if it was computed (os_hash's or an extra one)."""
        if algorithm == self.os_hash_algo:
            return bytes.fromhex(self.os_hash_value)
        return self.extra.get(algorithm)


def _update(hasher, chunks: list[bytes]) -> None:
    for chunk in chunks:
        hasher.update(chunk)


class StreamHasher:
    """md5 + os_hash (+ extra algorithms) over a sequential stream; feed() from the trio thread, finish() at the end."""

    def __init__(self, algorithm: str, extra=()):
        self.algorithm = algorithm
        self._hashers = [hashlib.md5(), hashlib.new(algorithm)]
        self._extra: dict[str, object] = {}
        self._started = False
        for name in extra:
            self.add(name)
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._busy = False
        self._idle = trio.Event()
        self._idle.set()
        self._room = trio.Event()
        self._room.set()
        self._error: BaseException | None = None

    def add(self, algorithm: str) -> bool:
        """Also compute `algorithm`; possible only before the first chunk (False after it).
        md5 and os_hash's own algorithm are computed anyway: nothing is added for them."""
        if algorithm in ("md5", self.algorithm) or algorithm in self._extra:
            return True
        if self._started:
            return False
        hasher = self._extra[algorithm] = hashlib.new(algorithm)
        self._hashers.append(hasher)
        return True

    async def feed(self, chunk: bytes, spawn) -> None:
        """Queue a chunk; `spawn(async_fn)` starts the batch worker in the daemon's nursery."""
        if self._error:
            raise self._error
        self._started = True
        self._pending.append(chunk)
        self._pending_bytes += len(chunk)
        if not self._busy:
            self._busy = True
            self._idle = trio.Event()
            spawn(self._work)
        if self._pending_bytes > MAX_PENDING:
            if self._room.is_set():
                self._room = trio.Event()
            await self._room.wait()

    async def _work(self) -> None:
        try:
            while self._pending:
                batch, self._pending, self._pending_bytes = self._pending, [], 0
                self._room.set()
                async with trio.open_nursery() as nursery:
                    for hasher in self._hashers:
                        nursery.start_soon(self._run, hasher, batch)
        except BaseException as e:  # reported to the next feed() or finish()
            self._error = e
            self._room.set()
        finally:
            self._busy = False
            self._idle.set()

    @staticmethod
    async def _run(hasher, batch) -> None:
        await trio.to_thread.run_sync(_update, hasher, batch, limiter=HASH_LIMITER)

    async def finish(self) -> Digests:
        await self._idle.wait()
        if self._error:
            raise self._error
        md5, main = self._hashers[:2]
        extra = {name: hasher.digest() for name, hasher in self._extra.items()}
        return Digests(md5.hexdigest(), self.algorithm, main.hexdigest(), extra)


def hash_path(path: Path, algorithms) -> dict[str, bytes]:
    """Digests of a file for hashlib `algorithms`, all fed from one read of it
    (blocking: the daemon calls it in a worker thread under HASH_LIMITER)."""
    hashers = {name: hashlib.new(name) for name in dict.fromkeys(algorithms)}
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(READ_CHUNK):
            for hasher in hashers.values():
                hasher.update(chunk)
    return {name: hasher.digest() for name, hasher in hashers.items()}
