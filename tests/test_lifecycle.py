"""The status transition table: Glance's, with failed uploads going to killed."""

import errno
import itertools

import pytest

from imagefs.errors import InvalidTransition
from imagefs.lifecycle import DIRECTORIES, HAS_DATA, LIVE, TRANSITIONS, UPLOADING, Status, check_transition

# Written out from glance/domain Image.valid_state_targets (reference/glance.md §1), minus
# Glance's `uploading` (imagefs stages in incoming/ itself) and its v2 "failure -> queued"
# edges, plus queued -> killed: our deliberate change, a failed upload is killed with a reason.
EXPECTED = {
    "queued": {"saving", "importing", "active", "deleted", "killed"},
    "saving": {"active", "killed", "deleted"},
    "importing": {"active", "killed", "deleted"},
    "active": {"deactivated", "pending_delete", "deleted"},
    "deactivated": {"active", "deleted"},
    "killed": {"deleted"},
    "pending_delete": {"active", "deleted"},
    "deleted": set(),
}


def test_statuses_are_glances_without_uploading():
    assert {str(s) for s in Status} == set(EXPECTED)


def test_table_equals_glances():
    assert {str(s): {str(t) for t in targets} for s, targets in TRANSITIONS.items()} == EXPECTED


@pytest.mark.parametrize("current,target", [(a, b) for a, targets in EXPECTED.items() for b in sorted(targets)])
def test_allowed_transitions_pass(current, target):
    check_transition(Status(current), Status(target))


DISALLOWED = [(a, b) for a, b in itertools.product(EXPECTED, repeat=2) if b not in EXPECTED[a]]


@pytest.mark.parametrize("current,target", DISALLOWED)
def test_every_other_pair_is_refused(current, target):
    with pytest.raises(InvalidTransition) as raised:
        check_transition(Status(current), Status(target))
    assert raised.value.errno == errno.EPERM


def test_no_status_goes_to_itself():
    # A repeated change is not a change: it must not write a second history row.
    assert all((s, s) in DISALLOWED for s in EXPECTED)


def test_failed_uploads_are_killed_not_requeued():
    assert "queued" not in EXPECTED["saving"] | EXPECTED["importing"]
    assert Status.KILLED in TRANSITIONS[Status.SAVING] and Status.KILLED in TRANSITIONS[Status.IMPORTING]


def test_status_groups():
    assert UPLOADING == {Status.QUEUED, Status.SAVING}
    assert LIVE == {Status.QUEUED, Status.SAVING, Status.IMPORTING, Status.ACTIVE, Status.DEACTIVATED}
    assert HAS_DATA == {Status.ACTIVE, Status.DEACTIVATED, Status.PENDING_DELETE}
    assert set(DIRECTORIES) == set(Status) - {Status.DELETED}
    # Every status that can hold data is reachable only through active (data verified first).
    for status in HAS_DATA - {Status.ACTIVE}:
        sources = {s for s, targets in TRANSITIONS.items() if status in targets}
        assert sources <= HAS_DATA, status
