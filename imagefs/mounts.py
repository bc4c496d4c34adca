"""What is mounted where, from /proc/self/mountinfo (os.path.ismount misses bind mounts on one filesystem)."""

from __future__ import annotations

import os
from pathlib import Path


def mount_table() -> list[tuple[str, str]]:
    """(mount point, filesystem type) of every mount, in mount order."""
    table = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            table.append((fields[4].encode().decode("unicode_escape"), fields[fields.index("-") + 1]))
    return table


def mounted_fstype(path: Path) -> str | None:
    """The filesystem type mounted exactly at `path` (the last mount there wins)."""
    target = os.path.realpath(path)
    found = None
    for mount_point, fstype in mount_table():
        if mount_point == target:
            found = fstype
    return found
