"""Image statuses and the transitions between them, as data.

The table is Glance's (glance/domain Image.valid_state_targets) with one
deliberate change: a failed upload or import goes to `killed` with a reason
instead of silently back to `queued`, so an operator sees what failed. The
catalog's `change_status` is the only writer of a status and calls
`check_transition` inside the same transaction that records history.
"""

from __future__ import annotations

from enum import StrEnum

from ..errors import InvalidTransition


class Status(StrEnum):
    QUEUED = "queued"
    SAVING = "saving"
    IMPORTING = "importing"
    ACTIVE = "active"
    DEACTIVATED = "deactivated"
    KILLED = "killed"
    PENDING_DELETE = "pending_delete"
    DELETED = "deleted"


S = Status
TRANSITIONS: dict[Status, frozenset[Status]] = {
    S.QUEUED: frozenset({S.SAVING, S.IMPORTING, S.ACTIVE, S.DELETED, S.KILLED}),
    S.SAVING: frozenset({S.ACTIVE, S.KILLED, S.DELETED}),
    S.IMPORTING: frozenset({S.ACTIVE, S.KILLED, S.DELETED}),
    S.ACTIVE: frozenset({S.DEACTIVATED, S.PENDING_DELETE, S.DELETED}),
    S.DEACTIVATED: frozenset({S.ACTIVE, S.DELETED}),
    S.KILLED: frozenset({S.DELETED}),
    S.PENDING_DELETE: frozenset({S.ACTIVE, S.DELETED}),
    S.DELETED: frozenset(),
}

# Uploads in flight: shown in incoming/ as well as in their status directory.
UPLOADING = frozenset({S.QUEUED, S.SAVING})
# Live images hold their name: no two live images share one.
LIVE = frozenset({S.QUEUED, S.SAVING, S.IMPORTING, S.ACTIVE, S.DEACTIVATED})
# Statuses whose data is readable through the mount.
HAS_DATA = frozenset({S.ACTIVE, S.DEACTIVATED, S.PENDING_DELETE})
# Statuses that are directories under the mount root ("deleted" is not: deleted images disappear).
DIRECTORIES = tuple(s for s in Status if s is not S.DELETED)


def check_transition(current: Status, target: Status) -> None:
    if target not in TRANSITIONS[current]:
        raise InvalidTransition(f"an image cannot go from {current} to {target}")
