"""Shared helpers for the imagefs benchmarks in tools/bench/ (never imported by imagefs).

Every benchmark mounts its own library in its own temp dir under /var/tmp,
drives it with ordinary programs (cp, ls, Python open/write/read) and pairs
each figure with a native baseline measured in the same run, because on a
small shared machine absolute times mean little. The mount is always
unmounted (`imagefs umount`, then `fusermount3 -u -z` on our own mount
point only) and the temp dir removed unless --keep.
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager, nullcontext
from pathlib import Path

MiB = 1 << 20
GiB = 1 << 30
CHUNK = MiB  # read/write buffer of the drivers: 1 MiB, reused
BASE_TMP = Path(os.environ.get("IMAGEFS_BENCH_TMP", "/var/tmp"))


# --- command line -------------------------------------------------------------
def parser(description: str, *, size_gib: float | None = 2.0, count: int | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    if size_gib is not None:
        p.add_argument("--size-gib", type=float, default=size_gib, help=f"image size in GiB (default {size_gib})")
    if count is not None:
        p.add_argument("--count", type=int, default=count, help=f"number of images (default {count})")
    p.add_argument("--reps", type=int, default=3, help="repetitions per measurement; the best counts (default 3)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (the mount is always unmounted)")
    p.add_argument("--tmp", type=Path, default=BASE_TMP, help=f"where the temp dir goes (default {BASE_TMP})")
    p.add_argument(
        "--py-spy", metavar="FILE", type=Path, default=None,
        help="record the daemon with py-spy (raw collapsed stacks per thread, --nonblocking) over the imagefs phase",
    )
    return p


def size_bytes(args) -> int:
    return int(args.size_gib * GiB) // MiB * MiB or MiB


# --- process and machine ------------------------------------------------------
def loadavg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def _sigterm(signum, frame):
    raise SystemExit(128 + signum)  # so `finally` blocks run and the mount is unmounted


def install_signal_handlers() -> None:
    signal.signal(signal.SIGTERM, _sigterm)
    signal.signal(signal.SIGHUP, _sigterm)


def run(*args, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def timed_run(*args, stdout=subprocess.DEVNULL, env=None) -> float:
    t0 = time.perf_counter()
    result = subprocess.run([str(a) for a in args], stdout=stdout, stderr=subprocess.PIPE, env=env)
    elapsed = time.perf_counter() - t0
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} failed ({result.returncode}): {result.stderr.decode().strip()}")
    return elapsed


class ProcStats:
    """CPU seconds and syscall counts of one process (all threads), from /proc."""

    def __init__(self, pid: int):
        self.pid = pid
        self.tick = os.sysconf("SC_CLK_TCK")

    def sample(self) -> dict[str, float]:
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        out = {"cpu": (int(fields[11]) + int(fields[12])) / self.tick, "minflt": int(fields[7])}  # utime + stime
        with open(f"/proc/{self.pid}/io") as f:
            for line in f:
                key, value = line.split(":")
                out[key] = int(value)
        return out

    def rss_kib(self) -> dict[str, int]:
        out = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS", "VmHWM", "Threads")):
                    key, value = line.split(":")
                    out[key] = int(value.split()[0])
        return out

    @staticmethod
    def delta(before: dict, after: dict) -> dict:
        return {k: after[k] - before[k] for k in before}


# --- data ---------------------------------------------------------------------
class DataSource:
    """Incompressible, never-all-zero data, fast: a 64 MiB random pattern with a
    (seed, chunk) stamp at the start of each 1 MiB chunk, so every seed gives
    different content (and different hashes) without calling urandom per byte."""

    PATTERN = 64 * MiB

    def __init__(self):
        self.pattern = bytearray(os.urandom(self.PATTERN))

    def chunk(self, seed: int, index: int) -> memoryview:
        off = (index * CHUNK) % self.PATTERN
        struct.pack_into("<QQ", self.pattern, off, seed, index)
        return memoryview(self.pattern)[off:off + CHUNK]

    def chunks(self, seed: int, size: int):
        for index in range((size + CHUNK - 1) // CHUNK):
            chunk = self.chunk(seed, index)
            yield chunk[: min(CHUNK, size - index * CHUNK)]

    def write_file(self, path: Path, size: int, seed: int, *, fsync: bool = True) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for chunk in self.chunks(seed, size):
                os.write(fd, chunk)
            if fsync:
                os.fsync(fd)  # no writeback of our own setup left to disturb the measurement
        finally:
            os.close(fd)


def read_file(path: Path, buf: bytearray) -> tuple[int, float]:
    """Read a whole file with 1 MiB readinto a reusable buffer: (bytes, seconds)."""
    t0 = time.perf_counter()
    total = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            total += n
    return total, time.perf_counter() - t0


def evict(path: Path) -> None:
    """Drop one native file's pages from the page cache (nothing else's)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def syncfs(path: Path) -> None:
    """Flush dirty data of the filesystem holding `path` (`sync -f`), not the whole machine."""
    run("sync", "-f", path)


# --- the library under test -----------------------------------------------------
class Library:
    def __init__(self, root: Path):
        self.root = root
        self.mnt = root / "mnt"
        self.data = root / "data"
        self.mnt.mkdir(parents=True, exist_ok=True)
        self.mounted = False
        self.pid: int | None = None

    def imagefs(self, *args, check: bool = True) -> subprocess.CompletedProcess:
        return run(sys.executable, "-m", "imagefs", *args, check=check)

    def mount(self) -> float:
        t0 = time.perf_counter()
        self.imagefs("mount", self.mnt, "--data-dir", self.data)
        elapsed = time.perf_counter() - t0
        self.mounted = True
        self.pid = int(os.getxattr(self.mnt, "user.imagefs.pid"))
        return elapsed

    def umount(self) -> None:
        if not self.mounted:
            return
        result = self.imagefs("umount", self.mnt, check=False)
        if result.returncode != 0:
            print(f"  (imagefs umount failed: {result.stderr.strip()}; fusermount3 -u -z {self.mnt})", file=sys.stderr)
            subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], capture_output=True)
        self.mounted = False
        self.pid = None

    def remount(self) -> float:
        self.umount()
        return self.mount()

    def stats(self) -> ProcStats:
        return ProcStats(self.pid)

    def path(self, status: str, name: str) -> Path:
        return self.mnt / status / name

    def incoming(self, name: str) -> Path:
        return self.mnt / "incoming" / name

    def attr(self, path: Path, field: str) -> str:
        return os.getxattr(path, f"user.image.{field}").decode()

    def wait_active(self, name: str, timeout: float = 600.0, poll: float = 0.0005) -> tuple[float, float]:
        """Poll until active/<name> stats and its status reads active.
        Returns (perf_counter when stat first succeeded, when status read active)."""
        path = self.path("active", name)
        deadline = time.perf_counter() + timeout
        t_stat = None
        while time.perf_counter() < deadline:
            try:
                if t_stat is None:
                    os.stat(path)
                    t_stat = time.perf_counter()
                if os.getxattr(path, "user.image.status") == b"active":
                    return t_stat, time.perf_counter()
            except OSError as e:
                if e.errno not in (errno.ENOENT, errno.ENODATA):
                    raise
            if os.path.exists(self.path("killed", name)):
                reason = os.getxattr(self.path("killed", name), "user.imagefs.reason").decode()
                raise RuntimeError(f"image {name} was killed: {reason}")
            time.sleep(poll)
        raise TimeoutError(f"{name} not active after {timeout} s")

    def blob_path(self, name: str) -> Path:
        """The native file holding an active image's data (its store location)."""
        url = os.getxattr(self.path("active", name), "user.imagefs.locations").decode()
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme != "file":
            raise RuntimeError(f"not a local blob: {url}")
        return Path(urllib.request.url2pathname(parsed.path))

    def delete(self, name: str, timeout: float = 60.0) -> None:
        """rm active/<name> and wait for its blob to leave the store (disk space, writeback)."""
        blob = self.blob_path(name)
        os.unlink(self.path("active", name))
        deadline = time.monotonic() + timeout
        while blob.exists():
            if time.monotonic() > deadline:  # the next repetition would be measured over this one's writeback
                raise TimeoutError(f"blob of {name} still in the store after {timeout} s")
            time.sleep(0.01)


@contextmanager
def bench_dir(args, label: str):
    """A temp dir with a Library in it; the mount is always undone, the dir removed unless --keep."""
    install_signal_handlers()
    args.tmp.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=f"imagefs-bench-{label}-", dir=args.tmp))
    lib = Library(root)
    try:
        yield root, lib
    except BaseException:
        log = lib.data / "imagefs.log"
        if log.exists():  # the daemon's side of the failure
            lines = log.read_text(errors="replace").splitlines()[-30:]
            print(f"--- last lines of {log}:", *lines, "---", sep="\n", file=sys.stderr)
        raise
    finally:
        try:
            lib.umount()
        finally:
            if args.keep:
                print(f"kept {root}")
            else:
                shutil.rmtree(root, ignore_errors=True)


@contextmanager
def py_spy(args, lib: Library):
    """py-spy record on the daemon while the block runs (only with --py-spy FILE)."""
    if not args.py_spy:
        yield
        return
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    proc = subprocess.Popen(
        [exe, "record", "-p", str(lib.pid), "-o", str(args.py_spy), "-f", "raw", "-r", "250", "--threads",
         "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    time.sleep(1.0)  # let it attach
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        print(f"py-spy profile: {args.py_spy}")


# --- reporting ----------------------------------------------------------------
def gbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e9


def fmt_s(seconds: float) -> str:
    return f"{seconds:.3f} s" if seconds >= 0.01 else f"{seconds * 1e3:.2f} ms"


class Table:
    """measurement | imagefs | native | ratio | target | result; info rows have no target."""

    HEAD = ("measurement", "imagefs", "native", "ratio", "target", "result")

    def __init__(self, title: str):
        self.title = title
        self.rows: list[tuple[str, ...]] = []
        self.notes: list[str] = []
        self.load_start = loadavg()
        self.failed = False

    def row(self, name, imagefs="", native="", ratio="", target="", ok: bool | None = None) -> None:
        result = "" if ok is None else ("PASS" if ok else "FAIL")
        if ok is False:
            self.failed = True
        self.rows.append((name, imagefs, native, ratio, target, result))

    def note(self, text: str) -> None:
        self.notes.append(text)

    def print(self) -> None:
        widths = [max(len(r[i]) for r in [self.HEAD, *self.rows]) for i in range(len(self.HEAD))]
        line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
        print()
        print(f"== {self.title}")
        print(f"   load average: {self.load_start} at start, {loadavg()} at end; {os.cpu_count()} CPUs")
        print(line(self.HEAD))
        print(line(tuple("-" * w for w in widths)))
        for r in self.rows:
            print(line(r))
        for n in self.notes:
            print(f"  - {n}")
        sys.stdout.flush()


def spread(values: list[float]) -> str:
    """All repetitions, for judging noise: min/median/max."""
    if len(values) == 1:
        return fmt_s(values[0])
    return f"min {fmt_s(min(values))}, median {fmt_s(statistics.median(values))}, max {fmt_s(max(values))}"


def upload_image(lib: Library, data: DataSource, size: int, name: str, seed: int) -> float:
    """Make an active image of `size` bytes: written natively, cp'ed into incoming/, source removed.
    Returns the seconds from cp start to active (informational)."""
    source = lib.root / f"source-{seed}"
    data.write_file(source, size, seed)
    try:
        t0 = time.perf_counter()
        run("cp", source, lib.incoming(name))
        _, t_active = lib.wait_active(name)
        return t_active - t0
    finally:
        source.unlink()


def native_ingest(source: Path, target_dir: Path, name: str) -> float:
    """What an ideal ingest costs natively, in this process: read the source in 1 MiB chunks
    into a ring of reused buffers, pwrite each to a new file while md5 and sha512 run in two
    threads, then fsync and rename into place. No FUSE, no event loop, no fresh memory per
    chunk. Returns seconds."""
    import hashlib
    import queue
    import threading

    ring = [bytearray(CHUNK) for _ in range(32)]
    free: queue.Queue = queue.Queue()
    for i in range(len(ring)):
        free.put(i)
    pending = [0] * len(ring)
    lock = threading.Lock()
    queues = [queue.Queue() for _ in range(2)]
    hashers = [hashlib.md5(), hashlib.sha512()]

    def work(q, h):
        while (item := q.get()) is not None:
            i, n = item
            h.update(memoryview(ring[i])[:n])
            with lock:
                pending[i] -= 1
                if pending[i] == 0:
                    free.put(i)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=work, args=pair) for pair in zip(queues, hashers)]
    for t in threads:
        t.start()
    temp = target_dir / f".{name}.tmp"
    out = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with open(source, "rb", buffering=0) as f:
            offset = 0
            while True:
                i = free.get()
                n = f.readinto(ring[i])
                if not n:
                    break
                os.pwrite(out, memoryview(ring[i])[:n], offset)
                offset += n
                pending[i] = 2
                for q in queues:
                    q.put((i, n))
        for q in queues:
            q.put(None)
        for t in threads:
            t.join()
        os.fsync(out)
    finally:
        os.close(out)
    os.rename(temp, target_dir / name)
    dfd = os.open(target_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    elapsed = time.perf_counter() - t0
    os.unlink(target_dir / name)
    return elapsed


def read_into_fresh_memory(path: Path) -> tuple[int, float]:
    """Read a file into newly mapped anonymous memory: a native read that, like the mount's
    first read filling its own page cache, has to fault in fresh pages (costly in some VMs)."""
    import mmap

    size = os.stat(path).st_size
    area = mmap.mmap(-1, max(size, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        view = memoryview(area)
        t0 = time.perf_counter()
        total = 0
        with open(path, "rb", buffering=0) as f:
            while total < size and (n := f.readinto(view[total:total + CHUNK])):
                total += n
        elapsed = time.perf_counter() - t0
        view.release()
        return total, elapsed
    finally:
        area.close()
