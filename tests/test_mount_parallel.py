"""Parallel uploads while other processes read active images."""

import hashlib
import random
import subprocess

import pytest

from conftest import getfattr_dump, run

pytestmark = pytest.mark.fuse

MIB = 1024 * 1024


def test_four_uploads_with_eight_readers(library, tmp_path):
    readable = {}
    for i in range(8):
        source = tmp_path / f"r{i}"
        data = random.Random(f"r{i}").randbytes(4 * MIB + i)
        source.write_bytes(data)
        run("cp", source, library.mnt / "incoming" / f"r{i}")
        readable[f"r{i}"] = hashlib.sha512(data).hexdigest()
    uploads = {}
    for i in range(4):
        source = tmp_path / f"u{i}"
        data = random.Random(f"u{i}").randbytes(64 * MIB - 4096 * i)
        source.write_bytes(data)
        uploads[f"u{i}"] = (source, hashlib.sha512(data).hexdigest(), hashlib.md5(data).hexdigest(), len(data))
        del data

    stop = tmp_path / "stop"  # readers loop until the uploads are done (and at least twice)
    readers = [
        subprocess.Popen(
            ["sh", "-c", f'n=0; while [ $n -lt 2 ] || [ ! -e "{stop}" ]; do '
                         f'sha512sum "{library.path("active", name)}" || exit 1; n=$((n+1)); done'],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for name in readable
    ]
    writers = [
        subprocess.Popen(["cp", source, library.mnt / "incoming" / name], stderr=subprocess.PIPE, text=True)
        for name, (source, *_) in uploads.items()
    ]
    try:
        for writer in writers:
            _, err = writer.communicate(timeout=300)
            assert writer.returncode == 0, err
        stop.touch()
        for name, reader in zip(readable, readers):
            out, err = reader.communicate(timeout=300)
            assert reader.returncode == 0, err
            digests = [line.split()[0] for line in out.splitlines()]
            assert len(digests) >= 2 and set(digests) == {readable[name]}, name
    finally:
        for process in readers + writers:
            if process.poll() is None:
                process.kill()
                process.wait()

    for name, (source, sha512, md5, size) in uploads.items():
        active = library.path("active", name)
        attrs = getfattr_dump(active)
        assert attrs["user.image.status"] == "active"
        assert (attrs["user.image.os_hash_value"], attrs["user.image.checksum"], attrs["user.image.size"]) == (
            sha512, md5, str(size))
        assert run("sha512sum", active).stdout.split()[0] == sha512
    assert sorted(p.name for p in (library.mnt / "active").iterdir()) == sorted([*readable, *uploads])
