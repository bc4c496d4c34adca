"""What is mounted where, from /proc/self/mountinfo (os.path.ismount misses bind mounts on one filesystem)."""

from __future__ import annotations

import os
from pathlib import Path


def mounted_fstype(path: Path) -> str | None:
    """The filesystem type mounted exactly at `path`, from /proc/self/mountinfo."""
    target = os.path.realpath(path)
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            mount_point = fields[4].encode().decode("unicode_escape")
            if mount_point == target:
                found = fields[fields.index("-") + 1]  # the last mount there wins
    return found
