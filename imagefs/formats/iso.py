"""iso: ISO 9660 and UDF.

Both begin with the first 16 sectors of 2 KiB free for a system area (boot
code, often a GPT/MBR), then a sequence of 2 KiB volume descriptors at
32 KiB: ISO 9660's ("CD001"; type 1 is the primary volume descriptor, 255
the terminator) and UDF's volume recognition sequence ("BEA01", "NSR02" or
"NSR03", "TEA01"), which follows the ISO 9660 descriptors in a hybrid image.
The inspector walks that sequence (bounded). The primary volume descriptor
gives the volume size (volume space size LE uint32 @80 x logical block size
LE uint16 @128); data that ends before it is a truncated copy. UDF alone has
no such field: its anchor at sector 256 leads to the partition descriptors,
and data that ends inside the partition is a truncated copy. qemu reads an
ISO as raw, so the virtual size is the length of the data, as qemu-img says.
"""

from __future__ import annotations

import struct

from . import register
from .base import FormatError, Inspector

SECTOR = 2048
FIRST_DESCRIPTOR = 16 * SECTOR  # 32 KiB
MAX_DESCRIPTORS = 32
ISO9660 = b"CD001"
UDF_NSR = (b"NSR02", b"NSR03")
UDF_BEGIN, UDF_END = b"BEA01", b"TEA01"
# Identifiers a volume recognition sequence may hold (ECMA-167 2/9.1, ISO 9660, El Torito boot, CD-WO).
KNOWN = {ISO9660, UDF_BEGIN, UDF_END, *UDF_NSR, b"BOOT2", b"CDW02"}
PRIMARY, TERMINATOR = 1, 255
# UDF (ECMA-167): the anchor volume descriptor pointer at sector 256 gives the main volume descriptor sequence
# (extent length @16, location @20); its partition descriptors (tag 5) give start @188 and length @192 in sectors.
ANCHOR = 256 * SECTOR
TAG_ANCHOR, TAG_PARTITION, TAG_TERMINATING = 2, 5, 8
MAX_SEQUENCE = 32 * SECTOR


@register
class IsoInspector(Inspector):
    name = "iso"

    def start(self) -> None:
        self.identifiers: list[bytes] = []
        self.volume_size: int | None = None  # from the primary volume descriptor
        self.partition_end: int | None = None  # UDF alone: where its last partition ends
        self._udf_area_start = 0
        self.capture("descriptor0", FIRST_DESCRIPTOR, SECTOR)

    def on_region(self, key: str, data: bytes) -> None:
        if key == "udf_area":
            self._on_udf_area(data)
            return
        if key == "udf_sequence":
            self._on_udf_sequence(data)
            return
        if not key.startswith("descriptor"):
            return
        index = int(key[len("descriptor"):])
        descriptor_type, identifier = data[0], bytes(data[1:6])
        if identifier not in KNOWN:
            return  # the end of the sequence (or not an ISO at all)
        self.identifiers.append(identifier)
        if identifier == ISO9660 and descriptor_type == PRIMARY and self.volume_size is None:
            blocks = struct.unpack_from("<I", data, 80)[0]
            block_size = struct.unpack_from("<H", data, 128)[0]
            self.volume_size = blocks * block_size
            if self.matches():
                self._capture_volume_end(index)
        next_offset = FIRST_DESCRIPTOR + (index + 1) * SECTOR
        if identifier == UDF_END:
            if self.volume_size is None and self.matches() and next_offset <= ANCHOR:
                # UDF alone: no ISO 9660 volume size; read the anchor (and what lies before it, where the volume
                # descriptor sequence usually is) to learn where the partition ends.
                self._udf_area_start = next_offset
                self.capture("udf_area", next_offset, ANCHOR + SECTOR - next_offset)
            return
        if index + 1 < MAX_DESCRIPTORS:
            self.capture(f"descriptor{index + 1}", next_offset, SECTOR)

    def _on_udf_area(self, data: bytes) -> None:
        anchor = data[ANCHOR - self._udf_area_start:]
        if struct.unpack_from("<H", anchor, 0)[0] != TAG_ANCHOR:
            return  # no anchor where UDF puts it: nothing more to learn
        length, location = struct.unpack_from("<II", anchor, 16)
        start, length = location * SECTOR, min(length, MAX_SEQUENCE)
        if start >= ANCHOR + SECTOR:
            self.capture("udf_sequence", start, length)
        elif start >= self._udf_area_start and start + length <= ANCHOR:
            self._on_udf_sequence(data[start - self._udf_area_start:start - self._udf_area_start + length])

    def _on_udf_sequence(self, data: bytes) -> None:
        end = 0
        for offset in range(0, len(data) - SECTOR + 1, SECTOR):
            tag = struct.unpack_from("<H", data, offset)[0]
            if tag == TAG_PARTITION:
                start, length = struct.unpack_from("<II", data, offset + 188)
                end = max(end, (start + length) * SECTOR)
            elif tag == TAG_TERMINATING:
                break
        self.partition_end = end or None
        # Only a partition ending past the region just read is still to be located (not self.position: that is
        # where the current chunk began, and the answer would depend on the chunk size).
        if end and end - 1 >= self._horizon:
            self.capture("volume_end", end - 1, 1)  # as for ISO 9660: the data must reach the partition's end

    def _capture_volume_end(self, index: int) -> None:
        assert self.volume_size is not None
        descriptor_end = FIRST_DESCRIPTOR + (index + 1) * SECTOR
        if self.volume_size < descriptor_end:
            raise FormatError(f"the volume of {self.volume_size} bytes ends before its own descriptors")
        # One byte, only to know the data reaches the volume's end: a truncated copy leaves it missing.
        self.capture("volume_end", self.volume_size - 1, 1)

    def matches(self) -> bool:
        if not self.identifiers:
            return False
        first = self.identifiers[0]
        if first == ISO9660 or first in UDF_NSR:
            return True
        return first == UDF_BEGIN and any(i in UDF_NSR for i in self.identifiers)

    @property
    def udf(self) -> bool:
        return any(i in UDF_NSR for i in self.identifiers)

    def virtual_size(self) -> int:
        return self.position  # qemu reads an ISO as raw: its virtual size is the file's size
