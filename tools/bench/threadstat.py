#!/usr/bin/env python3
"""Per-thread CPU and run-queue wait of a process while a command runs (a profiling aid).

    threadstat.py PID -- COMMAND...

Reads /proc/PID/task/*/schedstat (ns on CPU, ns waiting for a CPU) and comm
before and after COMMAND, and prints the difference per thread, plus the
command's own wall time. Waiting for a CPU is what a shared 2-core machine
adds; on-CPU time is what imagefs itself costs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time


def snapshot(pid: int) -> dict[int, tuple[str, int, int]]:
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                on_cpu, waiting, _ = map(int, f.read().split())
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                comm = f.read().strip()
        except FileNotFoundError:
            continue
        out[int(tid)] = (comm, on_cpu, waiting)
    return out


def main() -> int:
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    pid = int(sys.argv[1])
    before = snapshot(pid)
    t0 = time.perf_counter()
    rc = subprocess.call(sys.argv[3:])
    wall = time.perf_counter() - t0
    after = snapshot(pid)
    print(f"wall {wall:.3f} s; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    total_cpu = total_wait = 0
    for tid, (comm, cpu, wait) in sorted(after.items()):
        _, cpu0, wait0 = before.get(tid, (comm, 0, 0))
        d_cpu, d_wait = (cpu - cpu0) / 1e9, (wait - wait0) / 1e9
        total_cpu += d_cpu
        total_wait += d_wait
        if d_cpu or d_wait:
            print(f"  {tid:>7} {comm:<16} on CPU {d_cpu:7.3f} s  waiting for CPU {d_wait:7.3f} s")
    print(f"  total            on CPU {total_cpu:7.3f} s  waiting for CPU {total_wait:7.3f} s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
