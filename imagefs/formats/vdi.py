"""vdi: VirtualBox disk image.

Little-endian header: signature 0xBEDA107F at 0x40, virtual size (uint64)
at 0x170, the block map at offset_bmap (0x154) holding blocks_in_image
(0x180) 32-bit entries, data from offset_data (0x158). The block map must
lie inside the data, else the copy is truncated.
"""

from __future__ import annotations

import struct

from . import register
from .base import FormatError, Inspector

SIGNATURE = 0xBEDA107F
MAX_BLOCKS = 1 << 30  # far beyond any real image; the map's end is only located, never kept


@register
class VdiInspector(Inspector):
    name = "vdi"

    def start(self) -> None:
        self.capture("header", 0, 512)

    def matches(self) -> bool:
        header = self.region("header")
        return header is not None and struct.unpack_from("<I", header, 0x40)[0] == SIGNATURE

    def on_region(self, key: str, data: bytes) -> None:
        if key == "header" and self.matches():
            offset_bmap, offset_data = struct.unpack_from("<II", data, 0x154)
            blocks = struct.unpack_from("<I", data, 0x180)[0]
            if blocks > MAX_BLOCKS:
                raise FormatError(f"{blocks} blocks is impossible")
            last = offset_bmap + blocks * 4 - 1
            if blocks and last >= len(data):  # (a map inside the header is in the data whatever the chunk size)
                self.capture("bmap_end", last, 1)

    def virtual_size(self) -> int:
        header = self.region("header")
        if header is None:
            raise FormatError("the vdi header is incomplete")
        return struct.unpack_from("<Q", header, 0x170)[0]
