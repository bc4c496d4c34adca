"""Uploads cut off midway: rm of incoming/N while it is written, cp killed with SIGKILL."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import blob_files, getfattr_dump, getfattr_value, run, setfattr, staged_files, wait_for

pytestmark = pytest.mark.fuse

CHUNK = 1024 * 1024

# Writes one chunk per line read from stdin ("w"), answers "ok <total>" after each; "q" closes and exits.
WRITER = textwrap.dedent(
    """
    import os, sys
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    total = 0
    for line in sys.stdin:
        if line.strip() == "q":
            break
        total += os.write(fd, os.urandom(int(sys.argv[2])))
        print("ok", total, flush=True)
    os.close(fd)
    print("closed", flush=True)
    """
)


def _step(writer, command: str) -> str:
    writer.stdin.write(command + "\n")
    writer.stdin.flush()
    return writer.stdout.readline().strip()


def test_rm_of_incoming_midway_abandons_the_upload(library):
    incoming = library.mnt / "incoming" / "abandoned"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(incoming), str(CHUNK)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        for i in range(1, 4):
            assert _step(writer, "w") == f"ok {i * CHUNK}"
        assert getfattr_value(library.path("saving", "abandoned"), "user.image.status") == "saving"
        image_id = getfattr_value(incoming, "user.image.id")
        assert [image_id in p.name for p in staged_files(library)] == [True]  # its staged data, before the rm
        run("rm", incoming)
        assert not incoming.exists()
        # the writer goes on writing to its open file, then closes: nothing hangs
        assert _step(writer, "w") == f"ok {4 * CHUNK}"
        assert _step(writer, "q") == "closed"
        assert writer.wait(timeout=30) == 0, writer.stderr.read()
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    killed = library.path("killed", "abandoned")
    attrs = getfattr_dump(killed)
    assert attrs["user.image.status"] == "killed"
    assert attrs["user.image.id"] == image_id
    assert attrs["user.imagefs.reason"] == "upload abandoned: unlinked before finalize"
    assert staged_files(library) == []
    assert blob_files(library) == []
    for where in ("incoming", "saving", "active"):
        assert os.listdir(library.mnt / where) == []
    assert run("readlink", library.mnt / "by-id" / image_id).stdout.strip() == "../killed/abandoned"


def test_cp_killed_midway_with_a_declared_size_is_killed(library, tmp_path):
    full = 16 * CHUNK
    incoming = library.mnt / "incoming" / "partial"
    run("touch", incoming)
    assert setfattr(incoming, "user.image.size", str(full)).returncode == 0
    fifo = tmp_path / "slow-source"
    os.mkfifo(fifo)
    # cp reads the fifo as the source file's content; the feeder below decides how much arrives
    cp = subprocess.Popen(["cp", fifo, incoming], stderr=subprocess.PIPE)
    feeder = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(fifo), str(CHUNK)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        for i in range(1, 4):
            assert _step(feeder, "w") == f"ok {i * CHUNK}"
        assert wait_for(lambda: os.stat(incoming).st_size >= 3 * CHUNK), os.stat(incoming).st_size
        assert getfattr_value(library.path("saving", "partial"), "user.image.status") == "saving"
        cp.send_signal(signal.SIGKILL)
        assert cp.wait(timeout=30) == -signal.SIGKILL
    finally:
        for process in (cp, feeder):
            if process.poll() is None:
                process.kill()
            process.wait()
    killed = library.path("killed", "partial")
    assert wait_for(killed.exists)
    attrs = getfattr_dump(killed)
    assert attrs["user.image.status"] == "killed"
    assert "size" in attrs["user.imagefs.reason"] and str(full) in attrs["user.imagefs.reason"]
    assert os.listdir(library.mnt / "active") == []
    assert os.listdir(library.mnt / "incoming") == []
    assert staged_files(library) == []
    assert blob_files(library) == []
