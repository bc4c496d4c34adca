"""The imagefs command: mount/umount edge cases, list, show, status."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from conftest import Library, imagefs, run, wait_for

pytestmark = pytest.mark.fuse


def _running(pid: int) -> bool:
    """Alive and not a zombie (an exited daemon waits for init to reap it)."""
    try:
        state = open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_mount_refuses_a_missing_mountpoint(tmp_path):
    result = imagefs("mount", tmp_path / "nowhere", "--data-dir", tmp_path / "data", check=False)
    assert result.returncode == 3
    assert "does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_mount_refuses_a_mountpoint_that_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    result = imagefs("mount", tmp_path / "file", "--data-dir", tmp_path / "data", check=False)
    assert result.returncode == 3
    assert "not a directory" in result.stderr


def test_mount_refuses_an_imagefs_mount_and_a_second_daemon_on_one_data_dir(library, tmp_path):
    again = imagefs("mount", library.mnt, "--data-dir", tmp_path / "other", check=False)
    assert again.returncode == 3
    assert "already an imagefs mount" in again.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    second = imagefs("mount", elsewhere, "--data-dir", library.data, check=False)
    assert second.returncode == 3
    assert "in use by imagefs pid" in second.stderr
    assert not os.path.ismount(elsewhere)


def test_mount_refuses_a_busy_mountpoint(tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    run("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", busy)
    try:
        result = imagefs("mount", busy, "--data-dir", tmp_path / "data", check=False)
        assert result.returncode == 3
        assert "busy" in result.stderr and "tmpfs" in result.stderr
    finally:
        run("umount", busy)


def test_umount_of_something_else_is_refused(tmp_path):
    result = imagefs("umount", tmp_path, check=False)
    assert result.returncode == 3
    assert "not an imagefs mount" in result.stderr


def test_a_killed_daemon_leaves_a_stale_mount_that_mount_recovers(tmp_path):
    lib = Library(tmp_path)
    lib.mount()
    try:
        source = tmp_path / "a.raw"
        source.write_bytes(os.urandom(1 << 20))
        assert lib.upload(source).exists()  # the lookup waits for its finalize
        # An upload in flight when the daemon dies: it must end killed as "interrupted".
        writer = open(lib.mnt / "incoming" / "partial.raw", "wb")
        writer.write(b"x" * 4096)
        writer.flush()
        pid = int(os.getxattr(lib.mnt, "user.imagefs.pid"))
        os.kill(pid, signal.SIGKILL)
        assert wait_for(lambda: not os.path.exists(f"/proc/{pid}"))
        with pytest.raises(OSError) as stale:
            os.listdir(lib.mnt)
        assert stale.value.errno == 107  # ENOTCONN: Transport endpoint is not connected
        try:
            writer.close()
        except OSError:
            pass
        lib.mount()  # detects the stale mount, unmounts it, mounts anew
        assert (lib.mnt / "active" / "a.raw").read_bytes() == source.read_bytes()
        killed = lib.mnt / "killed" / "partial.raw"
        assert os.getxattr(killed, "user.imagefs.reason") == b"interrupted"
        assert os.listdir(lib.data / "staging") == []
    finally:
        lib.force_unmount()
    lib.check()


def test_list_show_and_status(library, tmp_path):
    source = tmp_path / "cirros.raw"
    source.write_bytes(os.urandom(300_000))
    active = library.upload(source)
    run("setfattr", "-n", "user.image.os_distro", "-v", "cirros", active)
    image_id = library.attr(active, "id")

    listing = imagefs("list", "--data-dir", library.data).stdout
    row = next(line for line in listing.splitlines() if image_id in line)
    assert "cirros.raw" in row and "active" in row and "300000" in row

    shown = imagefs("show", "cirros.raw", "--data-dir", library.data, "--history").stdout
    fields = {}
    for line in shown.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 2:
            fields[cells[0]] = cells[1]
    assert fields["id"] == image_id
    assert fields["os_distro"] == "cirros"
    assert fields["os_hash_value"] == library.attr(active, "os_hash_value")
    assert "queued" in shown and "saving" in shown  # the history table

    by_id = imagefs("show", image_id, "--data-dir", library.data).stdout
    assert "cirros.raw" in by_id
    missing = imagefs("show", "nope", "--data-dir", library.data, check=False)
    assert missing.returncode == 1 and "no image" in missing.stderr

    status = imagefs("status", "--data-dir", library.data).stdout
    assert f"{library.mnt}  read-write" in status
    assert "active 1" in status


def test_umount_waits_for_the_daemon_and_mount_keeps_everything(library, tmp_path):
    source = tmp_path / "disk.raw"
    source.write_bytes(os.urandom(1 << 20))
    active = library.upload(source)
    before = library.xattrs(active)
    pid = int(os.getxattr(library.mnt, "user.imagefs.pid"))
    library.umount()
    assert not _running(pid)
    assert not os.path.ismount(library.mnt)
    library.mount()
    assert library.xattrs(active) == before


def test_foreground_mount_stops_cleanly_on_sigterm(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    daemon = subprocess.Popen(
        [sys.executable, "-m", "imagefs", "mount", str(mnt), "--foreground",
         "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        assert wait_for(lambda: os.path.ismount(mnt))
        assert wait_for(lambda: os.path.isdir(mnt / "active"))
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
        assert not os.path.ismount(mnt)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)])
