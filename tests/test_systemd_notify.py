"""The systemd side of the daemon (systemd/imagefs.service, Type=notify), without systemd.

systemd binds a unix datagram socket, names it in $NOTIFY_SOCKET and, with
NotifyAccess=main, accepts READY=1 only from the main process: the one it
started. Here the test plays systemd: it binds the socket, starts
`imagefs mount --foreground` as the unit does, and reads the datagrams with
the sender's credentials, as systemd does.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Library

from imagefs.daemon import FSTYPE, mounted_fstype

TIMEOUT = 60.0
CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid


class NotifySocket:
    """systemd's end of $NOTIFY_SOCKET: datagrams and the pid that sent each."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)

    def receive(self, daemon: subprocess.Popen, log: Path) -> tuple[str, int]:
        """The next message and its sender's pid; fails if the daemon exits or stays silent."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(CREDENTIALS.size))
            except TimeoutError:
                if daemon.poll() is not None:
                    raise AssertionError(
                        f"the daemon exited ({daemon.returncode}) before notifying: {log.read_text()}"
                    ) from None
                continue
            pids = [CREDENTIALS.unpack(d)[0] for level, kind, d in ancillary
                    if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS)]
            return data.decode(), pids[0]
        raise AssertionError(f"no notification within {TIMEOUT}s: {log.read_text()}")

    def close(self) -> None:
        self.sock.close()


def start_daemon(lib: Library, notify: NotifySocket, log: Path) -> subprocess.Popen:
    """`imagefs mount MNT --foreground` as systemd runs ExecStart: its own process, no ready pipe."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "imagefs", "mount", str(lib.mnt), "--foreground", "--data-dir", str(lib.data)],
            env={**os.environ, "NOTIFY_SOCKET": str(notify.path)},
            stdin=subprocess.DEVNULL, stdout=out, stderr=out,
        )


@pytest.fixture
def notify(tmp_path):
    sock = NotifySocket(tmp_path / "notify")
    yield sock
    sock.close()


@pytest.mark.fuse
def test_ready_once_the_mount_answers_and_sigterm_unmounts(tmp_path, notify):
    lib = Library(tmp_path)
    log = tmp_path / "daemon.log"
    daemon = start_daemon(lib, notify, log)
    try:
        message, sender = notify.receive(daemon, log)
        # What systemd would see at READY=1: the main process said it, and /images is served.
        assert message == "READY=1"
        assert sender == daemon.pid
        assert mounted_fstype(lib.mnt) == FSTYPE
        assert "incoming" in os.listdir(lib.mnt)
        assert os.getxattr(lib.mnt, "user.imagefs.pid").decode() == str(daemon.pid)

        daemon.send_signal(signal.SIGTERM)  # systemctl stop, KillMode=mixed
        assert notify.receive(daemon, log) == ("STOPPING=1", daemon.pid)
        assert daemon.wait(timeout=TIMEOUT) == 0, log.read_text()
        assert mounted_fstype(lib.mnt) is None
        assert os.listdir(lib.mnt) == []
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        if mounted_fstype(lib.mnt) is not None:
            subprocess.run(["fusermount3", "-u", "-z", str(lib.mnt)], capture_output=True)
    lib.check()


def test_a_mount_that_fails_never_says_ready(tmp_path, notify):
    lib = Library(tmp_path)
    lib.mnt.rmdir()
    lib.mnt.write_text("a file, not a directory")
    log = tmp_path / "daemon.log"
    daemon = start_daemon(lib, notify, log)
    try:
        returncode = daemon.wait(timeout=TIMEOUT)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    assert returncode != 0  # systemd marks the unit failed (and Restart=on-failure retries)
    assert "not a directory" in log.read_text()
    with pytest.raises(TimeoutError):
        notify.sock.recv(4096)
