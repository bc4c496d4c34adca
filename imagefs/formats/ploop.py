"""ploop (qemu "parallels"): Parallels / Virtuozzo disk images.

Little-endian 64-byte header (qemu block/parallels.h): magic
"WithoutFreeSpace" (old) or "WithouFreSpacExt", version (2), heads,
cylinders, tracks (sectors per cluster), bat_entries, nb_sectors (uint64 at
36), inuse, data_off. With the old magic qemu keeps only the low 32 bits of
nb_sectors. The block allocation table (bat_entries x 4 bytes from offset 64)
must lie inside the data, else the copy is truncated.
"""

from __future__ import annotations

import struct

from . import register
from .base import FormatError, Inspector, SafetyCheck

MAGIC_OLD = b"WithoutFreeSpace"
MAGIC_EXT = b"WithouFreSpacExt"
HEADER = struct.Struct("<16sIIIIIQII")  # magic, version, heads, cylinders, tracks, bat_entries, nb_sectors, inuse, data_off
VERSION = 2
MAX_BAT_ENTRIES = (1 << 31) // 4  # qemu: "Catalog too large" beyond INT_MAX / 4


@register
class PloopInspector(Inspector):
    name = "ploop"

    def start(self) -> None:
        self.capture("header", 0, 64)

    def _fields(self):
        header = self.region("header")
        if header is None:
            raise FormatError("the parallels header is incomplete")
        return HEADER.unpack_from(header)

    def matches(self) -> bool:
        header = self.region("header")
        return header is not None and header[:16] in (MAGIC_OLD, MAGIC_EXT)

    def on_region(self, key: str, data: bytes) -> None:
        if key == "header" and self.matches():
            bat_entries = self._fields()[5]
            if bat_entries > MAX_BAT_ENTRIES:
                raise FormatError(f"a table of {bat_entries} entries is too large")
            if bat_entries:
                self.capture("bat_end", 64 + bat_entries * 4 - 1, 1)

    def virtual_size(self) -> int:
        magic, *_, nb_sectors, _, _ = self._fields()
        if magic == MAGIC_OLD:
            nb_sectors &= 0xFFFFFFFF
        return nb_sectors * 512

    def safety_checks(self) -> list[SafetyCheck]:
        return [SafetyCheck("version", self._check_version)]

    def _check_version(self) -> None:
        fields = self._fields()
        if fields[1] != VERSION:
            raise FormatError(f"version {fields[1]} is not supported")
        if fields[4] == 0:
            raise FormatError("zero sectors per cluster")
