"""The daemon's lifetime: check the mount point, lock the data dir, mount, serve, unmount.

One nursery holds every task of a mount (FUSE workers, finalizes, background
fsyncs); when the kernel unmounts or a signal arrives, in-flight finalizes
are waited for, then the catalog closes. Readiness is announced only once
the mount answers a stat(): to systemd (READY=1, Type=notify) and to the
`imagefs mount` parent through a pipe.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import signal
import socket
import subprocess
from pathlib import Path

import pyfuse3
import trio

from .catalog import Catalog
from .config import Config
from .errors import MountError
from .fuse_ops import FuseOperations, PyfuseKernelCache
from .mounts import mounted_fstype
from .recovery import CrashRecovery
from .store import open_store
from .tree import ImageTree

log = logging.getLogger(__name__)

FSTYPE = "fuse.imagefs"


def sd_notify(message: str) -> None:
    """systemd's notify protocol, without a dependency: one datagram to $NOTIFY_SOCKET."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall(message.encode())


def fusermount_unmount(path: Path, *, lazy: bool = False) -> subprocess.CompletedProcess:
    args = ["fusermount3", "-u", *(["-z"] if lazy else []), str(path)]
    return subprocess.run(args, capture_output=True, text=True)


def answers(path: Path) -> bool:
    """Whether the imagefs mounted at `path` has a live daemon (a stat may be served from cache)."""
    try:
        os.getxattr(path, "user.imagefs.pid")
        return True
    except OSError as e:
        if e.errno in (errno.ENOTCONN, errno.ECONNABORTED):
            return False
        raise


def check_mountpoint(path: Path) -> None:
    """Refuse a missing or busy mount point; recover one left stale by a killed daemon."""
    try:
        os.stat(path)
        stale = mounted_fstype(path) == FSTYPE and not answers(path)
    except FileNotFoundError:
        raise MountError(f"mount point {path} does not exist (create it with mkdir -p {path})") from None
    except OSError as e:
        if e.errno != errno.ENOTCONN:
            raise MountError(f"mount point {path}: {e.strerror}") from None
        stale = True
    if stale:
        log.warning("%s: stale mount left by a daemon that died; unmounting it", path)
        result = fusermount_unmount(path, lazy=True)
        if result.returncode != 0:
            raise MountError(f"{path} is a stale mount and could not be unmounted: {result.stderr.strip()}")
    if not os.path.isdir(path):
        raise MountError(f"mount point {path} is not a directory")
    fstype = mounted_fstype(path)
    if fstype == FSTYPE:
        raise MountError(f"{path} is already an imagefs mount (imagefs umount {path} first)")
    if fstype is not None:
        raise MountError(f"mount point {path} is busy: a {fstype} filesystem is mounted there")


class DataDirLock:
    """One daemon per data dir: an flock held for the daemon's life (released by the kernel if it dies)."""

    def __init__(self, data_dir: Path):
        self.path = data_dir / "imagefs.lock"
        self.fd = -1

    def acquire(self, mountpoint: Path | None = None, *, description: str | None = None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 4096, 0).decode(errors="replace").strip() or "another process"
            os.close(self.fd)
            raise MountError(f"data dir {self.path.parent} is in use by {holder}") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{description or f'imagefs pid {os.getpid()} mounted at {mountpoint}'}\n".encode(), 0)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def mount_options() -> set[str]:
    return {"fsname=imagefs", "subtype=imagefs", "allow_other", "noatime"}


def run(config: Config, mountpoint: Path, *, ready=lambda: None) -> None:
    """Mount and serve until unmounted; `ready()` is called once the mount answers."""
    mountpoint = Path(os.path.abspath(mountpoint))
    check_mountpoint(mountpoint)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    lock = DataDirLock(config.data_dir)
    lock.acquire(mountpoint)
    catalog = Catalog(config.catalog_path)
    try:
        stores = {name: open_store(store) for name, store in config.stores.items()}
        trio.run(_serve, config, catalog, stores, mountpoint, ready)
    finally:
        catalog.close()
        lock.release()


async def _serve(config, catalog, stores, mountpoint: Path, ready) -> None:
    async with trio.open_nursery() as nursery:
        tree = ImageTree(config, catalog, stores, spawn=nursery.start_soon, kernel=PyfuseKernelCache(nursery.start_soon))
        tree.recover_interrupted()
        recovery = CrashRecovery(config.data_dir)
        for health in tree.healths.values():  # read-only from the start if the default store is not there
            await health.check()
            await nursery.start(health.serve)
        recovery.begin(nursery, tree)  # after the probe: the store has its marker
        operations = FuseOperations(tree)
        pyfuse3.init(operations, str(mountpoint), mount_options())
        log.info("mounted %s (data dir %s, store %s, %s)", mountpoint, config.data_dir, tree.store.name, tree.mode)
        try:
            nursery.start_soon(_announce_ready, mountpoint, ready)
            nursery.start_soon(_stop_on_signals)
            await pyfuse3.main()
        finally:
            await tree.drain()
            recovery.end()
            pyfuse3.close(unmount=True)
            log.info("unmounted %s", mountpoint)
            nursery.cancel_scope.cancel()


async def _announce_ready(mountpoint: Path, ready) -> None:
    await trio.to_thread.run_sync(os.stat, mountpoint)
    sd_notify("READY=1")
    ready()


async def _stop_on_signals() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info("signal %d: unmounting", signum)
            sd_notify("STOPPING=1")
            pyfuse3.terminate()
            return
