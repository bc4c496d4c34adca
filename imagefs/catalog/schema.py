"""The catalog schema, as a list of migrations; the comments are its documentation.

`PRAGMA user_version` holds the number of migrations applied. A migration is
only ever appended, never edited: a catalog written by an older imagefs is
brought forward at open, inside one transaction.
"""

from __future__ import annotations

import sqlite3

MIGRATIONS: list[str] = [
    # 1: the first schema.
    """
    -- One row per image, deleted ones included (Glance keeps them too); the
    -- columns named as in Glance's v2 image schema mean what they mean there.
    CREATE TABLE images (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused: inode numbers derive from it
        id TEXT NOT NULL UNIQUE,               -- the image UUID
        name TEXT NOT NULL,                    -- the file name in its status directory
        status TEXT NOT NULL,                  -- lifecycle.Status; changed only by Catalog.change_status
        disk_format TEXT,
        container_format TEXT,
        size INTEGER,                          -- bytes of image data, set when the data is finalized
        virtual_size INTEGER,
        checksum TEXT,                         -- md5 hex of the data
        os_hash_algo TEXT,
        os_hash_value TEXT,                    -- also the blob's content address
        min_disk INTEGER NOT NULL DEFAULT 0,
        min_ram INTEGER NOT NULL DEFAULT 0,
        visibility TEXT NOT NULL DEFAULT 'shared',
        protected INTEGER NOT NULL DEFAULT 0,
        os_hidden INTEGER NOT NULL DEFAULT 0,
        owner TEXT,                            -- the owning project
        created_ns INTEGER NOT NULL,           -- created_at, ns since the epoch (ctime on the mount)
        updated_ns INTEGER NOT NULL,           -- updated_at (mtime on the mount)
        deleted_ns INTEGER,
        blob_key TEXT REFERENCES blobs(key),   -- the data, once finalized
        store TEXT,                            -- the store holding blob_key
        reason TEXT,                           -- why the image was killed (user.imagefs.reason)
        stored_format TEXT,                    -- disk_format of the bytes as stored
        expected_size INTEGER,                 -- declared by setxattr before finalize; checked then
        expected_checksum TEXT,
        expected_os_hash_value TEXT
    );
    CREATE INDEX images_status ON images(status);
    -- Live images own their name; killed/ and pending_delete/ may repeat one.
    CREATE UNIQUE INDEX images_live_name ON images(name)
        WHERE status IN ('queued', 'saving', 'importing', 'active', 'deactivated');

    -- Custom properties (Glance's "extra properties"): string values.
    CREATE TABLE image_properties (
        image_seq INTEGER NOT NULL REFERENCES images(seq),
        name TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (image_seq, name)
    );

    CREATE TABLE image_tags (
        image_seq INTEGER NOT NULL REFERENCES images(seq),
        tag TEXT NOT NULL,
        PRIMARY KEY (image_seq, tag)
    );

    -- Every status change: who, when, from, to, why.
    CREATE TABLE image_history (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        image_seq INTEGER NOT NULL REFERENCES images(seq),
        at_ns INTEGER NOT NULL,
        actor TEXT NOT NULL,                   -- "uid:<n>" of the caller, or "imagefs" for the daemon
        from_status TEXT,                      -- NULL for the creation
        to_status TEXT NOT NULL,
        reason TEXT
    );
    CREATE INDEX image_history_image ON image_history(image_seq);

    -- Stored data, content-addressed: several images with the same bytes share one blob.
    CREATE TABLE blobs (
        key TEXT PRIMARY KEY,                  -- "<os_hash_algo>:<os_hash_value>"
        store TEXT NOT NULL,
        size INTEGER NOT NULL,
        refcount INTEGER NOT NULL              -- images whose blob_key is this key (fsck checks it)
    );
    """,
    # 2: stores know they are really there (SPEC §8): the marker each store was given.
    """
    -- One row per store this library has initialised. The store holds a file with
    -- the same marker; a store directory without it (an unmounted share's bare
    -- mount point) is never written to, and the library goes read-only.
    CREATE TABLE stores (
        name TEXT PRIMARY KEY,
        marker TEXT NOT NULL,
        initialised_ns INTEGER NOT NULL
    );
    """,
    # 3: image signatures (SPEC §6): which certificate vouched for the data.
    """
    -- "<certificate uuid> <subject>" when the data's signature (the img_signature*
    -- properties) was verified at finalize (user.imagefs.signature_verified); NULL: unsigned.
    ALTER TABLE images ADD COLUMN signature_verified TEXT;
    """,
]


def _statements(script: str):
    """Split a script into statements (executescript would commit on its own)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending
            pending = ""
    if pending.strip() and not all(l.strip().startswith("--") or not l.strip() for l in pending.splitlines()):
        raise ValueError(f"incomplete statement in migration: {pending!r}")


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the migrations this catalog lacks; returns the resulting version."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise RuntimeError(f"catalog schema version {version} is newer than this imagefs ({len(MIGRATIONS)})")
    for number in range(version, len(MIGRATIONS)):
        conn.execute("BEGIN")
        try:
            for statement in _statements(MIGRATIONS[number]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(MIGRATIONS)
