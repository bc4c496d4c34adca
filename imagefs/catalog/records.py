"""Typed records the catalog returns; nothing outside the catalog sees a row."""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..lifecycle import Status


def glance_time(ns: int | None) -> str | None:
    """Glance's timestamp format: ISO 8601, seconds, UTC, 'Z'."""
    if ns is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns // 1_000_000_000))


@dataclass(frozen=True)
class Image:
    seq: int  # never reused; the mount derives inode numbers from it
    id: str
    name: str
    status: Status
    disk_format: str | None
    container_format: str | None
    size: int | None
    virtual_size: int | None
    checksum: str | None
    os_hash_algo: str | None
    os_hash_value: str | None
    min_disk: int
    min_ram: int
    visibility: str
    protected: bool
    os_hidden: bool
    owner: str | None
    created_ns: int
    updated_ns: int
    deleted_ns: int | None
    blob_key: str | None
    store: str | None
    reason: str | None
    stored_format: str | None
    expected_size: int | None
    expected_checksum: str | None
    expected_os_hash_value: str | None
    signature_verified: str | None = None  # "<certificate uuid> <subject>" of a verified signature

    @property
    def created_at(self) -> str:
        return glance_time(self.created_ns)

    @property
    def updated_at(self) -> str:
        return glance_time(self.updated_ns)


@dataclass(frozen=True)
class HistoryEntry:
    at_ns: int
    actor: str
    from_status: Status | None
    to_status: Status
    reason: str | None


@dataclass(frozen=True)
class Blob:
    key: str
    store: str
    size: int
    refcount: int


@dataclass(frozen=True)
class Violation:
    """One broken catalog invariant; `kind` says which (fsck decides what it can repair)."""

    kind: str  # integrity, foreign_key, status_data, killed_reason, refcount, uncatalogued_blob, size, history
    message: str
    key: str | None = None  # the blob concerned, if any
