"""A library mounted with a config file of its own."""

import os

import pytest

from conftest import Library, mounted, run

pytestmark = pytest.mark.fuse


@pytest.mark.parametrize("algorithm", ["sha256", "sha384"])
def test_the_os_hash_algorithm_is_configurable(tmp_path, algorithm):
    with mounted(Library(tmp_path, f'[hashing]\nalgorithm = "{algorithm}"\n')) as lib:
        source = tmp_path / "disk.raw"
        source.write_bytes(os.urandom(3 << 20))
        active = lib.upload(source)
        digest = run(f"{algorithm}sum", source).stdout.split()[0]
        assert lib.attr(active, "os_hash_algo") == algorithm
        assert lib.attr(active, "os_hash_value") == digest
        assert run(f"{algorithm}sum", active).stdout.split()[0] == digest
        assert (lib.data / "store" / "blobs" / algorithm / digest[:2] / digest).exists()


def test_a_bad_config_is_refused_before_mounting(tmp_path):
    lib = Library(tmp_path, '[hashing]\nalgorithm = "md5"\n')
    with pytest.raises(AssertionError, match=r"\(2\).*algorithm must be one of"):
        lib.mount()
    assert not os.path.ismount(lib.mnt)
