"""Uploads with cp: hashes, xattrs carried by cp -a / --preserve=xattr, sparse files."""

import hashlib
import os
import random

import pytest

from conftest import blob_files, getfattr_dump, run, setfattr

pytestmark = pytest.mark.fuse


def _random_file(path, size, seed=0):
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def _digest(program, path) -> str:
    return run(program, path).stdout.split()[0]


def test_cp_hashes_equal_md5sum_and_sha512sum(library, tmp_path):
    source = _random_file(tmp_path / "disk.raw", 3 * 1024 * 1024 + 123)
    run("cp", source, library.mnt / "incoming" / "disk")
    active = library.path("active", "disk")
    attrs = getfattr_dump(active)
    assert attrs["user.image.status"] == "active"
    assert attrs["user.image.size"] == str(source.stat().st_size)
    assert attrs["user.image.os_hash_algo"] == "sha512"
    md5 = _digest("md5sum", active)
    sha512 = _digest("sha512sum", active)
    assert md5 == attrs["user.image.checksum"] == _digest("md5sum", source)
    assert sha512 == attrs["user.image.os_hash_value"] == _digest("sha512sum", source)
    assert run("cmp", source, active).returncode == 0


def test_cp_a_and_preserve_xattr_carry_declared_properties(library, tmp_path):
    for how, seed in (("-a", 1), ("--preserve=xattr", 2)):
        source = _random_file(tmp_path / f"src{seed}.raw", 200_000 + seed, seed=seed)
        data = source.read_bytes()
        declared = {
            "user.image.os_distro": "ubuntu",
            "user.image.os_version": "24.04",
            "user.image.hw_disk_bus": "virtio",
            "user.image.min_ram": "512",
            "user.image.min_disk": "2",
            "user.image.disk_format": "raw",
            "user.image.container_format": "bare",
            "user.image.checksum": hashlib.md5(data).hexdigest(),
            "user.image.os_hash_value": hashlib.sha512(data).hexdigest(),
            "user.image.size": str(len(data)),
        }
        for name, value in declared.items():
            assert setfattr(source, name, value).returncode == 0
        run("cp", how, source, library.mnt / "incoming" / f"src{seed}")
        attrs = getfattr_dump(library.path("active", f"src{seed}"))
        assert attrs["user.image.status"] == "active", how
        for name, value in declared.items():
            assert attrs.get(name) == value, (how, name)


def test_cp_a_with_a_wrong_declared_checksum_is_killed(library, tmp_path):
    """The declarations cp -a carries are checked, not just stored."""
    source = _random_file(tmp_path / "src.raw", 100_000, seed=2)
    assert setfattr(source, "user.image.checksum", hashlib.md5(b"other data").hexdigest()).returncode == 0
    assert setfattr(source, "user.image.os_distro", "debian").returncode == 0
    run("cp", "-a", source, library.mnt / "incoming" / "src")
    assert not library.path("active", "src").exists()
    attrs = getfattr_dump(library.path("killed", "src"))
    assert attrs["user.image.status"] == "killed"
    assert "checksum" in attrs["user.imagefs.reason"]
    assert blob_files(library) == []


def test_cp_sparse_always_keeps_a_sparse_image_sparse(library, tmp_path):
    size = 128 * 1024 * 1024
    source = tmp_path / "sparse.raw"
    run("truncate", "-s", size, source)
    rng = random.Random(3)
    with open(source, "r+b") as f:
        for offset in (0, 5 * 1024 * 1024 + 4096, 77 * 1024 * 1024, size - 65536):
            f.seek(offset)
            f.write(rng.randbytes(65536))
    run("cp", "--sparse=always", source, library.mnt / "incoming" / "sparse")
    active = library.path("active", "sparse")
    assert run("cmp", source, active).returncode == 0
    st = os.stat(active)
    assert st.st_size == size
    assert st.st_blocks * 512 < size // 50, f"{st.st_blocks} blocks shown for a sparse image"
    du_kib = int(run("du", "-k", active).stdout.split()[0])
    assert du_kib * 1024 < size // 50
    assert int(run("du", "-k", "--apparent-size", active).stdout.split()[0]) * 1024 == size
    (blob,) = blob_files(library)
    assert blob.stat().st_size == size
    assert blob.stat().st_blocks * 512 < size // 50, "the stored blob is not sparse"
