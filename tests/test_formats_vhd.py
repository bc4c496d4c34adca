"""vhd (qemu "vpc"): dynamic and fixed samples from qemu-img, forged footers, truncation, memory."""

from __future__ import annotations

import struct

import pytest

from helpers_formats import (
    MiB, assert_truncated, detect, detect_all_sizes, peak_detection_memory, qemu_img, qemu_info, qemu_virtual_size,
    requires_qemu_img, sixty_four_mib_raw, truncated_copy,
)

pytestmark = requires_qemu_img


def reseal(footer: bytearray) -> None:
    """Recompute the footer checksum (one's complement of the byte sum), as qemu verifies it."""
    struct.pack_into(">I", footer, 64, 0)
    struct.pack_into(">I", footer, 64, ~sum(footer[:512]) & 0xFFFFFFFF)


# 200G: the geometry is the maximum one (65535 x 16 x 255), so qemu reads current_size instead.
@pytest.mark.parametrize("size", ["100M", "5M", "200G"])
def test_dynamic_virtual_size_matches_qemu_img(tmp_path, size):
    path = tmp_path / "disk.vhd"
    qemu_img("create", "-q", "-f", "vpc", "-o", "subformat=dynamic", path, size)
    detection = detect_all_sizes(path)
    assert detection.format == "vhd"
    assert detection.checks == {"vhd.disk_type": None}
    assert detection.safe
    # qemu rounds the size to CHS geometry and reads it back by geometry (creator "qemu"): 100M -> 104865792.
    assert detection.virtual_size == qemu_virtual_size(path) == qemu_virtual_size(path, "vpc")


def test_force_size_uses_current_size(tmp_path):
    path = tmp_path / "forced.vhd"
    qemu_img("create", "-q", "-f", "vpc", "-o", "subformat=dynamic,force_size=on", path, "100M")
    detection = detect_all_sizes(path)
    assert detection.format == "vhd"
    assert detection.virtual_size == qemu_virtual_size(path) == 100 * MiB  # creator "qem2": current_size


def test_fixed_footer_at_the_end(tmp_path):
    path = tmp_path / "fixed.vhd"
    qemu_img("create", "-q", "-f", "vpc", "-o", "subformat=fixed", path, "100K")
    detection = detect_all_sizes(path)
    assert detection.format == "vhd"
    assert detection.safe
    # qemu-img's probe reads only offset 0, so without -f it calls a fixed vhd raw (virtual size = file size);
    # opened as vpc (what a declared disk_format vhd means) it reads the footer at the end: that is our answer.
    assert qemu_info(path)["format"] == "raw"
    assert detection.virtual_size == qemu_virtual_size(path, "vpc")
    assert detection.virtual_size < path.stat().st_size


def test_geometry_wins_over_current_size_for_vpc_creator(tmp_path):
    path = tmp_path / "vpc.vhd"
    qemu_img("create", "-q", "-f", "vpc", path, "100M")
    data = bytearray(path.read_bytes())
    footer = data[:512]
    footer[28:32] = b"vpc "
    struct.pack_into(">QQ", footer, 40, 200 * MiB, 200 * MiB)  # current_size disagrees with CHS
    reseal(footer)
    data[:512] = footer
    path.write_bytes(data)
    detection = detect_all_sizes(path)
    assert detection.virtual_size == qemu_virtual_size(path, "vpc") == 104865792  # CHS 1004 x 12 x 17


def test_hyperv_creator_uses_current_size(tmp_path):
    path = tmp_path / "win.vhd"
    qemu_img("create", "-q", "-f", "vpc", path, "100M")
    data = bytearray(path.read_bytes())
    footer = data[:512]
    footer[28:32] = b"win "
    struct.pack_into(">QQ", footer, 40, 100 * MiB, 100 * MiB)
    reseal(footer)
    data[:512] = footer
    path.write_bytes(data)
    detection = detect_all_sizes(path)
    assert detection.virtual_size == qemu_virtual_size(path, "vpc") == 100 * MiB


def test_differencing_disk_is_refused(tmp_path):
    path = tmp_path / "diff.vhd"
    qemu_img("create", "-q", "-f", "vpc", path, "100M")
    data = bytearray(path.read_bytes())
    struct.pack_into(">I", data, 60, 4)  # disk type: differencing (names a parent file)
    path.write_bytes(data)
    detection = detect_all_sizes(path)
    assert detection.format == "vhd"
    assert "parent" in detection.failed_checks["vhd.disk_type"]
    assert not detection.safe


def test_raw_ending_in_a_dynamic_footer_is_raw(tmp_path):
    """Only a fixed footer is read at the end: a dynamic footer there without a copy at 0 is not a vhd."""
    sample = tmp_path / "dyn.vhd"
    qemu_img("create", "-q", "-f", "vpc", sample, "1M")
    path = tmp_path / "raw"
    path.write_bytes(b"\x00" * 4096 + sample.read_bytes()[:512])
    detection = detect_all_sizes(path)
    assert detection.format == "raw" and detection.matches == []


def test_truncated_copy_is_refused(tmp_path):
    sample = tmp_path / "disk.vhd"
    qemu_img("create", "-q", "-f", "vpc", sample, "100M")
    detection = detect_all_sizes(truncated_copy(sample, tmp_path / "cut.vhd", 1000))  # dynamic header at 512+1024
    assert_truncated(detection, "vhd")
    # The table's end, past the dynamic header, is also required.
    detection = detect(truncated_copy(sample, tmp_path / "cut2.vhd", 1536 + 100), 512)
    assert_truncated(detection, "vhd")


def test_fixed_disk_missing_data_is_refused(tmp_path):
    sample = tmp_path / "fixed.vhd"
    qemu_img("create", "-q", "-f", "vpc", "-o", "subformat=fixed", sample, "100K")
    data = sample.read_bytes()
    path = tmp_path / "short.vhd"
    path.write_bytes(data[:50000] + data[-512:])  # half the data, then the footer
    detection = detect_all_sizes(path)
    assert detection.matches == ["vhd"]
    assert any("vhd header is invalid" in p and "truncated" in p for p in detection.problems), detection.problems
    assert not detection.safe


def test_memory_is_bounded(tmp_path):
    path = tmp_path / "big.vhd"
    qemu_img("convert", "-f", "raw", "-O", "vpc", sixty_four_mib_raw(tmp_path / "raw"), path)
    assert path.stat().st_size >= 64 * MiB
    peak, detection = peak_detection_memory(path)
    assert detection.format == "vhd" and detection.virtual_size == qemu_virtual_size(path)
    assert peak < 4 * MiB, peak
