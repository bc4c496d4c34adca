"""Is the store really there? Its marker, the periodic probe, and store calls with time-outs.

SPEC §8: when a store's mount point is missing or fails, the library turns
read-only by itself and back when the store returns. The probe (BlobStore.probe:
the marker file, the mount point, a read-only filesystem) runs every
probe_interval and at once after any store error; a probe that does not answer
within the store's timeout counts as a failure too ("hung"), and while the store
is hung its data fails fast with EIO instead of tying up a worker thread each.

Every store call goes through `call`: in a worker thread under the store's own
limiter, cancelled (the thread abandoned) after the timeout or, for long calls
such as put, as soon as the store is seen failing. One hung store therefore
never blocks the event loop: listings, getfattr and reads of data that is still
reachable go on.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

import trio

from .catalog import Catalog
from .config import StoreConfig
from .errors import ImageFSError, StoreUnavailable
from .store import BlobStore

log = logging.getLogger(__name__)


class StoreHealth:
    def __init__(self, store: BlobStore, catalog: Catalog, config: StoreConfig,
                 on_change: Callable[[str | None], None] = lambda failure: None):
        self.store = store
        self.catalog = catalog
        self.interval = config.probe_interval
        self.timeout = config.timeout
        self.on_change = on_change  # called with the failure's reason, or None when the store is back
        self.failure: str | None = None
        self.hung = False  # the failure is a time-out: the store's data fails fast
        self.failed_at = 0.0
        self._failed = trio.Event()  # set while the store is failing: long calls give up
        self._wake = trio.Event()
        self._probe_limiter = trio.CapacityLimiter(1)  # a hung probe holds it; no second one piles up
        self._new_marker = str(uuid.uuid4())

    # --- probing -----------------------------------------------------------
    async def check(self) -> None:
        """One probe (first giving the store this library's marker); updates the state."""
        try:
            if self._probe_limiter.borrowed_tokens:
                raise trio.TooSlowError  # the last probe has not come back
            with trio.fail_after(self.timeout):
                if self.store.marker is None:
                    await self._attach()
                await trio.to_thread.run_sync(self.store.probe, limiter=self._probe_limiter, abandon_on_cancel=True)
        except trio.TooSlowError:
            self._fail(f"store {self.store.name} did not answer within {self.timeout:g} s", hung=True)
        except (ImageFSError, OSError) as e:
            self._fail(f"store {self.store.name}: {getattr(e, 'strerror', None) or e}", hung=False)
        else:
            self._recover()

    async def _attach(self) -> None:
        marker = self.catalog.store_marker(self.store.name)
        if marker is not None:
            self.store.marker = marker
            return
        # One new marker per daemon: an initialise that timed out and later finished in its
        # abandoned thread wrote this same one, so the retry finds its own marker there.
        marker = self._new_marker
        await trio.to_thread.run_sync(self.store.initialise, marker, limiter=self._probe_limiter,
                                      abandon_on_cancel=True)
        self.catalog.set_store_marker(self.store.name, marker)
        log.info("store %s initialised (marker %s)", self.store.name, marker)

    def _fail(self, reason: str, *, hung: bool) -> None:
        self.hung = hung
        if self.failure == reason:
            return
        if self.failure is None:
            self.failed_at = time.monotonic()
        self.failure = reason
        self._failed.set()
        log.error("%s: read-only", reason)
        self.on_change(reason)

    def _recover(self) -> None:
        if self.failure is None:
            return
        log.warning("store %s is back after %.1f s: read-write", self.store.name, time.monotonic() - self.failed_at)
        self.failure, self.hung = None, False
        self._failed = trio.Event()
        self.on_change(None)

    def wake(self) -> None:
        """A store call failed: probe now rather than at the next interval."""
        self._wake.set()

    async def serve(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            with trio.move_on_after(self.interval):
                await self._wake.wait()
            self._wake = trio.Event()
            await self.check()

    # --- store calls -------------------------------------------------------
    async def call(self, fn, *args, timeout: float | None = -1.0):
        """fn(*args) in a worker thread under the store's limiter.

        timeout: seconds (default: the store's), or None for calls as long as their data
        (put), which give up only when the store is seen failing. Errors wake the probe.
        """
        if self.hung:
            raise StoreUnavailable(self.failure)
        limit = self.timeout if timeout == -1.0 else timeout
        try:
            if limit is None:
                return await self._until_failure(fn, *args)
            with trio.fail_after(limit):
                return await self._thread(fn, *args)
        except trio.TooSlowError:
            self.wake()
            raise StoreUnavailable(f"store {self.store.name} did not answer within {limit:g} s") from None
        except (ImageFSError, OSError):
            self.wake()
            raise

    async def _thread(self, fn, *args):
        return await trio.to_thread.run_sync(fn, *args, limiter=self.store.limiter, abandon_on_cancel=True)

    async def _until_failure(self, fn, *args):
        """fn in a thread, given up (the thread abandoned) as soon as the store is seen failing."""
        result, error, done = None, None, False
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_when, self._failed, nursery.cancel_scope)
            try:
                result, done = await self._thread(fn, *args), True
            except Exception as e:  # raised below, not wrapped in the nursery's exception group
                error = e
            nursery.cancel_scope.cancel()
        if error is not None:
            raise error
        if not done:
            raise StoreUnavailable(self.failure or f"store {self.store.name} failed")
        return result


async def _cancel_when(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
