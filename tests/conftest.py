"""Shared fixtures: a real imagefs mount driven by real programs, and the invariant check.

Tests that mount are marked `fuse`; they skip only where /dev/fuse or
fusermount3 is truly absent, and say so. Every mount is unmounted in the
fixture's teardown, also when the test failed, and the library's invariants
(the code `imagefs fsck` runs) are checked after every test that used it.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from imagefs.config import load_config
from imagefs.fsck import check_library

FUSE_MISSING = None
if not os.path.exists("/dev/fuse"):
    FUSE_MISSING = "/dev/fuse does not exist on this machine"
elif shutil.which("fusermount3") is None:
    FUSE_MISSING = "fusermount3 is not installed (Debian package fuse3)"
elif os.geteuid() != 0:
    FUSE_MISSING = "mount tests run as root (allow_other and admin operations)"


def pytest_collection_modifyitems(config, items):
    if FUSE_MISSING:
        skip = pytest.mark.skip(reason=f"no FUSE: {FUSE_MISSING}")
        for item in items:
            if "fuse" in item.keywords:
                item.add_marker(skip)


def imagefs(*args, check=True, **kwargs) -> subprocess.CompletedProcess:
    """Run the imagefs CLI as an operator would."""
    result = subprocess.run(
        [sys.executable, "-m", "imagefs", *map(str, args)], capture_output=True, text=True, **kwargs
    )
    if check and result.returncode != 0:
        raise AssertionError(f"imagefs {' '.join(map(str, args))} failed ({result.returncode}): {result.stderr}")
    return result


def run(*args, check=True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([*map(str, args)], capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({result.returncode}): {result.stderr}")
    return result


class Library:
    """One mounted library: its mount point, data dir and helpers to look at it."""

    def __init__(self, root: Path, config_text: str | None = None):
        self.root = root
        self.mnt = root / "mnt"
        self.data = root / "data"
        self.mnt.mkdir(parents=True)
        self.config_path = None
        if config_text is not None:
            self.config_path = root / "imagefs.toml"
            self.config_path.write_text(config_text)
        self.mounted = False

    @property
    def config(self):
        return load_config(self.config_path, self.data)

    def mount(self) -> None:
        extra = ["--config", self.config_path] if self.config_path else []
        imagefs("mount", self.mnt, "--data-dir", self.data, *extra)
        self.mounted = True

    def umount(self) -> None:
        imagefs("umount", self.mnt)
        self.mounted = False

    def remount(self) -> None:
        self.umount()
        self.mount()

    def force_unmount(self) -> None:
        if self.mounted or os.path.ismount(self.mnt):  # also a mount whose `imagefs mount` failed late
            result = imagefs("umount", self.mnt, check=False)
            if result.returncode != 0:
                subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], capture_output=True)
            self.mounted = False

    def path(self, status: str, name: str) -> Path:
        return self.mnt / status / name

    def xattrs(self, path: Path) -> dict[str, str]:
        return {n: os.getxattr(path, n).decode() for n in os.listxattr(path)}

    def attr(self, path: Path, field: str) -> str:
        return os.getxattr(path, f"user.image.{field}").decode()

    def upload(self, source: Path, name: str | None = None) -> Path:
        """cp into incoming/ and return the image's path in active/, once finalized.

        cp returns at close(), before the kernel's release reaches the daemon; a lookup
        of the name waits for that finalize, as an operator's ls would."""
        name = name or source.name
        run("cp", source, self.mnt / "incoming" / name)
        active = self.path("active", name)
        assert active.exists(), f"{name} is not active: {os.listdir(self.mnt / 'killed')}"
        return active

    def check(self) -> None:
        report = check_library(self.config)
        assert report.problems == [], report.problems
        assert report.orphans == [], report.orphans


@contextmanager
def mounted(lib: Library):
    """Mount, always unmount, then check the library's invariants."""
    try:
        lib.mount()
        yield lib
    finally:
        lib.force_unmount()
    lib.check()


@pytest.fixture
def library(tmp_path):
    with mounted(Library(tmp_path)) as lib:
        yield lib


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05):
    """Poll until predicate() is truthy (only for things that are asynchronous by design)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


# --- helpers for the real-mount tests (tests/test_mount_*.py) ------------------


def getfattr_dump(path) -> dict[str, str]:
    """Every user.* attribute of `path` as `getfattr -d` shows it (read hex-encoded, decoded here)."""
    out = run("getfattr", "-d", "-e", "hex", "--absolute-names", path).stdout
    attrs = {}
    for line in out.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.partition("=")
        attrs[name] = bytes.fromhex(value[2:]).decode() if value.startswith("0x") else value.strip('"')
    return attrs


def setfattr(path, name: str, value: str | None = None, *, remove: bool = False) -> subprocess.CompletedProcess:
    """`setfattr -n name -v value path` (or `-x name` with remove=True), not checked: the caller asserts.
    The value goes hex-encoded, so setfattr passes it byte for byte whatever it contains."""
    if remove:
        return run("setfattr", "-x", name, path, check=False)
    encoded = "0x" + value.encode().hex() if value else '""'
    return run("setfattr", "-n", name, "-v", encoded, path, check=False)


def assert_refused(result: subprocess.CompletedProcess, *errnos: int) -> None:
    """The command failed, and with (one of) the errno(s) given, as its message shows."""
    messages = [os.strerror(e) for e in errnos]
    if errno.ENODATA in errnos:
        messages.append("No such attribute")  # libattr's own wording (getfattr, setfattr)
    assert result.returncode != 0, f"{result.args} succeeded; expected {' or '.join(messages)}"
    assert any(m in result.stderr for m in messages), f"{result.args}: expected {messages}, got {result.stderr!r}"


def blob_files(lib: Library) -> list[Path]:
    """The data files of the local store: one per distinct content."""
    blobs = lib.data / "store" / "blobs"
    return sorted(p for p in blobs.rglob("*") if p.is_file()) if blobs.exists() else []


def staged_files(lib: Library) -> list[Path]:
    """What the staging directory holds (uploads in flight)."""
    staging = lib.data / "staging"
    return sorted(staging.iterdir()) if staging.exists() else []


def getfattr_value(path, name: str) -> str:
    """One attribute by name (`getfattr -n name --only-values`), also where listxattr hides it."""
    return run("getfattr", "-n", name, "--only-values", "--absolute-names", path).stdout
