#!/usr/bin/env python3
"""A long fuzz run of imagefs.formats (issue 3), outside pytest.

Seeds are made at start-up with qemu-img and genisoimage into a temp dir (never downloaded), plus forged
GPT/MBR, tar (ova, docker) and compressed samples. Each input is a seed mutated by a few operations
(byte flips, fields overwritten with extreme integers, truncation, duplicated or spliced regions, numbers
in descriptor text made huge) or random bytes, fed to a FormatDetector at a random chunk split. Oracles:

- nothing at all escapes feed()/finish() (an inspector's FormatError is the detector's business);
- every input finishes within --time-limit seconds (a hang is cut by an alarm and reported);
- no inspector ever holds more than MAX_CAPTURED bytes (checked after every 8th chunk and the last;
  what an inspector holds only grows, but for its tail and vmdk's text window, both bounded);
- on a sample of inputs (--split-every), a second random split gives the identical Detection.

Every input is determined by (--seed, its index): a crash is saved to --crash-dir as the input bytes, the
split and a JSON note (seed name, mutations, traceback), and can be replayed with --replay FILE.bin.

    python tools/fuzz_formats.py                      # 1,000,000 inputs on every core
    python tools/fuzz_formats.py -n 20000 -j 1        # a quick run
    python tools/fuzz_formats.py --replay crashes/X.bin

Not imported by imagefs (tests/test_formats_fuzz.py loads it by path for its seeds and oracles).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import lzma
import multiprocessing as mp
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imagefs.formats import Detection, FormatDetector  # noqa: E402
from imagefs.formats.base import MAX_CAPTURED  # noqa: E402

EXTREMES = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1,
            2**63, 2**64 - 1)


# --- seeds -----------------------------------------------------------------------------------------------------
def _run(*args: str) -> None:
    # qemu-img times luks key derivation on the CPU clock and now and then gives up with
    # "Unable to get accurate CPU usage": that one failure is retried.
    for _ in range(4):
        result = subprocess.run(args, capture_output=True)
        if b"accurate CPU usage" not in result.stderr:
            break
    result.check_returncode()


def _tar(members: list[tuple[str, bytes]], fmt: int = tarfile.USTAR_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _mbr(entries: list[tuple[int, bytes, int, int, int]]) -> bytearray:
    mbr = bytearray(512)
    for i, (boot, chs, kind, lba, sectors) in enumerate(entries):
        struct.pack_into("<B3sB3sII", mbr, 446 + 16 * i, boot, chs, kind, b"\xff\xff\xff", lba, sectors)
    mbr[510:512] = b"\x55\xaa"
    return mbr


def forged_gpt(sectors: int = 128) -> bytes:
    """A protective MBR, a GPT header at LBA 1 and its backup at the last LBA."""
    disk = bytearray(sectors * 512)
    disk[:512] = _mbr([(0, b"\x00\x02\x00", 0xEE, 1, sectors - 1)])
    header = bytearray(92)
    struct.pack_into("<8sIIIIQQQQ16sQII", header, 0, b"EFI PART", 0x10000, 92, 0, 0, 1, sectors - 1, 34,
                     sectors - 34, os.urandom(16), 2, 128, 128)
    struct.pack_into("<I", header, 16, zlib.crc32(header))
    disk[512:604] = header
    disk[-512:-420] = header
    return bytes(disk)


def make_seeds(directory: Path | str | None = None) -> dict[str, bytes]:
    """Name -> bytes of every sample: qemu-img and genisoimage made, forged, tar, compressed."""
    own = directory is None
    d = Path(tempfile.mkdtemp(prefix="imagefs-fuzz-seeds-") if own else directory)
    try:
        qi = "qemu-img"
        made = {
            "qcow2v3": ["-f", "qcow2", "-o", "compat=1.1"],
            "qcow2v2": ["-f", "qcow2", "-o", "compat=0.10"],
            "vpc-dynamic": ["-f", "vpc"],
            "vpc-fixed": ["-f", "vpc", "-o", "subformat=fixed"],
            "vhdx": ["-f", "vhdx"],
            "vdi": ["-f", "vdi"],
            "vmdk-sparse": ["-f", "vmdk", "-o", "subformat=monolithicSparse"],
            "vmdk-stream": ["-f", "vmdk", "-o", "subformat=streamOptimized"],
            "parallels": ["-f", "parallels"],
            "qed": ["-f", "qed"],
            "luks": ["-f", "luks", "--object", "secret,id=s0,data=fuzz", "-o", "key-secret=s0,iter-time=10"],
        }
        for name, args in made.items():
            _run(qi, "create", "-q", *args, str(d / name), "1M")
        _run(qi, "create", "-q", "-f", "qcow2", "-b", str(d / "qcow2v3"), "-F", "qcow2", str(d / "qcow2-backing"))
        _run(qi, "create", "-q", "-f", "qcow2", "-o", f"data_file={d / 'ext.raw'}", str(d / "qcow2-datafile"), "1M")
        _run(qi, "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", str(d / "vmdk-desc"), "1M")
        # A streamOptimized vmdk with data: grains, markers, footer (convert writes GD_AT_END).
        raw = d / "data.raw"
        raw.write_bytes(b"".join(bytes([i]) * 4096 for i in range(1, 64)))
        _run(qi, "convert", "-O", "vmdk", "-o", "subformat=streamOptimized", str(raw), str(d / "vmdk-stream-data"))
        _run(qi, "convert", "-O", "qcow2", str(raw), str(d / "qcow2-data"))
        tree = d / "tree"
        tree.mkdir()
        (tree / "hello.txt").write_bytes(b"hello\n" * 100)
        _run("genisoimage", "-quiet", "-o", str(d / "iso9660"), str(tree))
        _run("genisoimage", "-quiet", "-udf", "-o", str(d / "iso-udf"), str(tree))
        seeds = {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file() and p.name not in ("ext.raw", "vmdk-desc-flat")}
        del seeds["data.raw"]
        seeds["raw"] = raw.read_bytes()[:16384]
        # UDF alone: the hybrid's ISO 9660 descriptors replaced by a bare volume recognition sequence.
        udf = bytearray(seeds["iso-udf"])
        udf[16 * 2048:24 * 2048] = bytes(8 * 2048)
        for i, ident in enumerate((b"BEA01", b"NSR02", b"TEA01")):
            udf[(16 + i) * 2048:(16 + i) * 2048 + 7] = b"\x00" + ident + b"\x01"
        seeds["udf-only"] = bytes(udf)
        seeds["gpt"] = forged_gpt()
        seeds["mbr"] = bytes(_mbr([(0x80, b"\x00\x21\x00", 0x83, 2048, 4096)])) + bytes(1536)
        ovf = b'<?xml version="1.0"?><Envelope/>'
        seeds["ova"] = _tar([("vm.ovf", ovf), ("disk1.vmdk", seeds["vmdk-stream"][:4096])])
        seeds["ova-gnu-longname"] = _tar([("x" * 120 + ".ovf", ovf), ("disk.img", b"\0" * 700)], tarfile.GNU_FORMAT)
        seeds["ova-pax"] = _tar([("p" * 130 + ".ovf", ovf)], tarfile.PAX_FORMAT)
        seeds["docker"] = _tar([("manifest.json", b"[]"), ("abc/layer.tar", _tar([("etc/x", b"x")]))])
        seeds["gzip"] = gzip.compress(b"x" * 1000)
        seeds["xz"] = lzma.compress(b"x" * 1000)
        seeds["polyglot-qcow2-iso"] = seeds["qcow2v3"][:32768] + seeds["iso9660"][32768:]
        return seeds
    finally:
        if own:
            shutil.rmtree(d, ignore_errors=True)


def hot_offsets(data: bytes, limit: int = 4096) -> list[int]:
    """Offsets where the structure is: non-zero 8-byte words (headers, tables, descriptors), sampled."""
    hot = []
    step = 8
    zero = bytes(step)
    for offset in range(0, len(data), step):
        if data[offset:offset + step] != zero:
            hot.append(offset)
            if len(hot) >= 4 * limit:
                break
    if len(hot) > limit:
        hot = sorted(random.Random(len(data)).sample(hot, limit))
    return hot or [0]


# --- mutations ---------------------------------------------------------------------------------------------------
NUMBER = re.compile(rb"\d+")
WORDS = (b"monolithicSparse", b"streamOptimized", b"monolithicFlat", b"twoGbMaxExtentSparse", b"vmfs", b"/etc/passwd",
         b"parentFileNameHint", b"RW", b"RDONLY", b"SPARSE", b"FLAT", b"ZERO", b"=", b"\"", b"\n", b"#", b"\x00", b"\xff",
         b"ddb.adapterType", b"createType")


def _position(rng: random.Random, data: bytearray, hot: list[int]) -> int:
    n = len(data)
    if n == 0:
        return 0
    r = rng.random()
    if r < 0.55:
        p = rng.choice(hot) + rng.randrange(-8, 16)
    elif r < 0.75:
        p = rng.randrange(min(n, 1024))
    elif r < 0.85:
        p = n - 1 - rng.randrange(min(n, 2048))
    else:
        p = rng.randrange(n)
    return min(max(p, 0), n - 1)


def mutate(rng: random.Random, data: bytes, hot: list[int], seeds: dict[str, bytes]) -> tuple[bytes, list[str]]:
    """A few mutations of data; returns the result and a description of each."""
    out = bytearray(data)
    ops = []
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4, 6))):
        kind = rng.choices(
            ("flip", "byte", "int", "truncate", "duplicate", "insert", "delete", "splice", "number", "word"),
            (12, 8, 30, 8, 6, 4, 4, 3, 4, 3),
        )[0]
        if kind in ("flip", "byte") and out:
            p = _position(rng, out, hot)
            if kind == "flip":
                bit = rng.randrange(8)
                out[p] ^= 1 << bit
                ops.append(f"flip {p} bit {bit}")
            else:
                v = rng.randrange(256)
                out[p] = v
                ops.append(f"byte {p}={v}")
        elif kind == "int" and out:
            width = rng.choice((1, 2, 4, 4, 8, 8))
            p = _position(rng, out, hot)
            if rng.random() < 0.6:
                p -= p % width
            value = rng.choice(EXTREMES) if rng.random() < 0.8 else rng.getrandbits(8 * width)
            if rng.random() < 0.2:
                value += rng.choice((-1, 1))
            value %= 1 << (8 * width)
            endian = rng.choice("<>")
            raw = value.to_bytes(width, "little" if endian == "<" else "big")
            out[p:p + width] = raw
            ops.append(f"int {p} {endian}u{8 * width}={value}")
        elif kind == "truncate":
            n = len(out)
            cut = rng.choice((rng.randrange(n + 1), _position(rng, out, hot), n - rng.randrange(min(n, 4096) + 1)))
            del out[cut:]
            ops.append(f"truncate {cut}")
        elif kind == "duplicate" and out:
            a = _position(rng, out, hot)
            length = rng.choice((8, 64, 512, 2048, 4096))
            b = _position(rng, out, hot) if rng.random() < 0.7 else rng.randrange(len(out))
            piece = bytes(out[a:a + length])
            if rng.random() < 0.5:
                out[b:b + len(piece)] = piece
                ops.append(f"duplicate {a}+{length} over {b}")
            else:
                out[b:b] = piece
                ops.append(f"duplicate {a}+{length} inserted at {b}")
        elif kind == "insert":
            p = _position(rng, out, hot) if out else 0
            piece = rng.randbytes(rng.choice((1, 4, 8, 512)))
            out[p:p] = piece
            ops.append(f"insert {p} {piece.hex()}")
        elif kind == "delete" and out:
            p = _position(rng, out, hot)
            n = rng.choice((1, 4, 8, 512))
            del out[p:p + n]
            ops.append(f"delete {p}+{n}")
        elif kind == "splice":
            name = rng.choice(sorted(seeds))
            other = seeds[name]
            length = rng.choice((512, 4096, 32768, 65536, len(other)))
            at = rng.choice((0, 0, 512, 32768))
            out[at:at + length] = other[:length]
            ops.append(f"splice {name}[:{length}] at {at}")
        elif kind == "number":
            numbers = list(NUMBER.finditer(out, 0, 65536))
            if numbers:
                m = rng.choice(numbers)
                new = rng.choice((str(rng.choice(EXTREMES)).encode(), b"9" * rng.choice((20, 4301, 5000)),
                                  b"-1", b"0" * 30, b"1" * 300))
                out[m.start():m.end()] = new
                ops.append(f"number {m.start()}:{m.end()}={new[:20]!r}x{len(new)}")
        elif kind == "word":
            p = _position(rng, out, hot) if out else 0
            word = rng.choice(WORDS)
            out[p:p + (len(word) if rng.random() < 0.5 else 0)] = word
            ops.append(f"word {p} {word!r}")
    if out[257:262] == b"ustar" and rng.random() < 0.7:
        # A tar header whose checksum fails ends the archive: recompute them so mutated fields are read.
        for o in range(0, min(len(out), 65536) - 511, 512):
            if out[o + 257:o + 262] == b"ustar":
                out[o + 148:o + 156] = b" " * 8
                out[o + 148:o + 156] = b"%06o\x00 " % sum(out[o:o + 512])
        ops.append("tar checksums recomputed")
    return bytes(out), ops


def random_input(rng: random.Random, seeds: dict[str, bytes]) -> tuple[bytes, list[str]]:
    n = rng.choice((0, 1, 7, 64, 511, 512, 513, 600, 4096, 40000, rng.randrange(70000)))
    data = bytearray(rng.randbytes(n) if rng.random() < 0.5 else bytes(n))
    ops = [f"random {n}"]
    if rng.random() < 0.5 and n:
        name = rng.choice(sorted(seeds))
        head = seeds[name][:rng.choice((4, 8, 16, 64, 512))]
        data[:len(head)] = head
        ops.append(f"head of {name}")
    return bytes(data), ops


def make_input(rng_seed: int, seeds: dict[str, bytes], hots: dict[str, list[int]]) -> tuple[bytes, str, list[str]]:
    rng = random.Random(rng_seed)
    if rng.random() < 0.06:
        data, ops = random_input(rng, seeds)
        return data, "random", ops
    name = rng.choice(sorted(seeds))
    data, ops = mutate(rng, seeds[name], hots[name], seeds)
    return data, name, ops


# --- oracles -----------------------------------------------------------------------------------------------------
def random_split(rng: random.Random, n: int) -> list[int]:
    """Cut points (sorted, inside (0, n)): a few random ones, sometimes a run of 1-byte chunks somewhere."""
    cuts = {rng.randrange(1, n) for _ in range(rng.randrange(8))} if n > 1 else set()
    if n > 1 and rng.random() < 0.15:
        start = rng.choice((0, rng.randrange(n), max(n - 600, 0)))
        step = rng.choice((1, 3, 17, 512))
        cuts.update(range(max(start, 1), min(start + 32 * step, n), step))
    return sorted(cuts)


def held_bytes(inspector) -> int:
    """Bytes an inspector really holds: region buffers pending and completed, the tail, any other buffer."""
    total = sum(len(r.data) for r in inspector._regions.values())
    total += sum(map(len, inspector._done.values())) + len(inspector._tail)
    for name, value in vars(inspector).items():
        if name not in ("_tail",) and isinstance(value, (bytes, bytearray, memoryview)):
            total += len(value)
    return total


class OracleFailure(AssertionError):
    pass


def summary(d: Detection) -> tuple:
    return (d.format, d.matches, d.virtual_size, d.size, d.checks, d.properties, d.problems, d.container_format)


def run_detection(data: bytes, cuts: list[int], check_memory: bool = True, every: int = 8) -> Detection:
    """Feed data split at cuts; raise OracleFailure when an inspector holds more than MAX_CAPTURED."""
    detector = FormatDetector()
    view = memoryview(data)
    previous = 0
    ends = [*cuts, len(data)]
    for i, cut in enumerate(ends):
        if cut > previous or (cut == previous == 0 and not data):
            detector.feed(view[previous:cut])
            # What an inspector holds only grows (completed regions are kept) but for the tail and vmdk's text
            # window, both bounded: every 8th chunk (by default) and the last are enough, and keep the run fast.
            if check_memory and (i % every == 0 or i == len(ends) - 1):
                for inspector in detector.inspectors:
                    if inspector._held() > MAX_CAPTURED or held_bytes(inspector) > MAX_CAPTURED:
                        raise OracleFailure(
                            f"{inspector.name} holds {held_bytes(inspector)} bytes (_held {inspector._held()})"
                            f" after {cut} bytes, beyond MAX_CAPTURED={MAX_CAPTURED}"
                        )
        previous = cut
    detection = detector.finish()
    detection.reason()  # every property of the answer is usable
    _ = detection.safe
    return detection


def check_input(data: bytes, rng: random.Random, compare_split: bool) -> tuple[list[int], list[int] | None]:
    """All the oracles but time on one input; returns the splits used (raises on any failure)."""
    cuts = random_split(rng, len(data))
    first = run_detection(data, cuts)
    other = None
    if compare_split:
        other = random_split(rng, len(data))
        second = run_detection(data, other, check_memory=False)
        if summary(first) != summary(second):
            raise OracleFailure(f"another chunk split gives another answer:\n  {summary(first)}\n  {summary(second)}")
    return cuts, other


# --- the run -----------------------------------------------------------------------------------------------------
_SEEDS: dict[str, bytes] = {}
_HOTS: dict[str, list[int]] = {}
_ARGS: dict = {}


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang("the input did not finish in time")


def _init(seeds: dict[str, bytes], args: dict) -> None:
    _SEEDS.update(seeds)
    _HOTS.update({name: hot_offsets(data) for name, data in seeds.items()})
    _ARGS.update(args)
    signal.signal(signal.SIGALRM, _alarm)


def _save(crash_dir: Path, index: int, data: bytes, note: dict) -> str:
    crash_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(data).hexdigest()[:16]
    stem = f"{note['kind']}-{digest}"
    (crash_dir / f"{stem}.bin").write_bytes(data)
    (crash_dir / f"{stem}.json").write_text(json.dumps(note, indent=1, default=str))
    return stem


def _batch(task: tuple[int, int]) -> dict:
    start, count = task
    base, limit, split_every = _ARGS["seed"], _ARGS["time_limit"], _ARGS["split_every"]
    crash_dir = Path(_ARGS["crash_dir"])
    result = {"count": 0, "bytes": 0, "crashes": [], "slowest": 0.0, "compared": 0}
    for index in range(start, start + count):
        rng_seed = base * 1_000_000_007 + index
        data, name, ops = make_input(rng_seed, _SEEDS, _HOTS)
        rng = random.Random(rng_seed ^ 0x5EED)
        compare = split_every > 0 and index % split_every == 0
        began = time.perf_counter()
        kind, error, cuts, other = None, None, None, None
        signal.alarm(max(int(limit * 10), 5))
        try:
            cuts, other = check_input(data, rng, compare)
        except OracleFailure as e:
            kind, error = "oracle", f"{e}\n{traceback.format_exc()}"
        except Hang:
            kind, error = "hang", traceback.format_exc()
        except BaseException as e:  # anything at all out of feed()/finish() is a crash
            if isinstance(e, KeyboardInterrupt):
                raise
            kind, error = "exception", traceback.format_exc()
        finally:
            signal.alarm(0)
        elapsed = time.perf_counter() - began
        if kind is None and elapsed > limit:
            kind, error = "slow", f"{elapsed:.2f} s (limit {limit} s)"
        result["slowest"] = max(result["slowest"], elapsed)
        result["count"] += 1
        result["bytes"] += len(data)
        result["compared"] += compare
        if kind:
            rng = random.Random(rng_seed ^ 0x5EED)
            cuts = random_split(rng, len(data)) if cuts is None else cuts
            note = {"kind": kind, "index": index, "run_seed": base, "rng_seed": rng_seed, "seed_name": name,
                    "mutations": ops, "length": len(data), "cuts": cuts, "other_cuts": other, "error": error}
            note["file"] = _save(crash_dir, index, data, note)
            result["crashes"].append(note)
    return result


def replay(path: Path) -> int:
    data = path.read_bytes()
    note = json.loads(path.with_suffix(".json").read_text())
    print(f"replaying {path} ({len(data)} bytes; {note['seed_name']}: {note['mutations']})")
    splits = [note["cuts"]] + ([note["other_cuts"]] if note.get("other_cuts") is not None else [])
    answers = []
    for cuts in splits:
        began = time.perf_counter()
        detection = run_detection(data, cuts)
        print(f"  {time.perf_counter() - began:.3f} s: {detection}")
        answers.append(summary(detection))
    if len(answers) == 2 and answers[0] != answers[1]:
        print("  the two splits disagree")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--inputs", type=int, default=1_000_000)
    parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=1, help="run seed: inputs are (seed, index)")
    parser.add_argument("--time-limit", type=float, default=2.0, help="seconds one input may take")
    parser.add_argument("--split-every", type=int, default=4, help="compare a second split on every Nth input")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--crash-dir", type=Path, default=Path(tempfile.gettempdir()) / "imagefs-fuzz-crashes")
    parser.add_argument("--replay", type=Path, help="replay one saved crash (its .bin)")
    args = parser.parse_args(argv)
    if args.replay:
        return replay(args.replay)

    began = time.perf_counter()
    seeds = make_seeds()
    print(f"{len(seeds)} seeds ({sum(map(len, seeds.values()))} bytes) made in {time.perf_counter() - began:.1f} s:"
          f" {', '.join(sorted(seeds))}", flush=True)
    settings = {"seed": args.seed, "time_limit": args.time_limit, "split_every": args.split_every,
                "crash_dir": str(args.crash_dir)}
    tasks = [(start, min(args.batch, args.inputs - start)) for start in range(0, args.inputs, args.batch)]
    total = {"count": 0, "bytes": 0, "compared": 0, "slowest": 0.0}
    crashes: list[dict] = []
    began = last = time.perf_counter()
    with mp.get_context("fork").Pool(args.jobs, initializer=_init, initargs=(seeds, settings)) as pool:
        for result in pool.imap_unordered(_batch, tasks):
            for key in ("count", "bytes", "compared"):
                total[key] += result[key]
            total["slowest"] = max(total["slowest"], result["slowest"])
            for note in result["crashes"]:
                crashes.append(note)
                first_line = note["error"].strip().splitlines()[-1]
                print(f"CRASH {note['kind']} #{note['index']} {note['seed_name']} {note['mutations']}: {first_line}"
                      f" -> {args.crash_dir / note['file']}.bin", flush=True)
            now = time.perf_counter()
            if now - last >= 10 or total["count"] == args.inputs:
                last = now
                rate = total["count"] / (now - began)
                print(f"{total['count']:>9} inputs  {rate:7.0f}/s  crashes {len(crashes)}  slowest"
                      f" {total['slowest'] * 1000:.0f} ms", flush=True)
    elapsed = time.perf_counter() - began
    print(f"done: {total['count']} inputs in {elapsed:.0f} s ({total['count'] / elapsed:.0f} inputs/s, {args.jobs}"
          f" processes), {total['bytes'] / 2**30:.1f} GiB fed, {total['compared']} split-compared, slowest"
          f" {total['slowest'] * 1000:.0f} ms, crashes {len(crashes)}"
          + (f" (saved in {args.crash_dir})" if crashes else ""), flush=True)
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
