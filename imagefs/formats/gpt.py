"""gpt: MBR and GPT partition tables at the start of raw images.

A 512-byte MBR ending in 0x55 0xAA matches, unless it is a FAT volume boot
record (two FATs at 0x10 and media descriptor 0xF8 at 0x15). The image stays
raw (the detector lists "gpt" among the raw containers), its virtual size is
the bytes read, and the "mbr" check must pass: every one of the four entries
at 446 has boot flag 0x00 or 0x80; a 0xEE (GPT protective) entry starts at
CHS (0,2,0) and LBA 1; with a GPT only partition 0 is defined; at least one
partition is defined.

With a GPT (header "EFI PART" at LBA 1), the backup header the primary one
names (alternate LBA, uint64 LE at +32) must lie inside the data: a disk
cut short loses it, and that is a truncated copy.
"""

from __future__ import annotations

import struct

from . import register
from .base import FormatError, Inspector, SafetyCheck

PTE_START = 446
PTE = struct.Struct("<B3sB3sII")  # boot flag, start CHS, type, end CHS, start LBA, sectors
PROTECTIVE = 0xEE
MAX_LBA = 1 << 53  # beyond any disk: an alternate LBA there is nonsense, not a location


@register
class GptInspector(Inspector):
    name = "gpt"

    def start(self) -> None:
        self.capture("mbr", 0, 512)

    @property
    def mbr(self) -> bytes:
        mbr = self.region("mbr")
        if mbr is None:
            raise FormatError("the MBR is incomplete")
        return mbr

    def matches(self) -> bool:
        mbr = self.region("mbr")
        if mbr is None or mbr[510:512] != b"\x55\xaa":
            return False
        return not (mbr[0x10] == 2 and mbr[0x15] == 0xF8)  # a FAT boot sector, not a partition table

    def entries(self) -> list[tuple]:
        return [PTE.unpack_from(self.mbr, PTE_START + 16 * i) for i in range(4)]

    def on_region(self, key: str, data: bytes) -> None:
        if key == "mbr" and self.matches() and any(e[2] == PROTECTIVE for e in self.entries()):
            self.capture("gpt_header", 512, 92)
        elif key == "gpt_header" and data[:8] == b"EFI PART":
            alternate = struct.unpack_from("<Q", data, 32)[0]
            if 1 < alternate < MAX_LBA:
                self.capture("backup_header", alternate * 512 + 511, 1)

    def safety_checks(self) -> list[SafetyCheck]:
        return [SafetyCheck("mbr", self._check_mbr)]

    def _check_mbr(self) -> None:
        defined = []
        gpt = False
        for i, (boot, start_chs, kind, _, start_lba, _) in enumerate(self.entries()):
            if boot not in (0x00, 0x80):
                raise FormatError(f"partition {i} has boot flag {boot:#x}")
            if kind:
                defined.append(i)
            if kind == PROTECTIVE:
                gpt = True
                if start_chs != b"\x00\x02\x00":
                    raise FormatError(f"the GPT protective partition {i} starts at CHS {tuple(start_chs)}")
                if start_lba != 1:
                    raise FormatError(f"the GPT protective partition {i} starts at LBA {start_lba}")
        if not defined:
            raise FormatError("no partition is defined")
        if gpt and defined != [0]:
            raise FormatError(f"with a GPT only partition 0 may be defined (found {defined})")
