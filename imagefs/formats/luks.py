"""luks: LUKS1 encrypted volumes (what `qemu-img create -f luks` makes).

The big-endian 592-byte phdr: magic "LUKS\\xba\\xbe", version (uint16 at 6),
cipher name and mode, hash, payload offset in 512-byte sectors (uint32 at
0x68). The virtual size is what follows the payload offset. qemu reads LUKS1
only: version 2 (the same magic, a JSON header) fails the "version" check.
The payload offset must lie inside the data, else the copy is truncated.
"""

from __future__ import annotations

import struct

from . import register
from .base import FormatError, Inspector, SafetyCheck

MAGIC = b"LUKS\xba\xbe"
PHDR_SIZE = 592


@register
class LuksInspector(Inspector):
    name = "luks"

    def start(self) -> None:
        self.capture("header", 0, PHDR_SIZE)

    @property
    def header(self) -> bytes:
        header = self.region("header")
        if header is None:
            raise FormatError("the luks header is incomplete")
        return header

    def matches(self) -> bool:
        header = self.region("header")
        return header is not None and header[:6] == MAGIC

    def version(self) -> int:
        return struct.unpack_from(">H", self.header, 6)[0]

    def payload_offset(self) -> int:
        return struct.unpack_from(">I", self.header, 0x68)[0] * 512

    def on_region(self, key: str, data: bytes) -> None:
        if key == "header" and self.matches() and self.version() == 1:
            payload = self.payload_offset()
            if payload < PHDR_SIZE:
                raise FormatError(f"payload offset {payload} lies inside the header")
            self.capture("payload_start", payload - 1, 1)

    def virtual_size(self) -> int:
        if self.version() != 1:
            raise FormatError(f"luks version {self.version()} is not supported")
        return max(self.position - self.payload_offset(), 0)

    def safety_checks(self) -> list[SafetyCheck]:
        return [SafetyCheck("version", self._check_version)]

    def _check_version(self) -> None:
        if self.version() != 1:
            raise FormatError(f"luks version {self.version()} is not supported (LUKS1 only)")
