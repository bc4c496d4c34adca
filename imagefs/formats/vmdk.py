"""vmdk: monolithicSparse, streamOptimized and text-only descriptor files.

A sparse extent starts with the little-endian "KDMV" header (version,
flags, capacity in sectors @12, grain size @20, descriptor offset @28 and
size @36 in sectors, GTEs per GT @44, redundant GD @48, GD @56). The
embedded descriptor must sit at sector 1 and be at most 1 MiB - 1 bytes; it
names the extents the hypervisor will open, so it is parsed line by line and
anything not understood is refused: an extent path with "/" would open a
host file, a descriptor without extents (CVE-2022-47951) or of any type but
monolithicSparse/streamOptimized would read other files, and so would a
parent (backing) file named by parentFileNameHint. A streamOptimized
stream whose GD offset is GD_AT_END keeps its real header in a footer in the
last 1536 bytes (footer marker, footer, end-of-stream marker), as qemu reads
it; the footer must agree with the header. A file that is the descriptor
text alone ("# Disk DescriptorFile") is parsed the same way.
"""

from __future__ import annotations

import struct

from . import register
from .base import FormatError, Inspector, SafetyCheck

MAGIC = b"KDMV"
# magic, version, flags, capacity, grain, descriptor offset and size, GTEs per GT, redundant GD, GD (sectors)
HEADER = struct.Struct("<4sIIQQQQIQQ")
GD_AT_END = 0xFFFFFFFFFFFFFFFF
SECTOR = 512
DESC_OFFSET = 1  # sectors
DESC_MAX = (1 << 20) - 1  # bytes
TEXT_SIGNATURE = b"# Disk DescriptorFile"
FOOTER_LENGTH = 3 * SECTOR
MARKER = struct.Struct("<QII")  # val, size, type
MARKER_END_OF_STREAM, MARKER_FOOTER = 0, 3
SUPPORTED_TYPES = {"monolithicsparse": "monolithicSparse", "streamoptimized": "streamOptimized"}
EXTENT_ACCESS = ("rw", "rdonly", "noaccess")
# createType -> vmware_disktype as nova's VMware driver names it (nova/virt/vmwareapi/constants.py).
DISK_TYPES = {"monolithicsparse": "sparse", "streamoptimized": "streamOptimized", "monolithicflat": "preallocated"}
# ddb.adapterType -> vmware_adaptertype as nova and Glance's compute-vmware metadefs name it.
ADAPTER_TYPES = {
    "ide": "ide", "lsilogic": "lsiLogic", "buslogic": "busLogic", "lsilogicsas": "lsiLogicsas",
    "lsisas1068": "lsiLogicsas", "paravirtual": "paraVirtual", "pvscsi": "paraVirtual",
}


class Descriptor:
    """The parsed descriptor text; `problem` says why it is refused (None when it is safe)."""

    def __init__(self, data: bytes):
        self.fields: dict[str, str] = {}  # header lines: createType, CID, parentCID, parentFileNameHint, ...
        self.extents: list[str] = []
        self.ddb: dict[str, str] = {}
        self.problem: str | None = None
        try:
            text = data.rstrip(b"\x00").decode("ascii")
        except UnicodeDecodeError:
            self.problem = "the descriptor is not ASCII text"
            return
        if "\x00" in text:
            self.problem = "the descriptor holds NUL bytes"
            return
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            word = line.split(None, 1)[0].lower()
            if line.lower().startswith("ddb"):
                key, _, value = line.partition("=")
                self.ddb[key.strip().lower()] = value.strip().strip('"')
            elif word in EXTENT_ACCESS:
                self.extents.append(line)
            elif "=" in line and " " not in line.split("=", 1)[0].strip():
                key, _, value = line.partition("=")
                self.fields[key.strip().lower()] = value.strip().strip('"')
            else:
                self.problem = f"unsupported line in the descriptor: {line[:80]!r}"
                return

    @property
    def create_type(self) -> str | None:
        return self.fields.get("createtype")

    @property
    def create_type_key(self) -> str:
        return (self.create_type or "").lower()

    def extent_sectors(self) -> int:
        total = 0
        for line in self.extents:
            fields = line.split()
            if len(fields) > 1 and fields[1].isdigit():
                if len(fields[1]) > 20:  # beyond uint64, and int() refuses 4300 digits and more (ValueError)
                    raise FormatError(f"the extent size {fields[1][:24]}... is impossible")
                total += int(fields[1])
        return total


@register
class VmdkInspector(Inspector):
    name = "vmdk"

    def start(self) -> None:
        self.header_fields: tuple | None = None
        self.descriptor_problem: str | None = None  # the descriptor lies outside its allowed region
        self.text: bytearray | None = bytearray()  # the first bytes, kept while they may be a text descriptor
        self.text_too_large = False
        self.capture("magic", 0, len(MAGIC))  # the rest of the header only when this is KDMV

    # --- streaming ------------------------------------------------------------
    def feed(self, chunk: bytes | memoryview) -> None:
        if self.text is not None:
            self._feed_text(chunk)
        super().feed(chunk)

    def _feed_text(self, chunk: bytes | memoryview) -> None:
        assert self.text is not None
        if self.text_too_large:
            return
        self.text += memoryview(chunk)[:DESC_MAX + 1 - len(self.text)]
        if len(self.text) >= len(TEXT_SIGNATURE) and not self.text.startswith(TEXT_SIGNATURE):
            self.text = None  # not a descriptor file: keep nothing
        elif len(self.text) > DESC_MAX:
            self.text_too_large = True  # the descriptor check fails on the size; keep only the signature
            self.text = bytearray(TEXT_SIGNATURE)

    def on_region(self, key: str, data: bytes) -> None:
        if key == "magic" and data == MAGIC:
            self.capture("header", len(MAGIC), SECTOR - len(MAGIC))
        elif key == "header":
            self._parse_header(MAGIC + data)

    def _parse_header(self, data: bytes) -> None:
        fields = HEADER.unpack_from(data)
        _, version, _, _, _, desc_sec, desc_num, _, _, gd_offset = fields
        self.header_fields = fields
        if version not in (1, 2, 3):
            raise FormatError(f"unsupported vmdk version {version}")
        if desc_sec != DESC_OFFSET:
            self.descriptor_problem = f"the descriptor is at sector {desc_sec}, not at sector {DESC_OFFSET}"
        elif desc_num == 0:
            self.descriptor_problem = "the header names no descriptor"
        elif desc_num * SECTOR > DESC_MAX:
            self.descriptor_problem = f"the descriptor of {desc_num} sectors exceeds {DESC_MAX} bytes"
        else:
            self.capture("descriptor", desc_sec * SECTOR, desc_num * SECTOR)
        if gd_offset == GD_AT_END:
            self.capture_tail(FOOTER_LENGTH)
        elif gd_offset * SECTOR < SECTOR:
            raise FormatError(f"the grain directory at sector {gd_offset} overlaps the header")
        else:
            # Only to know the data reaches it: a truncated copy leaves this region missing.
            self.capture("grain_directory", gd_offset * SECTOR, 4)

    # --- facts ------------------------------------------------------------------
    @property
    def is_text(self) -> bool:
        return self.header_fields is None and self.text is not None and self.text.startswith(TEXT_SIGNATURE)

    def matches(self) -> bool:
        return self.region("magic") == MAGIC or self.is_text

    def descriptor(self) -> Descriptor | None:
        if self.is_text:
            return Descriptor(bytes(self.text or b""))
        data = self.region("descriptor")
        return Descriptor(data) if data is not None else None

    def footer(self) -> tuple | None:
        """The footer's header fields, when the header says the real one is at the end."""
        if self.header_fields is None or self.header_fields[9] != GD_AT_END or not self.ended:
            return None
        tail = self.tail
        if len(tail) < FOOTER_LENGTH or self.position < SECTOR + FOOTER_LENGTH:
            return None
        return HEADER.unpack_from(tail, SECTOR)

    def virtual_size(self) -> int:
        if self.header_fields is not None:
            footer = self.footer()
            if footer is not None:
                try:
                    self._check_footer()
                except FormatError:
                    footer = None  # refused by the footer check anyway; the header's capacity is the saner number
            return (footer or self.header_fields)[3] * SECTOR  # qemu reads the footer's header when there is one
        if self.is_text:
            descriptor = self.descriptor()
            return descriptor.extent_sectors() * SECTOR if descriptor else 0
        raise FormatError("the vmdk header is incomplete")

    def safety_checks(self) -> list[SafetyCheck]:
        checks = [
            SafetyCheck("descriptor", self._check_descriptor),
            SafetyCheck("backing_file", self._check_backing_file),
        ]
        if self.header_fields is not None and self.header_fields[9] == GD_AT_END:
            checks.append(SafetyCheck("footer", self._check_footer))
        return checks

    def _check_descriptor(self) -> None:
        if self.text_too_large:
            raise FormatError(f"the descriptor file is larger than {DESC_MAX} bytes")
        if self.descriptor_problem:
            raise FormatError(self.descriptor_problem)
        descriptor = self.descriptor()
        if descriptor is None:
            raise FormatError("no descriptor found")
        if descriptor.problem:
            raise FormatError(descriptor.problem)
        if descriptor.create_type_key not in SUPPORTED_TYPES:
            raise FormatError(f"unsupported subformat {descriptor.create_type!r}")
        for line in descriptor.extents:
            if "/" in line:
                raise FormatError(f"an extent names a path: {line[:80]!r}")
        if not descriptor.extents:
            raise FormatError("the descriptor names no extents")

    def _check_backing_file(self) -> None:
        # qemu opens a delta disk's parentFileNameHint as its backing file: a host file read into the guest,
        # as with a qcow2 backing file. (The descriptor check refuses a descriptor it cannot read.)
        descriptor = self.descriptor()
        if descriptor is not None and "parentfilenamehint" in descriptor.fields:
            raise FormatError(f"a parent (backing) file is named: {descriptor.fields['parentfilenamehint'][:80]!r}")

    def _check_footer(self) -> None:
        assert self.header_fields is not None
        tail = self.tail
        if len(tail) < FOOTER_LENGTH or self.position < SECTOR + FOOTER_LENGTH:
            raise FormatError("the data ends before the footer")
        footer = HEADER.unpack_from(tail, SECTOR)
        f_magic, f_version, _, _, _, f_desc_sec, f_desc_num, _, _, f_gd = footer
        h_magic, h_version, _, _, _, h_desc_sec, h_desc_num, _, _, _ = self.header_fields
        if f_magic != h_magic:
            raise FormatError(f"the footer signature {f_magic!r} differs from the header's")
        if f_version != h_version:
            raise FormatError(f"the footer version {f_version} differs from the header's {h_version}")
        if (f_desc_sec, f_desc_num) != (h_desc_sec, h_desc_num):
            raise FormatError("the footer names another descriptor than the header")
        if f_gd == GD_AT_END:
            raise FormatError("the footer points to another footer")
        _, size, marker_type = MARKER.unpack_from(tail, 0)
        if (size, marker_type) != (0, MARKER_FOOTER):
            raise FormatError("the footer marker is invalid")
        val, size, marker_type = MARKER.unpack_from(tail, 2 * SECTOR)
        if (val, size, marker_type) != (0, 0, MARKER_END_OF_STREAM):
            raise FormatError("the end-of-stream marker is invalid")

    def properties(self) -> dict[str, str]:
        descriptor = self.descriptor()
        if descriptor is None or descriptor.problem:
            return {}
        props = {}
        disktype = DISK_TYPES.get(descriptor.create_type_key)
        if disktype:
            props["vmware_disktype"] = disktype
        adapter = ADAPTER_TYPES.get(descriptor.ddb.get("ddb.adaptertype", "").lower())
        if adapter:
            props["vmware_adaptertype"] = adapter
        return props
