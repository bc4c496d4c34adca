"""vdi: dynamic and static samples from qemu-img, truncation, memory."""

from __future__ import annotations

import struct

import pytest

from helpers_formats import (
    MiB, assert_truncated, detect_all_sizes, peak_detection_memory, qemu_img, qemu_virtual_size, requires_qemu_img,
    sixty_four_mib_raw, truncated_copy,
)

pytestmark = requires_qemu_img


@pytest.mark.parametrize("options,size", [("static=off", "100M"), ("static=off", "4097K"), ("static=on", "1M")])
def test_virtual_size_matches_qemu_img(tmp_path, options, size):
    path = tmp_path / "disk.vdi"
    qemu_img("create", "-q", "-f", "vdi", "-o", options, path, size)
    detection = detect_all_sizes(path)
    assert detection.format == "vdi" and detection.matches == ["vdi"]
    assert detection.safe
    assert detection.virtual_size == qemu_virtual_size(path)


def test_signature_elsewhere_is_not_vdi(tmp_path):
    sample = tmp_path / "disk.vdi"
    qemu_img("create", "-q", "-f", "vdi", sample, "1M")
    path = tmp_path / "shifted"
    path.write_bytes(b"\x00" * 4 + sample.read_bytes())  # the signature at 0x44, not 0x40
    detection = detect_all_sizes(path)
    assert detection.format == "raw" and detection.matches == []


def test_truncated_copy_is_refused(tmp_path):
    sample = tmp_path / "disk.vdi"
    qemu_img("create", "-q", "-f", "vdi", sample, "100M")
    offset_bmap = struct.unpack_from("<I", sample.read_bytes(), 0x154)[0]
    detection = detect_all_sizes(truncated_copy(sample, tmp_path / "cut.vdi", offset_bmap + 100))  # map: 400 bytes
    assert_truncated(detection, "vdi")
    assert detection.virtual_size == offset_bmap + 100


def test_memory_is_bounded(tmp_path):
    path = tmp_path / "big.vdi"
    qemu_img("convert", "-f", "raw", "-O", "vdi", sixty_four_mib_raw(tmp_path / "raw"), path)
    assert path.stat().st_size >= 64 * MiB
    peak, detection = peak_detection_memory(path)
    assert detection.format == "vdi" and detection.virtual_size == qemu_virtual_size(path) == 64 * MiB
    assert peak < 4 * MiB, peak
