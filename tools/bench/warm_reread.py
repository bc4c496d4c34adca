#!/usr/bin/env python3
"""Benchmark 1: warm reread of an active image through the mount vs native read of its blob.

Both are warm in the page cache (the mount's own page cache: active images are
opened with keep_cache, so a reread should never reach the daemon). Each read
is the whole file with 1 MiB readinto into a reused buffer; native and mount
reads alternate, best of --reps each. Target: mount/native throughput >= 0.8.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as b  # noqa: E402

TARGET = 0.8


def main() -> int:
    args = b.parser(__doc__.splitlines()[0]).parse_args()
    size = b.size_bytes(args)
    table = b.Table(f"warm reread, {size / b.GiB:g} GiB image")
    with b.bench_dir(args, "warm") as (root, lib):
        lib.mount()
        data = b.DataSource()
        b.upload_image(lib, data, size, "warm.raw", seed=1)
        image, blob = lib.path("active", "warm.raw"), lib.blob_path("warm.raw")
        buf = bytearray(b.CHUNK)
        # Warm both: the blob natively, the mount's page cache by one read through it.
        b.read_file(blob, buf)
        n_first, t_first = b.read_file(image, buf)
        assert n_first == size, (n_first, size)
        stats = lib.stats()
        native, mount = [], []
        before = stats.sample()
        with b.py_spy(args, lib):
            for _ in range(args.reps):
                native.append(b.read_file(blob, buf)[1])
                mount.append(b.read_file(image, buf)[1])
        used = b.ProcStats.delta(before, stats.sample())
        native_gbps, mount_gbps = b.gbps(size, min(native)), b.gbps(size, min(mount))
        ratio = mount_gbps / native_gbps
        table.row(
            "warm reread throughput", f"{mount_gbps:.2f} GB/s", f"{native_gbps:.2f} GB/s", f"{ratio:.2f}x",
            f">= {TARGET}x", ratio >= TARGET,
        )
        table.row("  (first read, filled the mount's cache)", f"{b.gbps(size, t_first):.2f} GB/s")
        table.note(f"imagefs reads: {b.spread(mount)}; native reads: {b.spread(native)}")
        table.note(
            f"daemon during the {args.reps} rereads: {used['cpu']:.2f} CPU s, {used['syscr']} read + "
            f"{used['syscw']} write syscalls (a handful per open = open/flush/release: the rereads came from the kernel cache)"
        )
    table.print()
    return 1 if table.failed else 0


if __name__ == "__main__":
    sys.exit(main())
