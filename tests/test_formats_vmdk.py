"""vmdk inspection: qemu-made monolithicSparse/streamOptimized samples, footers, forged descriptors (SPEC §4)."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import tracemalloc
from pathlib import Path

import pytest

from imagefs.formats import detect_file

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img (Debian qemu-utils) is missing")

CHUNK_SIZES = (17, 512, 65536, 1 << 20)
GD_AT_END = 0xFFFFFFFFFFFFFFFF


def qemu_img(*args) -> str:
    return subprocess.run(["qemu-img", *map(str, args)], check=True, capture_output=True, text=True).stdout


def qemu_virtual_size(path: Path) -> int:
    return json.loads(qemu_img("info", "--output=json", "-f", "vmdk", path))["virtual-size"]


def detect(path: Path, small: bool = False):
    """Detect at every chunk size (1 byte too for small samples); all must agree."""
    sizes = ((1,) if small else ()) + CHUNK_SIZES
    detections = [detect_file(path, size) for size in sizes]
    for size, detection in zip(sizes[1:], detections[1:]):
        assert detection == detections[0], f"chunk size {size} gives another answer"
    return detections[0]


def with_footer(source: Path, target: Path, **footer_fields) -> Path:
    """A streamOptimized vmdk whose header says GD_AT_END, with footer marker, footer and end-of-stream marker."""
    data = bytearray(source.read_bytes())
    assert len(data) % 512 == 0
    eos = footer_fields.pop("eos", bytes(512))
    footer = bytearray(data[:512])
    offsets = {"magic": (0, "4s"), "version": (4, "I"), "desc_sec": (28, "Q"), "desc_num": (36, "Q"), "gd": (56, "Q")}
    for name, value in footer_fields.items():
        offset, fmt = offsets[name]
        struct.pack_into("<" + fmt, footer, offset, value)
    struct.pack_into("<Q", data, 56, GD_AT_END)
    marker = struct.pack("<QII", 1, 0, 3).ljust(512, b"\0")
    target.write_bytes(bytes(data) + marker + bytes(footer) + eos)
    return target


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("vmdk")
    for sub in ("monolithicSparse", "streamOptimized", "monolithicFlat"):
        qemu_img("create", "-f", "vmdk", "-o", f"subformat={sub}", d / f"{sub}.vmdk", "10M")
    qemu_img("create", "-f", "vmdk", "-o", "adapter_type=lsilogic", d / "lsilogic.vmdk", "5M")
    (d / "random.raw").write_bytes(bytes(range(256)) * 512 + os.urandom(384 << 10))  # 512 KiB, mostly incompressible
    qemu_img("convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", d / "random.raw", d / "conv.vmdk")
    return d


@pytest.mark.parametrize("sub,disktype", [("monolithicSparse", "sparse"), ("streamOptimized", "streamOptimized")])
def test_qemu_subformats_are_vmdk_with_qemus_size(samples, sub, disktype):
    path = samples / f"{sub}.vmdk"
    detection = detect(path, small=True)
    assert detection.format == "vmdk" and detection.matches == ["vmdk"]
    assert detection.virtual_size == qemu_virtual_size(path) == 10 << 20
    assert detection.safe, detection.reason()
    assert detection.checks == {"vmdk.descriptor": None, "vmdk.backing_file": None}
    assert detection.properties == {"vmware_disktype": disktype, "vmware_adaptertype": "ide"}


def test_adapter_type_is_introspected(samples):
    detection = detect(samples / "lsilogic.vmdk")
    assert detection.properties["vmware_adaptertype"] == "lsiLogic"
    assert detection.virtual_size == qemu_virtual_size(samples / "lsilogic.vmdk") == 5 << 20


def test_converted_stream_optimized(samples):
    path = samples / "conv.vmdk"
    detection = detect(path)
    assert detection.format == "vmdk" and detection.safe, detection.reason()
    assert detection.virtual_size == qemu_virtual_size(path) == 512 << 10


def test_stream_optimized_with_footer_is_read_like_qemu(samples, tmp_path):
    path = with_footer(samples / "conv.vmdk", tmp_path / "footer.vmdk")
    assert qemu_virtual_size(path) == 512 << 10  # qemu reads our footer: the layout is right
    detection = detect(path)
    assert detection.format == "vmdk" and detection.safe, detection.reason()
    assert detection.checks == {"vmdk.descriptor": None, "vmdk.backing_file": None, "vmdk.footer": None}
    assert detection.virtual_size == 512 << 10


@pytest.mark.parametrize("fields,why", [
    ({"version": 1}, "version"),
    ({"desc_num": 21}, "another descriptor"),
    ({"gd": GD_AT_END}, "another footer"),
    ({"magic": b"XXXX"}, "signature"),
    ({"eos": b"\x01" * 512}, "end-of-stream"),
])
def test_footer_disagreeing_with_header_is_refused(samples, tmp_path, fields, why):
    path = with_footer(samples / "conv.vmdk", tmp_path / "bad.vmdk", **fields)
    detection = detect(path)
    assert detection.format == "vmdk"
    assert not detection.safe
    assert why in detection.failed_checks["vmdk.footer"]


def test_footer_marker_must_be_valid(samples, tmp_path):
    path = with_footer(samples / "conv.vmdk", tmp_path / "marker.vmdk")
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, len(data) - 1536 + 12, 2)  # a grain directory marker where the footer's should be
    path.write_bytes(data)
    assert "footer marker" in detect(path).failed_checks["vmdk.footer"]


def test_monolithic_flat_descriptor_is_an_unsupported_subformat(samples):
    path = samples / "monolithicFlat.vmdk"
    assert path.read_bytes().startswith(b"# Disk DescriptorFile")
    detection = detect(path, small=True)
    assert detection.format == "vmdk"
    assert "unsupported subformat 'monolithicFlat'" in detection.failed_checks["vmdk.descriptor"]
    assert detection.virtual_size == qemu_virtual_size(path) == 10 << 20  # the extents' sizes, as qemu adds them
    assert "vmdk.descriptor failed" in detection.reason()


DESCRIPTOR = """# Disk DescriptorFile
version=1
CID=12345678
parentCID=ffffffff
createType="monolithicSparse"

# Extent description
{extents}

# The Disk Data Base
#DDB

ddb.adapterType = "lsilogic"
"""


@pytest.mark.parametrize("extents,why", [
    ('RW 20480 FLAT "/etc/passwd" 0', "extent names a path"),
    ('RDONLY 8 SPARSE "../../etc/shadow"', "extent names a path"),
    ("", "no extents"),
    ("this is not a descriptor line", "unsupported line"),
])
def test_forged_descriptor_files_are_refused(tmp_path, extents, why):
    path = tmp_path / "forged.vmdk"
    path.write_text(DESCRIPTOR.format(extents=extents))
    detection = detect(path, small=True)
    assert detection.format == "vmdk"
    assert why in detection.failed_checks["vmdk.descriptor"]


def test_a_safe_descriptor_file_passes(tmp_path):
    path = tmp_path / "ok.vmdk"
    path.write_text(DESCRIPTOR.format(extents='RW 20480 SPARSE "disk-s001.vmdk"'))
    detection = detect(path, small=True)
    assert detection.format == "vmdk" and detection.safe, detection.reason()
    assert detection.virtual_size == 20480 * 512
    assert detection.properties == {"vmware_disktype": "sparse", "vmware_adaptertype": "lsiLogic"}


@pytest.mark.parametrize("parent", ["/etc/shadow", "base.vmdk"])
def test_a_parent_file_is_refused_like_a_backing_file(tmp_path, parent):
    path = tmp_path / "delta.vmdk"
    path.write_text(DESCRIPTOR.format(extents=f'RW 8 SPARSE "delta-s001.vmdk"\nparentFileNameHint="{parent}"'))
    detection = detect(path, small=True)
    assert detection.failed_checks == {"vmdk.backing_file": f"a parent (backing) file is named: {parent!r}"}


def test_qemu_delta_vmdk_with_a_backing_file_is_refused(tmp_path):
    qemu_img("create", "-f", "vmdk", tmp_path / "base.vmdk", "1M")
    qemu_img("create", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", tmp_path / "child.vmdk")
    detection = detect(tmp_path / "child.vmdk")
    assert detection.format == "vmdk" and detection.virtual_size == qemu_virtual_size(tmp_path / "base.vmdk")
    assert "'base.vmdk'" in detection.failed_checks["vmdk.backing_file"]


def test_a_descriptor_file_over_one_mib_is_refused(tmp_path):
    path = tmp_path / "huge.vmdk"
    path.write_text(DESCRIPTOR.format(extents='RW 8 SPARSE "a.vmdk"') + "# padding\n" * 120_000)
    assert "larger than" in detect(path).failed_checks["vmdk.descriptor"]


def test_text_that_is_not_a_descriptor_is_raw(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("# Disk notes\nRW 8 FLAT \"/etc/passwd\" 0\n")
    detection = detect(path, small=True)
    assert detection.format == "raw" and detection.matches == [] and detection.safe


def _patched(source: Path, target: Path, offset: int, fmt: str, value) -> Path:
    data = bytearray(source.read_bytes())
    struct.pack_into(fmt, data, offset, value)
    target.write_bytes(data)
    return target


@pytest.mark.parametrize("offset,value,why", [
    (0x1C, 2, "not at sector 1"),
    (0x1C, 0x10000, "not at sector 1"),
    (0x24, 2048, "exceeds"),
    (0x24, 0x7FFFFFFF, "exceeds"),
    (0x24, 0, "names no descriptor"),
])
def test_descriptor_outside_its_region_is_refused(samples, tmp_path, offset, value, why):
    path = _patched(samples / "monolithicSparse.vmdk", tmp_path / "c.vmdk", offset, "<Q", value)
    detection = detect(path)
    assert detection.format == "vmdk"
    assert why in detection.failed_checks["vmdk.descriptor"]


def test_embedded_descriptor_without_extents_is_refused(samples, tmp_path):
    data = bytearray((samples / "monolithicSparse.vmdk").read_bytes())
    line = b'RW 20480 SPARSE "monolithicSparse.vmdk"'
    at = data.index(line)
    data[at:at + len(line)] = b"#" * len(line)
    (tmp_path / "noext.vmdk").write_bytes(data)
    assert "no extents" in detect(tmp_path / "noext.vmdk").failed_checks["vmdk.descriptor"]


def test_unsupported_version_is_refused(samples, tmp_path):
    path = _patched(samples / "monolithicSparse.vmdk", tmp_path / "v4.vmdk", 4, "<I", 4)
    detection = detect(path)
    assert not detection.safe and "version 4" in detection.reason()


def test_truncated_sparse_vmdk_is_refused(samples, tmp_path):
    path = tmp_path / "cut.vmdk"
    path.write_bytes((samples / "monolithicSparse.vmdk").read_bytes()[:8192])  # before the grain directory
    detection = detect(path, small=True)
    assert not detection.safe and "truncated" in detection.reason()
    path.write_bytes((samples / "monolithicSparse.vmdk").read_bytes()[:1024])  # inside the descriptor
    assert "truncated" in detect(path, small=True).reason()


def test_memory_stays_bounded_on_a_64_mib_vmdk(tmp_path):
    raw = tmp_path / "big.raw"
    with open(raw, "wb") as f:
        for i in range(64):
            f.write(bytes([i + 1]) * (1 << 20))
    path = tmp_path / "big.vmdk"
    qemu_img("convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=monolithicSparse", raw, path)
    assert path.stat().st_size > 64 << 20
    tracemalloc.start()
    try:
        detection = detect_file(path, 1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert detection.format == "vmdk" and detection.safe and detection.virtual_size == 64 << 20
    assert peak - (1 << 20) < 4 << 20, f"peak {peak} bytes"
