import hashlib

import pytest

pytestmark = pytest.mark.fuse


def test_cp_makes_an_active_image_with_its_hashes(library, tmp_path):
    source = tmp_path / "disk.raw"
    data = bytes(range(256)) * 4096 + b"tail"
    source.write_bytes(data)
    active = library.upload(source)
    assert active.read_bytes() == data
    assert library.attr(active, "status") == "active"
    assert library.attr(active, "os_hash_value") == hashlib.sha512(data).hexdigest()
    assert library.attr(active, "checksum") == hashlib.md5(data).hexdigest()
    assert library.attr(active, "size") == str(len(data))
