"""qcow2 (v2, v3) and qed.

qcow2's header is big-endian: magic "QFI\\xfb", version, backing file offset
and size, cluster bits, virtual size at 0x18; v3 adds incompatible features
at 0x48. A backing file (it would be opened on the host: /etc/shadow) and an
external data file (CVE-2024-32498) are refused, and so is any incompatible
feature this inspector does not know. qed is refused outright, as Glance does.
"""

from __future__ import annotations

import struct

from . import register
from .base import FormatError, Inspector, SafetyCheck

QCOW2_MAGIC = b"QFI\xfb"
HEADER = struct.Struct(">4sIQIIQ")  # magic, version, backing_file_offset, backing_file_size, cluster_bits, size
# Incompatible feature bits qemu defines: dirty, corrupt, external data file, compression type, extended L2.
KNOWN_INCOMPATIBLE = 0b11111
EXTERNAL_DATA_FILE = 1 << 2


@register
class Qcow2Inspector(Inspector):
    name = "qcow2"

    def start(self) -> None:
        self.capture("magic", 0, 4)
        self.capture("header", 0, 512)

    @property
    def header(self) -> bytes:
        header = self.region("header")
        if header is None:
            raise FormatError("the qcow2 header is incomplete")
        return header

    def _fields(self):
        return HEADER.unpack_from(self.header)

    def matches(self) -> bool:
        return self.region("magic") == QCOW2_MAGIC

    def version(self) -> int:
        return self._fields()[1]

    def incompatible_features(self) -> int:
        return struct.unpack_from(">Q", self.header, 0x48)[0] if self.version() >= 3 else 0

    def virtual_size(self) -> int:
        return self._fields()[5]

    def safety_checks(self) -> list[SafetyCheck]:
        return [
            SafetyCheck("backing_file", self._check_backing_file),
            SafetyCheck("data_file", self._check_data_file),
            SafetyCheck("version", self._check_version),
            SafetyCheck("unknown_features", self._check_unknown_features),
        ]

    def _check_backing_file(self) -> None:
        _, _, offset, size, _, _ = self._fields()
        if offset:
            raise FormatError(f"a backing file is named ({size} bytes at offset {offset})")

    def _check_data_file(self) -> None:
        if self.incompatible_features() & EXTERNAL_DATA_FILE:
            raise FormatError("the data lives in an external data file")

    def _check_version(self) -> None:
        if self.version() not in (2, 3):
            raise FormatError(f"version {self.version()} is not supported")

    def _check_unknown_features(self) -> None:
        unknown = self.incompatible_features() & ~KNOWN_INCOMPATIBLE
        if unknown:
            raise FormatError(f"unknown incompatible feature bits {unknown:#x}")

    def properties(self) -> dict[str, str]:
        compat = {2: "0.10", 3: "1.1"}.get(self.version())
        return {"qcow2_compat": compat} if compat else {}


@register
class QedInspector(Inspector):
    name = "qed"

    def start(self) -> None:
        self.capture("magic", 0, 4)

    def matches(self) -> bool:
        return self.region("magic") == b"QED\x00"

    def safety_checks(self) -> list[SafetyCheck]:
        return [SafetyCheck("banned", self._banned)]

    @staticmethod
    def _banned() -> None:
        raise FormatError("qed images are not accepted")
