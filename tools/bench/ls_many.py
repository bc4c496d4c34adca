#!/usr/bin/env python3
"""Benchmark 5: `ls -l active/` with many images, vs `ls -l` of a native directory.

--count tiny images (0.5-4.5 KiB, distinct content) are written into incoming/
by Python open/write/close from --threads threads, then waited for until all
are active. `ls -l` is run once to warm, then timed best of --reps, on the
mount and on a native directory holding files of the same names and sizes.
Also shown: the first `ls -l` after a remount (nothing cached in the kernel),
the mount time with that many images, and the daemon's RSS
(/proc/<pid>/status VmRSS) after creating them. Target: warm <= 0.5 s.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as b  # noqa: E402

TARGET_S = 0.5
ENV = {**os.environ, "LC_ALL": "C"}


def sizes(count: int) -> list[int]:
    return [512 + (i * 7919) % 4096 for i in range(count)]


def write_all(directory: Path, data: b.DataSource, lengths: list[int], threads: int) -> float:
    pattern = bytes(data.pattern[: 8 * b.MiB])

    def one(i: int) -> None:
        off = (i * 4099) % (len(pattern) - 8192)
        body = i.to_bytes(8, "little") + pattern[off:off + lengths[i] - 8]  # distinct: the index comes first
        fd = os.open(directory / f"img-{i:05d}.raw", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, body)
        finally:
            os.close(fd)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(one, range(len(lengths)), chunksize=64):
            pass
    return time.perf_counter() - t0


def ls_l(directory: Path) -> float:
    return b.timed_run("ls", "-l", directory, env=ENV)


def main() -> int:
    p = b.parser(__doc__.splitlines()[0], size_gib=None, count=10_000)
    p.add_argument("--threads", type=int, default=16, help="writer threads (default 16)")
    args = p.parse_args()
    table = b.Table(f"ls -l of a directory with {args.count} images")
    lengths = sizes(args.count)
    with b.bench_dir(args, "ls") as (root, lib):
        lib.mount()
        data = b.DataSource()
        native = root / "native"
        native.mkdir()
        t_native_create = write_all(native, data, lengths, args.threads)
        b.syncfs(root)

        stats = lib.stats()
        before = stats.sample()
        t0 = time.perf_counter()
        t_written = write_all(lib.mnt / "incoming", data, lengths, args.threads)
        active = lib.mnt / "active"
        while len(os.listdir(active)) < args.count:  # a listing waits for finalizes under way
            killed = os.listdir(lib.mnt / "killed")
            if killed:
                raise RuntimeError(f"{len(killed)} images were killed, e.g. {killed[0]}")
            time.sleep(0.1)
        t_created = time.perf_counter() - t0
        used = b.ProcStats.delta(before, stats.sample())
        rss = stats.rss_kib()

        with b.py_spy(args, lib):
            ls_l(active)  # warm
            before_ls = stats.sample()
            mount_times = [ls_l(active) for _ in range(args.reps)]
            ls_used = b.ProcStats.delta(before_ls, stats.sample())
        ls_l(native)
        native_times = [ls_l(native) for _ in range(args.reps)]
        names_mount = min(b.timed_run("ls", active, env=ENV) for _ in range(args.reps))
        names_native = min(b.timed_run("ls", native, env=ENV) for _ in range(args.reps))
        rss_after_ls = stats.rss_kib()

        t_mount = lib.remount()
        cold_mount = ls_l(lib.mnt / "active")
        b.syncfs(root)
        cold_native = ls_l(native)  # dentries/inodes still cached: a warm-ish native baseline

        best_m, best_n = min(mount_times), min(native_times)
        table.row(
            "ls -l warm", b.fmt_s(best_m), b.fmt_s(best_n), f"{best_m / best_n:.1f}x", f"<= {TARGET_S} s",
            best_m <= TARGET_S,
        )
        table.row("  per entry", f"{best_m / args.count * 1e6:.0f} us", f"{best_n / args.count * 1e6:.1f} us")
        table.row(
            "  daemon requests per entry per ls -l", f"{ls_used['syscr'] / args.reps / args.count:.2f}",
        )
        table.row("  ls (names only)", b.fmt_s(names_mount), b.fmt_s(names_native), f"{names_mount / names_native:.1f}x")
        table.row("  ls -l first after remount", b.fmt_s(cold_mount), b.fmt_s(cold_native), f"{cold_mount / cold_native:.1f}x")
        table.row("  mount with these images", b.fmt_s(t_mount))
        table.row(
            f"  create {args.count} images ({args.threads} threads)", b.fmt_s(t_created), b.fmt_s(t_native_create),
            f"{t_created / t_native_create:.0f}x",
        )
        table.row("  images per second", f"{args.count / t_created:.0f}/s", f"{args.count / t_native_create:.0f}/s")
        table.row("  daemon RSS after creating", f"{rss['VmRSS'] / 1024:.1f} MiB", "", "", "", None)
        table.note(
            f"writes themselves took {b.fmt_s(t_written)}, the rest was waiting for finalizes; daemon CPU "
            f"{used['cpu']:.1f} s ({used['cpu'] / args.count * 1e3:.2f} ms per image)"
        )
        table.note(
            f"daemon VmRSS {rss['VmRSS'] / 1024:.1f} MiB (peak {rss['VmHWM'] / 1024:.1f} MiB, {rss['Threads']} threads) "
            f"after creating; {rss_after_ls['VmRSS'] / 1024:.1f} MiB after the ls runs"
        )
        table.note(f"ls -l warm: imagefs {b.spread(mount_times)}; native {b.spread(native_times)}")
        table.note(
            "requests per entry = daemon read syscalls / entries: GNU ls -l asks for security.selinux and "
            "system.posix_acl_access; imagefs answers EOPNOTSUPP, so ls asks once per mount, not per file"
        )
    table.print()
    return 1 if table.failed else 0


if __name__ == "__main__":
    sys.exit(main())
