"""Consistency of a library: the catalog's invariants plus the store's side of them.

The tests end every catalog-changing test with `check_library`, and
`imagefs fsck` runs the same code, so what the tests hold the product to is
what an operator can check on a host.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .catalog import Catalog
from .config import Config
from .errors import NotFound
from .store import BlobStore, open_store


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)  # damage: data referenced but missing or wrong
    orphans: list[str] = field(default_factory=list)  # blobs nothing references (safe to free)

    @property
    def clean(self) -> bool:
        return not self.problems and not self.orphans


def check(catalog: Catalog, store: BlobStore) -> Report:
    report = Report(problems=catalog.invariant_violations())
    catalogued = {blob.key: blob for blob in catalog.blobs() if blob.store == store.name}
    for key, blob in catalogued.items():
        try:
            size = store.size(key)
        except NotFound:
            report.problems.append(f"blob {key} is referenced but missing from store {store.name}")
            continue
        if size != blob.size:
            report.problems.append(f"blob {key} is {size} bytes in the store, {blob.size} in the catalog")
    report.orphans = sorted(set(store.list()) - set(catalogued))
    return report


def check_library(config: Config) -> Report:
    catalog = Catalog(config.catalog_path, readonly=True)
    try:
        return check(catalog, open_store(config.store))
    finally:
        catalog.close()
