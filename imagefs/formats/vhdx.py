"""vhdx: Microsoft Hyper-V VHDX.

"vhdxfile" at 0. The region table at 192 KiB (0x30000): signature "regi",
entry count (uint32 LE at +8, fewer than 2048), 32-byte entries (GUID, file
offset uint64, length uint32, required uint32). The metadata region (GUID
8B7CA206-...) starts with a table: signature "metadata", item count (uint16
LE at +10, fewer than 2048), 32-byte items (GUID, offset uint32 relative to
the region, length uint32, flags). The Virtual Disk Size item (GUID
2FA54224-...) holds the virtual size as uint64 LE.

Memory is bounded by the counts: the region table (16 + 2047 x 32 bytes)
and the metadata table (32 + 2047 x 32 bytes) are the only tables kept.
A count at or beyond the cap fails the "region_table"/"metadata_table"
check; a metadata region or item that lies before the table naming it (a
file laid out to make a streaming reader look back; whether such a region is
still ahead would depend on the chunk size) is a FormatError, which refuses
the image. Every region the table names must lie inside the
data, else the copy is truncated.
"""

from __future__ import annotations

import struct
import uuid

from . import register
from .base import FormatError, Inspector, SafetyCheck

MAGIC = b"vhdxfile"
REGION_TABLE_OFFSET = 0x30000
MAX_ENTRIES = 2048  # counts must be below this (the spec's limit is 2047)
ENTRY = 32
METADATA_REGION = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E").bytes_le
VIRTUAL_DISK_SIZE = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8").bytes_le


@register
class VhdxInspector(Inspector):
    name = "vhdx"

    def start(self) -> None:
        self.capture("ident", 0, 8)
        self.region_count: int | None = None
        self.metadata_count: int | None = None
        self.metadata_offset: int | None = None

    def matches(self) -> bool:
        return self.region("ident") == MAGIC

    def on_region(self, key: str, data: bytes) -> None:
        if key == "ident":
            if data == MAGIC:
                self.capture("region_header", REGION_TABLE_OFFSET, 16)
        elif key == "region_header":
            if data[:4] != b"regi":
                raise FormatError("the region table has no regi signature")
            self.region_count = struct.unpack_from("<I", data, 8)[0]
            if self.region_count < MAX_ENTRIES:
                self.capture("region_entries", REGION_TABLE_OFFSET + 16, self.region_count * ENTRY)
        elif key == "region_entries":
            self._on_region_entries(data)
        elif key == "metadata_header":
            if data[:8] != b"metadata":
                raise FormatError("the metadata table has no metadata signature")
            self.metadata_count = struct.unpack_from("<H", data, 10)[0]
            if self.metadata_count < MAX_ENTRIES:
                self.capture("metadata_entries", self.metadata_offset + 32, self.metadata_count * ENTRY)
        elif key == "metadata_entries":
            self._on_metadata_entries(data)

    def _on_region_entries(self, data: bytes) -> None:
        data_end = 0
        for i in range(0, len(data), ENTRY):
            guid = data[i:i + 16]
            offset, length = struct.unpack_from("<QI", data, i + 16)
            data_end = max(data_end, offset + length)
            if guid == METADATA_REGION:
                if self.metadata_offset is not None:
                    raise FormatError("two metadata regions")
                self.metadata_offset = offset
        if self.metadata_offset is None:
            raise FormatError("no metadata region")
        table_end = REGION_TABLE_OFFSET + 16 + len(data)
        self._capture_after("metadata_header", self.metadata_offset, 32, table_end)
        # Every region (BAT, metadata, ...) must be in the data: one byte, the last, is located, not kept.
        if data_end - 1 >= table_end:
            self.capture("regions_end", data_end - 1, 1)

    def _on_metadata_entries(self, data: bytes) -> None:
        for i in range(0, len(data), ENTRY):
            if data[i:i + 16] == VIRTUAL_DISK_SIZE:
                offset, length = struct.unpack_from("<II", data, i + 16)
                if length < 8:
                    raise FormatError(f"the virtual disk size item is {length} bytes long")
                table_end = self.metadata_offset + 32 + len(data)
                self._capture_after("virtual_disk_size", self.metadata_offset + offset, 8, table_end)
                return
        raise FormatError("no virtual disk size item")

    def _capture_after(self, key: str, offset: int, length: int, after: int) -> None:
        """A region named by a table must come after that table. Whether it still lies ahead in the stream
        would depend on the chunk size; a file laid out to make a streaming reader look back is refused."""
        if offset < after:
            raise FormatError(f"{key} at {offset} lies before the table that names it (ends at {after})")
        self.capture(key, offset, length)

    def virtual_size(self) -> int:
        data = self.region("virtual_disk_size")
        if data is None:
            raise FormatError("the virtual disk size was not found")
        return struct.unpack("<Q", data)[0]

    def safety_checks(self) -> list[SafetyCheck]:
        return [
            SafetyCheck("region_table", self._check_region_table),
            SafetyCheck("metadata_table", self._check_metadata_table),
        ]

    def _check_region_table(self) -> None:
        if self.region_count is None:
            raise FormatError("the region table was not read")
        if self.region_count >= MAX_ENTRIES:
            raise FormatError(f"{self.region_count} region table entries (the limit is {MAX_ENTRIES - 1})")

    def _check_metadata_table(self) -> None:
        if self.metadata_count is None:
            raise FormatError("the metadata table was not read")
        if self.metadata_count >= MAX_ENTRIES:
            raise FormatError(f"{self.metadata_count} metadata table entries (the limit is {MAX_ENTRIES - 1})")
