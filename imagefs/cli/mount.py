"""imagefs mount / umount / status."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import click

from .. import daemon
from ..catalog import Catalog
from ..errors import ImageFSError, MountError
from ..mounts import mount_table
from . import main
from .options import library_options, read_config

READY_TIMEOUT = 60.0
UMOUNT_TIMEOUT = 120.0


@main.command()
@click.argument("mountpoint", type=click.Path(path_type=Path, readable=False))
@library_options
@click.option("--foreground", is_flag=True, help="Stay in the foreground, logging to stderr (systemd uses this).")
@click.option("--ready-fd", type=int, default=None, hidden=True)
def mount(mountpoint: Path, config_path, data_dir, foreground: bool, ready_fd: int | None) -> None:
    """Mount the image library at MOUNTPOINT; returns once the mount answers."""
    config = read_config(config_path, data_dir)
    if foreground:
        _run_daemon(config, mountpoint, ready_fd)
        return
    daemon.check_mountpoint(mountpoint)  # fail fast, in the caller's terminal
    config.data_dir.mkdir(parents=True, exist_ok=True)
    log_path = config.data_dir / "imagefs.log"
    read_end, write_end = os.pipe()
    args = [sys.executable, "-m", "imagefs", "mount", str(mountpoint), "--foreground", "--ready-fd", str(write_end)]
    if config_path:
        args += ["--config", str(config_path)]
    args += ["--data-dir", str(config.data_dir)]
    with open(log_path, "ab") as log_file:
        child = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, pass_fds=[write_end],
            start_new_session=True,
        )
    os.close(write_end)
    message = _read_all(read_end, child)
    if message.startswith("READY"):
        click.echo(f"imagefs mounted at {mountpoint} (pid {child.pid}, log {log_path})")
        return
    if message.startswith("ERROR "):
        _, code, text = message.split(" ", 2)
        click.echo(f"imagefs: {text}", err=True)
        sys.exit(int(code))
    child.poll()
    raise MountError(f"the daemon did not start (exit status {child.returncode}); see {log_path}")


def _read_all(fd: int, child: subprocess.Popen) -> str:
    deadline = time.monotonic() + READY_TIMEOUT
    chunks = []
    with os.fdopen(fd, "rb") as pipe:
        os.set_blocking(fd, False)
        while time.monotonic() < deadline:
            try:
                data = pipe.read()
            except BlockingIOError:
                data = None
            if data:
                chunks.append(data)
                if b"\n" in data:
                    break
            elif data == b"":
                break  # the daemon closed the pipe: it exited
            time.sleep(0.02)
    return b"".join(chunks).decode(errors="replace").strip()


def _run_daemon(config, mountpoint: Path, ready_fd: int | None) -> None:
    def ready():
        if ready_fd is not None:
            os.write(ready_fd, b"READY\n")
            os.close(ready_fd)

    logging.getLogger().setLevel(logging.INFO)
    try:
        daemon.run(config, mountpoint, ready=ready)
    except ImageFSError as e:
        if ready_fd is not None:
            try:
                os.write(ready_fd, f"ERROR {e.exit_code} {e}\n".encode())
            except OSError:
                pass
        raise


@main.command()
@click.argument("mountpoint", type=click.Path(path_type=Path, readable=False))
def umount(mountpoint: Path) -> None:
    """Unmount cleanly: waits until uploads being finalized are done and the daemon has exited."""
    mountpoint = Path(os.path.abspath(mountpoint))
    if not mountpoint.exists() and not os.path.ismount(mountpoint):
        raise MountError(f"{mountpoint} does not exist")
    if daemon.mounted_fstype(mountpoint) != daemon.FSTYPE:
        raise MountError(f"{mountpoint} is not an imagefs mount")
    if not daemon.answers(mountpoint):  # the daemon died: only the kernel's mount is left
        daemon.fusermount_unmount(mountpoint, lazy=True)
        click.echo(f"unmounted stale mount {mountpoint}")
        return
    pid = int(os.getxattr(mountpoint, "user.imagefs.pid"))
    result = daemon.fusermount_unmount(mountpoint)
    if result.returncode != 0:
        raise MountError(f"cannot unmount {mountpoint}: {result.stderr.strip() or 'busy'}")
    deadline = time.monotonic() + UMOUNT_TIMEOUT
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _running(pid):
        raise MountError(f"{mountpoint} is unmounted but the daemon (pid {pid}) has not exited yet")
    click.echo(f"unmounted {mountpoint}")


def _running(pid: int) -> bool:
    """Whether the process still runs: an exited daemon not yet reaped by its parent (the
    container's init, a subreaper) is a zombie, and done."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _mounts() -> list[Path]:
    return [Path(mount_point) for mount_point, fstype in mount_table() if fstype == daemon.FSTYPE]


def _free_bytes(path: Path, timeout: float = 2.0) -> str:
    """Free space of the store's filesystem, without hanging on a share that does not answer."""
    answer: list = []
    thread = threading.Thread(target=lambda: answer.append(os.statvfs(path)), daemon=True)
    thread.start()
    thread.join(timeout)
    if not answer:
        return f"free space unknown ({path} did not answer within {timeout:g} s, or is missing)"
    return f"{answer[0].f_bavail * answer[0].f_frsize} bytes free"


@main.command()
@library_options
def status(config_path, data_dir) -> None:
    """Mounts on this host, their mode, and the library's images and store."""
    config = read_config(config_path, data_dir)
    mounts = _mounts()
    for mp in mounts:
        try:
            mode = os.getxattr(mp, "user.imagefs.mode").decode()
            pid = os.getxattr(mp, "user.imagefs.pid").decode()
            where = os.getxattr(mp, "user.imagefs.data_dir").decode()
            click.echo(f"mount:   {mp}  {mode}  (pid {pid}, data dir {where})")
        except OSError as e:
            click.echo(f"mount:   {mp}  not answering: {e.strerror}")
    if not mounts:
        click.echo("mount:   none on this host")
    if not config.catalog_path.exists():
        click.echo(f"catalog: none yet at {config.catalog_path}")
        return
    catalog = Catalog(config.catalog_path, readonly=True)
    try:
        counts = catalog.counts()
        blobs = catalog.blobs()
    finally:
        catalog.close()
    summary = ", ".join(f"{s} {n}" for s, n in sorted(counts.items())) or "none"
    click.echo(f"catalog: {config.catalog_path}")
    click.echo(f"images:  {summary}")
    for store in config.stores.values():
        held = [b for b in blobs if b.store == store.name]
        if held or store.name == config.default_store:
            default = " (default)" if store.name == config.default_store else ""
            click.echo(
                f"store:   {store.name}{default} ({store.type} {store.path}): {len(held)} blobs, "
                f"{sum(b.size for b in held)} bytes; {_free_bytes(store.path)}"
            )
