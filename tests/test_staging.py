"""StagedUpload: the staged file and its digests, whatever order the writes come in."""

import hashlib
import os
import random

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import imagefs.staging
from imagefs.hashing import Digests
from imagefs.staging import StagedUpload

MIB = 1 << 20


def expected(data: bytes, algorithm: str = "sha512") -> Digests:
    return Digests(hashlib.md5(data).hexdigest(), algorithm, hashlib.new(algorithm, data).hexdigest())


def run(path, ops, *, zero_holes=True, flush_every=64 * MIB, algorithm="sha512", streamed=None):
    """Apply ops ("w", offset, data) / ("t", size) to a StagedUpload under trio; return it and its digests.

    streamed=True fails if the digests come from re-reading the file, streamed=False if from the stream.
    """

    async def main():
        async with trio.open_nursery() as nursery:
            upload = StagedUpload(path, algorithm, flush_every=flush_every, zero_holes=zero_holes,
                                  spawn=nursery.start_soon)
            for op in ops:
                if op[0] == "w":
                    assert await upload.write(op[1], op[2]) == len(op[2])
                else:
                    await upload.truncate(op[1])
            digests = (await upload.finish())[0]
            upload.close()
            return upload, digests

    if streamed is not None:
        real = imagefs.staging.StagedUpload._scan

        async def watched(self):
            assert not streamed, "read the file again although the writes were sequential"
            return await real(self)

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(imagefs.staging.StagedUpload, "_scan", watched)
            upload, digests = trio.run(main)
        assert upload.sequential is streamed
        return upload, digests
    return trio.run(main)


def model(ops) -> bytes:
    """What the file must hold: POSIX pwrite/ftruncate semantics, computed without imagefs."""
    data = bytearray()
    for op in ops:
        if op[0] == "w":
            _, offset, chunk = op
            if len(data) < offset + len(chunk):
                data.extend(bytes(offset + len(chunk) - len(data)))
            data[offset:offset + len(chunk)] = chunk
        else:
            size = op[1]
            del data[size:]
            data.extend(bytes(size - len(data)))
    return bytes(data)


def check(path, ops, upload, digests, algorithm="sha512"):
    final = path.read_bytes()
    assert final == model(ops)
    assert upload.size == len(final)
    assert digests == expected(final, algorithm)


def sequential(data: bytes, chunk: int):
    return [("w", i, data[i:i + chunk]) for i in range(0, len(data), chunk)]


@pytest.mark.parametrize("algorithm", ["sha256", "sha384", "sha512"])
def test_sequential_writes_stream(tmp_path, algorithm):
    data = random.Random(1).randbytes(3 * MIB + 17)
    ops = sequential(data, 128 * 1024)
    upload, digests = run(tmp_path / "s", ops, algorithm=algorithm, streamed=True)
    check(tmp_path / "s", ops, upload, digests, algorithm)
    assert upload.written


def test_forward_gap_is_a_hole_and_stays_streaming(tmp_path):
    ops = [("w", 0, b"head"), ("w", 5 * MIB, b"after the gap"), ("w", 5 * MIB + 13, b"more")]
    upload, digests = run(tmp_path / "s", ops, streamed=True)
    check(tmp_path / "s", ops, upload, digests)
    assert os.stat(tmp_path / "s").st_blocks * 512 < MIB


def test_rewrite_below_the_high_water_mark_hashes_the_file(tmp_path):
    ops = [("w", 0, b"a" * 1000), ("w", 1000, b"b" * 1000), ("w", 500, b"REWRITE"), ("w", 2000, b"c" * 10)]
    upload, digests = run(tmp_path / "s", ops, streamed=False)
    check(tmp_path / "s", ops, upload, digests)


def test_overlapping_write_is_a_rewrite(tmp_path):
    ops = [("w", 0, b"a" * 1000), ("w", 900, b"b" * 200)]
    upload, digests = run(tmp_path / "s", ops, streamed=False)
    check(tmp_path / "s", ops, upload, digests)


def test_truncate_extending_feeds_zeros(tmp_path):
    ops = [("w", 0, b"data"), ("t", 3 * MIB + 5), ("w", 3 * MIB + 5, b"tail")]
    upload, digests = run(tmp_path / "s", ops, streamed=True)
    check(tmp_path / "s", ops, upload, digests)


def test_truncate_zero_restarts(tmp_path):
    ops = [("w", 0, b"x" * 5000), ("w", 100, b"rewrite"), ("t", 0), ("w", 0, b"fresh start"), ("w", 11, b"!")]
    upload, digests = run(tmp_path / "s", ops, streamed=True)
    check(tmp_path / "s", ops, upload, digests)


def test_truncate_shrinking_hashes_the_file(tmp_path):
    ops = [("w", 0, b"x" * 5000), ("t", 1000), ("w", 1000, b"y")]
    upload, digests = run(tmp_path / "s", ops, streamed=False)
    check(tmp_path / "s", ops, upload, digests)


def test_zero_chunks_become_holes(tmp_path):
    zero = bytes(MIB)
    ops = [("w", 0, b"boot sector"), *[("w", 11 + i * MIB, zero) for i in range(8)], ("w", 11 + 8 * MIB, b"end")]
    upload, digests = run(tmp_path / "holes", ops, streamed=True)
    check(tmp_path / "holes", ops, upload, digests)
    assert os.stat(tmp_path / "holes").st_blocks * 512 < MIB

    upload, digests = run(tmp_path / "dense", ops, zero_holes=False, streamed=True)
    check(tmp_path / "dense", ops, upload, digests)
    dense = os.stat(tmp_path / "dense").st_blocks * 512
    if dense < MIB:
        pytest.skip("this filesystem compresses or dedups zeros: cannot compare")
    assert dense >= 8 * MIB


def test_trailing_zero_chunk_keeps_the_length(tmp_path):
    ops = [("w", 0, b"data"), ("w", 4, bytes(MIB))]
    upload, digests = run(tmp_path / "s", ops, streamed=True)
    check(tmp_path / "s", ops, upload, digests)
    assert os.stat(tmp_path / "s").st_size == MIB + 4


def test_zero_chunk_over_data_writes_zeros(tmp_path):
    # A zero chunk that lands on data already written must replace it, not be skipped as a hole.
    ops = [("w", 0, b"\xaa" * 8192), ("w", 0, bytes(4096))]
    upload, digests = run(tmp_path / "s", ops, streamed=False)
    check(tmp_path / "s", ops, upload, digests)


def test_zero_chunk_straddling_the_end_of_data(tmp_path):
    ops = [("w", 0, b"\xaa" * 8192), ("w", 4096, bytes(8192))]
    upload, digests = run(tmp_path / "s", ops)
    check(tmp_path / "s", ops, upload, digests)


def test_background_flushes(tmp_path):
    data = random.Random(4).randbytes(MIB)
    ops = sequential(data, 64 * 1024)
    upload, digests = run(tmp_path / "s", ops, flush_every=100_000, streamed=True)
    check(tmp_path / "s", ops, upload, digests)


def test_read_back_what_was_written(tmp_path):
    async def main():
        async with trio.open_nursery() as nursery:
            upload = StagedUpload(tmp_path / "s", "sha512", flush_every=MIB, zero_holes=True, spawn=nursery.start_soon)
            await upload.write(0, b"hello")
            await upload.write(10, b"world")
            assert upload.read(0, 100) == b"hello\0\0\0\0\0world"
            assert upload.read(3, 4) == b"lo\0\0"
            assert upload.read(15, 10) == b""
            assert upload.read(100, 10) == b""
            await upload.finish()
            upload.discard()
            assert not (tmp_path / "s").exists()

    trio.run(main)


def test_writes_after_abandon_go_nowhere(tmp_path):
    async def main():
        async with trio.open_nursery() as nursery:
            upload = StagedUpload(tmp_path / "s", "sha512", flush_every=MIB, zero_holes=True, spawn=nursery.start_soon)
            await upload.write(0, b"x")
            upload.abandoned = True
            upload.discard()
            assert await upload.write(1, b"yz") == 2
            assert not (tmp_path / "s").exists()

    trio.run(main)


# --- any sequence of writes and truncates ------------------------------------------------

chunk = st.one_of(st.binary(min_size=1, max_size=3000), st.integers(1, 5000).map(bytes))
op = st.one_of(
    st.tuples(st.just("w"), st.integers(0, 20_000), chunk),
    st.tuples(st.just("t"), st.integers(0, 25_000)),
)


@st.composite
def mostly_sequential(draw):
    """Appends with gaps, zero chunks and occasional truncates or rewrites."""
    ops, end = [], 0
    for _ in range(draw(st.integers(0, 25))):
        kind = draw(st.sampled_from(["append", "append", "append", "gap", "truncate", "zeros back", "any"]))
        if kind == "zeros back":
            offset = draw(st.integers(0, end))
            ops.append(("w", offset, bytes(draw(st.integers(1, 5000)))))
            end = len(model(ops))
        elif kind in ("append", "gap"):
            data = draw(chunk)
            offset = end + (draw(st.integers(1, 5000)) if kind == "gap" else 0)
            ops.append(("w", offset, data))
            end = max(end, offset + len(data))
        elif kind == "truncate":
            size = draw(st.integers(0, end + 5000))
            ops.append(("t", size))
            end = size
        else:
            ops.append(draw(op))
            end = len(model(ops))
    return ops


@settings(max_examples=150, deadline=None)
@given(ops=st.one_of(mostly_sequential(), st.lists(op, max_size=20)), zero_holes=st.booleans())
def test_digests_equal_hashlib_over_the_final_bytes(tmp_path_factory, ops, zero_holes):
    path = tmp_path_factory.mktemp("any") / "staged"
    upload, digests = run(path, ops, zero_holes=zero_holes)
    check(path, ops, upload, digests)
