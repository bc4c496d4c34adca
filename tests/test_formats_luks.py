"""luks: LUKS1 samples from qemu-img (with a secret), a LUKS2 header, truncation, memory."""

from __future__ import annotations

import struct

import pytest

from helpers_formats import (
    LUKS_SECRET, MiB, assert_truncated, detect, detect_all_sizes, make_luks, peak_detection_memory,
    qemu_virtual_size, requires_qemu_img, truncated_copy,
)

pytestmark = requires_qemu_img

def luks_virtual_size(path) -> int:
    """qemu-img's answer, opening the volume with its key (--image-opts), as a hypervisor would."""
    with_key = qemu_virtual_size(f"driver=luks,key-secret=sec0,file.filename={path}", None,
                                 *LUKS_SECRET, "--image-opts")
    assert with_key == qemu_virtual_size(path)  # and the header-only answer agrees
    return with_key


# qemu-img create benchmarks the key derivation (~2 s per volume): each sample is made once per module.
SAMPLES = {"1M": ("1M", ()), "5000K-aes128": ("5000K", ("cipher-alg=aes-128",))}


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    where = tmp_path_factory.mktemp("luks")
    return {name: make_luks(where / f"{name}.luks", size, "iter-time=10", *options)
            for name, (size, options) in SAMPLES.items()}


@pytest.fixture
def sample(samples, tmp_path):
    path = tmp_path / "disk.luks"
    path.write_bytes(samples["1M"].read_bytes())
    return path


@pytest.mark.parametrize("name", SAMPLES)
def test_virtual_size_matches_qemu_img(samples, name):
    path = samples[name]
    payload = struct.unpack_from(">I", path.read_bytes(), 0x68)[0] * 512
    detection = detect_all_sizes(path, [(payload - 256, payload + 256)])
    assert detection.format == "luks"
    assert detection.checks == {"luks.version": None}
    assert detection.safe
    assert detection.virtual_size == luks_virtual_size(path)


def test_luks2_is_refused(sample):
    path = sample
    data = bytearray(path.read_bytes())
    struct.pack_into(">H", data, 6, 2)
    path.write_bytes(data)
    detection = detect_all_sizes(path)
    assert detection.matches == ["luks"]
    assert "version 2" in detection.failed_checks["luks.version"]
    assert not detection.safe


def test_truncated_copy_is_refused(sample, tmp_path):
    payload = struct.unpack_from(">I", sample.read_bytes(), 0x68)[0] * 512
    detection = detect(truncated_copy(sample, tmp_path / "cut.luks", payload - 1), 65536)  # key material cut
    assert_truncated(detection, "luks")


def test_memory_is_bounded(sample):
    path = sample
    payload = struct.unpack_from(">I", path.read_bytes(), 0x68)[0] * 512
    with open(path, "r+b") as f:
        f.truncate(payload + 64 * MiB)  # a 64 MiB payload (zeros, as ciphertext: qemu reads it the same)
    peak, detection = peak_detection_memory(path)
    assert detection.format == "luks" and detection.virtual_size == luks_virtual_size(path) == 64 * MiB
    assert peak < 4 * MiB, peak
