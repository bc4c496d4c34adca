"""ploop (qemu "parallels"): samples from qemu-img, the old magic, a bad version, truncation, memory."""

from __future__ import annotations

import struct

import pytest

from helpers_formats import (
    MiB, assert_truncated, detect_all_sizes, peak_detection_memory, qemu_img, qemu_info, qemu_virtual_size,
    requires_qemu_img, sixty_four_mib_raw, truncated_copy,
)

pytestmark = requires_qemu_img


@pytest.mark.parametrize("size,cluster", [("100M", "1M"), ("1M", "4k"), ("3G", "64k"), ("4097K", "4k")])
def test_virtual_size_matches_qemu_img(tmp_path, size, cluster):
    path = tmp_path / "disk.hds"
    qemu_img("create", "-q", "-f", "parallels", "-o", f"cluster_size={cluster}", path, size)
    assert qemu_info(path)["format"] == "parallels"
    detection = detect_all_sizes(path)
    assert detection.format == "ploop" and detection.matches == ["ploop"]
    assert detection.checks == {"ploop.version": None}
    assert detection.safe
    assert detection.virtual_size == qemu_virtual_size(path)


def test_old_magic_keeps_32_bits_of_the_size(tmp_path):
    path = tmp_path / "old.hds"
    qemu_img("create", "-q", "-f", "parallels", "-o", "cluster_size=4k", path, "1M")
    data = bytearray(path.read_bytes())
    data[:16] = b"WithoutFreeSpace"
    struct.pack_into("<Q", data, 36, (1 << 32) + 4096)  # high bits that qemu ignores with this magic
    path.write_bytes(data)
    detection = detect_all_sizes(path)
    assert detection.format == "ploop"
    assert detection.virtual_size == qemu_virtual_size(path, "parallels") == 4096 * 512


def test_unknown_version_is_refused(tmp_path):
    path = tmp_path / "v3.hds"
    qemu_img("create", "-q", "-f", "parallels", "-o", "cluster_size=4k", path, "1M")
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, 16, 3)
    path.write_bytes(data)
    detection = detect_all_sizes(path)
    assert "version 3" in detection.failed_checks["ploop.version"]
    assert not detection.safe


def test_truncated_copy_is_refused(tmp_path):
    sample = tmp_path / "disk.hds"
    qemu_img("create", "-q", "-f", "parallels", sample, "100M")  # 100 table entries: 64 + 400 bytes
    detection = detect_all_sizes(truncated_copy(sample, tmp_path / "cut.hds", 300))
    assert_truncated(detection, "ploop")


def test_memory_is_bounded(tmp_path):
    path = tmp_path / "big.hds"
    qemu_img("convert", "-f", "raw", "-O", "parallels", sixty_four_mib_raw(tmp_path / "raw"), path)
    assert path.stat().st_size >= 64 * MiB
    peak, detection = peak_detection_memory(path)
    assert detection.format == "ploop" and detection.virtual_size == qemu_virtual_size(path) == 64 * MiB
    assert peak < 4 * MiB, peak
