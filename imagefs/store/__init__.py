"""Where image data lives: the BlobStore interface and `open_store`.

The interface is shaped for object stores (S3, RADOS): whole blobs put once
under a key, ranged reads, no in-place writes. Keys are content addresses,
"<os_hash_algo>:<os_hash_value>", validated here and nowhere else. Methods
are synchronous; the daemon calls them from worker threads, each store under
its own limiter and with time-outs (imagefs/health.py), so one slow store
cannot take every thread. Every backend passes tests/test_store_contract.py.

A store knows whether it is really there: `initialise` gives it a marker (an
identity the catalog records), and `probe` checks the marker and that the
store can take writes. A store without its marker is never written to.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

import trio

from ..config import StoreConfig
from ..errors import ConfigError, Invalid

STORE_THREADS = 8  # worker threads one store may occupy (a hung store holds at most these)

_KEY = re.compile(r"(sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128})")


def blob_key(algorithm: str, hexdigest: str) -> str:
    return validate_key(f"{algorithm}:{hexdigest}")


def validate_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise Invalid(f"not a blob key: {key!r}")
    return key


class BlobReader(ABC):
    """An open blob, for the many small reads of one open file."""

    @abstractmethod
    def read(self, offset: int, length: int) -> bytes:
        """Up to `length` bytes from `offset`; fewer only at the end of the blob."""

    def close(self) -> None:
        """Release what the reader holds."""


class _RangedReader(BlobReader):
    def __init__(self, store: BlobStore, key: str):
        self.store, self.key = store, key

    def read(self, offset: int, length: int) -> bytes:
        return self.store.read(self.key, offset, length)


class BlobStore(ABC):
    """A place for immutable blobs under content-address keys."""

    #: reads are served from the host's own disk (page cache), cheap and safe enough to run on
    #: the event loop; a share (require_mount) or a remote store is read from worker threads
    local_reads = False

    def __init__(self, name: str):
        self.name = name
        self.marker: str | None = None  # the identity this library gave the store (catalog)
        self.limiter = trio.CapacityLimiter(STORE_THREADS)

    @abstractmethod
    def initialise(self, marker: str) -> None:
        """Prepare a new store for blobs and write `marker` into it; StoreUnavailable if it must not
        be (e.g. a share's mount point with nothing mounted on it)."""

    @abstractmethod
    def probe(self) -> None:
        """Check the store is there and writable with this library's marker; StoreUnavailable
        (or OSError) saying why not. Cheap: it runs every probe_interval."""

    @abstractmethod
    def put(self, key: str, staged: Path) -> bool:
        """Store the file at `staged` under `key` durably and take it (it is gone afterwards).

        Returns False when the key already existed: same key, same bytes, so the
        staged copy is simply dropped (deduplication).
        """

    @abstractmethod
    def read(self, key: str, offset: int, length: int) -> bytes:
        """Ranged read: up to `length` bytes of the blob from `offset`."""

    def open_reader(self, key: str) -> BlobReader:
        """A reader for repeated ranged reads of one blob."""
        validate_key(key)
        return _RangedReader(self, key)

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the blob; NotFound if there is none."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether a blob is stored under `key`."""

    @abstractmethod
    def size(self, key: str) -> int:
        """The blob's length in bytes; NotFound if there is none."""

    def allocated(self, key: str) -> int:
        """Bytes the blob occupies (less than its size when sparse); st_blocks on the mount."""
        return self.size(key)

    @abstractmethod
    def list(self) -> Iterator[str]:
        """Every key stored (order unspecified)."""

    @abstractmethod
    def url(self, key: str) -> str:
        """Where the blob is, for user.imagefs.locations."""

    def leftovers(self, before_ns: int | None = None) -> list[str]:
        """Temp files of puts that never finished (a crash mid-put), last changed before `before_ns`
        if given; fsck and the recovery after a crash remove them."""
        return []

    def remove_leftover(self, name: str) -> None:
        """Remove one of `leftovers()`."""


def open_store(config: StoreConfig) -> BlobStore:
    if config.type == "dir":
        from .local import LocalDirStore

        return LocalDirStore(config.name, config.path, require_mount=config.require_mount)
    raise ConfigError(f"[stores.{config.name}] type {config.type!r} is not known (known: dir)")
