"""Operations the status directories refuse, each with an errno a user would expect."""

import errno
import os
import random

import pytest

from conftest import getfattr_dump, run

pytestmark = pytest.mark.fuse

REFUSALS = (errno.EPERM, errno.EACCES, errno.EROFS)


def _snapshot(library):
    """Every path in the tree with its attributes and (for data files) its digest."""
    out = {}
    for path in sorted(library.mnt.glob("*/*")):
        entry = dict(getfattr_dump(path)) if not path.is_symlink() else {"link": os.readlink(path)}
        if path.parent.name == "active":
            entry["sha512sum"] = run("sha512sum", path).stdout.split()[0]
            entry["stat"] = run("stat", "-c", "%s %a %Y %Z", path).stdout
        out[str(path.relative_to(library.mnt))] = entry
    return out


def test_namespace_changes_outside_incoming_are_refused(library, tmp_path):
    source = tmp_path / "img.src"
    source.write_bytes(random.Random(0).randbytes(50_000))
    run("cp", source, library.mnt / "incoming" / "img")
    active = library.path("active", "img")
    before = _snapshot(library)
    mnt = library.mnt
    attempts = {
        "mkdir in active/": ["mkdir", mnt / "active" / "dir"],
        "mkdir in incoming/": ["mkdir", mnt / "incoming" / "dir"],
        "mkdir at the root": ["mkdir", mnt / "dir"],
        "rmdir of a status dir": ["rmdir", mnt / "killed"],
        "touch in active/": ["touch", mnt / "active" / "new"],
        "cp into active/": ["cp", source, mnt / "active" / "copy"],
        "cp into queued/": ["cp", source, mnt / "queued" / "copy"],
        "create at the root": ["touch", mnt / "file"],
        "create in by-id/": ["touch", mnt / "by-id" / "file"],
        "chmod of an active image": ["chmod", "644", active],
        "chown of an active image": ["chown", "nobody", active],
        "touch (utimes) of an active image": ["touch", "-d", "2001-01-01", active],
        "truncate of an active image": ["truncate", "-s", "0", active],
        "truncate growing an active image": ["truncate", "-s", "1M", active],
        "append to an active image": ["sh", "-c", f"echo data >> '{active}'"],
        "overwrite an active image": ["dd", "if=/dev/zero", f"of={active}", "bs=1k", "count=1", "conv=notrunc"],
        "cp over an active image": ["cp", source, active],
        "hard link in active/": ["ln", active, mnt / "active" / "hard"],
        "hard link into incoming/": ["ln", active, mnt / "incoming" / "hard"],
        "symlink in active/": ["ln", "-s", "img", mnt / "active" / "soft"],
        "mv active/ -> incoming/": ["mv", "-T", active, mnt / "incoming" / "img2"],
        "mv active/ -> killed/": ["mv", "-T", active, mnt / "killed" / "img"],
        "rm of a by-id link": ["rm", mnt / "by-id" / getfattr_dump(active)["user.image.id"]],
        "mv of a status dir": ["mv", "-T", mnt / "killed", mnt / "graveyard"],
        "mv of a by-id link": ["mv", "-T", mnt / "by-id" / getfattr_dump(active)["user.image.id"], mnt / "by-id" / "x"],
        "mv of a by-id link out": ["mv", "-T", mnt / "by-id" / getfattr_dump(active)["user.image.id"], mnt / "active" / "x"],
    }
    unexpected = {}
    for what, command in attempts.items():
        result = run(*command, check=False)
        if result.returncode == 0 or not any(os.strerror(e) in result.stderr for e in REFUSALS):
            unexpected[what] = (result.returncode, result.stderr.strip())
    assert unexpected == {}
    assert _snapshot(library) == before
    assert sorted(os.listdir(mnt)) == sorted(
        ["incoming", "queued", "saving", "importing", "active", "deactivated", "killed", "pending_delete", "by-id"])
