"""The catalog over a fresh SQLite file: schema, statuses with history, names, metadata, blobs, invariants."""

import hashlib
import sqlite3
import time

import pytest
from helpers_unit import ACTOR, activate, active_image, saving_image, sha512_key

from imagefs.catalog import Blob, Catalog
from imagefs.catalog.schema import MIGRATIONS
from imagefs.errors import Conflict, ImageFSError, InvalidTransition, NotFound
from imagefs.lifecycle import Status


@pytest.fixture
def path(tmp_path):
    return tmp_path / "catalog.db"


@pytest.fixture
def catalog(path):
    catalog = Catalog(path)
    yield catalog
    catalog.close()


def healthy(catalog):
    assert catalog.invariant_violations() == []


def raw(path) -> sqlite3.Connection:
    """A second connection, for looking under the catalog and forging damage."""
    return sqlite3.connect(path, isolation_level=None)


# --- schema ---------------------------------------------------------------------


def test_new_catalog_has_every_migration(catalog, path):
    assert raw(path).execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    tables = {r[0] for r in raw(path).execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"images", "image_properties", "image_tags", "image_history", "blobs"} <= tables
    healthy(catalog)


def test_reopening_does_not_rerun_migrations(catalog, path):
    image = catalog.create_image("kept", owner="demo", actor=ACTOR)
    catalog.close()
    again = Catalog(path)  # migration 1 re-run would fail on CREATE TABLE images
    assert again.image(image.seq) == image
    assert raw(path).execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    healthy(again)
    again.close()


def test_a_catalog_from_a_newer_imagefs_is_refused(catalog, path):
    catalog.close()
    raw(path).execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(Exception, match="newer"):
        Catalog(path)
    assert raw(path).execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) + 1


def test_wal_mode(catalog, path):
    assert raw(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_readonly_catalog_reads_and_refuses_writes(catalog, path):
    image = catalog.create_image("ro", owner="demo", actor=ACTOR)
    reader = Catalog(path, readonly=True)
    assert reader.image(image.seq) == image
    with pytest.raises(sqlite3.OperationalError):
        reader.create_image("other", owner="demo", actor=ACTOR)
    reader.close()
    healthy(catalog)


# --- statuses and history -------------------------------------------------------


def test_create_is_queued_with_a_history_row(catalog):
    before = time.time_ns()
    image = catalog.create_image("cirros", owner="demo", actor=ACTOR)
    after = time.time_ns()
    assert image.status is Status.QUEUED
    assert image.name == "cirros" and image.owner == "demo"
    assert len(image.id) == 36 and image.id.count("-") == 4
    assert before <= image.created_ns == image.updated_ns <= after
    assert image.visibility == "shared"  # Glance's default
    assert (image.min_disk, image.min_ram, image.protected, image.os_hidden) == (0, 0, False, False)
    assert image.size is image.checksum is image.os_hash_value is image.blob_key is None
    (entry,) = catalog.history(image.seq)
    assert entry.actor == ACTOR
    assert before <= entry.at_ns <= after
    assert entry.from_status is None and entry.to_status is Status.QUEUED and entry.reason is None
    healthy(catalog)


def test_create_with_a_given_id(catalog):
    image = catalog.create_image("x", owner=None, actor=ACTOR, image_id="11111111-2222-3333-4444-555555555555")
    assert catalog.image_by_id("11111111-2222-3333-4444-555555555555") == image
    healthy(catalog)


def test_change_status_records_every_change(catalog):
    image = catalog.create_image("img", owner="demo", actor=ACTOR)
    catalog.change_status(image.seq, Status.SAVING, actor="imagefs")
    killed = catalog.change_status(image.seq, Status.KILLED, actor="imagefs", reason="disk full")
    assert killed.status is Status.KILLED and killed.reason == "disk full"
    assert killed.updated_ns >= image.updated_ns
    deleted = catalog.change_status(image.seq, Status.DELETED, actor="uid:7", reason="cleanup")
    assert deleted.deleted_ns is not None
    history = [(h.actor, h.from_status, h.to_status, h.reason) for h in catalog.history(image.seq)]
    assert history == [
        (ACTOR, None, Status.QUEUED, None),
        ("imagefs", Status.QUEUED, Status.SAVING, None),
        ("imagefs", Status.SAVING, Status.KILLED, "disk full"),
        ("uid:7", Status.KILLED, Status.DELETED, "cleanup"),
    ]
    times = [h.at_ns for h in catalog.history(image.seq)]
    assert times == sorted(times)
    healthy(catalog)


@pytest.mark.parametrize("target", [Status.DEACTIVATED, Status.PENDING_DELETE, Status.QUEUED])
def test_refused_transition_changes_nothing(catalog, target):
    image = catalog.create_image("img", owner="demo", actor=ACTOR)
    history = catalog.history(image.seq)
    with pytest.raises(InvalidTransition):
        catalog.change_status(image.seq, target, actor=ACTOR)
    assert catalog.image(image.seq) == image
    assert catalog.history(image.seq) == history
    healthy(catalog)


def test_deleted_is_terminal(catalog):
    image = catalog.create_image("img", owner="demo", actor=ACTOR)
    catalog.change_status(image.seq, Status.DELETED, actor=ACTOR)
    for status in Status:
        with pytest.raises(InvalidTransition):
            catalog.change_status(image.seq, status, actor=ACTOR)
    with pytest.raises(NotFound):
        catalog.image_by_id(image.id)
    assert catalog.images() == []
    healthy(catalog)


def test_missing_image_is_not_found(catalog):
    with pytest.raises(NotFound):
        catalog.image(999)
    with pytest.raises(NotFound):
        catalog.change_status(999, Status.SAVING, actor=ACTOR)
    with pytest.raises(NotFound):
        catalog.find("nothing")
    healthy(catalog)


# --- names ------------------------------------------------------------------------


def test_live_names_are_unique(catalog):
    catalog.create_image("dup", owner="demo", actor=ACTOR)
    with pytest.raises(Conflict):
        catalog.create_image("dup", owner="other", actor=ACTOR)
    assert len(catalog.images()) == 1
    healthy(catalog)


@pytest.mark.parametrize("status", [Status.SAVING, Status.ACTIVE, Status.DEACTIVATED])
def test_every_live_status_holds_its_name(catalog, status):
    image = saving_image(catalog, "dup")
    if status is not Status.SAVING:
        image = activate(catalog, image, b"data")
    if status is Status.DEACTIVATED:
        catalog.change_status(image.seq, Status.DEACTIVATED, actor=ACTOR)
    with pytest.raises(Conflict):
        catalog.create_image("dup", owner="demo", actor=ACTOR)
    healthy(catalog)


def test_killed_and_pending_delete_names_may_repeat(catalog):
    for _ in range(2):
        image = saving_image(catalog, "dup")
        catalog.change_status(image.seq, Status.KILLED, actor="imagefs", reason="bad data")
    for data in (b"one", b"two"):
        image = active_image(catalog, "dup", data)
        catalog.change_status(image.seq, Status.PENDING_DELETE, actor=ACTOR)
    live = catalog.create_image("dup", owner="demo", actor=ACTOR)
    assert catalog.live_image_named("dup") == live
    assert catalog.find("dup") == live  # the live one wins
    assert [i.status for i in catalog.images()] == [Status.KILLED] * 2 + [Status.PENDING_DELETE] * 2 + [Status.QUEUED]
    healthy(catalog)


def test_restoring_onto_a_taken_name_is_a_conflict(catalog):
    old = active_image(catalog, "dup", b"old")
    catalog.change_status(old.seq, Status.PENDING_DELETE, actor=ACTOR)
    catalog.create_image("dup", owner="demo", actor=ACTOR)
    with pytest.raises(Conflict):
        catalog.change_status(old.seq, Status.ACTIVE, actor=ACTOR)
    assert catalog.image(old.seq).status is Status.PENDING_DELETE
    assert catalog.history(old.seq)[-1].to_status is Status.PENDING_DELETE
    healthy(catalog)


def test_renaming_onto_a_live_name_is_a_conflict(catalog):
    catalog.create_image("a", owner="demo", actor=ACTOR)
    b = catalog.create_image("b", owner="demo", actor=ACTOR)
    with pytest.raises(Conflict):
        catalog.update_image(b.seq, name="a")
    assert catalog.image(b.seq).name == "b"
    assert catalog.update_image(b.seq, name="c").name == "c"
    healthy(catalog)


def test_update_image_refuses_status_and_data_columns(catalog):
    image = catalog.create_image("a", owner="demo", actor=ACTOR)
    for column in ("status", "blob_key", "size", "checksum", "os_hash_value", "id", "created_ns"):
        with pytest.raises(ValueError):
            catalog.update_image(image.seq, **{column: "x"})
    assert catalog.image(image.seq) == image
    healthy(catalog)


# --- properties and tags --------------------------------------------------------


def test_properties_set_replace_delete(catalog):
    image = catalog.create_image("a", owner="demo", actor=ACTOR)
    catalog.set_property(image.seq, "hw_disk_bus", "virtio")
    catalog.set_property(image.seq, "os_distro", "ubuntu")
    catalog.set_property(image.seq, "hw_disk_bus", "scsi")
    assert catalog.properties(image.seq) == {"hw_disk_bus": "scsi", "os_distro": "ubuntu"}
    assert catalog.image(image.seq).updated_ns >= image.updated_ns
    catalog.delete_property(image.seq, "hw_disk_bus")
    assert catalog.properties(image.seq) == {"os_distro": "ubuntu"}
    with pytest.raises(NotFound):
        catalog.delete_property(image.seq, "hw_disk_bus")
    healthy(catalog)


def test_properties_belong_to_one_image(catalog):
    a = catalog.create_image("a", owner="demo", actor=ACTOR)
    b = catalog.create_image("b", owner="demo", actor=ACTOR)
    catalog.set_property(a.seq, "k", "va")
    catalog.set_property(b.seq, "k", "vb")
    assert catalog.properties(a.seq) == {"k": "va"} and catalog.properties(b.seq) == {"k": "vb"}
    catalog.set_tags(a.seq, ["x"])
    assert catalog.tags(b.seq) == []
    healthy(catalog)


def test_tags_replace_and_deduplicate(catalog):
    image = catalog.create_image("a", owner="demo", actor=ACTOR)
    catalog.set_tags(image.seq, ["b", "a", "b"])
    assert catalog.tags(image.seq) == ["a", "b"]
    catalog.set_tags(image.seq, ["c"])
    assert catalog.tags(image.seq) == ["c"]
    catalog.set_tags(image.seq, [])
    assert catalog.tags(image.seq) == []
    healthy(catalog)


def test_deleting_an_image_drops_its_properties_and_tags(catalog):
    image = catalog.create_image("a", owner="demo", actor=ACTOR)
    catalog.set_property(image.seq, "k", "v")
    catalog.set_tags(image.seq, ["t"])
    assert catalog.delete_image(image.seq, actor=ACTOR) is None
    assert catalog.properties(image.seq) == {} and catalog.tags(image.seq) == []
    healthy(catalog)


# --- data: activate, share, delete -----------------------------------------------


def test_activate_references_the_blob(catalog):
    data = b"disk bytes"
    image = active_image(catalog, "a", data)
    assert image.status is Status.ACTIVE
    assert image.blob_key == sha512_key(data) and image.store == "local" and image.size == len(data)
    assert catalog.blob(image.blob_key) == Blob(sha512_key(data), "local", len(data), 1)
    assert catalog.history(image.seq)[-1].from_status is Status.SAVING
    healthy(catalog)


def test_activate_adds_properties_in_the_same_transaction(catalog):
    image = saving_image(catalog, "a")
    data = b"x" * 10
    digest = hashlib.sha512(data).hexdigest()
    image = catalog.activate(
        image.seq, blob_key=f"sha512:{digest}", store="local", actor="imagefs", properties={"virtual_size_src": "qemu"},
        size=10, checksum=hashlib.md5(data).hexdigest(), os_hash_algo="sha512", os_hash_value=digest,
        disk_format="raw", container_format="bare",
    )
    assert catalog.properties(image.seq) == {"virtual_size_src": "qemu"}
    assert (image.disk_format, image.container_format) == ("raw", "bare")
    healthy(catalog)


def test_shared_blob_is_counted_and_freed_by_the_last_delete(catalog):
    data = b"same bytes"
    a = active_image(catalog, "a", data)
    b = active_image(catalog, "b", data)
    assert a.blob_key == b.blob_key
    assert catalog.blob(a.blob_key).refcount == 2
    healthy(catalog)
    assert catalog.delete_image(a.seq, actor=ACTOR) is None
    assert catalog.blob(a.blob_key).refcount == 1
    assert catalog.image(a.seq).status is Status.DELETED
    healthy(catalog)
    freed = catalog.delete_image(b.seq, actor=ACTOR)
    assert freed == Blob(sha512_key(data), "local", len(data), 0)
    assert catalog.blob(a.blob_key) is None and catalog.blobs() == []
    healthy(catalog)


def test_deleting_from_every_data_status(catalog):
    for n, status in enumerate([Status.ACTIVE, Status.DEACTIVATED, Status.PENDING_DELETE]):
        image = active_image(catalog, f"img{n}", f"data{n}".encode())
        if status is not Status.ACTIVE:
            catalog.change_status(image.seq, status, actor=ACTOR)
        assert catalog.delete_image(image.seq, actor=ACTOR).key == image.blob_key
        healthy(catalog)
    assert catalog.blobs() == []


def test_activate_in_a_wrong_status_changes_nothing(catalog):
    data = b"shared"
    first = active_image(catalog, "first", data)
    image = saving_image(catalog, "second")
    catalog.change_status(image.seq, Status.KILLED, actor="imagefs", reason="bad")
    killed = catalog.image(image.seq)
    history = catalog.history(image.seq)
    with pytest.raises(InvalidTransition):
        activate(catalog, killed, data)
    assert catalog.blob(first.blob_key).refcount == 1
    assert catalog.image(image.seq) == killed
    assert catalog.history(image.seq) == history
    healthy(catalog)


def test_activate_in_a_wrong_status_adds_no_blob_and_no_property(catalog):
    image = active_image(catalog, "a", b"one")
    with pytest.raises(InvalidTransition):
        catalog.activate(
            image.seq, blob_key=sha512_key(b"two"), store="local", actor="imagefs", properties={"p": "v"},
            size=3, checksum="0" * 32, os_hash_algo="sha512", os_hash_value=sha512_key(b"two")[7:],
        )
    assert catalog.blob(sha512_key(b"two")) is None
    assert catalog.properties(image.seq) == {}
    healthy(catalog)


def test_a_second_delete_is_refused(catalog):
    image = active_image(catalog, "a", b"one")
    catalog.change_status(image.seq, Status.PENDING_DELETE, actor=ACTOR)
    catalog.change_status(image.seq, Status.ACTIVE, actor=ACTOR)
    catalog.change_status(image.seq, Status.DEACTIVATED, actor=ACTOR)
    catalog.delete_image(image.seq, actor=ACTOR)
    with pytest.raises(InvalidTransition):
        catalog.delete_image(image.seq, actor=ACTOR)
    healthy(catalog)


# --- reading ----------------------------------------------------------------------


def test_images_by_status_and_counts(catalog):
    a = catalog.create_image("a", owner="demo", actor=ACTOR)
    b = active_image(catalog, "b", b"b")
    assert catalog.images([Status.QUEUED]) == [a]
    assert catalog.images([Status.ACTIVE, Status.QUEUED]) == [a, b]
    assert catalog.counts() == {Status.QUEUED: 1, Status.ACTIVE: 1}
    assert catalog.find(b.id) == b
    healthy(catalog)


def test_glance_timestamps(catalog):
    image = catalog.create_image("a", owner="demo", actor=ACTOR)
    expected = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(image.created_ns / 1e9))
    assert image.created_at == expected
    healthy(catalog)


# --- invariants -------------------------------------------------------------------


def damaged(catalog, path, *statements):
    conn = raw(path)
    conn.execute("PRAGMA foreign_keys=OFF")
    for statement in statements:
        conn.execute(statement)
    conn.close()
    return catalog.invariant_violations()


def test_forged_wrong_refcount(catalog, path):
    image = active_image(catalog, "a", b"a")
    problems = damaged(catalog, path, "UPDATE blobs SET refcount = 2")
    assert any("refcount" in p and image.blob_key in p for p in problems), problems


def test_forged_unreferenced_blob(catalog, path):
    active_image(catalog, "a", b"a")
    problems = damaged(catalog, path, "UPDATE images SET blob_key = NULL, status = 'killed', reason = 'x'")
    assert any("refcount" in p for p in problems), problems


def test_forged_active_without_blob(catalog, path):
    image = active_image(catalog, "a", b"a")
    problems = damaged(catalog, path, "UPDATE images SET blob_key = NULL", "DELETE FROM blobs")
    assert any(f"seq {image.seq}" in p for p in problems), problems


def test_forged_killed_without_reason(catalog, path):
    image = saving_image(catalog, "a")
    catalog.change_status(image.seq, Status.KILLED, actor="imagefs", reason="bad")
    problems = damaged(catalog, path, "UPDATE images SET reason = NULL")
    assert any("reason" in p for p in problems), problems


@pytest.mark.parametrize("reason", [None, ""])
def test_killing_without_a_reason_is_refused(catalog, reason):
    image = saving_image(catalog, "a")
    history = catalog.history(image.seq)
    with pytest.raises(ValueError):
        catalog.change_status(image.seq, Status.KILLED, actor="imagefs", reason=reason)
    assert catalog.image(image.seq) == image and catalog.history(image.seq) == history
    healthy(catalog)


def test_forged_history_not_matching_status(catalog, path):
    catalog.create_image("a", owner="demo", actor=ACTOR)
    problems = damaged(catalog, path, "UPDATE images SET status = 'saving'")
    assert any("history" in p for p in problems), problems


def test_forged_queued_with_a_blob(catalog, path):
    image = active_image(catalog, "a", b"a")
    problems = damaged(
        catalog, path, "UPDATE images SET status = 'queued'",
        "INSERT INTO image_history (image_seq, at_ns, actor, to_status) VALUES (1, 0, 'x', 'queued')",
    )
    assert any("references blob" in p for p in problems), problems
    assert image.seq == 1


def test_forged_size_mismatch_with_blob(catalog, path):
    active_image(catalog, "a", b"abc")
    problems = damaged(catalog, path, "UPDATE blobs SET size = 99")
    assert any("size" in p for p in problems), problems


def test_forged_reference_to_an_uncatalogued_blob(catalog, path):
    active_image(catalog, "a", b"abc")
    problems = damaged(catalog, path, "DELETE FROM blobs")
    assert any("uncatalogued" in p for p in problems), problems


def test_a_read_only_open_of_an_older_schema_says_so(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0])  # a catalog written by the first imagefs
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    with pytest.raises(ImageFSError, match="schema version 1, this imagefs reads version"):
        Catalog(path, readonly=True)
    Catalog(path).close()  # a read-write open migrates it
    Catalog(path, readonly=True).close()
