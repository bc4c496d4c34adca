"""vhdx: qemu-img samples, forged region/metadata tables, truncation, memory."""

from __future__ import annotations

import struct
import uuid

import pytest

from helpers_formats import (
    MiB, assert_truncated, detect, detect_all_sizes, peak_detection_memory, qemu_img, qemu_virtual_size,
    requires_qemu_img, sixty_four_mib_raw, truncated_copy,
)

pytestmark = requires_qemu_img

REGION_TABLE = 0x30000
METADATA_GUID = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E").bytes_le


def metadata_entry(data: bytes) -> tuple[int, int]:
    """(index, file offset) of the metadata region's entry, read independently of the inspector."""
    count = struct.unpack_from("<I", data, REGION_TABLE + 8)[0]
    for i in range(count):
        at = REGION_TABLE + 16 + 32 * i
        if data[at:at + 16] == METADATA_GUID:
            return i, struct.unpack_from("<Q", data, at + 16)[0]
    raise AssertionError("qemu's sample has no metadata region")


def windows(path):
    """Where 1- and 17-byte chunks are fed: the region table, the metadata table and its items."""
    _, meta = metadata_entry(path.read_bytes()[:4 * MiB])
    return [(REGION_TABLE, REGION_TABLE + 512), (meta, meta + 512), (meta + 0x10000, meta + 0x10000 + 64)]


@pytest.fixture
def sample(tmp_path):
    path = tmp_path / "disk.vhdx"
    qemu_img("create", "-q", "-f", "vhdx", path, "100M")
    return path


def forge(sample, tmp_path, edit):
    data = bytearray(sample.read_bytes())
    edit(data)
    path = tmp_path / "forged.vhdx"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("options,size", [("subformat=dynamic", "100M"), ("subformat=dynamic,block_size=1M", "3G"),
                                          ("subformat=fixed", "4M")])
def test_virtual_size_matches_qemu_img(tmp_path, options, size):
    path = tmp_path / "disk.vhdx"
    qemu_img("create", "-q", "-f", "vhdx", "-o", options, path, size)
    detection = detect_all_sizes(path, windows(path))
    assert detection.format == "vhdx"
    assert detection.checks == {"vhdx.region_table": None, "vhdx.metadata_table": None}
    assert detection.safe
    assert detection.virtual_size == qemu_virtual_size(path)


def test_region_count_too_large(sample, tmp_path):
    path = forge(sample, tmp_path, lambda d: struct.pack_into("<I", d, REGION_TABLE + 8, 5000))
    detection = detect_all_sizes(path, windows(sample))
    assert "5000" in detection.failed_checks["vhdx.region_table"]
    assert detection.matches == ["vhdx"] and not detection.safe
    assert any("virtual disk size" in p for p in detection.problems)  # the table was never read


def test_missing_metadata_region(sample, tmp_path):
    def edit(d):
        i, _ = metadata_entry(d)
        d[REGION_TABLE + 16 + 32 * i] ^= 0xFF  # another GUID: no metadata region left
    detection = detect_all_sizes(forge(sample, tmp_path, edit), windows(sample))
    assert any("no metadata region" in p for p in detection.problems), detection.problems
    assert not detection.safe


def test_metadata_item_count_too_large(sample, tmp_path):
    def edit(d):
        _, meta = metadata_entry(d)
        struct.pack_into("<H", d, meta + 10, 3000)
    detection = detect_all_sizes(forge(sample, tmp_path, edit), windows(sample))
    assert "3000" in detection.failed_checks["vhdx.metadata_table"]
    assert detection.checks["vhdx.region_table"] is None
    assert not detection.safe


def test_metadata_region_before_the_stream_position_is_refused(sample, tmp_path):
    def edit(d):
        i, meta = metadata_entry(d)
        d[0x10000:0x10000 + 0x20000] = d[meta:meta + 0x20000]  # a valid table, but behind the region table
        struct.pack_into("<Q", d, REGION_TABLE + 16 + 32 * i + 16, 0x10000)
    detection = detect_all_sizes(forge(sample, tmp_path, edit), windows(sample))
    assert any("vhdx header is invalid" in p and "before" in p for p in detection.problems), detection.problems
    assert not detection.safe


def test_no_virtual_disk_size_item(sample, tmp_path):
    def edit(d):
        _, meta = metadata_entry(d)
        count = struct.unpack_from("<H", d, meta + 10)[0]
        for i in range(count):
            at = meta + 32 + 32 * i
            if d[at:at + 16] == uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8").bytes_le:
                d[at] ^= 0xFF
    detection = detect_all_sizes(forge(sample, tmp_path, edit), windows(sample))
    assert any("virtual disk size" in p for p in detection.problems), detection.problems


def test_truncated_copy_is_refused(sample, tmp_path):
    _, meta = metadata_entry(sample.read_bytes())
    detection = detect(truncated_copy(sample, tmp_path / "cut.vhdx", meta + 0x20000), 65536)
    assert_truncated(detection, "vhdx")
    assert detection.virtual_size == meta + 0x20000  # raw: the bytes read
    detection = detect(truncated_copy(sample, tmp_path / "cut2.vhdx", 0x30008), 17)
    assert_truncated(detection, "vhdx")


def test_memory_is_bounded(tmp_path):
    path = tmp_path / "big.vhdx"
    qemu_img("convert", "-f", "raw", "-O", "vhdx", sixty_four_mib_raw(tmp_path / "raw"), path)
    assert path.stat().st_size >= 64 * MiB
    peak, detection = peak_detection_memory(path)
    assert detection.format == "vhdx" and detection.virtual_size == qemu_virtual_size(path) == 64 * MiB
    assert peak < 4 * MiB, peak
