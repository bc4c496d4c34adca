"""Format inspection in the finalize pipeline, driven through the tree without a mount.

Samples are made here with qemu-img; expected virtual sizes come from
`qemu-img info --output=json`, never from imagefs. Every test ends with fsck clean.
"""

from __future__ import annotations

import ast
import gzip
import json
import logging
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers_formats import make_luks
from helpers_unit import TreeEnv, env, me, seq_of  # noqa: F401  (env is a fixture)

import imagefs.imports
import imagefs.staging
import imagefs.formats
from imagefs.formats import REGISTRY, Inspector, detect_file
from imagefs.imports import FinalizeContext, inspect
from imagefs.lifecycle import Status
from imagefs.tree import INCOMING_INO

OWNER = me()
CHUNK = 128 * 1024
QEMU_IMG = shutil.which("qemu-img")
pytestmark = pytest.mark.skipif(QEMU_IMG is None, reason="qemu-img is not installed (Debian package qemu-utils)")


def qemu_img(*args) -> str:
    return subprocess.run([QEMU_IMG, *map(str, args)], check=True, capture_output=True, text=True).stdout


def qemu_virtual_size(path: Path) -> int:
    return json.loads(qemu_img("info", "--output=json", path))["virtual-size"]


@pytest.fixture
def samples(tmp_path):
    """name -> path of every sample, made with qemu-img."""
    d = tmp_path / "samples"
    d.mkdir()
    out = {}
    out["clean"] = d / "clean.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", out["clean"], "64M")
    out["compat"] = d / "compat010.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", "compat=0.10", out["compat"], "3M")
    out["shadow"] = d / "shadow.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", "/etc/shadow", "-F", "raw", out["shadow"], "64M")
    out["datafile"] = d / "datafile.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={d / 'external.raw'},data_file_raw=on",
             out["datafile"], "16M")
    out["qed"] = d / "disk.qed"
    qemu_img("create", "-q", "-f", "qed", out["qed"], "16M")
    out["truncated"] = d / "truncated.qcow2"
    out["truncated"].write_bytes(out["clean"].read_bytes()[:300])
    out["random"] = d / "random.raw"
    out["random"].write_bytes(random.Random(3).randbytes(3 * CHUNK + 17))
    return out


async def upload(tree, name, data: bytes, declare=None, order=None) -> int:
    """create, declare xattrs, write (in `order` of chunk indexes if given), close; the seq once finalized."""
    fh, attr = tree.create(INCOMING_INO, name, OWNER)
    for key, value in (declare or {}).items():
        tree.setxattr(attr.ino, f"user.image.{key}", value.encode(), OWNER)
    offsets = list(range(0, len(data), CHUNK))
    for i in order(len(offsets)) if order else range(len(offsets)):
        offset = offsets[i]
        assert await tree.write(fh, offset, data[offset:offset + CHUNK]) == len(data[offset:offset + CHUNK])
    tree.release(fh)
    await tree.drain()
    return seq_of(attr.ino)


def run_upload(env, name, data, **kwargs):
    out = {}

    async def test(tree):
        out["seq"] = await upload(tree, name, data, **kwargs)

    env.run(test)
    env.check()
    return env.catalog.image(out["seq"])


@pytest.fixture
def no_file_pass(monkeypatch):
    """Fails if anything inspects the staged file again (sequential uploads are inspected as they stream)."""

    def refuse(*args, **kwargs):
        raise AssertionError("the staged file was inspected again although the writes were sequential")

    monkeypatch.setattr(imagefs.staging.StagedUpload, "_scan", refuse)
    monkeypatch.setattr(imagefs.imports, "detect_file", refuse)


# --- what becomes active ------------------------------------------------------------------


def test_a_clean_qcow2_is_recorded_as_qcow2_with_its_virtual_size_and_compat(env, samples, no_file_pass):
    image = run_upload(env, "clean", samples["clean"].read_bytes())
    assert image.status is Status.ACTIVE, image.reason
    assert (image.disk_format, image.container_format, image.stored_format) == ("qcow2", "bare", "qcow2")
    assert image.virtual_size == qemu_virtual_size(samples["clean"]) == 64 << 20
    assert env.catalog.properties(image.seq)["qcow2_compat"] == "1.1"


def test_a_compat_010_qcow2_declared_qcow2(env, samples):
    image = run_upload(env, "old", samples["compat"].read_bytes(), declare={"disk_format": "qcow2"})
    assert image.status is Status.ACTIVE, image.reason
    assert image.virtual_size == qemu_virtual_size(samples["compat"])
    assert env.catalog.properties(image.seq)["qcow2_compat"] == "0.10"


def test_an_undeclared_raw_stays_raw_with_virtual_size_its_size(env, samples, no_file_pass):
    data = samples["random"].read_bytes()
    image = run_upload(env, "plain", data)
    assert image.status is Status.ACTIVE, image.reason
    assert (image.disk_format, image.stored_format, image.virtual_size) == ("raw", "raw", len(data))
    assert env.catalog.properties(image.seq) == {}


def test_an_explicit_property_wins_over_introspection(env, samples):
    image = run_upload(env, "mine", samples["clean"].read_bytes(), declare={"qcow2_compat": "mine"})
    assert image.status is Status.ACTIVE, image.reason
    assert env.catalog.properties(image.seq)["qcow2_compat"] == "mine"


@pytest.mark.parametrize("declared", ["ami", "ari", "aki"])
def test_formats_no_inspector_knows_accept_data_that_reads_as_raw(env, samples, declared):
    data = samples["random"].read_bytes()
    image = run_upload(env, declared, data, declare={"disk_format": declared})
    assert image.status is Status.ACTIVE, image.reason
    assert (image.disk_format, image.virtual_size) == (declared, len(data))


def test_ploop_declared_over_raw_data_is_a_mismatch(env, samples):
    """ploop has an inspector, so (as in Glance) raw data declared ploop is a mismatch like any other."""
    image = run_upload(env, "p", samples["random"].read_bytes(), declare={"disk_format": "ploop"})
    assert image.status is Status.KILLED
    assert "disk_format ploop was declared but the data is raw" in image.reason


def test_a_detected_container_is_recorded_unless_one_was_declared(env, samples):
    packed = gzip.compress(samples["random"].read_bytes())
    image = run_upload(env, "packed.gz", packed)
    assert image.status is Status.ACTIVE, image.reason
    assert (image.disk_format, image.container_format) == ("raw", "compressed")
    image = run_upload(env, "declared.gz", packed, declare={"container_format": "bare"})
    assert image.status is Status.ACTIVE, image.reason
    assert image.container_format == "bare"


def test_a_qcow2_declared_raw_stays_raw_with_a_warning(env, samples, caplog):
    data = samples["clean"].read_bytes()
    with caplog.at_level(logging.WARNING, logger="imagefs.imports"):
        image = run_upload(env, "claimed-raw", data, declare={"disk_format": "raw"})
    assert image.status is Status.ACTIVE, image.reason
    assert (image.disk_format, image.virtual_size) == ("raw", len(data))
    assert image.stored_format == "qcow2"  # what the bytes are
    assert "qcow2_compat" not in env.catalog.properties(image.seq)  # describes a format the image is not
    assert any("declared raw, but the data is qcow2" in r.getMessage() for r in caplog.records)


def test_a_mismatch_is_allowed_when_the_match_is_not_required(tmp_path, samples):
    env = TreeEnv(tmp_path / "lax", "[inspection]\nrequire_image_format_match = false\n")
    try:
        image = run_upload(env, "lax", samples["random"].read_bytes(), declare={"disk_format": "vmdk"})
        assert image.status is Status.ACTIVE, image.reason
        assert (image.disk_format, image.stored_format, image.virtual_size) == ("vmdk", "raw", None)
        # ... but the safety checks still kill.
        image = run_upload(env, "lax-shadow", samples["shadow"].read_bytes(), declare={"disk_format": "vmdk"})
        assert image.status is Status.KILLED and "qcow2.backing_file" in image.reason
    finally:
        env.catalog.close()


def test_a_container_format_other_than_bare_skips_the_format_match(env, samples):
    image = run_upload(env, "appliance", samples["random"].read_bytes(),
                       declare={"disk_format": "vmdk", "container_format": "ova"})
    assert image.status is Status.ACTIVE, image.reason
    assert (image.disk_format, image.container_format, image.virtual_size) == ("vmdk", "ova", None)


def test_luks_is_no_disk_format_unless_declared_raw(env, tmp_path):
    sample = tmp_path / "secret.luks"
    make_luks(sample, "4M", "iter-time=10")
    data = sample.read_bytes()
    image = run_upload(env, "undeclared.luks", data)
    assert image.status is Status.KILLED
    assert image.reason == "inspect: the data is luks, which is not a disk_format images can have"
    image = run_upload(env, "declared.luks", data, declare={"disk_format": "raw"})
    assert image.status is Status.ACTIVE, image.reason
    assert (image.disk_format, image.stored_format, image.virtual_size) == ("raw", "luks", len(data))


def test_the_format_match_setting_is_a_boolean(tmp_path):
    from imagefs.config import load_config
    from imagefs.errors import ConfigError

    config = tmp_path / "c.toml"
    assert load_config(None, tmp_path).require_image_format_match is True
    config.write_text("[inspection]\nrequire_image_format_match = false\n")
    assert load_config(config, tmp_path).require_image_format_match is False
    config.write_text('[inspection]\nrequire_image_format_match = "no"\n')
    with pytest.raises(ConfigError):
        load_config(config, tmp_path)


# --- what is killed ---------------------------------------------------------------------------


@pytest.mark.parametrize("sample, declared, words", [
    ("shadow", None, ["qcow2.backing_file failed", "backing file"]),
    ("shadow", "qcow2", ["qcow2.backing_file failed"]),
    ("shadow", "raw", ["qcow2.backing_file failed"]),  # claimed raw: still the checks of what it is
    ("datafile", None, ["qcow2.data_file failed", "external data file"]),
    ("datafile", "raw", ["qcow2.data_file failed"]),
    ("qed", None, ["qed.banned failed"]),
    ("truncated", None, ["qcow2", "past the end of the data"]),
    ("truncated", "raw", ["past the end of the data"]),
    ("random", "qcow2", ["disk_format qcow2 was declared but the data is raw"]),
    ("clean", "vhd", ["disk_format vhd was declared but the data is qcow2"]),
])
def test_unsafe_or_mismatched_data_is_killed_with_the_check_named(env, samples, sample, declared, words):
    declare = {"disk_format": declared} if declared else {}
    image = run_upload(env, sample, samples[sample].read_bytes(), declare=declare)
    assert image.status is Status.KILLED
    assert image.reason.startswith("inspect: "), image.reason
    for word in words:
        assert word in image.reason
    assert env.staged_files() == [] and image.blob_key is None


# --- non-sequential writes: inspected from the staged file at finalize -------------------


@pytest.mark.parametrize("sample, status", [("shadow", Status.KILLED), ("clean", Status.ACTIVE)])
def test_out_of_order_writes_are_inspected_from_the_staged_file(env, samples, monkeypatch, sample, status):
    calls = []
    real = imagefs.staging.StagedUpload._scan

    async def spy(self):
        calls.append(self.path)
        return await real(self)

    monkeypatch.setattr(imagefs.staging.StagedUpload, "_scan", spy)
    data = samples[sample].read_bytes()
    image = run_upload(env, sample, data, order=lambda n: reversed(range(n)))
    assert len(calls) == 1
    assert image.status is status, image.reason
    if status is Status.ACTIVE:
        assert (image.disk_format, image.virtual_size) == ("qcow2", qemu_virtual_size(samples[sample]))
    else:
        assert "qcow2.backing_file failed" in image.reason


def test_holes_reach_the_inspector_as_zeros(env, samples, no_file_pass):
    """A qcow2 written with its zero runs skipped (forward seeks, as cp --sparse does) is the same qcow2."""
    data = samples["clean"].read_bytes()

    async def test(tree):
        fh, attr = tree.create(INCOMING_INO, "sparse", OWNER)
        for offset in range(0, len(data), 4096):
            block = data[offset:offset + 4096]
            if block.strip(b"\0") or offset + 4096 >= len(data):
                await tree.write(fh, offset, block)
        tree.release(fh)
        await tree.drain()
        image = env.catalog.image(seq_of(attr.ino))
        assert image.status is Status.ACTIVE, image.reason
        assert (image.disk_format, image.size) == ("qcow2", len(data))

    env.run(test)
    env.check()


def test_an_inspector_bug_fails_the_upload_not_the_write(env, samples, monkeypatch):
    class Broken(Inspector):
        name = "broken"

        def start(self):
            self.capture("head", 0, 8)

        def on_region(self, key, data):
            raise ZeroDivisionError("a bug")

    monkeypatch.setattr(imagefs.formats, "REGISTRY", [*REGISTRY, Broken])
    image = run_upload(env, "victim", samples["random"].read_bytes())
    assert image.status is Status.KILLED and "internal error" in image.reason


def _staged(path, ops):
    """Apply ("w", offset, data) / ("t", size) ops to a StagedUpload; its (sequential, detection)."""
    import trio

    from imagefs.staging import StagedUpload

    async def main():
        async with trio.open_nursery() as nursery:
            upload = StagedUpload(path, "sha512", flush_every=64 << 20, zero_holes=True, spawn=nursery.start_soon)
            for op in ops:
                if op[0] == "w":
                    await upload.write(op[1], op[2])
                else:
                    await upload.truncate(op[1])
            _, detection = await upload.finish()
            upload.close()
            return upload.sequential, detection

    return trio.run(main)


def _same(a, b):
    fields = ("format", "matches", "virtual_size", "size", "checks", "properties", "problems")
    return {f: getattr(a, f) for f in fields} == {f: getattr(b, f) for f in fields}


@pytest.mark.parametrize("sample", ["clean", "shadow", "datafile", "truncated", "random"])
@pytest.mark.parametrize("chunk", [1, 509, 4096, 65536, 1 << 20])
def test_streamed_detection_equals_the_file_detection(tmp_path, samples, sample, chunk):
    """Sequential writes at any chunk size, all-zero chunks skipped (holes) and a trailing
    extension by truncate: the streamed detection is the one of the final file."""
    data = samples[sample].read_bytes()
    if chunk == 1:
        data = data[:20_000]  # byte-wise writes are slow under trio; the header regions are at the start
    ops = []
    for offset in range(0, len(data), chunk):
        piece = data[offset:offset + chunk]
        if piece.strip(b"\0"):
            ops.append(("w", offset, piece))
    ops.append(("t", len(data) + 12345))
    path = tmp_path / "staged"
    sequential, streamed = _staged(path, ops)
    assert sequential
    assert path.stat().st_size == len(data) + 12345
    assert _same(streamed, detect_file(path))


# --- the step itself --------------------------------------------------------------------------


def test_the_inspect_step_reads_the_file_when_nothing_was_streamed(env, samples):
    import trio

    image = env.catalog.create_image("direct", owner="demo", actor="test")
    ctx = FinalizeContext(image, {}, samples["clean"], samples["clean"].stat().st_size, None, env.store)
    trio.run(inspect, ctx)
    assert ctx.detection is not None and ctx.detection.format == "qcow2"
    assert ctx.updates["disk_format"] == "qcow2"
    assert ctx.updates["virtual_size"] == qemu_virtual_size(samples["clean"])
    assert ctx.new_properties == {"qcow2_compat": "1.1"}


def test_imagefs_never_runs_an_external_program_on_image_data():
    """Structural: qemu-img is never run on an image before its checks pass because imagefs runs no
    program at all outside the daemon's lifetime code (fusermount3), the CLI's own re-exec, and
    openssl for binary-curve signatures (given a digest, a signature and a certificate, never image data)."""
    allowed = {Path("imagefs/daemon.py"), Path("imagefs/cli/mount.py"), Path("imagefs/signing/openssl_cli.py")}
    root = Path(imagefs.__file__).parent.parent
    spawners = {"subprocess", "pty", "multiprocessing"}
    offenders = []
    for path in sorted((root / "imagefs").rglob("*.py")):
        rel = path.relative_to(root)
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module.split(".")[0]]
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os":
                spawning = node.attr.startswith(("exec", "spawn", "system", "popen", "posix_spawn"))
                names = ["os." + node.attr] if spawning else []
            if set(names) & spawners or any(n.startswith("os.") for n in names):
                if rel not in allowed:
                    offenders.append(f"{rel}:{node.lineno}")
    assert offenders == []


# --- imagefs inspect ------------------------------------------------------------------------


def cli(*args):
    return subprocess.run([sys.executable, "-m", "imagefs", "inspect", *map(str, args)], capture_output=True, text=True)


def test_cli_inspect_of_a_clean_qcow2(samples):
    result = cli(samples["clean"])
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "format:       qcow2" in out
    assert f"virtual size: {qemu_virtual_size(samples['clean'])}" in out
    assert f"size:         {samples['clean'].stat().st_size}" in out
    assert "qcow2.backing_file: passed" in out and "qcow2.data_file: passed" in out
    assert "qcow2_compat: 1.1" in out
    assert "verdict:      safe" in out


@pytest.mark.parametrize("sample, words", [
    ("shadow", ["qcow2.backing_file: FAILED: a backing file is named"]),
    ("datafile", ["qcow2.data_file: FAILED"]),
    ("truncated", ["past the end of the data"]),
    ("qed", ["qed.banned: FAILED"]),
])
def test_cli_inspect_of_unsafe_files_exits_1(samples, sample, words):
    result = cli(samples[sample])
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "verdict:      UNSAFE" in result.stdout
    for word in words:
        assert word in result.stdout


def test_cli_inspect_of_raw_data(samples):
    result = cli(samples["random"])
    assert result.returncode == 0
    assert "format:       raw" in result.stdout
    assert f"virtual size: {samples['random'].stat().st_size}" in result.stdout


def test_cli_inspect_of_what_cannot_be_read_exits_2(tmp_path):
    for path in (tmp_path / "missing", tmp_path):
        result = cli(path)
        assert result.returncode == 2 and "cannot read" in result.stderr


def test_cli_output_agrees_with_detect_file(samples):
    detection = detect_file(samples["shadow"])
    out = cli(samples["shadow"]).stdout
    for name, why in detection.checks.items():
        assert (f"{name}: passed" if why is None else f"{name}: FAILED: {why}") in out



def test_every_inspector_is_registered_on_import():
    """A fresh interpreter: importing the pipeline alone must see every format (not only after a
    first FormatDetector), or a declared qcow2 over raw data would pass as not inspectable."""
    code = "from imagefs.imports import _inspectable; print(all(map(_inspectable, ['qcow2', 'vmdk', 'vhdx'])))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"


@pytest.mark.parametrize("compat", ["0.10", "1.1"])
def test_a_qcow2_cut_before_its_tables_is_truncated(tmp_path, compat):
    """The header is whole but the L1 table (the last metadata qemu-img create writes) is cut off."""
    sample = tmp_path / "disk.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"compat={compat}", sample, "64M")
    data = sample.read_bytes()
    assert detect_file(sample).format == "qcow2"
    l1_end = int.from_bytes(data[0x28:0x30], "big") + int.from_bytes(data[0x24:0x28], "big") * 8
    for cut in (0x20000, l1_end - 1):
        sample.write_bytes(data[:cut])
        detection = detect_file(sample)
        assert detection.format == "raw" and not detection.safe
        assert detection.problems == ["qcow2 metadata points past the end of the data (l1_end):"
                                      " a truncated or interrupted copy"]
