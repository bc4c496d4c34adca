"""Recovery after an unclean stop: what a killed daemon can leave outside the catalog.

The order of writes (README, "Crash consistency and fsck") makes the catalog
always right and the store at worst a superset of it: a crash mid-put leaves
a temp file in the store's tmp/, a crash between a blob's rename and the
catalog commit (or between a delete's commit and the unlink) leaves an orphan
blob. Uploads in flight are killed as "interrupted" at every mount
(Uploads.recover_interrupted); this module cleans the store's side, and only
when the previous daemon did not stop cleanly: a marker file in the data dir
is written at mount and removed at a clean unmount. The work runs in the
background (store walks in worker threads), so the mount answers at once;
an orphan is freed under the same per-key lock as any blob deletion, so an
upload finalizing the same content meanwhile keeps its blob.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from .errors import ImageFSError
from .store.local import fsync_dir

log = logging.getLogger(__name__)

MARKER = "imagefs.running"


class CrashRecovery:
    def __init__(self, data_dir: Path):
        self.path = data_dir / MARKER
        self.unclean = False  # the marker was there: the previous daemon did not stop cleanly
        self.done = False

    def begin(self, nursery, tree) -> None:
        """Write the marker; after an unclean stop, start cleaning the store in the background."""
        self.unclean = self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, f"imagefs pid {os.getpid()}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self.path.parent)
        if self.unclean:
            log.warning("the previous daemon did not stop cleanly: cleaning the store in the background")
            nursery.start_soon(self._recover, tree, time.time_ns())
        else:
            self.done = True

    def end(self) -> None:
        """A clean stop: remove the marker, unless the recovery did not finish (the next mount redoes it)."""
        if self.done:
            self.path.unlink(missing_ok=True)

    async def _recover(self, tree, started_ns: int) -> None:
        try:
            await self._clean_store(tree, started_ns)
        except (ImageFSError, OSError) as e:  # the store is failing: the next mount tries again
            log.warning("recovery after an unclean stop failed, retried at the next mount: %s", e)

    async def _clean_store(self, tree, started_ns: int) -> None:
        if tree.health.failure is not None:
            raise ImageFSError(tree.health.failure)
        store, call = tree.store, tree.health.call  # worker threads, under the store's limiter
        # Temp files older than this mount: ours, if any, belong to puts under way.
        leftovers = await call(store.leftovers, started_ns, timeout=None)
        for name in leftovers:
            await call(store.remove_leftover, name)
            log.info("store %s: removed temp file %s left by the crash", store.name, name)
        keys = await call(lambda: list(store.list()), timeout=None)
        catalogued = {blob.key for blob in tree.catalog.blobs() if blob.store == store.name}
        orphans = [key for key in keys if key not in catalogued]
        for key in orphans:
            await tree.uploads.free_orphan(key)
        log.info(
            "recovery after an unclean stop done: %d temp files removed, %d orphan blobs freed",
            len(leftovers), len(orphans),
        )
        self.done = True

