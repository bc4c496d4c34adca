"""The streaming inspector framework: captured regions, bounded memory, named safety checks.

An Inspector sees the image once, as the chunks the hashers see, in order.
It never keeps the data: it declares the regions it needs (`capture`), which
are copied out of the passing chunks, and parses them when they are complete
(`on_region`), possibly declaring further regions then (a header pointing at
a table). A region that lies behind the stream already, or more than
MAX_CAPTURED bytes held at once, is the inspector's own FormatError: memory
per upload is bounded whatever the chunk size and whatever the data claims.

Inspectors are pure: bytes in, facts out (format, virtual size, properties,
safety checks); no I/O, no qemu-img.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

MAX_CAPTURED = 2 << 20  # bytes one inspector may hold at once


class FormatError(Exception):
    """The data is not what the inspector expected (parse error, impossible field, missing region)."""


class SafetyCheckFailed(FormatError):
    def __init__(self, failures: dict[str, str]):
        self.failures = failures
        super().__init__("; ".join(f"{name}: {why}" for name, why in failures.items()))


@dataclass(frozen=True)
class SafetyCheck:
    name: str
    check: Callable[[], None]  # raises FormatError(why) when the image is unsafe


@dataclass
class _Region:
    offset: int
    length: int
    data: bytearray = field(default_factory=bytearray)

    @property
    def end(self) -> int:
        return self.offset + self.length

    @property
    def complete(self) -> bool:
        return len(self.data) == self.length


class Inspector:
    """One format. Subclasses set `name` (as qemu-img names it) and override the hooks."""

    name = "raw"
    # "disk": a disk_format, competing in the multi-format rule; "container": a container_format (ova, docker,
    # compressed), reported beside the disk format and never competing with it.
    kind = "disk"

    def __init__(self) -> None:
        self.position = 0  # bytes of the stream seen so far
        self._regions: dict[str, _Region] = {}
        self._done: dict[str, bytes] = {}
        self._tail_length = 0
        self._tail = bytearray()
        self._horizon: int | None = None  # while on_region runs: the end of the region that completed
        self.ended = False
        self.start()

    # --- what subclasses use ----------------------------------------------
    def capture(self, key: str, offset: int, length: int) -> None:
        """Ask for bytes [offset, offset+length) of the stream, delivered to on_region(key, data)."""
        if offset < 0 or length < 0:
            raise FormatError(f"{self.name}: negative region {key} at {offset}+{length}")
        # Declared while a region completes: the stream is at that region's end, whatever the chunk size
        # (the chunk may reach further), so the answer never depends on how the data was cut.
        floor = self.position if self._horizon is None else self._horizon
        if offset < floor and length:
            raise FormatError(f"{self.name}: region {key} at {offset} lies before the data still to come")
        if self._held() + length > MAX_CAPTURED:
            raise FormatError(f"{self.name}: region {key} of {length} bytes exceeds the memory bound")
        self._regions[key] = _Region(offset, length)
        if length == 0:
            self._finish_region(key)

    def _held(self) -> int:
        """Bytes held: regions pending and completed, and the tail."""
        pending = sum(r.length for r in self._regions.values())
        return pending + sum(map(len, self._done.values())) + self._tail_length

    def capture_tail(self, length: int) -> None:
        """Keep the last `length` bytes of the stream, for end(): footers."""
        if self._held() - self._tail_length + max(self._tail_length, length) > MAX_CAPTURED:
            raise FormatError(f"{self.name}: a tail of {length} bytes exceeds the memory bound")
        self._tail_length = max(self._tail_length, length)

    def region(self, key: str) -> bytes | None:
        return self._done.get(key)

    @property
    def tail(self) -> bytes:
        return bytes(self._tail)

    # --- hooks --------------------------------------------------------------
    def start(self) -> None:
        """Declare the first regions (usually the header)."""

    def on_region(self, key: str, data: bytes) -> None:
        """A declared region is complete."""

    def on_end(self) -> None:
        """The stream ended (self.position is the total size); regions still open are missing."""

    def matches(self) -> bool:
        """The data carries this format's signature."""
        return False

    def virtual_size(self) -> int:
        return self.position

    def safety_checks(self) -> list[SafetyCheck]:
        return []

    def properties(self) -> dict[str, str]:
        """What the format carries that an operator wants as image properties (introspection)."""
        return {}

    # --- feeding ------------------------------------------------------------
    def feed(self, chunk: bytes | memoryview) -> None:
        start, end = self.position, self.position + len(chunk)
        view = memoryview(chunk)
        filled = True
        while filled:  # a completed region may declare new ones inside this same chunk
            filled = False
            for key, region in list(self._regions.items()):
                if region.end <= start or region.offset >= end:
                    continue
                have = region.offset + len(region.data)
                lo, hi = max(have, start), min(region.end, end)
                if lo < hi and lo == have:
                    region.data += view[lo - start:hi - start]
                if region.complete:
                    self._finish_region(key)
                    filled = True
        self.position = end
        if self._tail_length:
            self._tail += view[-self._tail_length:]
            del self._tail[:-self._tail_length]

    def _finish_region(self, key: str) -> None:
        region = self._regions.pop(key)
        data = bytes(region.data)
        self._done[key] = data
        outer, self._horizon = self._horizon, region.end
        try:
            self.on_region(key, data)
        finally:
            self._horizon = outer

    def end(self) -> None:
        self.ended = True
        self.on_end()

    def missing(self) -> list[str]:
        """Regions declared but never completed (the data ended first)."""
        return sorted(self._regions)

    def run_safety_checks(self) -> dict[str, str | None]:
        """Each check's name -> None when it passed, else why it failed."""
        results: dict[str, str | None] = {}
        for check in self.safety_checks():
            try:
                check.check()
                results[check.name] = None
            except FormatError as e:
                results[check.name] = str(e) or type(e).__name__
        return results
