"""Consistency of a library: the catalog's invariants plus the store's side of them, and repair.

The tests end every catalog-changing test with `check_library`, and
`imagefs fsck` runs the same code, so what the tests hold the product to is
what an operator can check on a host.

What is checked: SQLite's own integrity and foreign keys, the catalog's
invariants (Catalog.violations), every catalogued blob present in its store
with the catalogued size (and, verifying data, the hash its key names), blobs
in a store that nothing references (orphans), files in the staging directory
whose image is no longer being uploaded, and temp files a store's put left
behind. `repair` fixes only what is safe: it frees orphans, removes stale
staging and temp files and recomputes refcounts. Data that is missing or
wrong is never invented; it stays reported.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .catalog import Catalog
from .config import Config
from .errors import ImageFSError, NotFound
from .lifecycle import Status
from .store import BlobStore, open_store

log = logging.getLogger(__name__)

# Catalog violation kinds repair can fix (refcounts are recomputed from the references).
REPAIRABLE_VIOLATIONS = frozenset({"refcount"})
# Images whose staged file is still in use.
STAGING = frozenset({Status.QUEUED, Status.SAVING, Status.IMPORTING})
HASH_CHUNK = 4 << 20


@dataclass
class Finding:
    kind: str  # a catalog violation kind, or missing_blob, blob_size, blob_hash, unknown_store,
    #            orphan_blob, stale_staging, store_temp
    message: str
    repairable: bool
    subject: str | None = None  # the blob key or file name concerned
    store: str | None = None
    repaired: bool = False
    repair_error: str | None = None

    def line(self) -> str:
        if self.repaired:
            outcome = "repaired"
        elif self.repair_error:
            outcome = f"NOT repaired: {self.repair_error}"
        elif self.repairable:
            outcome = "repairable (--repair)"
        else:
            outcome = "damage: cannot be repaired"
        return f"{self.message}: {outcome}"


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    images: int = 0
    blobs: int = 0
    verified: int = 0  # blobs whose bytes were re-hashed

    @property
    def problems(self) -> list[str]:
        """Everything wrong but orphan blobs (the invariant check in the tests)."""
        return [f.message for f in self.findings if f.kind != "orphan_blob"]

    @property
    def orphans(self) -> list[str]:
        return [f.subject for f in self.findings if f.kind == "orphan_blob"]

    @property
    def clean(self) -> bool:
        return not self.findings

    @property
    def repaired(self) -> list[Finding]:
        return [f for f in self.findings if f.repaired]

    @property
    def left(self) -> list[Finding]:
        return [f for f in self.findings if not f.repaired]


def _stores(stores: BlobStore | Iterable[BlobStore]) -> dict[str, BlobStore]:
    if isinstance(stores, BlobStore):
        stores = [stores]
    return {store.name: store for store in stores}


def check(
    catalog: Catalog, stores: BlobStore | Iterable[BlobStore], *, staging_dir: Path | None = None,
    verify_data: bool = False, workers: int | None = None,
) -> Report:
    """Everything wrong with the library; nothing is changed. `staging_dir` None skips staging."""
    stores = _stores(stores)
    report = Report()
    for violation in catalog.violations():
        report.findings.append(Finding(
            violation.kind, violation.message, violation.kind in REPAIRABLE_VIOLATIONS, subject=violation.key,
        ))
    images = catalog.images()
    report.images = len(images)
    users: dict[str, list[str]] = {}
    for image in images:
        if image.blob_key is not None:
            users.setdefault(image.blob_key, []).append(f"{image.status} image {image.id} ({image.name})")
    blobs = catalog.blobs()
    report.blobs = len(blobs)
    catalogued: dict[str, set[str]] = {name: set() for name in stores}
    to_verify = []
    for blob in blobs:
        store = stores.get(blob.store)
        if store is None:
            report.findings.append(Finding(
                "unknown_store", f"blob {blob.key} is in store {blob.store}, which is not configured", False,
                subject=blob.key, store=blob.store,
            ))
            continue
        catalogued[blob.store].add(blob.key)
        used_by = "; ".join(users.get(blob.key, [])) or "no image"
        try:
            size = store.size(blob.key)
        except NotFound:
            report.findings.append(Finding(
                "missing_blob", f"blob {blob.key} is missing from store {store.name} (data of {used_by})", False,
                subject=blob.key, store=store.name,
            ))
            continue
        if size != blob.size:
            report.findings.append(Finding(
                "blob_size", f"blob {blob.key} is {size} bytes in store {store.name}, {blob.size} in the catalog"
                f" (data of {used_by})", False, subject=blob.key, store=store.name,
            ))
            continue
        if verify_data:
            to_verify.append((store, blob.key, used_by))
    if to_verify:
        with ThreadPoolExecutor(workers or min(4, os.cpu_count() or 1)) as pool:
            for (store, key, used_by), actual in zip(to_verify, pool.map(lambda v: _hash_blob(v[0], v[1]), to_verify)):
                report.verified += 1
                expected = key.split(":", 1)[1]
                if actual != expected:
                    report.findings.append(Finding(
                        "blob_hash", f"blob {key} in store {store.name} has wrong data: it hashes to {actual}"
                        f" (data of {used_by})", False, subject=key, store=store.name,
                    ))
    for name, store in stores.items():
        try:
            stored = set(store.list())
        except FileNotFoundError:
            stored = set()  # a store no blob was ever put in
        for key in sorted(stored - catalogued[name]):
            report.findings.append(Finding(
                "orphan_blob", f"blob {key} in store {name} is referenced by no image", True, subject=key, store=name,
            ))
        for temp in store.leftovers():
            report.findings.append(Finding(
                "store_temp", f"temp file {temp} left in store {name} by an unfinished put", True,
                subject=temp, store=name,
            ))
    if staging_dir is not None and staging_dir.exists():
        uploading = {image.id for image in images if image.status in STAGING}
        for entry in sorted(os.listdir(staging_dir)):
            if entry not in uploading:
                report.findings.append(Finding(
                    "stale_staging", f"staged file {staging_dir / entry} belongs to no upload in flight", True,
                    subject=entry,
                ))
    return report


def _hash_blob(store: BlobStore, key: str) -> str:
    """The hex digest of a blob's bytes with the algorithm its key names."""
    algorithm = key.split(":", 1)[0]
    hasher = hashlib.new(algorithm)
    reader = store.open_reader(key)
    try:
        offset = 0
        while chunk := reader.read(offset, HASH_CHUNK):
            hasher.update(chunk)
            offset += len(chunk)
    finally:
        reader.close()
    return hasher.hexdigest()


def repair(
    catalog: Catalog, stores: BlobStore | Iterable[BlobStore], report: Report, *, staging_dir: Path | None = None,
) -> Report:
    """Fix what is safe to fix, marking those findings repaired; the library must not be mounted.

    Refcounts first: a blob nothing references leaves the catalog, then its file is freed
    (catalog before store, as the daemon deletes). Missing or wrong data is left reported.
    """
    stores = _stores(stores)
    refcounts = [f for f in report.findings if f.kind == "refcount"]
    if refcounts:
        for blob in catalog.repair_refcounts():
            store = stores.get(blob.store)
            if store is not None:
                try:
                    store.delete(blob.key)
                except NotFound:
                    pass
                except (ImageFSError, OSError) as e:
                    log.warning("blob %s: delete failed: %s", blob.key, e)
        for finding in refcounts:
            finding.repaired = True
    for finding in report.findings:
        if not finding.repairable or finding.repaired:
            continue
        try:
            if finding.kind == "orphan_blob":
                stores[finding.store].delete(finding.subject)
            elif finding.kind == "store_temp":
                stores[finding.store].remove_leftover(finding.subject)
            elif finding.kind == "stale_staging":
                try:
                    os.unlink(staging_dir / finding.subject)
                except FileNotFoundError:
                    pass
            else:
                continue
        except NotFound:
            pass  # gone already: nothing left to fix
        except (ImageFSError, OSError) as e:
            finding.repair_error = str(e)
            continue
        finding.repaired = True
    # What repair changed must itself be consistent: the catalog's side again (cheap).
    known = {f.message for f in report.findings if not f.repaired}
    for violation in catalog.violations():
        if violation.message not in known:
            report.findings.append(Finding(
                violation.kind, f"after repair: {violation.message}", False, subject=violation.key,
            ))
    return report


def library_stores(config: Config, catalog: Catalog) -> list[BlobStore]:
    """The default store and every configured store the catalog has blobs in, each probed with the
    marker the catalog recorded for it: StoreUnavailable if one is not there (rather than reporting
    all its blobs missing)."""
    names = {config.default_store} | {blob.store for blob in catalog.blobs() if blob.store in config.stores}
    stores = []
    for name in sorted(names):
        store = open_store(config.stores[name])
        store.marker = catalog.store_marker(name)
        if store.marker is not None:
            store.probe()
        stores.append(store)
    return stores


def check_library(config: Config, *, verify_data: bool = False) -> Report:
    catalog = Catalog(config.catalog_path, readonly=True)
    try:
        return check(
            catalog, library_stores(config, catalog), staging_dir=config.staging_path, verify_data=verify_data,
        )
    finally:
        catalog.close()
