"""vhd (qemu "vpc"): Microsoft Virtual PC / Hyper-V VHD, fixed and dynamic.

The 512-byte footer (big-endian) starts with "conectix". Dynamic and
differencing disks carry a copy of it at offset 0 (that is what Glance and
qemu's probe look for); a fixed disk is raw data followed by the footer only,
so the last 512 bytes are kept as well and a fixed footer there also matches
(qemu-img opens such a file with `-f vpc`, reading the footer at the end).

Virtual size follows qemu's vpc_open: the CHS geometry (cylinders x heads x
sectors x 512) unless the creator application is one that writes an exact
current_size (Hyper-V "win ", qemu with force_size "qem2", Disk2vhd "d2v ",
XenServer "tap\\0", XenConverter "CTXS"), or the geometry is the maximum one,
in which case current_size (uint64 at 40..48) is used.

A dynamic disk's header ("cxsparse", at the footer's data_offset) and the
end of its block allocation table must lie inside the data (else: a truncated
copy), and so must a fixed disk's data (a copy cut short and finished with
the footer is refused). A differencing disk (type 4)
names a parent file by path: refused.
"""

from __future__ import annotations

import struct

from . import register
from .base import FormatError, Inspector, SafetyCheck

FOOTER_MAGIC = b"conectix"
FOOTER = struct.Struct(">8sIIQI4sI4sQQHBBII")
# cookie, features, version, data_offset, timestamp, creator_app, creator_ver, creator_os,
# original_size, current_size, cylinders, heads, sectors_per_track, disk_type, checksum
DYNAMIC_HEADER = struct.Struct(">8sQQIIII")  # cookie, data_offset, table_offset, version, max_table_entries, block_size, checksum
DISK_FIXED, DISK_DYNAMIC, DISK_DIFFERENCING = 2, 3, 4
# qemu's table: these creators write an exact current_size; everyone else is read by geometry.
CURRENT_SIZE_CREATORS = {b"win ", b"qem2", b"d2v ", b"CTXS", b"tap\x00"}
MAX_GEOMETRY = 65535 * 16 * 255
MAX_BAT_ENTRIES = (2 << 40) // 512  # qemu caps images at 2040 GiB; more entries than sectors is nonsense


@register
class VhdInspector(Inspector):
    name = "vhd"

    def start(self) -> None:
        self.capture("footer", 0, 512)
        self.capture_tail(512)

    def on_region(self, key: str, data: bytes) -> None:
        if key == "footer" and data[:8] == FOOTER_MAGIC:
            fields = FOOTER.unpack_from(data)
            data_offset, disk_type = fields[3], fields[13]
            if disk_type in (DISK_DYNAMIC, DISK_DIFFERENCING):
                if data_offset < 512 or data_offset >= 1 << 62:
                    raise FormatError(f"dynamic header offset {data_offset} is impossible")
                self._dynamic_header_end = data_offset + 1024
                self.capture("dynamic_header", data_offset, 1024)
        elif key == "dynamic_header":
            cookie, _, table_offset, _, entries, block_size, _ = DYNAMIC_HEADER.unpack_from(data)
            if cookie != b"cxsparse":
                raise FormatError("the dynamic disk header has no cxsparse signature")
            if entries > MAX_BAT_ENTRIES or table_offset >= 1 << 62:
                raise FormatError(f"block allocation table of {entries} entries at {table_offset} is impossible")
            last = table_offset + entries * 4 - 1
            if entries and last >= self._dynamic_header_end:
                # The table's last byte must be in the data; the table itself is not kept (up to 16 MiB).
                # (A table ending before the header is in the data already, whatever the chunk size.)
                self.capture("bat_end", last, 1)

    def on_end(self) -> None:
        head = self.region("footer")
        if (head is None or head[:8] != FOOTER_MAGIC) and self._footer() is not None:  # fixed: data, then footer
            if self.virtual_size() > self.position - 512:
                raise FormatError(
                    f"the fixed disk's footer describes {self.virtual_size()} bytes but only"
                    f" {self.position - 512} precede it: a truncated copy"
                )

    def _footer(self) -> bytes | None:
        head = self.region("footer")
        if head is not None and head[:8] == FOOTER_MAGIC:
            return head
        if self.ended and len(self.tail) == 512 and self.tail[:8] == FOOTER_MAGIC:
            if FOOTER.unpack_from(self.tail)[13] == DISK_FIXED:
                return self.tail
        return None

    @property
    def footer(self) -> bytes:
        footer = self._footer()
        if footer is None:
            raise FormatError("no vhd footer")
        return footer

    def matches(self) -> bool:
        return self._footer() is not None

    def virtual_size(self) -> int:
        fields = FOOTER.unpack_from(self.footer)
        creator, current_size, cylinders, heads, sectors = fields[5], fields[9], fields[10], fields[11], fields[12]
        chs = cylinders * heads * sectors
        if creator in CURRENT_SIZE_CREATORS or chs == MAX_GEOMETRY:
            return current_size // 512 * 512
        return chs * 512

    def safety_checks(self) -> list[SafetyCheck]:
        return [SafetyCheck("disk_type", self._check_disk_type)]

    def _check_disk_type(self) -> None:
        disk_type = FOOTER.unpack_from(self.footer)[13]
        if disk_type == DISK_DIFFERENCING:
            raise FormatError("a differencing disk names a parent file")
        if disk_type not in (DISK_FIXED, DISK_DYNAMIC):
            raise FormatError(f"disk type {disk_type} is unknown")
