"""The catalog: the only place with SQL.

Transaction boundaries: every public method is one transaction (sqlite-utils'
`atomic`), so a caller never sees half a change. Methods are synchronous and
the daemon calls them from the trio thread between awaits, never across one:
SQLite work is short, and keeping it on one thread is the locking model (as in
S3QL). Hashing, fsync and big copies go to worker threads instead.

The database runs in WAL mode with synchronous=NORMAL: a crash of the daemon
loses nothing committed; a power cut may lose the last transactions but never
leaves the file inconsistent. Readers in other processes (`imagefs list`,
`imagefs show`) open it read-only and do not block the daemon.
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from dataclasses import fields
from pathlib import Path

from sqlite_utils import Database

from ..errors import Conflict, ImageFSError, NotFound
from ..lifecycle import HAS_DATA, LIVE, Status, check_transition
from .records import Blob, HistoryEntry, Image, Violation
from .schema import MIGRATIONS, migrate

__all__ = ["Catalog", "Image", "Blob", "HistoryEntry", "Violation"]

_IMAGE_COLUMNS = [f.name for f in fields(Image)]
_SELECT_IMAGE = f"SELECT {', '.join(_IMAGE_COLUMNS)} FROM images"
# Columns a caller may change with update_image (status has change_status, data has activate).
UPDATABLE = frozenset(
    {
        "name", "disk_format", "container_format", "min_disk", "min_ram", "visibility", "protected",
        "os_hidden", "owner", "virtual_size", "stored_format", "expected_size", "expected_checksum",
        "expected_os_hash_value",
    }
)


def _image(row) -> Image:
    values = dict(zip(_IMAGE_COLUMNS, row))
    values["status"] = Status(values["status"])
    values["protected"] = bool(values["protected"])
    values["os_hidden"] = bool(values["os_hidden"])
    return Image(**values)


def _now() -> int:
    return time.time_ns()


class Catalog:
    def __init__(self, path: Path | str, *, readonly: bool = False):
        self.path = Path(path)
        if readonly:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version != len(MIGRATIONS):  # a read-only open cannot migrate: say so, not "no such column"
                conn.close()
                raise ImageFSError(
                    f"catalog {self.path} has schema version {version}, this imagefs reads version "
                    f"{len(MIGRATIONS)}: mount the library once (or run imagefs fsck --repair) to migrate it"
                )
        else:
            conn = sqlite3.connect(self.path, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            migrate(conn)
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        self.db = Database(conn)

    def close(self) -> None:
        self.db.conn.close()

    def sync_committed(self) -> None:
        """Make every committed transaction durable: fsync the WAL (no SQLite call: any thread may run it).

        synchronous=NORMAL syncs the WAL only at checkpoints, so a power cut may lose the
        last commits. Before an irreversible step outside the catalog (unlinking a blob it
        no longer references) the commit must be on disk, or a power cut could bring back
        a reference to the freed blob.
        """
        try:
            fd = os.open(f"{self.path}-wal", os.O_RDONLY)
        except FileNotFoundError:
            return  # no WAL: everything committed is in the database file
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _one(self, where: str, params) -> Image:
        row = self.db.execute(f"{_SELECT_IMAGE} WHERE {where}", params).fetchone()
        if row is None:
            raise NotFound(f"no image where {where} {params}")
        return _image(row)

    # --- reading -----------------------------------------------------------
    def image(self, seq: int) -> Image:
        return self._one("seq = ?", [seq])

    def image_by_id(self, image_id: str) -> Image:
        return self._one("id = ? AND status != 'deleted'", [image_id])

    def find(self, name_or_id: str) -> Image:
        """The live image of that name, else any non-deleted one of that name or id."""
        rows = self.db.execute(
            f"{_SELECT_IMAGE} WHERE (name = ? OR id = ?) AND status != 'deleted'"
            " ORDER BY status IN ('queued','saving','importing','active','deactivated') DESC, seq DESC",
            [name_or_id, name_or_id],
        ).fetchall()
        if not rows:
            raise NotFound(f"no image named or with id {name_or_id!r}")
        return _image(rows[0])

    def images(self, statuses=None) -> list[Image]:
        """Images in the given statuses (all but deleted when None), oldest first."""
        if statuses is None:
            rows = self.db.execute(f"{_SELECT_IMAGE} WHERE status != 'deleted' ORDER BY seq")
        else:
            marks = ",".join("?" * len(statuses))
            rows = self.db.execute(f"{_SELECT_IMAGE} WHERE status IN ({marks}) ORDER BY seq", [str(s) for s in statuses])
        return [_image(r) for r in rows]

    def live_image_named(self, name: str) -> Image | None:
        row = self.db.execute(
            f"{_SELECT_IMAGE} WHERE name = ? AND status IN ({','.join('?' * len(LIVE))})",
            [name, *map(str, LIVE)],
        ).fetchone()
        return _image(row) if row else None

    def properties(self, seq: int) -> dict[str, str]:
        rows = self.db.execute("SELECT name, value FROM image_properties WHERE image_seq = ? ORDER BY name", [seq])
        return dict(rows.fetchall())

    def tags(self, seq: int) -> list[str]:
        rows = self.db.execute("SELECT tag FROM image_tags WHERE image_seq = ? ORDER BY tag", [seq])
        return [r[0] for r in rows]

    def history(self, seq: int) -> list[HistoryEntry]:
        rows = self.db.execute(
            "SELECT at_ns, actor, from_status, to_status, reason FROM image_history WHERE image_seq = ? ORDER BY id",
            [seq],
        )
        return [
            HistoryEntry(at, actor, Status(f) if f else None, Status(t), reason) for at, actor, f, t, reason in rows
        ]

    def blob(self, key: str) -> Blob | None:
        row = self.db.execute("SELECT key, store, size, refcount FROM blobs WHERE key = ?", [key]).fetchone()
        return Blob(*row) if row else None

    def blobs(self) -> list[Blob]:
        return [Blob(*r) for r in self.db.execute("SELECT key, store, size, refcount FROM blobs ORDER BY key")]

    def store_marker(self, store: str) -> str | None:
        row = self.db.execute("SELECT marker FROM stores WHERE name = ?", [store]).fetchone()
        return row[0] if row else None

    def set_store_marker(self, store: str, marker: str) -> None:
        with self.db.atomic():
            self.db.execute("INSERT INTO stores (name, marker, initialised_ns) VALUES (?, ?, ?)",
                            [store, marker, _now()])

    def counts(self) -> dict[Status, int]:
        rows = self.db.execute("SELECT status, count(*) FROM images GROUP BY status")
        return {Status(s): n for s, n in rows}

    # --- writing -----------------------------------------------------------
    def create_image(self, name: str, *, owner: str | None, actor: str, image_id: str | None = None) -> Image:
        now = _now()
        with self.db.atomic():
            try:
                cursor = self.db.execute(
                    "INSERT INTO images (id, name, status, owner, created_ns, updated_ns) VALUES (?, ?, ?, ?, ?, ?)",
                    [image_id or str(uuid.uuid4()), name, Status.QUEUED.value, owner, now, now],
                )
            except sqlite3.IntegrityError:
                raise Conflict(f"a live image is already named {name!r}") from None
            seq = cursor.lastrowid
            self._record(seq, now, actor, None, Status.QUEUED, None)
        return self.image(seq)

    def _record(self, seq, now, actor, from_status, to_status, reason) -> None:
        self.db.execute(
            "INSERT INTO image_history (image_seq, at_ns, actor, from_status, to_status, reason) VALUES (?,?,?,?,?,?)",
            [seq, now, actor, from_status and str(from_status), str(to_status), reason],
        )

    def _update(self, seq: int, values: dict) -> None:
        assigns = ", ".join(f"{column} = ?" for column in values)
        try:
            self.db.execute(f"UPDATE images SET {assigns} WHERE seq = ?", [*values.values(), seq])
        except sqlite3.IntegrityError:
            raise Conflict(f"a live image is already named {values.get('name')!r}") from None

    def update_image(self, seq: int, **values) -> Image:
        """Change metadata columns (validated by the caller); bumps updated_at."""
        unknown = set(values) - UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {unknown}")
        with self.db.atomic():
            self._update(seq, {**values, "updated_ns": _now()})
        return self.image(seq)

    def change_status(self, seq: int, to: Status, *, actor: str, reason: str | None = None, **values) -> Image:
        """The one way a status changes: checks the transition table and records history."""
        with self.db.atomic():
            return self._change_status(seq, to, actor=actor, reason=reason, **values)

    def _change_status(self, seq, to, *, actor, reason=None, **values) -> Image:
        current = self.image(seq)
        check_transition(current.status, to)
        now = _now()
        values = {**values, "status": to.value, "updated_ns": now}
        if to is Status.KILLED:
            if not reason:
                raise ValueError(f"image seq {seq}: killed needs a reason (user.imagefs.reason)")
            values["reason"] = reason
        if to is Status.DELETED:
            values["deleted_ns"] = now
        self._update(seq, values)
        self._record(seq, now, actor, current.status, to, reason)
        return self.image(seq)

    def activate(
        self, seq: int, *, blob_key: str, store: str, actor: str, properties: dict[str, str] | None = None, **values
    ) -> Image:
        """Data verified and stored: reference the blob, add what the pipeline found, make it active; one transaction."""
        with self.db.atomic():
            for name, value in (properties or {}).items():
                self.set_property(seq, name, value)
            self.db.execute(
                "INSERT INTO blobs (key, store, size, refcount) VALUES (?, ?, ?, 1)"
                " ON CONFLICT(key) DO UPDATE SET refcount = refcount + 1",
                [blob_key, store, values["size"]],
            )
            return self._change_status(seq, Status.ACTIVE, actor=actor, blob_key=blob_key, store=store, **values)

    def delete_image(self, seq: int, *, actor: str, reason: str | None = None) -> Blob | None:
        """Mark deleted and drop its blob reference; returns the blob if nothing references it any more.

        The caller deletes that blob from its store *after* this commits: a crash
        in between leaves an orphan blob (fsck frees it), never a reference to
        missing data.
        """
        with self.db.atomic():
            # A deleted image references nothing: refcount counts the images whose blob_key is the key.
            key = self.image(seq).blob_key
            self._change_status(seq, Status.DELETED, actor=actor, reason=reason, blob_key=None, store=None)
            self.db.execute("DELETE FROM image_properties WHERE image_seq = ?", [seq])
            self.db.execute("DELETE FROM image_tags WHERE image_seq = ?", [seq])
            if key is None:
                return None
            self.db.execute("UPDATE blobs SET refcount = refcount - 1 WHERE key = ?", [key])
            blob = self.blob(key)
            if blob.refcount == 0:
                self.db.execute("DELETE FROM blobs WHERE key = ?", [blob.key])
                return blob
            return None

    def set_property(self, seq: int, name: str, value: str) -> None:
        with self.db.atomic():
            self.db.execute(
                "INSERT INTO image_properties (image_seq, name, value) VALUES (?, ?, ?)"
                " ON CONFLICT(image_seq, name) DO UPDATE SET value = excluded.value",
                [seq, name, value],
            )
            self._update(seq, {"updated_ns": _now()})

    def delete_property(self, seq: int, name: str) -> None:
        with self.db.atomic():
            cursor = self.db.execute("DELETE FROM image_properties WHERE image_seq = ? AND name = ?", [seq, name])
            if cursor.rowcount == 0:
                raise NotFound(f"image has no property {name!r}")
            self._update(seq, {"updated_ns": _now()})

    def set_tags(self, seq: int, tags: list[str]) -> None:
        with self.db.atomic():
            self.db.execute("DELETE FROM image_tags WHERE image_seq = ?", [seq])
            for tag in dict.fromkeys(tags):
                self.db.execute("INSERT INTO image_tags (image_seq, tag) VALUES (?, ?)", [seq, tag])
            self._update(seq, {"updated_ns": _now()})

    # --- checking ----------------------------------------------------------
    def invariant_violations(self) -> list[str]:
        """What must always hold in the catalog alone (fsck adds the store's side)."""
        return [v.message for v in self.violations()]

    def violations(self) -> list[Violation]:
        """The broken invariants, each with its kind (fsck repairs some kinds, reports the rest)."""
        problems = []
        for (result,) in self.db.execute("PRAGMA integrity_check"):
            if result != "ok":
                problems.append(Violation("integrity", f"sqlite integrity_check: {result}"))
        for table, rowid, parent, _ in self.db.execute("PRAGMA foreign_key_check"):
            if table == "images" and parent == "blobs":
                continue  # reported below, by blob key
            problems.append(Violation("foreign_key", f"{table} row {rowid} references a missing {parent} row"))
        for seq, status, key, size, h, reason in self.db.execute(
            "SELECT seq, status, blob_key, size, os_hash_value, reason FROM images"
        ):
            has_data = status in HAS_DATA
            if has_data and (key is None or size is None or h is None):
                problems.append(Violation("status_data", f"image seq {seq} is {status} without data, size or hash"))
            if not has_data and key is not None:
                problems.append(Violation("status_data", f"image seq {seq} is {status} but references blob {key}", key))
            if status == "killed" and not reason:
                problems.append(Violation("killed_reason", f"image seq {seq} is killed without a reason"))
        for key, refcount, actual in self._refcounts():
            if refcount != actual:
                problems.append(Violation("refcount", f"blob {key} has refcount {refcount} but {actual} references", key))
            elif refcount <= 0:
                problems.append(Violation("refcount", f"blob {key} is unreferenced but still catalogued", key))
        for (key,) in self.db.execute(
            "SELECT DISTINCT blob_key FROM images WHERE blob_key IS NOT NULL AND blob_key NOT IN (SELECT key FROM blobs)"
        ):
            problems.append(Violation("uncatalogued_blob", f"images reference uncatalogued blob {key}", key))
        for seq, key, size in self.db.execute(
            "SELECT i.seq, i.blob_key, i.size FROM images i JOIN blobs b ON b.key = i.blob_key WHERE b.size != i.size"
        ):
            problems.append(Violation("size", f"image seq {seq} has size {size} but its blob {key} differs", key))
        for seq, status, last in self.db.execute(
            "SELECT i.seq, i.status, h.to_status FROM images i LEFT JOIN image_history h ON h.id ="
            " (SELECT max(id) FROM image_history WHERE image_seq = i.seq)"
        ):
            if status != last:
                problems.append(Violation("history", f"image seq {seq} is {status} but its history ends at {last}"))
        return problems

    def _refcounts(self):
        """(key, refcount, references) per catalogued blob; one grouped pass, not a count per blob."""
        return self.db.execute(
            "WITH refs AS (SELECT blob_key, count(*) AS n FROM images WHERE blob_key IS NOT NULL GROUP BY blob_key)"
            " SELECT b.key, b.refcount, coalesce(r.n, 0) FROM blobs b LEFT JOIN refs r ON r.blob_key = b.key"
        ).fetchall()

    def repair_refcounts(self) -> list[Blob]:
        """Set every blob's refcount to the images referencing it, in one transaction (fsck --repair).

        A blob nothing references leaves the catalog and is returned: the caller frees it
        from its store after this commits (the same order as delete_image).
        """
        freed = []
        with self.db.atomic():
            for key, refcount, actual in self._refcounts():
                if actual == 0:
                    freed.append(self.blob(key))
                    self.db.execute("DELETE FROM blobs WHERE key = ?", [key])
                elif refcount != actual:
                    self.db.execute("UPDATE blobs SET refcount = ? WHERE key = ?", [actual, key])
        return freed
