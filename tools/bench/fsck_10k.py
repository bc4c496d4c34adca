#!/usr/bin/env python3
"""Benchmark 7: `imagefs fsck` and `fsck --verify-data` of a library of 10,000 images, vs native tools.

The library is built directly through the Catalog and store API (no mount):
--count small images (0.5-4.5 KiB, distinct content), each created, stored
(store.put: fsync + rename) and activated as finalize would. Then, best of
--reps, interleaved: `imagefs fsck` against the native baseline of what it
must at least do, `sqlite3 catalog.db 'PRAGMA integrity_check'` plus `find
store -type f | xargs stat`; and `imagefs fsck --verify-data` against `find
store -type f | xargs sha512sum`. Both imagefs commands run as an operator
runs them (a new Python process each time, startup included); the fsck must
come out clean (exit 0). No target: the ratios are for reading.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as b  # noqa: E402

REPO = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(REPO))
ENV = {**os.environ, "PYTHONPATH": str(REPO), "LC_ALL": "C"}


def build(data_dir: Path, count: int) -> float:
    from imagefs.catalog import Catalog
    from imagefs.config import load_config
    from imagefs.lifecycle import Status
    from imagefs.store import open_store

    config = load_config(None, data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    config.staging_path.mkdir(exist_ok=True)
    catalog = Catalog(config.catalog_path)
    store = open_store(config.store)
    store.initialise("bench-fsck")
    catalog.set_store_marker(store.name, "bench-fsck")
    pattern = os.urandom(8192)
    t0 = time.perf_counter()
    for i in range(count):
        data = i.to_bytes(8, "little") + pattern[: 504 + (i * 7919) % 4096]
        image = catalog.create_image(f"img-{i:05d}.raw", owner="bench", actor="bench")
        catalog.change_status(image.seq, Status.SAVING, actor="bench")
        staged = config.staging_path / image.id
        staged.write_bytes(data)
        digest = hashlib.sha512(data).hexdigest()
        key = f"sha512:{digest}"
        store.put(key, staged)
        catalog.activate(
            image.seq, blob_key=key, store=store.name, actor="bench", size=len(data),
            checksum=hashlib.md5(data).hexdigest(), os_hash_algo="sha512", os_hash_value=digest,
            disk_format="raw", container_format="bare", stored_format="raw", virtual_size=len(data),
        )
    elapsed = time.perf_counter() - t0
    catalog.close()
    return elapsed


def timed_shell(command: str) -> float:
    t0 = time.perf_counter()
    result = subprocess.run(["bash", "-c", command], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    elapsed = time.perf_counter() - t0
    if result.returncode != 0:
        raise RuntimeError(f"{command} failed: {result.stderr.decode().strip()}")
    return elapsed


def timed_fsck(data_dir: Path, *extra: str) -> float:
    t0 = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "imagefs", "fsck", "--data-dir", str(data_dir), *extra],
        capture_output=True, text=True, env=ENV, cwd=REPO,
    )
    elapsed = time.perf_counter() - t0
    if result.returncode != 0:
        raise RuntimeError(f"imagefs fsck {' '.join(extra)} exited {result.returncode}: {result.stdout[-2000:]}")
    return elapsed


def main() -> int:
    p = b.parser(__doc__.splitlines()[0], size_gib=None, count=10_000)
    args = p.parse_args()
    table = b.Table(f"imagefs fsck of a library of {args.count} images")
    with b.bench_dir(args, "fsck") as (root, lib):
        data = lib.data
        t_build = build(data, args.count)
        b.syncfs(root)
        store = data / "store"
        native_check = (
            f"sqlite3 {data / 'catalog.db'} 'PRAGMA integrity_check' && find {store} -type f -print0 | xargs -0 stat"
        )
        native_hash = f"find {store / 'blobs'} -type f -print0 | xargs -0 sha512sum"
        python_start = f"{sys.executable} -c 'import imagefs.cli'"
        timed_shell(native_check)  # warm the caches of both sides alike
        timed_fsck(data, "--verify-data")
        runs: dict[str, list[float]] = {k: [] for k in ("fsck", "native", "verify", "hash", "start")}
        for _ in range(args.reps):
            runs["native"].append(timed_shell(native_check))
            runs["fsck"].append(timed_fsck(data))
            runs["hash"].append(timed_shell(native_hash))
            runs["verify"].append(timed_fsck(data, "--verify-data"))
            runs["start"].append(timed_shell(python_start))
        best = {k: min(v) for k, v in runs.items()}
        table.row(
            "fsck", b.fmt_s(best["fsck"]), b.fmt_s(best["native"]), f"{best['fsck'] / best['native']:.1f}x",
        )
        table.row(
            "fsck --verify-data", b.fmt_s(best["verify"]), b.fmt_s(best["hash"]),
            f"{best['verify'] / best['hash']:.1f}x",
        )
        table.row("  python + imagefs import alone", b.fmt_s(best["start"]))
        table.row("  building the library (catalog + store.put)", b.fmt_s(t_build))
        table.note(f"native for fsck: {native_check.replace(str(root), '<tmp>')}")
        table.note(f"native for --verify-data: {native_hash.replace(str(root), '<tmp>')}")
        table.note("ratio = imagefs time / native time (lower is better); each a new process, as an operator runs it")
        for name in ("fsck", "native", "verify", "hash"):
            table.note(f"spread {name}: {b.spread(runs[name])}")
    table.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
