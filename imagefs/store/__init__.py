"""Where image data lives: the BlobStore interface and `open_store`.

The interface is shaped for object stores (S3, RADOS): whole blobs put once
under a key, ranged reads, no in-place writes. Keys are content addresses,
"<os_hash_algo>:<os_hash_value>", validated here and nowhere else. Methods
are synchronous; the daemon calls the slow ones from worker threads. Every
backend passes tests/test_store_contract.py.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

import trio

from ..config import StoreConfig
from ..errors import ConfigError, Invalid

# Store calls in worker threads, daemon-wide: a slow store must not take every thread.
STORE_LIMITER = trio.CapacityLimiter(8)

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

    #: reads are served from local files (page cache), cheap enough to run on the event loop
    local_reads = False

    def __init__(self, name: str):
        self.name = name

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


def open_store(config: StoreConfig) -> BlobStore:
    if config.type == "dir":
        from .local import LocalDirStore

        return LocalDirStore(config.name, config.path)
    raise ConfigError(f"[stores.{config.name}] type {config.type!r} is not known (known: dir)")
