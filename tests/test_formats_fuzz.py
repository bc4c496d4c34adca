"""Property-based fuzzing of the format detector (issue 3, SPEC §4).

Random bytes, and valid samples (qemu-img, genisoimage, forged GPT/MBR, tar, compressed; made at start-up,
never downloaded) with bytes flipped, fields overwritten with extreme integers, truncated or with regions
duplicated, fed at random chunk splits. Whatever the data:

- nothing escapes FormatDetector.feed()/finish() (an inspector's FormatError is caught by the detector);
- no example takes more than the deadline (no hang);
- no inspector holds more than MAX_CAPTURED bytes (checked after every chunk);
- the Detection is the same for two different splits of the same data.

The seeds and oracles are tools/fuzz_formats.py's (the long run outside pytest), loaded by path.
"""

from __future__ import annotations

import importlib.util
import shutil
import struct
import sys
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.skipif(
    shutil.which("qemu-img") is None or shutil.which("genisoimage") is None,
    reason="qemu-img (qemu-utils) and genisoimage are needed for the seeds",
)

_spec = importlib.util.spec_from_file_location(
    "fuzz_formats", Path(__file__).resolve().parent.parent / "tools" / "fuzz_formats.py"
)
fuzz = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("fuzz_formats", fuzz)
_spec.loader.exec_module(fuzz)

EXTREMES = (0, 1, 2**31, 2**31 - 1, 2**32 - 1, 2**63 - 1, 2**64 - 1)
FUZZ = settings(deadline=2000, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@cache
def seeds() -> dict[str, bytes]:
    return fuzz.make_seeds()


@cache
def hot(name: str) -> list[int]:
    return fuzz.hot_offsets(seeds()[name])


@pytest.fixture(scope="module", autouse=True)
def _seeds_made_before_the_deadlines_run():
    for name in seeds():
        hot(name)


def cuts_strategy(n: int):
    """Cut points of a random split of n bytes: a few anywhere, maybe a run of small chunks somewhere."""
    if n < 2:
        return st.just([])
    anywhere = st.lists(st.integers(1, n - 1), max_size=8)
    run = st.one_of(
        st.just(()),
        st.tuples(st.integers(1, n - 1), st.sampled_from((1, 3, 17, 512))).map(
            lambda t: range(t[0], min(t[0] + 32 * t[1], n), t[1])
        ),
    )
    return st.tuples(anywhere, run).map(lambda t: sorted(set(t[0]) | set(t[1])))


def check(data: bytes, draw) -> None:
    """Every oracle: no exception, memory bound after every chunk, identical answer for another split."""
    first = fuzz.run_detection(data, draw(cuts_strategy(len(data)), label="split"), every=1)
    second = fuzz.run_detection(data, draw(cuts_strategy(len(data)), label="other split"), every=1)
    assert fuzz.summary(first) == fuzz.summary(second)


@settings(FUZZ, max_examples=500)
@given(st.data())
def test_random_bytes(data):
    check(data.draw(st.binary(max_size=4096), label="bytes"), data.draw)


@settings(FUZZ, max_examples=500)
@given(st.data())
def test_random_bytes_behind_a_real_header(data):
    """The first bytes of a real sample (magic, part of a header), then random bytes."""
    name = data.draw(st.sampled_from(sorted(seeds())), label="seed")
    head = seeds()[name][:data.draw(st.sampled_from((4, 8, 16, 64, 512, 600, 4096)), label="head")]
    check(head + data.draw(st.binary(max_size=2048), label="rest"), data.draw)


def _position(draw, name: str, n: int) -> int:
    if n == 0:
        return 0
    p = draw(st.one_of(st.sampled_from(hot(name)).flatmap(lambda h: st.integers(h - 8, h + 16)),
                       st.integers(0, min(n, 1024) - 1), st.integers(0, n - 1)), label="position")
    return min(max(p, 0), n - 1)


def mutate(draw, name: str) -> bytes:
    out = bytearray(seeds()[name])
    for _ in range(draw(st.integers(1, 4), label="mutations")):
        kind = draw(st.sampled_from(("flip", "int", "int", "int", "truncate", "duplicate", "splice")), label="kind")
        n = len(out)
        if kind == "flip" and n:
            out[_position(draw, name, n)] ^= 1 << draw(st.integers(0, 7), label="bit")
        elif kind == "int" and n:
            width = draw(st.sampled_from((1, 2, 4, 8)), label="width")
            value = draw(st.sampled_from(EXTREMES), label="value") % (1 << (8 * width))
            order = draw(st.sampled_from(("little", "big")), label="endian")
            p = _position(draw, name, n)
            out[p:p + width] = value.to_bytes(width, order)
        elif kind == "truncate":
            del out[draw(st.integers(0, n), label="length"):]
        elif kind == "duplicate" and n:
            a, b = _position(draw, name, n), _position(draw, name, n)
            length = draw(st.sampled_from((8, 64, 512, 4096)), label="length")
            out[b:b + length] = bytes(out[a:a + length])
        elif kind == "splice":
            other = seeds()[draw(st.sampled_from(sorted(seeds())), label="other seed")]
            length = draw(st.sampled_from((512, 4096, 32768)), label="length")
            out[:length] = other[:length]
    return bytes(out)


@settings(FUZZ, max_examples=1500)
@given(st.data())
def test_mutated_samples(data):
    name = data.draw(st.sampled_from(sorted(seeds())), label="seed")
    check(mutate(data.draw, name), data.draw)


def test_every_seed_is_detected_whatever_the_split():
    """The oracles hold on the unmutated seeds too (and the seeds are what they claim to be)."""
    expected = {"qcow2v3": "qcow2", "qcow2v2": "qcow2", "vpc-dynamic": "vhd", "vpc-fixed": "vhd", "vhdx": "vhdx",
                "vdi": "vdi", "vmdk-sparse": "vmdk", "vmdk-stream": "vmdk", "vmdk-stream-data": "vmdk",
                "parallels": "ploop", "luks": "luks", "iso9660": "iso", "iso-udf": "iso", "raw": "raw", "gpt": "raw"}
    for name, fmt in expected.items():
        data = seeds()[name]
        answers = [fuzz.run_detection(data, cuts, every=1) for cuts in ([], [1, 7, 512, 513], list(range(1, 600)))]
        assert answers[0].format == fmt, (name, answers[0])
        assert all(fuzz.summary(a) == fuzz.summary(answers[0]) for a in answers), name


# --- regressions: crashes the long run (tools/fuzz_formats.py) found -------------------------------------------------
def test_vmdk_descriptor_with_a_huge_extent_size_is_refused_not_a_crash():
    """A text descriptor's extent size of 5000 digits: int() refuses it (ValueError), which escaped."""
    data = seeds()["vmdk-desc"].replace(b"RW 2048", b"RW " + b"9" * 5000)
    detection = fuzz.run_detection(data, [])
    assert not detection.safe


def test_udf_partition_ending_before_the_anchor_gives_one_answer_whatever_the_split():
    """A UDF-only image whose partition ends before the anchor that leads to it: the data reaches it. The inspector
    compared with the start of the current chunk, so one chunk refused it ("volume_end ... lies before the data
    still to come") and small chunks accepted it."""
    data = bytearray(seeds()["udf-only"])
    sequence = int.from_bytes(data[256 * 2048 + 20:256 * 2048 + 24], "little") * 2048
    partition = next(o for o in range(sequence, sequence + 16 * 2048, 2048) if data[o] == 5)
    struct.pack_into("<I", data, partition + 188, 100)  # starts at sector 100: ends long before sector 256
    data = bytes(data)
    answers = [fuzz.run_detection(data, cuts) for cuts in ([], list(range(4096, len(data), 4096)))]
    assert fuzz.summary(answers[0]) == fuzz.summary(answers[1])
    assert answers[0].format == "iso" and answers[0].safe, answers[0].reason()
