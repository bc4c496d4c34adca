"""iso inspection: genisoimage (ISO 9660, UDF) and xorriso samples, the qcow2/ISO polyglot, truncation (SPEC §4)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from imagefs.formats import detect_file

MKISOFS = shutil.which("genisoimage") or shutil.which("mkisofs")
needs_mkisofs = pytest.mark.skipif(MKISOFS is None, reason="genisoimage (Debian genisoimage) is missing")
needs_qemu = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img (Debian qemu-utils) is missing")
CHUNK_SIZES = (17, 512, 65536, 1 << 20)
SECTOR = 2048


def run(*args) -> str:
    return subprocess.run([*map(str, args)], check=True, capture_output=True, text=True).stdout


def qemu_virtual_size(path: Path) -> int:
    return json.loads(run("qemu-img", "info", "--output=json", "-f", "raw", path))["virtual-size"]


def detect(path: Path, sizes=CHUNK_SIZES):
    detections = [detect_file(path, size) for size in sizes]
    for size, detection in zip(sizes[1:], detections[1:]):
        assert detection == detections[0], f"chunk size {size} gives another answer"
    return detections[0]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("isotree")
    (d / "in").mkdir()
    (d / "in" / "hello.txt").write_text("hello\n")
    (d / "in" / "data.bin").write_bytes(bytes(range(256)) * 64)
    return d


@pytest.fixture(scope="module")
def iso(tree) -> Path:
    if MKISOFS is None:
        pytest.skip("genisoimage (Debian genisoimage) is missing")
    run(MKISOFS, "-quiet", "-V", "TEST", "-o", tree / "plain.iso", tree / "in")
    return tree / "plain.iso"


@needs_qemu
@needs_mkisofs
@pytest.mark.parametrize("options", [(), ("-udf",), ("-J", "-R")])
def test_genisoimage_isos(tree, options):
    path = tree / f"out{''.join(options)}.iso"
    run(MKISOFS, "-quiet", *options, "-V", "TEST", "-o", path, tree / "in")
    detection = detect(path)
    assert detection.format == "iso" and detection.matches == ["iso"]
    assert detection.safe, detection.reason()
    assert detection.virtual_size == qemu_virtual_size(path) == path.stat().st_size


@needs_qemu
@pytest.mark.skipif(shutil.which("xorriso") is None, reason="xorriso (Debian xorriso) is missing")
def test_xorriso_iso_with_padding_beyond_the_volume(tree):
    path = tree / "x.iso"
    run("xorriso", "-outdev", path, "-volid", "TEST", "-map", tree / "in", "/")
    detection = detect(path)
    assert detection.format == "iso" and detection.safe, detection.reason()
    # xorriso pads 300 KiB past the volume; qemu reads an ISO as raw, so the virtual size is the file's.
    assert detection.virtual_size == qemu_virtual_size(path) == path.stat().st_size


@needs_qemu
@needs_mkisofs
def test_polyglot_qcow2_over_an_iso_is_refused(iso, tmp_path):
    qcow2 = tmp_path / "head.qcow2"
    run("qemu-img", "create", "-f", "qcow2", qcow2, "1G")
    head = qcow2.read_bytes()[:32 * 1024].ljust(32 * 1024, b"\0")
    path = tmp_path / "polyglot.iso"
    path.write_bytes(head + iso.read_bytes()[32 * 1024:])
    detection = detect(path)
    assert detection.matches == ["iso", "qcow2"]
    assert not detection.safe
    assert "more than one format" in detection.reason()
    assert detection.format == "raw"  # nothing is chosen


@needs_mkisofs
def test_truncated_iso_is_refused(iso, tmp_path):
    path = tmp_path / "cut.iso"
    path.write_bytes(iso.read_bytes()[:iso.stat().st_size // 2])
    detection = detect(path)
    assert detection.matches == ["iso"]
    assert not detection.safe and "truncated" in detection.reason()


@needs_mkisofs
def test_bogus_volume_size_is_refused(iso, tmp_path):
    data = bytearray(iso.read_bytes())
    data[16 * SECTOR + 80:16 * SECTOR + 84] = (3).to_bytes(4, "little")  # a volume ending inside its descriptors
    path = tmp_path / "bogus.iso"
    path.write_bytes(data)
    detection = detect(path)
    assert not detection.safe and "iso header is invalid" in detection.reason()


def _with_vrs(data: bytes, identifiers: list[bytes]) -> bytes:
    """`data` with its volume descriptors replaced by a UDF volume recognition sequence at 32 KiB."""
    data = bytearray(data)
    data[16 * SECTOR:32 * SECTOR] = bytes(16 * SECTOR)
    for i, identifier in enumerate(identifiers):
        data[(16 + i) * SECTOR:(16 + i) * SECTOR + 7] = b"\0" + identifier + b"\x01"
    return bytes(data)


def _vrs(tmp_path: Path, identifiers: list[bytes]) -> Path:
    """Forged UDF-only media: a volume recognition sequence at 32 KiB, zeros up to and past the anchor's sector."""
    path = tmp_path / "udf.img"
    path.write_bytes(_with_vrs(bytes(258 * SECTOR), identifiers))
    return path


@pytest.mark.parametrize("identifiers,is_iso", [
    ([b"BEA01", b"NSR02", b"TEA01"], True),
    ([b"BEA01", b"NSR03", b"TEA01"], True),
    ([b"BEA01", b"TEA01"], False),  # an extended area with no UDF in it
    ([b"XXXXX", b"NSR02"], False),
])
def test_udf_volume_recognition_sequence(tmp_path, identifiers, is_iso):
    path = _vrs(tmp_path, identifiers)
    detection = detect(path)
    assert detection.format == ("iso" if is_iso else "raw")
    assert detection.virtual_size == path.stat().st_size
    assert detection.safe, detection.reason()


def test_zeros_are_not_an_iso(tmp_path):
    path = tmp_path / "zeros.img"
    path.write_bytes(bytes(64 * 1024))
    assert detect(path).format == "raw"


@pytest.fixture(scope="module")
def udf_only(tree) -> Path:
    """genisoimage -udf output with its ISO 9660 descriptors taken out: UDF alone."""
    if MKISOFS is None:
        pytest.skip("genisoimage (Debian genisoimage) is missing")
    run(MKISOFS, "-quiet", "-udf", "-V", "TEST", "-o", tree / "hybrid.iso", tree / "in")
    path = tree / "udf-only.iso"
    path.write_bytes(_with_vrs((tree / "hybrid.iso").read_bytes(), [b"BEA01", b"NSR02", b"TEA01"]))
    return path


@needs_qemu
def test_udf_alone_is_an_iso(udf_only):
    detection = detect(udf_only)
    assert detection.format == "iso" and detection.safe, detection.reason()
    assert detection.virtual_size == qemu_virtual_size(udf_only) == udf_only.stat().st_size


def test_udf_alone_cut_inside_its_partition_is_refused(udf_only, tmp_path):
    path = tmp_path / "cut.iso"
    data = udf_only.read_bytes()
    anchor = data[256 * SECTOR:257 * SECTOR]
    sequence = int.from_bytes(anchor[20:24], "little") * SECTOR
    partition = next(data[o:o + SECTOR] for o in range(sequence, sequence + 16 * SECTOR, SECTOR) if data[o] == 5)
    end = (int.from_bytes(partition[188:192], "little") + int.from_bytes(partition[192:196], "little")) * SECTOR
    path.write_bytes(data[:end - 1])  # past the anchor, one byte short of the partition's end
    detection = detect(path)
    assert detection.matches == ["iso"] and not detection.safe
    assert "volume_end" in detection.reason() and "truncated" in detection.reason()
    path.write_bytes(data[:end])
    assert detect(path).safe


def test_udf_alone_cut_before_its_anchor_is_refused(udf_only, tmp_path):
    path = tmp_path / "cut.iso"
    path.write_bytes(udf_only.read_bytes()[:200 * SECTOR])
    detection = detect(path)
    assert detection.matches == ["iso"] and "truncated" in detection.reason()
