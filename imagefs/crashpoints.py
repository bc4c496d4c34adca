"""Named crash points, for the crash-consistency tests: the daemon SIGKILLs itself at one of them.

`IMAGEFS_CRASH_AT=<name>[,<name>...]` in the daemon's environment (read once,
at import) names the points; anywhere else `crash_point` is a set lookup on
an empty set. SIGKILL, not an exception: nothing runs after it (no finally,
no atexit, no unmount), as when the machine's OOM killer or an operator's
kill -9 stops the daemon.
"""

from __future__ import annotations

import os
import signal

# Every point, in the order the writes happen (tests/test_mount_crash.py crashes at each).
POINTS = (
    "store.put.synced",  # blob bytes written and fsynced, not yet renamed into place
    "store.put.renamed",  # blob renamed into place, its directory not yet fsynced
    "finalize.stored",  # blob in the store, the catalog not yet told (image still saving)
    "finalize.activated",  # the catalog committed: the image is active
    "delete.committed",  # the catalog deleted the image, its blob not yet freed
    "delete.freeing",  # about to unlink the blob nothing references any more
    "rename.before",  # about to change an image's name and/or status
    "rename.after",  # the rename committed
)

_CRASH_AT = frozenset(filter(None, os.environ.get("IMAGEFS_CRASH_AT", "").split(",")))


def crash_point(name: str) -> None:
    if name in _CRASH_AT:
        os.write(2, f"imagefs: crash point {name}: SIGKILL\n".encode())
        os.kill(os.getpid(), signal.SIGKILL)
