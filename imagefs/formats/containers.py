"""Container formats (Glance's container_format, not disk_format): ova, docker, compressed.

These never compete with the disk formats in the multi-format rule
(`kind = "container"`): the detector reports the one that matched as
`Detection.container_format`.

- compressed: gzip, bzip2, xz, zstd or zip magic at offset 0.
- ova: a tar holding an .ovf descriptor; docker: a tar holding manifest.json
  and/or layer tarballs (`docker save`). A tar is a chain of 512-byte member
  headers (name @0, octal size @124, checksum @148, type @156, "ustar" @257),
  each followed by the member's data rounded up to 512 bytes: the inspector
  follows the chain through the first MAX_MEMBERS headers, one header held at
  a time, reading only names (GNU long names and pax paths included, bounded).
"""

from __future__ import annotations

from . import register
from .base import Inspector

BLOCK = 512
MAX_MEMBERS = 64
MAX_LONG_NAME = 4096  # a GNU long name or pax header longer than this is not read
COMPRESSION_MAGIC = {
    "gzip": b"\x1f\x8b",
    "bzip2": b"BZh",
    "xz": b"\xfd7zXZ\x00",
    "zstd": b"\x28\xb5\x2f\xfd",
    "zip": b"PK\x03\x04",
}


@register
class CompressedInspector(Inspector):
    name = "compressed"
    kind = "container"

    def start(self) -> None:
        self.capture("magic", 0, max(len(m) for m in COMPRESSION_MAGIC.values()))

    def compression(self) -> str | None:
        magic = self.region("magic")
        if magic is None:  # shorter than the longest magic: no compressed stream is that small
            return None
        for name, signature in COMPRESSION_MAGIC.items():
            if magic.startswith(signature):
                if name == "bzip2" and not magic[3:4].isdigit():
                    continue  # "BZh" then the block size digit
                return name
        return None

    def matches(self) -> bool:
        return self.compression() is not None


def _number(field: bytes) -> int | None:
    """A tar numeric field: octal text, or GNU base-256 when the high bit of the first byte is set."""
    if field[:1] and field[0] & 0x80:
        value = field[0] & 0x7F
        for byte in field[1:]:
            value = (value << 8) | byte
        return value
    text = field.split(b"\x00", 1)[0].strip()
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        return None


def _valid_header(block: bytes) -> bool:
    if block[257:262] != b"ustar":
        return False
    stored = _number(block[148:156])
    computed = sum(block[:148]) + 8 * 32 + sum(block[156:])
    return stored == computed


class TarInspector(Inspector):
    """The names of a tar's first members (subclasses decide what they mean)."""

    kind = "container"

    def start(self) -> None:
        self.members: list[str] = []
        self.is_tar = False
        self._count = 0
        self._long_name: str | None = None  # the next member's name, from a GNU 'L' or pax 'x' header
        self._pending: tuple[bytes, int] | None = None  # (type, size) of a header whose data is being read
        self.capture("header0", 0, BLOCK)

    def on_region(self, key: str, data: bytes) -> None:
        if key.startswith("header"):
            self._on_header(int(key[len("header"):]), data)
        elif key == "name_data":
            self._on_name_data(data)

    def _on_header(self, offset: int, block: bytes) -> None:
        if not any(block) or not _valid_header(block):
            return  # the end of the archive (or not a tar)
        self.is_tar = True
        self._count += 1
        size = _number(block[124:136])
        if size is None:
            return
        typeflag = block[156:157]
        data_offset = offset + BLOCK
        if typeflag in (b"L", b"x"):
            if size <= MAX_LONG_NAME:
                self._pending = (typeflag, data_offset + -(-size // BLOCK) * BLOCK)
                self.capture("name_data", data_offset, size)
                return
        elif typeflag not in (b"g",):
            name = block[:100].split(b"\x00", 1)[0]
            prefix = block[345:500].split(b"\x00", 1)[0]
            if prefix:
                name = prefix + b"/" + name
            self.members.append(self._long_name or name.decode("utf-8", "replace"))
            self._long_name = None
        self._next(data_offset + -(-size // BLOCK) * BLOCK)

    def _on_name_data(self, data: bytes) -> None:
        assert self._pending is not None
        typeflag, next_offset = self._pending
        self._pending = None
        if typeflag == b"L":
            self._long_name = data.split(b"\x00", 1)[0].decode("utf-8", "replace")
        else:
            for record in data.split(b"\n"):
                _, _, keyword = record.partition(b" ")
                if keyword.startswith(b"path="):
                    self._long_name = keyword[len(b"path="):].decode("utf-8", "replace")
        self._next(next_offset)

    def _next(self, offset: int) -> None:
        if self._count < MAX_MEMBERS:
            self.capture(f"header{offset}", offset, BLOCK)

    @staticmethod
    def _base(name: str) -> str:
        return name.rstrip("/").rsplit("/", 1)[-1].lower()


@register
class OvaInspector(TarInspector):
    """An OVA: a tar whose members include the .ovf descriptor (the OVF spec puts it first)."""

    name = "ova"

    def matches(self) -> bool:
        return self.is_tar and any(self._base(m).endswith(".ovf") for m in self.members)


@register
class DockerInspector(TarInspector):
    """`docker save` output: a tar holding manifest.json and/or layer tarballs (<id>/layer.tar)."""

    name = "docker"

    def matches(self) -> bool:
        if not self.is_tar:
            return False
        names = [m[2:] if m.startswith("./") else m for m in self.members]
        return any(n == "manifest.json" or self._base(n) == "layer.tar" for n in names)
