"""Uploads in flight: their staged files, their finalize, and what keeps finalize and blob deletion apart.

The tree decides *when* (last close of a writer, rsync's rename, unlink);
this module does the work. Finalize runs as a background task: the digests and
the format detection (streamed, or one pass over the staged file), the
pipeline's named steps (imports: verify_declared, inspect, store_data), then
one catalog transaction that references the blob and makes the image active,
or kills it with the failing step's reason.

Blobs are shared by content, so an upload that finalizes while an identical
blob is being freed must not reference a file about to disappear: finalize
(from store put to catalog commit) and the deletion of one key hold the same
per-key lock, and deletion re-checks the catalog under it.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from contextlib import asynccontextmanager

import trio

from .catalog import Catalog, Image
from .config import Config
from .crashpoints import crash_point
from .errors import ImageFSError, NotFound, UploadRejected
from .health import StoreHealth
from .imports import FinalizeContext, Pipeline
from .lifecycle import UPLOADING, Status
from .signing import HASH_METHOD, hash_method_name
from .staging import StagedUpload, StagingQuota
from .store import blob_key

log = logging.getLogger(__name__)

DELIVERY_GRACE = 30.0  # seconds a writer's process still finds its finalized upload in incoming/


class Uploads:
    def __init__(self, config: Config, catalog: Catalog, healths: dict[str, StoreHealth], spawn: Callable):
        self.config = config
        self.catalog = catalog
        self.healths = healths  # every store by name; new data goes to the default one
        self.health = healths[config.default_store]
        self.store = self.health.store
        self.spawn = spawn
        self.quota = StagingQuota(config.staging_quota_mib << 20)
        self.pipeline = Pipeline()
        self.staged: dict[int, StagedUpload] = {}  # image seq -> its staged upload
        self._finalizing: dict[int, tuple[str, trio.Event]] = {}
        self._delivered: dict[str, tuple[int, frozenset[int], float]] = {}
        self._blob_locks: dict[str, trio.Lock] = {}
        config.staging_path.mkdir(parents=True, exist_ok=True)

    def recover_interrupted(self) -> list[Image]:
        """Uploads cut off by a crash or an unclean stop: killed with reason "interrupted"."""
        killed = []
        for image in self.catalog.images([Status.SAVING, Status.IMPORTING]):
            killed.append(self.catalog.change_status(image.seq, Status.KILLED, actor="imagefs", reason="interrupted"))
            log.warning("image %s (%s): upload interrupted, killed", image.id, image.name)
        keep = {image.id for image in self.catalog.images([Status.QUEUED])}
        for staged in self.config.staging_path.iterdir():
            if staged.name not in keep:
                staged.unlink()
        return killed

    def staged_for(self, image: Image) -> StagedUpload:
        upload = self.staged.get(image.seq)
        if upload is None:
            upload = StagedUpload(
                self.config.staging_path / image.id, self.config.hash_algorithm,
                flush_every=self.config.flush_every_mib << 20, zero_holes=self.config.zero_chunks_as_holes,
                spawn=self.spawn, quota=self.quota,
            )
            self.staged[image.seq] = upload
            self.property_declared(image, HASH_METHOD, self.catalog.properties(image.seq).get(HASH_METHOD))
        return upload

    def property_declared(self, image: Image, name: str, value: str | None) -> None:
        """A property was set on an upload: a signature hash method declared before the data
        streams joins md5 and os_hash in the same pass (verify_signature hashes the file otherwise)."""
        algorithm = hash_method_name(value) if name == HASH_METHOD else None
        upload = self.staged.get(image.seq)
        if algorithm is None or upload is None:
            return
        if upload.stream_digest(algorithm):
            log.debug("image %s (%s): %s streams with the upload", image.id, image.name, algorithm)
        else:
            log.info("image %s (%s): %s declared after the data began: hashed at finalize",
                     image.id, image.name, value)

    def is_finalizing(self, seq: int) -> bool:
        return seq in self._finalizing

    async def settle(self, name: str | None = None) -> None:
        """Wait for finalizes already under way (of `name`, or all): close() returns before
        the kernel's release reaches us, so a listing or lookup right after cp waits here."""
        for final_name, event in list(self._finalizing.values()):
            if name is None or name == final_name:
                await event.wait()

    def delivered_to(self, name: str, pid: int) -> int | None:
        """The image (seq) process `pid` itself just delivered as incoming/<name>, within the grace period.

        `rsync --inplace` closes the file, then stats and chmods/utimes it by
        path; by then finalize has moved it out of incoming/. For a while the
        writer's own process still finds it there.
        """
        delivered = self._delivered.get(name)
        if delivered is None:
            return None
        seq, pids, deadline = delivered
        if time.monotonic() > deadline:
            del self._delivered[name]
            return None
        return seq if pid in pids else None

    def start_finalize(self, image: Image, upload: StagedUpload) -> None:
        # Marked before any await: a lookup that arrives after this release must wait for it.
        self._finalizing[image.seq] = (image.name, trio.Event())
        self.spawn(self._finalize, image.seq, upload)

    async def _finalize(self, seq: int, upload: StagedUpload) -> None:
        try:
            image = self.catalog.image(seq)
            try:
                digests, detection = await upload.finish()
                upload.close()
                key = blob_key(digests.os_hash_algo, digests.os_hash_value)
                async with self._exclusive(key):
                    health = self._store_for(key)
                    ctx = FinalizeContext(
                        image, self.catalog.properties(seq), upload.path, upload.size, digests, health.store,
                        detection=detection, config=self.config, store_call=health.call,
                    )
                    await self.pipeline.run(ctx)
                    crash_point("finalize.stored")
                    image = self.catalog.activate(
                        seq, blob_key=ctx.blob_key, store=health.store.name, actor="imagefs",
                        properties=ctx.new_properties, size=ctx.size, checksum=digests.checksum,
                        os_hash_algo=digests.os_hash_algo, os_hash_value=digests.os_hash_value, **ctx.updates,
                    )
                    crash_point("finalize.activated")
            except UploadRejected as e:
                self._kill(image, upload, str(e))
                return
            except Exception as e:
                log.exception("image %s (%s): finalize failed", image.id, image.name)
                self._kill(image, upload, f"internal error: {e!r}")
                return
            log.info("image %s (%s): active, %d bytes, %s", image.id, image.name, image.size, image.os_hash_value)
        finally:
            upload.discard()  # the staged file's quota back (the store took the file, or it was killed)
            self.staged.pop(seq, None)
            name, event = self._finalizing.pop(seq)
            self._remember_delivery(name, seq, upload.writer_pids)
            event.set()

    def _store_for(self, key: str) -> StoreHealth:
        """Where finalize puts data: the store that already holds these bytes (one blob per
        content, whichever store it is in), else the default store."""
        existing = self.catalog.blob(key)
        if existing is None:
            return self.health
        if existing.store not in self.healths:
            raise UploadRejected(f"the same data is stored in store {existing.store}, which is not configured")
        return self.healths[existing.store]

    def _kill(self, image: Image, upload: StagedUpload, reason: str) -> None:
        upload.discard()
        self.catalog.change_status(image.seq, Status.KILLED, actor="imagefs", reason=reason)
        log.warning("image %s (%s): killed: %s", image.id, image.name, reason)

    def _remember_delivery(self, name: str, seq: int, pids) -> None:
        now = time.monotonic()
        # Oldest first (re-inserted names move to the end), so expired entries are a prefix.
        while self._delivered:
            oldest = next(iter(self._delivered))
            if self._delivered[oldest][2] > now:
                break
            del self._delivered[oldest]
        self._delivered.pop(name, None)
        self._delivered[name] = (seq, frozenset(pids), now + DELIVERY_GRACE)

    def abandon(self, image: Image, actor: str) -> None:
        """unlink before finalize: the image is killed and its staged data freed at once."""
        upload = self.staged.pop(image.seq, None)
        if upload is not None:
            upload.abandoned = True
            upload.discard()
        self.catalog.change_status(
            image.seq, Status.KILLED, actor=actor, reason="upload abandoned: unlinked before finalize"
        )
        log.info("image %s (%s): upload abandoned by %s", image.id, image.name, actor)

    def kill_upload(self, seq: int, reason: str, *, error: OSError | None = None) -> None:
        """An upload that cannot go on (its staging failed, the store is gone): killed now, its
        staged data freed; later writes of its writers fail with `error` (EIO by default)."""
        upload = self.staged.pop(seq, None)
        if upload is not None:
            upload.error = error or OSError(errno.EIO, reason)
            upload.abandoned = True
            upload.discard()
        image = self.catalog.image(seq)
        if image.status in UPLOADING:
            self.catalog.change_status(seq, Status.KILLED, actor="imagefs", reason=reason)
            log.warning("image %s (%s): killed: %s", image.id, image.name, reason)

    def kill_in_flight(self, reason: str) -> None:
        """The store failed: every upload still receiving data is killed (those finalizing give
        up in their store call and are killed by it)."""
        for seq in [seq for seq in self.staged if seq not in self._finalizing]:
            self.kill_upload(seq, reason)

    def free_blob(self, key: str, store: str) -> None:
        """The catalog dropped the last reference to `key`: remove it from its store (in the background)."""
        self.spawn(self._delete_blob, key, store)

    async def free_orphan(self, key: str) -> None:
        """Free a blob of the default store the catalog does not know (left by a crash),
        unless an upload references it by now."""
        await self._delete_blob(key, self.store.name)

    async def _delete_blob(self, key: str, store: str) -> None:
        async with self._exclusive(key):
            if self.catalog.blob(key) is not None:
                return  # referenced again by an upload that finalized first
            try:
                await trio.to_thread.run_sync(self.catalog.sync_committed)  # the delete's commit outlives a power cut
                crash_point("delete.freeing")
                health = self.healths.get(store)
                if health is None:
                    raise NotFound(f"store {store} is not configured")
                await health.call(health.store.delete, key)
            except (NotFound, ImageFSError, OSError) as e:  # an orphan blob; fsck finds and frees it
                log.warning("blob %s: delete failed: %s", key, e)

    @asynccontextmanager
    async def _exclusive(self, key: str):
        lock = self._blob_locks.setdefault(key, trio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                self._blob_locks.pop(key, None)
