#!/usr/bin/env python3
"""Kill the imagefs daemon with SIGKILL at random moments and check that every crash is recoverable.

One library, mounted in a temp dir; each round streams file operations at the
mount (cp into incoming/, mv between active/ and deactivated/, renames, rm)
from a worker thread, SIGKILLs the daemon after a random delay, mounts again
(stale-mount recovery, crash recovery in the background), then requires:
`imagefs fsck --verify-data` exits 0 (within a few seconds: the recovery is
asynchronous), and every active image's bytes through the mount hash to its
user.image.os_hash_value. Prints rounds and failures; exit 1 if any failed.

    tools/crash_harness.py [--rounds 100] [--max-delay 1.5] [--seed N] [--keep]

Runs as root (the mount uses allow_other). tests/test_mount_crash.py runs a few
rounds of the same code.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def imagefs(*args, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "imagefs", *map(str, args)], capture_output=True, text=True, env=env or ENV,
        cwd=REPO,
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"imagefs {' '.join(map(str, args))} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


class CrashLibrary:
    def __init__(self, root: Path, crash_at: str | None = None):
        self.root, self.mnt, self.data = root, root / "mnt", root / "data"
        self.mnt.mkdir(parents=True, exist_ok=True)
        self.pid: int | None = None

    def mount(self, crash_at: str | None = None) -> int:
        env = dict(ENV)
        if crash_at:
            env["IMAGEFS_CRASH_AT"] = crash_at
        imagefs("mount", self.mnt, "--data-dir", self.data, env=env)
        self.pid = int(os.getxattr(self.mnt, "user.imagefs.pid"))
        return self.pid

    def kill(self) -> None:
        """SIGKILL our own daemon (by its pid) and wait until it is gone."""
        if self.pid is not None and running(self.pid):
            os.kill(self.pid, signal.SIGKILL)
        self.wait_dead()

    def wait_dead(self, timeout: float = 30.0) -> bool:
        return bool(wait_for(lambda: not running(self.pid), timeout))

    def umount(self) -> None:
        """Unmount whatever state the mount is in (a live daemon, or a stale mount of a dead one)."""
        result = imagefs("umount", self.mnt, check=False)
        if result.returncode != 0 and os.path.ismount(self.mnt) or _stale(self.mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], capture_output=True)
        if self.pid is not None:
            wait_for(lambda: not running(self.pid), 30)

    def fsck(self, *args) -> subprocess.CompletedProcess:
        return imagefs("fsck", "--data-dir", self.data, *args, check=False)

    def settled_fsck(self, timeout: float = 15.0) -> subprocess.CompletedProcess:
        """fsck until it is clean: the crash recovery after a remount runs in the background."""
        result = None

        def clean():
            nonlocal result
            result = self.fsck("--verify-data")
            return result.returncode == 0

        wait_for(clean, timeout, 0.2)
        return result

    def hash_problems(self) -> list[str]:
        """Active images whose bytes (read through the mount) do not hash to their os_hash_value."""
        problems = []
        active = self.mnt / "active"
        for name in sorted(os.listdir(active)):
            path = active / name
            expected = os.getxattr(path, "user.image.os_hash_value").decode()
            algo = os.getxattr(path, "user.image.os_hash_algo").decode()
            with open(path, "rb") as f:
                actual = hashlib.file_digest(f, algo).hexdigest()
            if actual != expected:
                problems.append(f"active/{name}: data hashes to {actual[:16]}…, os_hash_value {expected[:16]}…")
        return problems

    def log_tail(self, lines: int = 20) -> str:
        log = self.data / "imagefs.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


def _stale(path: Path) -> bool:
    try:
        os.stat(path)
        return False
    except OSError:
        return True


class Operations(threading.Thread):
    """A stream of operator actions at the mount until stopped; their failures (the daemon dies
    under them) are expected and ignored."""

    def __init__(self, lib: CrashLibrary, rng: random.Random, source_dir: Path, round_no: int):
        super().__init__(daemon=True)
        self.lib, self.rng, self.source_dir, self.round = lib, rng, source_dir, round_no
        self.stop = threading.Event()
        self.done = 0

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                self.one(n)
                self.done += 1
            except OSError:
                time.sleep(0.01)

    def one(self, n: int) -> None:
        rng, mnt = self.rng, self.lib.mnt
        active = sorted(os.listdir(mnt / "active"))
        deactivated = sorted(os.listdir(mnt / "deactivated"))
        choice = rng.random()
        if choice < 0.5 or not active:
            size = rng.choice([0, 1, 4096, 65536, 1 << 20, 3 << 20])
            source = self.source_dir / f"src-{self.round}-{n}"
            with open(source, "wb") as f:
                f.write(os.urandom(size))
            subprocess.run(["cp", str(source), str(mnt / "incoming" / f"img-{self.round}-{n}")],
                           capture_output=True)
            source.unlink()
        elif choice < 0.65:
            name = rng.choice(active)
            subprocess.run(["mv", str(mnt / "active" / name), str(mnt / "deactivated" / name)], capture_output=True)
        elif choice < 0.75 and deactivated:
            name = rng.choice(deactivated)
            subprocess.run(["mv", str(mnt / "deactivated" / name), str(mnt / "active" / name)], capture_output=True)
        elif choice < 0.85:
            name = rng.choice(active)
            subprocess.run(["mv", str(mnt / "active" / name), str(mnt / "active" / f"{name}.r{n}")],
                           capture_output=True)
        else:
            where = rng.choice(["active", "deactivated"] if deactivated else ["active"])
            names = active if where == "active" else deactivated
            subprocess.run(["rm", "-f", str(mnt / where / rng.choice(names))], capture_output=True)


def crash_round(lib: CrashLibrary, rng: random.Random, round_no: int, max_delay: float) -> list[str]:
    """One round on a mounted library: operations, SIGKILL at a random moment, remount, checks.
    Returns the problems found (empty: the crash was recovered)."""
    # Its own generator, seeded from the round's: the kill's timing and the operations do not
    # draw from one Random in two threads, so --seed reproduces a run.
    ops = Operations(lib, random.Random(rng.random()), lib.root, round_no)
    ops.start()
    time.sleep(rng.uniform(0.05, max_delay))
    lib.kill()
    ops.stop.set()
    ops.join(timeout=60)
    problems = []
    if ops.is_alive():
        problems.append("the operations did not stop after the daemon died")
    try:
        lib.mount()  # recovers the stale mount by itself
    except RuntimeError as e:
        return [f"remount failed: {e}"]
    result = lib.settled_fsck()
    if result.returncode != 0:
        problems.append(f"fsck exit {result.returncode}: {result.stdout.strip()} {result.stderr.strip()}")
    problems += lib.hash_problems()
    return problems


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=100)
    p.add_argument("--max-delay", type=float, default=1.5, help="longest delay before the kill (s)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--tmp", type=Path, default=Path("/var/tmp"))
    p.add_argument("--keep", action="store_true", help="keep the temp dir (the mount is always unmounted)")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the mount is unmounted on the way out
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    rng = random.Random(seed)
    root = Path(tempfile.mkdtemp(prefix="imagefs-crash-", dir=args.tmp))
    lib = CrashLibrary(root)
    failures = completed = 0
    started = time.monotonic()
    print(f"crash harness: {args.rounds} rounds, seed {seed}, library in {root}", flush=True)
    try:
        lib.mount()
        for round_no in range(1, args.rounds + 1):
            problems = crash_round(lib, rng, round_no, args.max_delay)
            completed += 1
            if problems:
                failures += 1
                print(f"round {round_no}: FAILED", *problems, "--- daemon log:", lib.log_tail(), sep="\n  ", flush=True)
                if not os.path.ismount(lib.mnt):
                    lib.mount()
            elif round_no % 10 == 0:
                counts = {d: len(os.listdir(lib.mnt / d)) for d in ("active", "deactivated", "killed")}
                print(f"round {round_no}: ok ({counts})", flush=True)
    finally:
        lib.umount()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"kept {root}")
    print(f"rounds: {completed}, failures: {failures} ({time.monotonic() - started:.0f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
