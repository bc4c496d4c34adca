"""Streaming and whole-file hashing give hashlib's digests, whatever the chunking."""

import hashlib
import random

import pytest
import trio

import imagefs.hashing
from imagefs.hashing import Digests, StreamHasher, hash_path

ALGORITHMS = ["sha256", "sha384", "sha512"]


def expected(data: bytes, algorithm: str) -> Digests:
    return Digests(hashlib.md5(data).hexdigest(), algorithm, hashlib.new(algorithm, data).hexdigest())


def chunks(data: bytes, rng: random.Random, largest: int):
    offset = 0
    while offset < len(data):
        n = rng.randint(0, largest)  # empty chunks included
        yield data[offset:offset + n]
        offset += n


async def stream(data: bytes, algorithm: str, rng: random.Random, largest: int, yield_every: int = 0) -> Digests:
    async with trio.open_nursery() as nursery:
        hasher = StreamHasher(algorithm)
        for i, chunk in enumerate(chunks(data, rng, largest)):
            await hasher.feed(chunk, nursery.start_soon)
            if yield_every and i % yield_every == 0:
                await trio.sleep(0)  # let the worker run between feeds, as the daemon does
        return await hasher.finish()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("seed", range(4))
def test_stream_hasher_random_chunks(algorithm, seed):
    rng = random.Random(seed)
    data = rng.randbytes(rng.randint(0, 3 << 20))
    result = trio.run(stream, data, algorithm, rng, 200_000, seed)
    assert result == expected(data, algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_stream_hasher_tiny_chunks(algorithm):
    rng = random.Random(9)
    data = rng.randbytes(20_000)
    assert trio.run(stream, data, algorithm, rng, 7, 3) == expected(data, algorithm)


def test_stream_hasher_nothing_fed():
    async def main():
        async with trio.open_nursery():
            return await StreamHasher("sha512").finish()

    assert trio.run(main) == expected(b"", "sha512")


def test_stream_hasher_back_pressure(monkeypatch):
    # With a small MAX_PENDING the writer waits for the worker; order and digests still hold.
    monkeypatch.setattr(imagefs.hashing, "MAX_PENDING", 10_000)
    rng = random.Random(5)
    data = rng.randbytes(2 << 20)
    assert trio.run(stream, data, "sha512", rng, 30_000) == expected(data, "sha512")


def test_stream_hasher_reports_a_worker_failure(monkeypatch):
    def broken(hasher, chunks):
        raise OSError("hashing thread failed")

    monkeypatch.setattr(imagefs.hashing, "_update", broken)

    async def main():
        async with trio.open_nursery() as nursery:
            hasher = StreamHasher("sha512")
            await hasher.feed(b"x", nursery.start_soon)
            with pytest.raises(Exception) as raised:
                await hasher.finish()
            # md5 and the main digest run side by side: the failure may come as a group.
            assert isinstance(raised.value, OSError) or raised.group_contains(OSError, match="hashing thread failed")

    trio.run(main)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("size", [0, 1, (4 << 20) - 1, 4 << 20, (9 << 20) + 3])
def test_hash_path(tmp_path, algorithm, size):
    data = random.Random(size).randbytes(size)
    path = tmp_path / "data"
    path.write_bytes(data)
    assert hash_path(path, ["md5", algorithm, algorithm]) == {
        "md5": hashlib.md5(data).digest(), algorithm: hashlib.new(algorithm, data).digest()}
