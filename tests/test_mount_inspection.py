"""Format inspection on a real mount: unsafe images end in killed/ with a reason naming the check.

Samples are made here with qemu-img (and genisoimage for the polyglot); expected
virtual sizes come from `qemu-img info --output=json`. The daemon runs with a
PATH whose qemu-img, qemu-io and qemu-nbd record every call: imagefs must never
run them on uploaded data.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys

import pytest

from conftest import Library, blob_files, getfattr_dump, getfattr_value, mounted, run, setfattr, staged_files

pytestmark = pytest.mark.fuse

QEMU_IMG = shutil.which("qemu-img")  # resolved before any shim is on PATH
SHIMMED = ("qemu-img", "qemu-io", "qemu-nbd")


def qemu_img(*args) -> str:
    return subprocess.run([QEMU_IMG, *map(str, args)], check=True, capture_output=True, text=True).stdout


def qemu_virtual_size(path) -> int:
    return json.loads(qemu_img("info", "--output=json", path))["virtual-size"]


@pytest.fixture
def watched(tmp_path, monkeypatch):
    """A library whose daemon finds recording qemu-img/qemu-io/qemu-nbd shims first on its PATH."""
    if QEMU_IMG is None:
        pytest.skip("qemu-img is not installed (Debian package qemu-utils)")
    shims = tmp_path / "shims"
    shims.mkdir()
    log = tmp_path / "qemu-calls.log"
    for name in SHIMMED:
        shim = shims / name
        real = shutil.which(name) or "/bin/false"
        shim.write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\nexec {real} "$@"\n')
        shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{shims}:{os.environ['PATH']}")
    with mounted(Library(tmp_path / "lib")) as lib:
        pid = getfattr_value(lib.mnt, "user.imagefs.pid")
        environ = dict(e.split("=", 1) for e in open(f"/proc/{pid}/environ").read().split("\0") if "=" in e)
        assert environ["PATH"].startswith(f"{shims}:"), "the daemon does not see the shims first"
        yield lib
        lib.umount()  # the daemon's finalizes are all done: nothing may have been recorded since
        lib.mounted = False
    assert not log.exists(), f"imagefs ran a qemu tool: {log.read_text()}"


def upload(lib, source, name, declare=None):
    incoming = lib.mnt / "incoming" / name
    if declare:
        run("touch", incoming)
        for key, value in declare.items():
            assert setfattr(incoming, f"user.image.{key}", value).returncode == 0
    run("cp", source, incoming)


def killed_reason(lib, name) -> str:
    assert not lib.path("active", name).exists()
    attrs = getfattr_dump(lib.path("killed", name))
    assert attrs["user.image.status"] == "killed"
    return attrs["user.imagefs.reason"]


def test_unsafe_images_are_killed_with_the_check_named(watched, tmp_path):
    lib = watched
    src = tmp_path / "src"
    src.mkdir()
    qemu_img("create", "-q", "-f", "qcow2", "-b", "/etc/shadow", "-F", "raw", src / "shadow.qcow2", "64M")
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={src / 'ext.raw'},data_file_raw=on",
             src / "datafile.qcow2", "16M")
    qemu_img("create", "-q", "-f", "qcow2", src / "whole.qcow2", "64M")
    (src / "head.qcow2").write_bytes((src / "whole.qcow2").read_bytes()[:300])
    (src / "random.raw").write_bytes(random.Random(7).randbytes(1 << 20))
    cases = {  # name: (source, declarations, words the reason must hold)
        "shadow": ("shadow.qcow2", None, ["inspect:", "qcow2.backing_file failed"]),
        "datafile": ("datafile.qcow2", None, ["inspect:", "qcow2.data_file failed"]),
        "truncated": ("head.qcow2", None, ["inspect:", "past the end of the data"]),
        "raw-as-qcow2": ("random.raw", {"disk_format": "qcow2"},
                         ["inspect:", "disk_format qcow2 was declared but the data is raw"]),
        "qcow2-as-raw": ("shadow.qcow2", {"disk_format": "raw"}, ["inspect:", "qcow2.backing_file failed"]),
    }
    for name, (source, declare, _) in cases.items():
        upload(lib, src / source, name, declare)
    for name, (_, _, words) in cases.items():
        reason = killed_reason(lib, name)
        for word in words:
            assert word in reason, (name, reason)
    assert sorted(p.name for p in (lib.mnt / "killed").iterdir()) == sorted(cases)
    assert list((lib.mnt / "active").iterdir()) == []
    assert blob_files(lib) == [] and staged_files(lib) == []


def test_a_vmdk_whose_extent_names_etc_passwd_is_killed(watched, tmp_path):
    sample = tmp_path / "passwd.vmdk"
    qemu_img("create", "-q", "-f", "vmdk", "-o", "subformat=monolithicSparse", sample, "16M")
    data = bytearray(sample.read_bytes())
    descriptor = bytes(data[512:512 + 10240]).split(b"\0")[0]
    forged = descriptor.replace(b'"passwd.vmdk"', b'"/etc/passwd"')
    assert forged != descriptor
    data[512:512 + len(forged)] = forged
    sample.write_bytes(data)
    upload(watched, sample, "passwd.vmdk", {"disk_format": "vmdk"})
    reason = killed_reason(watched, "passwd.vmdk")
    assert "inspect:" in reason and "vmdk.descriptor failed" in reason and "/etc/passwd" in reason


def test_the_iso_qcow2_polyglot_is_killed(watched, tmp_path):
    if shutil.which("genisoimage") is None:
        pytest.skip("genisoimage is not installed")
    content = tmp_path / "content"
    content.mkdir()
    (content / "data").write_bytes(bytes(1 << 20))
    iso, qcow2 = tmp_path / "clean.iso", tmp_path / "head.qcow2"
    run("genisoimage", "-quiet", "-V", "TEST", "-o", iso, content)
    qemu_img("create", "-q", "-f", "qcow2", qcow2, "10M")
    polyglot = bytearray(iso.read_bytes())
    polyglot[:32768] = qcow2.read_bytes()[:32768].ljust(32768, b"\0")
    (tmp_path / "polyglot.iso").write_bytes(polyglot)
    upload(watched, tmp_path / "polyglot.iso", "polyglot.iso")
    reason = killed_reason(watched, "polyglot.iso")
    assert "inspect:" in reason and "more than one format" in reason and "iso" in reason and "qcow2" in reason


def test_a_clean_qcow2_is_active_as_qcow2_with_qemus_virtual_size(watched, tmp_path):
    lib = watched
    source = tmp_path / "disk.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", source, "112M")
    upload(lib, source, "disk.qcow2")  # nothing declared: the format is what the bytes are
    attrs = getfattr_dump(lib.path("active", "disk.qcow2"))
    assert attrs["user.image.disk_format"] == "qcow2"
    assert attrs["user.image.container_format"] == "bare"
    assert attrs["user.imagefs.stored_format"] == "qcow2"
    assert int(attrs["user.image.virtual_size"]) == qemu_virtual_size(source)
    assert attrs["user.image.qcow2_compat"] == "1.1"
    assert int(attrs["user.image.size"]) == source.stat().st_size
    # imagefs inspect reads the active image through the mount and agrees.
    result = subprocess.run([sys.executable, "-m", "imagefs", "inspect", lib.path("active", "disk.qcow2")],
                            capture_output=True, text=True)
    assert result.returncode == 0 and "format:       qcow2" in result.stdout


def test_a_declared_qcow2_and_an_admins_property(watched, tmp_path):
    source = tmp_path / "old.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", "compat=0.10", source, "20M")
    upload(watched, source, "old.qcow2", {"disk_format": "qcow2", "qcow2_compat": "set-by-admin"})
    active = watched.path("active", "old.qcow2")
    assert getfattr_value(active, "user.image.virtual_size") == str(qemu_virtual_size(source))
    assert getfattr_value(active, "user.image.qcow2_compat") == "set-by-admin"


def test_an_undeclared_raw_stays_raw_with_virtual_size_its_size(watched, tmp_path):
    source = tmp_path / "plain.img"
    source.write_bytes(random.Random(1).randbytes(3 << 20) + bytes(1 << 20))
    upload(watched, source, "plain.img")
    attrs = getfattr_dump(watched.path("active", "plain.img"))
    assert (attrs["user.image.disk_format"], attrs["user.imagefs.stored_format"]) == ("raw", "raw")
    assert attrs["user.image.virtual_size"] == attrs["user.image.size"] == str(4 << 20)


def test_a_qcow2_declared_raw_is_kept_as_raw(watched, tmp_path):
    source = tmp_path / "claimed.raw"
    qemu_img("create", "-q", "-f", "qcow2", source, "64M")
    upload(watched, source, "claimed.raw", {"disk_format": "raw"})
    attrs = getfattr_dump(watched.path("active", "claimed.raw"))
    assert attrs["user.image.disk_format"] == "raw"
    assert attrs["user.imagefs.stored_format"] == "qcow2"
    assert attrs["user.image.virtual_size"] == attrs["user.image.size"] == str(source.stat().st_size)
    assert "user.image.qcow2_compat" not in attrs


def test_a_rewrite_is_inspected_from_the_staged_file_at_finalize(watched, tmp_path):
    """A rewrite of earlier offsets switches to inspecting the staged file: a safe file turned unsafe
    by the rewrite is still caught."""
    lib = watched
    good, bad = tmp_path / "good.qcow2", tmp_path / "bad.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", good, "64M")
    qemu_img("create", "-q", "-f", "qcow2", "-b", "/etc/shadow", "-F", "raw", bad, "64M")
    target = lib.mnt / "incoming" / "rewritten"
    with open(target, "wb") as f:
        f.write(good.read_bytes())
        f.seek(0)
        f.write(bad.read_bytes()[:4096])  # the backing-file header, written over the clean one
    reason = killed_reason(lib, "rewritten")
    assert "qcow2.backing_file failed" in reason
