"""gpt/mbr partition tables inside raw images: forged MBRs and GPTs, the "mbr" check, truncation, memory."""

from __future__ import annotations

import shutil
import struct

import pytest

from helpers_formats import MiB, assert_truncated, detect_all_sizes, peak_detection_memory, qemu_virtual_size

SECTOR = 512
PROTECTIVE_CHS = b"\x00\x02\x00"


def pte(kind: int, start_lba: int, sectors: int, boot: int = 0, start_chs: bytes = PROTECTIVE_CHS) -> bytes:
    return struct.pack("<B3sB3sII", boot, start_chs, kind, b"\xff\xff\xff", start_lba, sectors)


def mbr(*entries: bytes, signature: bytes = b"\x55\xaa") -> bytes:
    table = b"".join(entries).ljust(64, b"\x00")
    return b"\xfa\xeb\xfe".ljust(446, b"\x00") + table + signature


def gpt_header(current: int, alternate: int, last: int) -> bytes:
    """GPT header (CRCs left zero: the inspector does not verify them)."""
    entries = 2 if current == 1 else last - 32
    return struct.pack("<8sIIIIQQQQ16sQIII", b"EFI PART", 0x10000, 92, 0, 0, current, alternate, 34,
                       last - 33, b"\x11" * 16, entries, 128, 128, 0)


def disk(path, first_sector: bytes, size: int = MiB, gpt: bool = True, alternate: int | None = None):
    """A sparse raw disk: the MBR, and with `gpt` a primary header at LBA 1 and its backup at the last LBA."""
    last = size // SECTOR - 1
    with open(path, "wb") as f:
        f.truncate(size)
        f.write(first_sector)
        if gpt:
            f.write(gpt_header(1, last if alternate is None else alternate, last))
            f.seek(last * SECTOR)
            f.write(gpt_header(last, 1, last))
    return path


def protective(size=MiB):
    return pte(0xEE, 1, size // SECTOR - 1)


def test_gpt_protective_mbr(tmp_path):
    path = disk(tmp_path / "gpt.img", mbr(protective()))
    detection = detect_all_sizes(path)
    assert detection.format == "raw" and detection.matches == ["gpt"]
    assert detection.checks == {"gpt.mbr": None}
    assert detection.safe
    if shutil.which("qemu-img"):
        assert detection.virtual_size == qemu_virtual_size(path) == MiB
    assert detection.virtual_size == MiB


def test_plain_mbr_with_bootable_partition(tmp_path):
    path = disk(tmp_path / "mbr.img", mbr(pte(0x83, 2048, 2048, boot=0x80), pte(0x82, 4096, 100)), gpt=False)
    detection = detect_all_sizes(path)
    assert detection.matches == ["gpt"] and detection.safe and detection.format == "raw"


@pytest.mark.parametrize("first_sector,why", [
    (mbr(pte(0x83, 2048, 2048, boot=0x42)), "boot flag"),
    (mbr(pte(0x83, 2048, 2048), pte(0x83, 4096, 10, boot=0x01)), "partition 1 has boot flag"),
    (mbr(pte(0xEE, 1, 2047, start_chs=b"\x00\x01\x00")), "CHS"),
    (mbr(pte(0xEE, 2, 2047)), "LBA 2"),
    (mbr(protective(), pte(0x83, 2048, 100)), "only partition 0"),
    (mbr(pte(0, 0, 0), protective()), "only partition 0"),
    (mbr(), "no partition"),
])
def test_bad_tables_fail_the_mbr_check(tmp_path, first_sector, why):
    path = disk(tmp_path / "bad.img", first_sector, gpt=False)
    detection = detect_all_sizes(path)
    assert detection.matches == ["gpt"]
    assert why in detection.failed_checks["gpt.mbr"], detection.failed_checks
    assert not detection.safe


def test_fat_boot_sector_is_not_a_partition_table(tmp_path):
    vbr = bytearray(mbr())  # no partitions: as a partition table it would fail the check
    vbr[0x10] = 2  # number of FATs
    vbr[0x15] = 0xF8  # media descriptor: fixed disk
    detection = detect_all_sizes(disk(tmp_path / "fat.img", bytes(vbr), gpt=False))
    assert detection.matches == [] and detection.format == "raw" and detection.safe


def test_no_signature_no_match(tmp_path):
    detection = detect_all_sizes(disk(tmp_path / "plain.img", mbr(protective(), signature=b"\x00\x00")))
    assert detection.matches == [] and detection.checks == {}


def test_truncated_gpt_disk_is_refused(tmp_path):
    # The primary header names a backup at LBA 4095 (a 2 MiB disk), but only 1 MiB arrived.
    path = disk(tmp_path / "cut.img", mbr(protective(2 * MiB)), alternate=2 * MiB // SECTOR - 1)
    assert_truncated(detect_all_sizes(path), "gpt")


def test_memory_is_bounded(tmp_path):
    path = disk(tmp_path / "big.img", mbr(protective(64 * MiB)), size=64 * MiB)
    peak, detection = peak_detection_memory(path)
    assert detection.matches == ["gpt"] and detection.safe and detection.virtual_size == 64 * MiB
    assert peak < 4 * MiB, peak
