"""The BlobStore contract: one suite every backend passes (as borgstore tests its backends).

A backend joins by one entry in BACKENDS: a name, and a factory from a temp dir
(and whatever the environment names) to a store, or None to skip with a reason.
Remote backends are switched on by an environment variable naming a server URL,
e.g. IMAGEFS_TEST_S3_URL=http://user:secret@localhost:9000/bucket once s3.py exists.
"""

import errno
import hashlib
import os
import random
import shutil
from pathlib import Path

import pytest

import imagefs.store.local
from imagefs.config import StoreConfig
from imagefs.errors import Invalid, NotFound, StoreUnavailable
from imagefs.store import BlobStore, blob_key, open_store
from imagefs.store.local import copy_sparse


MARKER = "6a3c1d4e-0000-4000-8000-000000000001"


def local_store(tmp_path: Path, *, initialise: bool = True) -> BlobStore:
    store = open_store(StoreConfig("local", "dir", tmp_path / "store"))
    if initialise:
        store.initialise(MARKER)
    return store


def s3_store(tmp_path: Path, *, initialise: bool = True) -> BlobStore:
    url = os.environ["IMAGEFS_TEST_S3_URL"]
    store = open_store(StoreConfig("s3", "s3", url))  # type: ignore[arg-type]  # path carries the URL
    if initialise:
        store.initialise(MARKER)
    return store


# name -> (factory, the environment variable that switches it on; None: always on)
BACKENDS = {
    "local": (local_store, None),
    "s3": (s3_store, "IMAGEFS_TEST_S3_URL"),
}
ENABLED = [name for name, (_, env) in BACKENDS.items() if env is None or os.environ.get(env)]


@pytest.fixture(params=ENABLED)
def store(request, tmp_path):
    factory, _ = BACKENDS[request.param]
    store = factory(tmp_path)
    yield store
    for key in list(store.list()):
        store.delete(key)


@pytest.fixture
def stage(tmp_path):
    """stage(data) -> a file with those bytes, as finalize hands it to put()."""
    count = 0

    def make(data: bytes) -> Path:
        nonlocal count
        count += 1
        path = tmp_path / f"staged{count}"
        path.write_bytes(data)
        return path

    return make


def key_of(data: bytes, algo: str = "sha512") -> str:
    return f"{algo}:{hashlib.new(algo, data).hexdigest()}"


DATA = random.Random(1).randbytes(300_000)


def test_put_then_read(store, stage):
    key = key_of(DATA)
    staged = stage(DATA)
    assert not store.exists(key)
    assert store.put(key, staged) is True
    assert not staged.exists()  # put takes the staged file
    assert store.exists(key)
    assert store.size(key) == len(DATA)
    assert store.read(key, 0, len(DATA)) == DATA
    assert store.read(key, 0, 10) == DATA[:10]
    assert store.read(key, 123_456, 70_000) == DATA[123_456:193_456]
    assert store.read(key, len(DATA) - 5, 100) == DATA[-5:]  # short at the end
    assert store.read(key, len(DATA), 100) == b""
    assert store.read(key, len(DATA) + 1000, 100) == b""
    assert store.read(key, 7, 0) == b""


@pytest.mark.parametrize("algo", ["sha256", "sha384", "sha512"])
def test_every_hash_algorithm(store, stage, algo):
    key = key_of(b"abc", algo)
    assert blob_key(algo, key.split(":")[1]) == key
    assert store.put(key, stage(b"abc"))
    assert store.read(key, 0, 10) == b"abc"
    assert set(store.list()) == {key}


def test_empty_blob(store, stage):
    key = key_of(b"")
    assert store.put(key, stage(b""))
    assert store.size(key) == 0
    assert store.read(key, 0, 10) == b""


def test_put_of_an_existing_key_keeps_the_blob(store, stage):
    key = key_of(DATA)
    assert store.put(key, stage(DATA)) is True
    second = stage(DATA)
    assert store.put(key, second) is False
    assert not second.exists()  # the duplicate is dropped
    assert store.read(key, 0, len(DATA)) == DATA
    assert list(store.list()) == [key]


def test_list_is_exactly_the_keys(store, stage):
    assert list(store.list()) == []
    blobs = {key_of(d): d for d in (b"one", b"two", b"three", DATA)}
    for key, data in blobs.items():
        store.put(key, stage(data))
    assert sorted(store.list()) == sorted(blobs)
    store.delete(key_of(b"two"))
    assert sorted(store.list()) == sorted(set(blobs) - {key_of(b"two")})


def test_delete(store, stage):
    key = key_of(b"gone")
    store.put(key, stage(b"gone"))
    store.delete(key)
    assert not store.exists(key)
    assert list(store.list()) == []
    for call in (lambda: store.delete(key), lambda: store.read(key, 0, 1), lambda: store.size(key),
                 lambda: store.open_reader(key).read(0, 1)):
        with pytest.raises(NotFound) as raised:
            call()
        assert raised.value.errno == errno.ENOENT


def test_delete_then_put_again(store, stage):
    key = key_of(b"again")
    store.put(key, stage(b"again"))
    store.delete(key)
    assert store.put(key, stage(b"again")) is True
    assert store.read(key, 0, 10) == b"again"


def test_open_reader_reads_like_read(store, stage):
    key = key_of(DATA)
    store.put(key, stage(DATA))
    reader = store.open_reader(key)
    try:
        rng = random.Random(2)
        for _ in range(50):
            offset, length = rng.randrange(len(DATA) + 100), rng.randrange(70_000)
            assert reader.read(offset, length) == store.read(key, offset, length) == DATA[offset:offset + length]
    finally:
        reader.close()


BAD_KEYS = [
    "sha512:../../x",
    "sha512:" + "a" * 127,
    "sha512:" + "a" * 129,
    "sha512:" + "A" * 128,
    "sha256:" + "a" * 128,
    "md5:" + "a" * 32,
    "sha1:" + "a" * 40,
    "SHA512:" + "a" * 128,
    "sha512" + "a" * 128,
    "sha512:" + "a" * 126 + "/x",
    "sha512:" + "g" * 128,
    "sha512:" + "a" * 128 + "\n",
    "a" * 128,
    "",
    "../" + "a" * 128,
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_invalid_keys_are_refused_before_touching_anything(store, stage, tmp_path, key):
    staged = stage(b"data")
    before = sorted(p for p in tmp_path.rglob("*"))
    calls = [
        lambda: store.put(key, staged), lambda: store.read(key, 0, 1), lambda: store.exists(key),
        lambda: store.size(key), lambda: store.delete(key), lambda: store.open_reader(key),
    ]
    for call in calls:
        with pytest.raises(Invalid) as raised:
            call()
        assert raised.value.errno == errno.EINVAL
    assert staged.read_bytes() == b"data"
    assert sorted(p for p in tmp_path.rglob("*")) == before
    assert list(store.list()) == []


# --- knowing the store is there: marker and probe -------------------------------------


@pytest.fixture(params=ENABLED)
def fresh(request, tmp_path):
    """A store object over a store nobody initialised yet."""
    factory, _ = BACKENDS[request.param]
    return factory(tmp_path, initialise=False)


def test_a_store_without_its_marker_fails_the_probe_and_takes_no_blob(fresh, stage):
    with pytest.raises(StoreUnavailable):
        fresh.probe()
    staged = stage(DATA)
    with pytest.raises(StoreUnavailable):
        fresh.put(key_of(DATA), staged)
    assert staged.exists()


def test_initialise_then_probe(fresh, stage):
    fresh.initialise(MARKER)
    fresh.probe()
    assert fresh.put(key_of(DATA), stage(DATA))
    fresh.initialise(MARKER)  # again, same library: nothing changes
    assert fresh.read(key_of(DATA), 0, 100) == DATA[:100]


def test_another_librarys_store_is_refused(fresh):
    fresh.initialise(MARKER)
    with pytest.raises(StoreUnavailable, match="marker"):
        fresh.initialise("another-library")


def test_a_reopened_store_is_known_by_the_recorded_marker(store, tmp_path, stage):
    store.put(key_of(DATA), stage(DATA))
    again = type(store).__new__(type(store))
    again.__dict__.update(store.__dict__)
    again.marker = "not-the-recorded-one"
    with pytest.raises(StoreUnavailable):
        again.probe()
    again.marker = MARKER
    again.probe()


def test_blob_key_validates():
    digest = hashlib.sha512(b"x").hexdigest()
    assert blob_key("sha512", digest) == f"sha512:{digest}"
    with pytest.raises(Invalid):
        blob_key("sha512", digest.upper())
    with pytest.raises(Invalid):
        blob_key("md5", hashlib.md5(b"x").hexdigest())


def test_url_names_the_blob(store, stage):
    key = key_of(b"where")
    store.put(key, stage(b"where"))
    assert key.split(":")[1] in store.url(key)


# --- the local directory store's own promises -----------------------------------------


@pytest.fixture
def local(tmp_path):
    return local_store(tmp_path)


def test_local_store_whose_marker_vanished_writes_nothing(local, stage, tmp_path):
    """An unmounted share: the bare mount point left behind has no marker, and stays untouched."""
    key = key_of(DATA)
    local.put(key, stage(DATA))
    (local.root / "imagefs-store").unlink()
    before = sorted(local.root.rglob("*"))
    with pytest.raises(StoreUnavailable, match="marker"):
        local.probe()
    with pytest.raises(StoreUnavailable):
        local.put(key_of(b"new"), stage(b"new"))
    with pytest.raises(StoreUnavailable):
        local.delete(key)
    assert sorted(local.root.rglob("*")) == before


def test_local_bare_directory_is_never_written_even_after_the_check(tmp_path, stage):
    """The share goes away between the marker check and the write: no directory is created."""
    store = local_store(tmp_path)
    shutil.rmtree(store.blobs)
    with pytest.raises(FileNotFoundError):
        store.put(key_of(DATA), stage(DATA))
    assert not store.blobs.exists()


def test_local_require_mount_refuses_a_plain_directory(tmp_path):
    store = open_store(StoreConfig("local", "dir", tmp_path / "share", require_mount=True))
    (tmp_path / "share").mkdir()
    with pytest.raises(StoreUnavailable, match="not a mount point"):
        store.initialise(MARKER)
    assert list((tmp_path / "share").iterdir()) == []
    assert not store.local_reads  # a share is read from worker threads


def test_local_blobs_are_read_only_files(local, stage):
    key = key_of(DATA)
    local.put(key, stage(DATA))
    path = local.blob_path(key)
    assert path.stat().st_mode & 0o777 == 0o444
    assert path.read_bytes() == DATA
    assert path.parent.parent.name == "sha512" and path.parent.name == path.name[:2]


def test_local_leaves_no_temp_files(local, stage):
    local.put(key_of(DATA), stage(DATA))
    local.put(key_of(DATA), stage(DATA))
    assert list(local.tmp.iterdir()) == []


MIB = 1 << 20
SPARSE_DATA = (MIB, 9 * MIB, 16 * MIB - 4096)


def sparse_file(path: Path) -> bytes:
    """16 MiB with data at 1 MiB, 9 MiB and at the very end: mostly holes."""
    with open(path, "wb") as f:
        f.truncate(16 * MIB)
        for offset in SPARSE_DATA:
            f.seek(offset)
            f.write(b"\xaa" * 4096)
    data = bytearray(16 * MIB)
    for offset in SPARSE_DATA:
        data[offset:offset + 4096] = b"\xaa" * 4096
    return bytes(data)


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def on_another_device(staged: Path):
    """An os.stat that shows `staged` on another device than the store: put() must copy, not rename."""
    real_stat = os.stat

    def stat(path, *args, **kwargs):
        st = real_stat(path, *args, **kwargs)
        if Path(path) == staged:
            return os.stat_result((st.st_mode, st.st_ino, st.st_dev + 1, *tuple(st)[3:]))
        return st

    return stat


def test_local_sparse_file_stays_sparse_on_rename(local, tmp_path):
    staged = tmp_path / "sparse"
    data = sparse_file(staged)
    if allocated(staged) > MIB:
        pytest.skip("this filesystem does not keep holes")
    key = key_of(data)
    assert local.put(key, staged)
    blob = local.blob_path(key)
    assert allocated(blob) <= MIB
    assert blob.read_bytes() == data
    assert local.allocated(key) == allocated(blob)


def test_local_sparse_file_stays_sparse_when_copied(local, tmp_path, monkeypatch):
    # Another filesystem may not exist here: make put() believe the staging area is elsewhere.
    staged = tmp_path / "sparse"
    data = sparse_file(staged)
    if allocated(staged) > MIB:
        pytest.skip("this filesystem does not keep holes")
    copies = []

    def spy(source, fd):
        copies.append(source)
        copy_sparse(source, fd)

    monkeypatch.setattr(os, "stat", on_another_device(staged))
    monkeypatch.setattr(imagefs.store.local, "copy_sparse", spy)
    key = key_of(data)
    assert local.put(key, staged)
    monkeypatch.undo()
    assert copies == [staged]
    blob = local.blob_path(key)
    assert not staged.exists()
    assert allocated(blob) <= MIB
    assert blob.read_bytes() == data
    assert blob.stat().st_mode & 0o777 == 0o444
    assert list(local.tmp.iterdir()) == []


@pytest.mark.parametrize("layout", ["holes", "all-hole", "all-data", "data-at-end", "empty"])
def test_copy_sparse(tmp_path, layout):
    source = tmp_path / "source"
    with open(source, "wb") as f:
        if layout == "holes":
            f.truncate(16 * MIB)
            f.seek(3 * MIB)
            f.write(b"x" * 5000)
        elif layout == "all-hole":
            f.truncate(8 * MIB + 7)
        elif layout == "all-data":
            f.write(random.Random(3).randbytes(3 * MIB + 11))
        elif layout == "data-at-end":
            f.seek(9 * MIB)
            f.write(b"end")
    expected = source.read_bytes()
    target = tmp_path / "target"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        copy_sparse(source, fd)
    finally:
        os.close(fd)
    assert target.read_bytes() == expected
    if layout in ("holes", "all-hole", "data-at-end") and allocated(source) < MIB:
        assert allocated(target) <= allocated(source) + 64 * 1024


def test_local_failed_copy_leaves_no_temp_file(local, tmp_path, monkeypatch):
    # ENOSPC halfway through a copy from another filesystem: nothing stored, nothing left in tmp/.
    staged = tmp_path / "staged"
    staged.write_bytes(DATA)
    def disk_full(source, fd):
        os.write(fd, b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "stat", on_another_device(staged))
    monkeypatch.setattr(imagefs.store.local, "copy_sparse", disk_full)
    with pytest.raises(OSError):
        local.put(key_of(DATA), staged)
    monkeypatch.undo()
    assert not local.exists(key_of(DATA))
    assert list(local.list()) == []
    assert list(local.tmp.iterdir()) == []
    assert staged.read_bytes() == DATA  # still the caller's to discard


def another_filesystem(tmp_path: Path) -> Path:
    """A directory on a filesystem other than tmp_path's (tmpfs /dev/shm where there is one)."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev or not os.access(shm, os.W_OK):
        pytest.skip("no second filesystem (/dev/shm) to stage on")
    return shm


def test_copy_sparse_from_another_filesystem_type(tmp_path):
    # copy_file_range refuses copies between filesystem types (EXDEV since Linux 5.19): tmpfs -> ext4.
    source = another_filesystem(tmp_path) / f"imagefs-test-{os.getpid()}"
    try:
        with open(source, "wb") as f:
            f.truncate(8 * MIB)
            f.seek(2 * MIB)
            f.write(DATA)
        expected = source.read_bytes()
        fd = os.open(tmp_path / "target", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            copy_sparse(source, fd)
        finally:
            os.close(fd)
    finally:
        source.unlink()
    assert (tmp_path / "target").read_bytes() == expected
    assert allocated(tmp_path / "target") < 2 * MIB


def test_local_put_from_another_filesystem(local, tmp_path):
    staged = another_filesystem(tmp_path) / f"imagefs-test-{os.getpid()}"
    try:
        staged.write_bytes(DATA)
        assert local.put(key_of(DATA), staged)
        assert not staged.exists()
    finally:
        staged.unlink(missing_ok=True)
    assert local.read(key_of(DATA), 0, len(DATA)) == DATA
    assert local.blob_path(key_of(DATA)).stat().st_mode & 0o777 == 0o444
    assert list(local.tmp.iterdir()) == []
