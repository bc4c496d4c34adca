"""qemu-img reading an active qcow2 straight from the mount."""

import json
import shutil

import pytest

from conftest import getfattr_value, run, setfattr

pytestmark = [pytest.mark.fuse, pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img missing")]


def test_qemu_img_info_and_compare_on_an_active_qcow2(library, tmp_path):
    source = tmp_path / "disk.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", source, "64M")
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0xab 1M 2M", "-c", "write -P 0x11 40M 64k", source)
    assert setfattr(source, "user.image.disk_format", "qcow2").returncode == 0
    run("cp", "--preserve=xattr", source, library.mnt / "incoming" / "disk")
    active = library.path("active", "disk")
    assert getfattr_value(active, "user.image.disk_format") == "qcow2"

    info = json.loads(run("qemu-img", "info", "--output=json", active).stdout)
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == 64 * 1024 * 1024
    assert "backing-filename" not in info

    assert run("qemu-img", "compare", source, active).returncode == 0
    assert run("qemu-img", "check", active).returncode == 0
    # compare can tell a difference, so the agreement above means something
    other = tmp_path / "other.qcow2"
    run("qemu-img", "convert", "-O", "qcow2", source, other)
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0xcd 40M 4k", other)
    assert run("qemu-img", "compare", other, active, check=False).returncode == 1
    # and the guest-visible bytes are those of the source
    raw_source, raw_active = tmp_path / "source.raw", tmp_path / "active.raw"
    run("qemu-img", "convert", "-O", "raw", source, raw_source)
    run("qemu-img", "convert", "-O", "raw", active, raw_active)
    assert run("cmp", raw_source, raw_active).returncode == 0
