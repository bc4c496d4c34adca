"""Container formats: ova and docker tars, compressed streams; they never compete with disk formats (SPEC §4)."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from imagefs.formats import detect_file

CHUNK_SIZES = (1, 17, 512, 65536, 1 << 20)
PAYLOAD = b"image data " * 300


def detect(path: Path, sizes=CHUNK_SIZES):
    detections = [detect_file(path, size) for size in sizes]
    for size, detection in zip(sizes[1:], detections[1:]):
        assert detection == detections[0], f"chunk size {size} gives another answer"
    return detections[0]


def make_tar(path: Path, members: dict[str, bytes], fmt=tarfile.PAX_FORMAT) -> Path:
    with tarfile.open(path, "w", format=fmt) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_ova_is_a_tar_holding_an_ovf(tmp_path, fmt):
    path = make_tar(tmp_path / "vm.ova", {"disk1.vmdk": PAYLOAD * 3, "vm.ovf": b"<Envelope/>", "vm.mf": b"SHA256"}, fmt)
    detection = detect(path)
    assert detection.container_format == "ova"
    assert detection.format == "raw" and detection.matches == [] and detection.safe, detection.reason()
    assert detection.virtual_size == path.stat().st_size


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_ovf_with_a_long_name_is_found(tmp_path, fmt):
    path = make_tar(tmp_path / "long.ova", {"d" * 140 + "/disk.vmdk": PAYLOAD, "v" * 120 + ".ovf": b"<x/>"}, fmt)
    assert detect(path).container_format == "ova"


def test_docker_save_output(tmp_path):
    members = {"manifest.json": b"[]", "repositories": b"{}", "abc123/layer.tar": PAYLOAD, "abc123/json": b"{}"}
    path = make_tar(tmp_path / "image.tar", members)
    detection = detect(path)
    assert detection.container_format == "docker" and detection.format == "raw" and detection.safe


def test_docker_layers_without_manifest(tmp_path):
    path = make_tar(tmp_path / "layers.tar", {"./aaa/VERSION": b"1.0", "./aaa/layer.tar": PAYLOAD})
    assert detect(path).container_format == "docker"


def test_a_plain_tar_is_no_container(tmp_path):
    path = make_tar(tmp_path / "plain.tar", {"readme.txt": b"hi", "notes.ovf.txt": b"no"})
    detection = detect(path)
    assert detection.container_format is None and detection.format == "raw" and detection.safe


def test_a_tar_that_is_both_ova_and_docker_is_refused(tmp_path):
    path = make_tar(tmp_path / "both.tar", {"vm.ovf": b"<x/>", "manifest.json": b"[]"})
    detection = detect(path)
    assert detection.container_format is None
    assert "more than one container format" in detection.reason()


def test_ovf_beyond_the_scanned_headers_is_not_seen(tmp_path):
    members = {f"file{i}": b"x" for i in range(80)} | {"late.ovf": b"<x/>"}
    path = make_tar(tmp_path / "many.tar", members)
    assert detect(path, (512, 1 << 20)).container_format is None  # only the first 64 headers are read


def test_corrupted_tar_checksum_is_no_container(tmp_path):
    path = make_tar(tmp_path / "vm.ova", {"vm.ovf": b"<x/>"})
    data = bytearray(path.read_bytes())
    data[0] ^= 0x20  # the name changes, the stored checksum does not
    path.write_bytes(data)
    assert detect(path).container_format is None


def _compressed(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"disk.{kind}"
    if kind == "gz":
        path.write_bytes(gzip.compress(PAYLOAD))
    elif kind == "bz2":
        path.write_bytes(bz2.compress(PAYLOAD))
    elif kind == "xz":
        path.write_bytes(lzma.compress(PAYLOAD))
    elif kind == "zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("disk.raw", PAYLOAD)
    elif kind == "zst":
        if shutil.which("zstd") is None:
            pytest.skip("zstd (Debian zstd) is missing")
        (tmp_path / "disk.raw").write_bytes(PAYLOAD)
        subprocess.run(["zstd", "-q", "-f", tmp_path / "disk.raw", "-o", path], check=True)
    return path


@pytest.mark.parametrize("kind", ["gz", "bz2", "xz", "zst", "zip"])
def test_compressed_streams(tmp_path, kind):
    path = _compressed(tmp_path, kind)
    detection = detect(path)
    assert detection.container_format == "compressed"
    assert detection.format == "raw" and detection.matches == [] and detection.safe


def test_a_container_does_not_compete_with_a_disk_format(tmp_path):
    """gzip magic in an ISO's free system area: the image is an iso in a 'compressed' container, not two formats."""
    data = bytearray(258 * 2048)  # past the UDF anchor sector (256)
    data[:4] = b"\x1f\x8b\x08\x00"
    for i, identifier in enumerate((b"BEA01", b"NSR02", b"TEA01")):
        data[(16 + i) * 2048:(16 + i) * 2048 + 7] = b"\0" + identifier + b"\x01"
    path = tmp_path / "udf.img"
    path.write_bytes(data)
    detection = detect(path, (17, 512, 65536))
    assert detection.format == "iso" and detection.matches == ["iso"]
    assert detection.container_format == "compressed"
    assert detection.safe, detection.reason()


def test_raw_text_is_not_compressed(tmp_path):
    path = tmp_path / "BZ.txt"
    path.write_bytes(b"BZhx is not bzip2" + PAYLOAD)
    assert detect(path).container_format is None
