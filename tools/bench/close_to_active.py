#!/usr/bin/env python3
"""Benchmark 4: last close -> active, for an image written by a Python process.

The writer (this process) writes 1 MiB chunks to incoming/<name> with os.write
and closes; we time close() itself and from close() returning until
active/<name> stats and its status reads active (finalize: hash tail, fsync of
the staged file, rename into the store, catalog commit). Target <= 0.5 s.

Native baseline, the same durability work on a plain file: write the same
chunks with an fdatasync every 64 MiB (imagefs's flush_every_mib default),
close, then fsync + rename + fsync of the directory; its "close -> durable"
is that tail. Best of --reps; each repetition has different content.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as b  # noqa: E402

TARGET_S = 0.5
FLUSH_EVERY = 64 * b.MiB


def write_chunks(path: Path, data: b.DataSource, size: int, seed: int, *, flush_every: int = 0) -> tuple[float, float]:
    """Write, then close: (seconds writing, seconds in close())."""
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    written = 0
    for chunk in data.chunks(seed, size):
        written += os.write(fd, chunk)
        if flush_every and written % flush_every == 0 and written < size:  # the tail is left to close
            os.fdatasync(fd)
    t1 = time.perf_counter()
    os.close(fd)
    return t1 - t0, time.perf_counter() - t1


def main() -> int:
    args = b.parser(__doc__.splitlines()[0]).parse_args()
    size = b.size_bytes(args)
    table = b.Table(f"last close -> active, {size / b.GiB:g} GiB written in 1 MiB chunks")
    with b.bench_dir(args, "close") as (root, lib):
        lib.mount()
        data = b.DataSource()
        native_dir = root / "native"
        native_dir.mkdir()
        n_write, n_close, n_tail = [], [], []
        i_write, i_close, i_stat, i_active, cpu = [], [], [], [], []
        for rep in range(args.reps):  # native and imagefs interleaved: the load drifts
            b.syncfs(root)
            path = native_dir / f"tmp-{rep}"
            w, c = write_chunks(path, data, size, seed=100 + rep, flush_every=FLUSH_EVERY)
            t0 = time.perf_counter()
            fd = os.open(path, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
            os.rename(path, native_dir / f"final-{rep}")
            dfd = os.open(native_dir, os.O_RDONLY | os.O_DIRECTORY)
            os.fsync(dfd)
            os.close(dfd)
            n_tail.append(time.perf_counter() - t0)
            n_write.append(w)
            n_close.append(c)
            os.unlink(native_dir / f"final-{rep}")

            b.syncfs(root)
            name = f"close-{rep}.raw"
            stats = lib.stats()
            before = stats.sample()
            with b.py_spy(args, lib) if rep == 0 else b.nullcontext():
                w, c = write_chunks(lib.incoming(name), data, size, seed=200 + rep)
                t_closed = time.perf_counter()
                t_stat, t_active = lib.wait_active(name, poll=0.0002)
            cpu.append(b.ProcStats.delta(before, stats.sample())["cpu"])
            i_write.append(w)
            i_close.append(c)
            i_stat.append(t_stat - t_closed)
            i_active.append(t_active - t_closed)
            lib.delete(name)
        best = i_active.index(min(i_active))
        table.row(
            "close returned -> active", b.fmt_s(i_active[best]), b.fmt_s(min(n_tail)) + " (fsync+rename)",
            f"{i_active[best] / min(n_tail):.2f}x", f"<= {TARGET_S} s", i_active[best] <= TARGET_S,
        )
        table.row("  close returned -> stat ok", b.fmt_s(i_stat[best]))
        table.row("  close() itself", b.fmt_s(i_close[best]), b.fmt_s(min(n_close)))
        table.row(
            "  write throughput (1 MiB writes)", f"{b.gbps(size, i_write[best]):.2f} GB/s",
            f"{b.gbps(size, min(n_write)):.2f} GB/s", f"{min(n_write) / i_write[best]:.2f}x",
        )
        table.row("  daemon CPU per GiB", f"{cpu[best] / (size / b.GiB):.2f} s")
        table.note(f"close -> active: {b.spread(i_active)}; close(): {b.spread(i_close)}")
        table.note(f"native close -> fsync+rename+dir fsync: {b.spread(n_tail)} (fdatasync every 64 MiB while writing)")
        table.note("native write throughput includes those fdatasyncs; imagefs flushes in the background")
    table.print()
    return 1 if table.failed else 0


if __name__ == "__main__":
    sys.exit(main())
