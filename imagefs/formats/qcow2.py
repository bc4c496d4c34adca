"""qcow2 (v2, v3) and qed.

qcow2's header is big-endian: magic "QFI\\xfb", version, backing file offset
and size, cluster bits, virtual size at 0x18; v3 adds incompatible features
at 0x48. A backing file (it would be opened on the host: /etc/shadow) and an
external data file (CVE-2024-32498) are refused, and so is any incompatible
feature this inspector does not know. qed is refused outright, as Glance does.
The L1 table, the refcount table and the snapshot table must end inside the
data: a copy cut before them (a truncated upload) is refused.
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
SNAPSHOT_HEADER = 40  # bytes of a snapshot table entry before its variable part


@register
class Qcow2Inspector(Inspector):
    name = "qcow2"

    def start(self) -> None:
        self.capture("magic", 0, 4)
        self.capture("header", 0, 512)

    def on_region(self, key: str, data: bytes) -> None:
        if key != "header" or not self.matches():
            return
        cluster_bits = struct.unpack_from(">I", data, 0x14)[0]
        # l1_size, l1_table_offset, refcount_table_offset, refcount_table_clusters, nb_snapshots, snapshots_offset
        l1_size, l1_offset, refcount_offset, refcount_clusters, snapshots, snapshots_offset = (
            struct.unpack_from(">IQQIIQ", data, 0x24))
        if not 9 <= cluster_bits <= 21:
            raise FormatError(f"cluster_bits {cluster_bits} is outside 9..21")
        tables = {
            "l1_end": (l1_offset, l1_size * 8),
            "refcount_end": (refcount_offset, refcount_clusters << cluster_bits),
            "snapshots_end": (snapshots_offset, snapshots * SNAPSHOT_HEADER),
        }
        for name, (offset, length) in tables.items():
            last = offset + length - 1
            if length and last >= len(data):  # the header's own bytes are in the data whatever the chunk size
                self.capture(name, last, 1)

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
