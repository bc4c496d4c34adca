"""Mounting and unmounting with the CLI: a relative data dir; umount returns once the daemon has exited."""

import os
import subprocess
import sys
import textwrap

import pytest

from conftest import getfattr_dump, imagefs, run
from imagefs.config import load_config
from imagefs.fsck import check_library

pytestmark = pytest.mark.fuse

# Mounts from a child subreaper that reaps nothing until the end, as a container's init may do:
# the exited daemon stays a zombie under it while `imagefs umount` runs.
SUBREAPER = textwrap.dedent(
    """
    import ctypes, os, subprocess, sys
    assert ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    mnt, data = sys.argv[1:3]
    imagefs = [sys.executable, "-m", "imagefs"]
    subprocess.run([*imagefs, "mount", mnt, "--data-dir", data], check=True, capture_output=True)
    try:
        result = subprocess.run([*imagefs, "umount", mnt], capture_output=True, text=True, timeout=30)
        print(result.returncode, result.stdout.strip(), result.stderr.strip())
    except subprocess.TimeoutExpired:
        print("umount still waiting after 30 s")
        subprocess.run(["fusermount3", "-u", "-z", mnt])
    finally:
        while True:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break
    """
)


def test_umount_does_not_wait_for_the_daemon_to_be_reaped(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", SUBREAPER, str(mnt), str(tmp_path / "data")], capture_output=True, text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("0 unmounted"), result.stdout
    assert not mnt.is_mount()


def test_a_relative_data_dir_works_from_any_directory(tmp_path):
    """`imagefs mount mnt --data-dir data` from the directory holding both: paths shown are absolute."""
    (tmp_path / "mnt").mkdir()
    imagefs("mount", "mnt", "--data-dir", "data", cwd=tmp_path)
    try:
        (tmp_path / "src").write_bytes(b"relative" * 1000)
        run("cp", tmp_path / "src", tmp_path / "mnt" / "incoming" / "img")
        attrs = getfattr_dump(tmp_path / "mnt" / "active" / "img")  # listing every attribute must not fail
        assert attrs["user.image.status"] == "active"
        location = attrs["user.imagefs.locations"]
        assert location.startswith(f"file://{tmp_path}/data/store/blobs/"), location
        assert os.path.exists(location[len("file://"):])
        assert getfattr_dump(tmp_path / "mnt")["user.imagefs.data_dir"] == str(tmp_path / "data")
    finally:
        imagefs("umount", "mnt", cwd=tmp_path, check=False)
        if (tmp_path / "mnt").is_mount():
            subprocess.run(["fusermount3", "-u", "-z", str(tmp_path / "mnt")])
    report = check_library(load_config(None, tmp_path / "data"))
    assert report.clean, report
