"""Helpers for the per-format inspector tests: qemu-img samples, chunked feeding, the memory bound.

Reference values come from `qemu-img info --output=json`, never from what the
inspectors answered.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tracemalloc
from pathlib import Path

import pytest

from imagefs.formats import Detection, FormatDetector

MiB = 1 << 20
CHUNK_SIZES = (1, 17, 512, 65536, MiB)
# Chunks smaller than this are fed only inside "fine" windows (the head and tail of the file below, and any
# window a test names, where the headers are); between windows the data goes in 1 MiB - 3 byte chunks, so the
# boundaries still fall at odd places. The detector takes ~20 us per chunk: 1-byte chunks over megabytes would
# take minutes and prove nothing more.
FINE_BELOW = 512
FINE_HEAD = {1: 4 << 10, 17: 64 << 10}
FINE_TAIL = {1: 1 << 10, 17: 4 << 10}
COARSE = MiB - 3

requires_qemu_img = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img is not installed")


def qemu_img(*args) -> str:
    result = subprocess.run(["qemu-img", *map(str, args)], capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f"qemu-img {' '.join(map(str, args))} failed: {result.stderr}")
    return result.stdout


LUKS_SECRET = ("--object", "secret,id=sec0,data=secret")


def make_luks(path: Path, size: str, *options: str) -> Path:
    """A LUKS1 volume keyed by LUKS_SECRET. qemu-img times the key derivation on the CPU clock and
    now and then gives up with "Unable to get accurate CPU usage"; that is retried, nothing else."""
    args = ["create", "-q", "-f", "luks", *LUKS_SECRET, "-o", ",".join(["key-secret=sec0", *options]),
            path, size]
    for _ in range(4):
        try:
            qemu_img(*args)
            return path
        except AssertionError as failure:
            if "accurate CPU usage" not in str(failure):
                raise
    qemu_img(*args)
    return path


def qemu_info(path: Path, fmt: str | None = None, *extra: str) -> dict:
    args = ["info", "--output=json", *extra]
    if fmt:
        args += ["-f", fmt]
    return json.loads(qemu_img(*args, path))


def qemu_virtual_size(path: Path, fmt: str | None = None, *extra: str) -> int:
    return qemu_info(path, fmt, *extra)["virtual-size"]


def _plan(total: int, size: int, windows: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(offset, length) chunks covering [0, total)."""
    if size >= FINE_BELOW:
        return [(o, min(size, total - o)) for o in range(0, total, size)]
    head, tail = FINE_HEAD.get(size, 64 << 10), FINE_TAIL.get(size, 4 << 10)
    fine = sorted([(0, head), (max(total - tail, 0), total), *windows])
    plan, pos = [], 0
    while pos < total:
        inside = next((w for w in fine if w[0] <= pos < w[1]), None)
        if inside:
            n = min(size, inside[1] - pos)
        else:
            nxt = min((w[0] for w in fine if w[0] > pos), default=total)
            n = min(COARSE, nxt - pos)
        n = min(n, total - pos)
        plan.append((pos, n))
        pos += n
    return plan


def detect(path: Path, chunk_size: int = MiB, windows: list[tuple[int, int]] = ()) -> Detection:
    """Feed the file to a FormatDetector the way an upload is fed."""
    detector = FormatDetector()
    total = path.stat().st_size
    with open(path, "rb", buffering=0) as f:
        for _, n in _plan(total, chunk_size, list(windows)):
            chunk = f.read(n)
            assert len(chunk) == n
            detector.feed(chunk)
    return detector.finish()


def summary(d: Detection) -> tuple:
    return d.format, d.matches, d.virtual_size, d.checks, d.problems


def detect_all_sizes(path: Path, windows: list[tuple[int, int]] = ()) -> Detection:
    """Detect at every chunk size; every one must give the same answer. Returns the 1 MiB answer."""
    answers = {size: detect(path, size, windows) for size in CHUNK_SIZES}
    reference = answers[MiB]
    for size, detection in answers.items():
        assert summary(detection) == summary(reference), f"chunk size {size}: {detection} != {reference}"
    return reference


def peak_detection_memory(path: Path, chunk_size: int = MiB) -> tuple[int, Detection]:
    """Peak bytes allocated during detection (reading included), less the one chunk being fed."""
    with open(path, "rb", buffering=0) as f:
        tracemalloc.start()
        try:
            detector = FormatDetector()
            while chunk := f.read(chunk_size):
                detector.feed(chunk)
                del chunk  # the next read must not hold two chunks
            detection = detector.finish()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    return peak - chunk_size, detection


def sixty_four_mib_raw(path: Path) -> Path:
    """A 64 MiB raw disk with a non-zero byte in every 64 KiB, so converted images allocate every block."""
    with open(path, "wb") as f:
        f.truncate(64 * MiB)
        for offset in range(0, 64 * MiB, 64 << 10):
            f.seek(offset)
            f.write(b"\x01")
    return path


def truncated_copy(source: Path, dest: Path, length: int) -> Path:
    with open(source, "rb") as f:
        dest.write_bytes(f.read(length))
    return dest


def assert_truncated(detection: Detection, fmt: str) -> None:
    assert detection.format == "raw", detection
    assert any(p.startswith(f"{fmt} metadata points past the end") for p in detection.problems), detection.problems
    assert not detection.safe
