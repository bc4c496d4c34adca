"""fsck: planted damage is found, --repair fixes what is safe and never invents data, exit codes as e2fsck's.

No mount: a library is built directly through the catalog and the store, then
damaged by hand (the blob files, the staging dir, the store's tmp/, the
catalog through plain sqlite3).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sqlite3

import pytest

from conftest import imagefs
from helpers_unit import active_image
from imagefs.catalog import Catalog
from imagefs.config import load_config
from imagefs.fsck import check, library_stores, repair
from imagefs.lifecycle import Status
from imagefs.store import open_store


class Lib:
    """A library on disk, unmounted: config, catalog (closed between steps) and store."""

    def __init__(self, data_dir):
        self.config = load_config(None, data_dir)
        data_dir.mkdir(parents=True)
        self.config.staging_path.mkdir()
        self.catalog = Catalog(self.config.catalog_path)
        self.store = open_store(self.config.store)
        self.store.initialise("test-marker")
        self.catalog.set_store_marker(self.store.name, "test-marker")

    def add(self, name: str, data: bytes):
        image = active_image(self.catalog, name, data)
        staged = self.config.staging_path / image.id
        staged.write_bytes(data)
        self.store.put(image.blob_key, staged)
        return image

    def blob_file(self, key: str):
        return self.store.blob_path(key)

    def check(self, **kwargs):
        return check(self.catalog, self.store, staging_dir=self.config.staging_path, **kwargs)

    def repair(self, report):
        return repair(self.catalog, self.store, report, staging_dir=self.config.staging_path)


@pytest.fixture
def lib(tmp_path):
    lib = Lib(tmp_path / "data")
    yield lib
    lib.catalog.close()


def kinds(report) -> list[str]:
    return sorted(f.kind for f in report.findings)


def overwrite(path, data: bytes) -> None:
    os.chmod(path, 0o644)
    path.write_bytes(data)


def test_a_healthy_library_is_clean(lib):
    lib.add("a", b"a" * 1000)
    lib.add("b", b"b" * 10)
    lib.add("b-again", b"b" * 10)  # shares b's blob
    (lib.config.staging_path / lib.catalog.create_image("queued", owner="demo", actor="t").id).write_bytes(b"")
    report = lib.check(verify_data=True)
    assert report.clean, report.findings
    assert (report.images, report.blobs, report.verified) == (4, 2, 2)


def test_missing_blob_is_damage_that_repair_leaves(lib):
    image = lib.add("a", b"a" * 1000)
    os.unlink(lib.blob_file(image.blob_key))
    report = lib.check()
    assert kinds(report) == ["missing_blob"]
    assert image.id in report.findings[0].message
    lib.repair(report)
    assert report.repaired == [] and len(report.left) == 1
    assert "cannot be repaired" in report.findings[0].line()
    assert kinds(lib.check()) == ["missing_blob"]  # nothing invented
    assert lib.catalog.image(image.seq).status == "active"


def test_wrong_size(lib):
    image = lib.add("a", b"a" * 1000)
    overwrite(lib.blob_file(image.blob_key), b"a" * 999)
    report = lib.check()
    assert kinds(report) == ["blob_size"]
    assert "999" in report.findings[0].message and "1000" in report.findings[0].message
    assert lib.repair(report).repaired == []


def test_wrong_bytes_are_found_only_verifying_data(lib):
    image = lib.add("a", b"a" * 1000)
    overwrite(lib.blob_file(image.blob_key), b"b" * 1000)
    assert lib.check().clean  # same size: only the hash tells
    report = lib.check(verify_data=True)
    assert kinds(report) == ["blob_hash"]
    assert hashlib.sha512(b"b" * 1000).hexdigest() in report.findings[0].message
    assert lib.repair(report).repaired == []
    assert lib.blob_file(image.blob_key).read_bytes() == b"b" * 1000  # left as it was


def test_verify_data_uses_the_algorithm_in_the_key(lib):
    data = b"sha256 data"
    image = lib.catalog.create_image("s", owner="demo", actor="t")
    digest = hashlib.sha256(data).hexdigest()
    lib.catalog.change_status(image.seq, Status.SAVING, actor="t")
    lib.catalog.activate(
        image.seq, blob_key=f"sha256:{digest}", store="local", actor="t", size=len(data),
        checksum=hashlib.md5(data).hexdigest(), os_hash_algo="sha256", os_hash_value=digest,
    )
    staged = lib.config.staging_path / "s"
    staged.write_bytes(data)
    lib.store.put(f"sha256:{digest}", staged)
    assert lib.check(verify_data=True).clean


def test_orphan_blob_is_freed(lib):
    lib.add("a", b"a")
    staged = lib.config.staging_path / "orphan"
    staged.write_bytes(b"orphan")
    key = f"sha512:{hashlib.sha512(b'orphan').hexdigest()}"
    lib.store.put(key, staged)
    report = lib.check()
    assert kinds(report) == ["orphan_blob"] and report.orphans == [key] and report.problems == []
    lib.repair(report)
    assert [f.kind for f in report.repaired] == ["orphan_blob"] and report.left == []
    assert not lib.store.exists(key)
    assert lib.check(verify_data=True).clean


def test_stale_staging_file_is_removed_and_live_ones_kept(lib):
    queued = lib.catalog.create_image("q", owner="demo", actor="t")
    (lib.config.staging_path / queued.id).write_bytes(b"in flight")
    killed = lib.catalog.create_image("k", owner="demo", actor="t")
    lib.catalog.change_status(killed.seq, Status.KILLED, actor="t", reason="test")
    (lib.config.staging_path / killed.id).write_bytes(b"stale")
    (lib.config.staging_path / "stray").write_bytes(b"stale")
    report = lib.check()
    assert kinds(report) == ["stale_staging", "stale_staging"]
    lib.repair(report)
    assert len(report.repaired) == 2
    assert os.listdir(lib.config.staging_path) == [queued.id]
    assert lib.check().clean


def test_store_temp_file_is_removed(lib):
    lib.add("a", b"a")
    (lib.store.tmp / "0123.tmp").write_bytes(b"half a blob")
    report = lib.check()
    assert kinds(report) == ["store_temp"]
    lib.repair(report)
    assert report.left == [] and os.listdir(lib.store.tmp) == []


def test_broken_refcount_is_recomputed(lib):
    a = lib.add("a", b"shared")
    lib.add("b", b"shared")
    conn = sqlite3.connect(lib.config.catalog_path)
    conn.execute("UPDATE blobs SET refcount = 7")
    conn.commit()
    conn.close()
    report = lib.check()
    assert kinds(report) == ["refcount"]
    lib.repair(report)
    assert report.left == []
    assert lib.catalog.blob(a.blob_key).refcount == 2
    assert lib.check().clean


def test_unreferenced_catalogued_blob_leaves_catalog_and_store(lib):
    a = lib.add("a", b"a")
    conn = sqlite3.connect(lib.config.catalog_path)
    conn.execute("PRAGMA foreign_keys=OFF")
    conn.execute("UPDATE images SET status = 'killed', reason = 'x', blob_key = NULL")
    conn.execute("INSERT INTO image_history (image_seq, at_ns, actor, to_status) VALUES (?, 1, 't', 'killed')",
                 [a.seq])
    conn.commit()
    conn.close()
    report = lib.check()
    assert kinds(report) == ["refcount"]
    lib.repair(report)
    assert report.left == []
    assert lib.catalog.blob(a.blob_key) is None and not lib.store.exists(a.blob_key)
    assert lib.check().clean


def test_several_at_once(lib):
    a = lib.add("a", b"a")
    b = lib.add("b", b"b")
    os.unlink(lib.blob_file(a.blob_key))
    overwrite(lib.blob_file(b.blob_key), b"c")
    (lib.store.tmp / "x.tmp").write_bytes(b"x")
    report = lib.check(verify_data=True)
    assert kinds(report) == ["blob_hash", "missing_blob", "store_temp"]
    lib.repair(report)
    assert sorted(f.kind for f in report.left) == ["blob_hash", "missing_blob"]
    assert [f.kind for f in report.repaired] == ["store_temp"]


def test_library_stores_probes_the_store(lib):
    os.unlink(lib.store.root / "imagefs-store")
    with pytest.raises(Exception, match="marker"):
        library_stores(lib.config, lib.catalog)


# --- the command -----------------------------------------------------------------------


def fsck(lib, *args):
    lib.catalog.close()
    try:
        return imagefs("fsck", "--data-dir", lib.config.data_dir, *args, check=False)
    finally:
        lib.catalog = Catalog(lib.config.catalog_path)


def test_cli_clean_is_0(lib):
    lib.add("a", b"a")
    result = fsck(lib, "--verify-data")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 images, 1 blobs, data of 1 verified; 0 problems" in result.stdout


def test_cli_found_without_repair_is_4_and_repaired_is_1(lib):
    lib.add("a", b"a")
    (lib.store.tmp / "x.tmp").write_bytes(b"x")
    result = fsck(lib)
    assert result.returncode == 4
    assert "temp file x.tmp" in result.stdout and "--repair" in result.stderr
    result = fsck(lib, "--repair")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "repaired" in result.stdout
    assert fsck(lib).returncode == 0


def test_cli_damage_is_4_and_repair_says_it_cannot(lib):
    a = lib.add("a", b"a")
    os.unlink(lib.blob_file(a.blob_key))
    result = fsck(lib, "--repair")
    assert result.returncode == 4
    assert "missing" in result.stdout and "cannot be repaired" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_repaired_and_damage_left_is_5(lib):
    a = lib.add("a", b"a")
    os.unlink(lib.blob_file(a.blob_key))
    (lib.store.tmp / "x.tmp").write_bytes(b"x")
    assert fsck(lib, "--repair").returncode == 5  # 1 | 4, as e2fsck adds them


def test_cli_operational_errors_are_8(lib, tmp_path):
    result = imagefs("fsck", "--data-dir", tmp_path / "nothing", check=False)
    assert result.returncode == 8 and "no catalog" in result.stderr
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "catalog.db").write_bytes(b"this is not a database" * 100)
    result = imagefs("fsck", "--data-dir", garbage, check=False)
    assert result.returncode == 8 and "Traceback" not in result.stderr, result.stderr


def test_cli_repair_refuses_a_library_in_use(lib):
    fd = os.open(lib.config.data_dir / "imagefs.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"imagefs pid 1 mounted at /images\n")
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = fsck(lib, "--repair")
        assert result.returncode == 8
        assert "mounted at /images" in result.stderr and "unmounted" in result.stderr
        assert fsck(lib).returncode == 0  # a plain check runs while mounted
    finally:
        os.close(fd)
