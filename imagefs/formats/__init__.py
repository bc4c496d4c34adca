"""Format inspection: every image judged from its bytes (SPEC §4).

`FormatDetector` runs every registered inspector over one stream side by
side (fed the same chunks as the hashers) and decides: the one non-raw format
that matched, else raw. Data that matches two non-raw formats is refused
(format confusion; an ISO that also carries a GPT/MBR is an ISO); a matched
format whose header points past the end of the data is refused (a truncated
copy); each matched inspector's named safety checks must pass.

One module per format registers its inspector with `@register`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .base import FormatError, Inspector, SafetyCheck, SafetyCheckFailed

__all__ = [
    "Detection", "FormatDetector", "FormatError", "Inspector", "SafetyCheck", "SafetyCheckFailed", "detect_file",
    "register", "REGISTRY",
]

REGISTRY: list[type[Inspector]] = []
# Formats found inside raw images (partition tables): reported, checked, but the image stays raw.
RAW_CONTAINERS = frozenset({"gpt"})


def register(cls: type[Inspector]) -> type[Inspector]:
    REGISTRY.append(cls)
    return cls


@dataclass
class Detection:
    format: str  # disk_format as Glance names it ("raw" when nothing else matched)
    matches: list[str]  # every non-raw inspector whose signature was found
    virtual_size: int
    size: int  # bytes inspected
    checks: dict[str, str | None] = field(default_factory=dict)  # "<format>.<check>" -> None or why it failed
    properties: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # why the data must not become active
    container_format: str | None = None  # ova, docker, compressed: a container inspector matched

    @property
    def failed_checks(self) -> dict[str, str]:
        return {name: why for name, why in self.checks.items() if why is not None}

    @property
    def safe(self) -> bool:
        return not self.problems and not self.failed_checks

    def reason(self) -> str:
        parts = self.problems + [f"{name} failed: {why}" for name, why in self.failed_checks.items()]
        return "; ".join(parts)


class FormatDetector:
    def __init__(self, inspectors: Iterable[type[Inspector]] | None = None):
        self.inspectors = [cls() for cls in (inspectors if inspectors is not None else REGISTRY)]
        self.errors: dict[str, str] = {}  # inspectors that gave up, and why
        self._broken: dict[str, str] = {}  # ... after their signature matched: the data is a broken X
        self.position = 0

    def feed(self, chunk: bytes | memoryview) -> None:
        self.position += len(chunk)
        for inspector in list(self.inspectors):
            try:
                inspector.feed(chunk)
            except FormatError as e:
                self._drop(inspector, e)

    def _drop(self, inspector: Inspector, error: FormatError) -> None:
        self.inspectors.remove(inspector)
        self.errors[inspector.name] = str(error)
        if inspector.kind == "disk" and _matches(inspector):
            self._broken[inspector.name] = str(error)

    def finish(self) -> Detection:
        for inspector in list(self.inspectors):
            try:
                inspector.end()
            except FormatError as e:
                self._drop(inspector, e)
        matched = [i for i in self.inspectors if i.name != "raw" and i.kind == "disk" and _matches(i)]
        names = sorted({i.name for i in matched} | set(self._broken))
        detection = Detection("raw", names, self.position, self.position)
        containers = sorted(i.name for i in self.inspectors if i.kind == "container" and _matches(i))
        if len(containers) == 1:
            detection.container_format = containers[0]
        elif containers:
            detection.problems.append(f"the data matches more than one container format: {', '.join(containers)}")
        for name, why in sorted(self._broken.items()):
            detection.problems.append(f"{name} header is invalid: {why}")
        # Format confusion: one image read as two formats. Bootable ISOs carry a GPT or MBR: those are ISOs.
        if len(names) > 1 and set(names) != {"iso", "gpt"}:
            detection.problems.append(f"the data matches more than one format: {', '.join(names)}")
        truncated = [i for i in matched if i.missing()]
        for inspector in truncated:
            detection.problems.append(
                f"{inspector.name} metadata points past the end of the data ({', '.join(inspector.missing())}):"
                " a truncated or interrupted copy"
            )
        disk_formats = [i for i in matched if i.name not in RAW_CONTAINERS]
        if len(disk_formats) == 1 and not detection.problems:
            chosen = disk_formats[0]
            detection.format = chosen.name
            try:
                detection.virtual_size = chosen.virtual_size()
                detection.properties = chosen.properties()
            except FormatError as e:
                detection.problems.append(f"{chosen.name} header is invalid: {e}")
        for inspector in matched:
            if inspector in truncated:
                continue
            for name, why in inspector.run_safety_checks().items():
                detection.checks[f"{inspector.name}.{name}"] = why
        return detection


def _matches(inspector: Inspector) -> bool:
    try:
        return inspector.matches()
    except FormatError:
        return True  # it recognized enough to fail on it


def detect_file(path: Path | str, chunk_size: int = 1 << 20) -> Detection:
    """Inspect a local file the way an upload is inspected: one sequential pass."""
    detector = FormatDetector()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(chunk_size):
            detector.feed(chunk)
    return detector.finish()


# Every format module registers itself on import; loaded here, once REGISTRY and register exist,
# so REGISTRY is complete for anyone who imports this package (not only after a first detector).
from . import registry  # noqa: E402,F401
