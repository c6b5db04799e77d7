"""The deadline rules the sweep and the extensions share, as pure functions.

A request row carries one ``next_deadline_at``: when the sweep must next look at it.
These rules say what that deadline is (the start, the end, the approval deadline, or a
pending extension's time-out if sooner) and whether an expiry-aware backend still holds
an older end. They read and write only the fields named in ``DeadlineRow`` (in
production the store's ``AccessRequest``), so the domain imports no store.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from jitaccess.domain.lifecycle import APPROVED_STATES, Event, RequestState


class DeadlineRow(Protocol):
    """What the deadline rules read (and ``set_next_deadline`` writes) of a request."""

    state: str
    starts_at: datetime
    ends_at: datetime
    approval_deadline_at: datetime
    backend_ends_at: datetime | None
    extension_deadline_at: datetime | None
    claimed_by: str | None
    next_deadline_at: datetime | None


class EndingRow(Protocol):
    """The early end a request carries (``end_requested`` and who, when, why)."""

    end_requested: str | None
    end_requested_by: str | None
    end_requested_at: datetime | None
    end_requested_reason: str | None


#: Why the sweep revokes at the window's end.
WINDOW_ENDED = "the window ended"


def backend_behind(row: DeadlineRow) -> bool:
    """Does an expiry-aware backend still hold an older end than ``ends_at``?"""
    return row.backend_ends_at is not None and row.backend_ends_at != row.ends_at


def natural_deadline(row: DeadlineRow) -> datetime | None:
    """When the sweep must next look at ``row`` with nothing in flight: the start, the
    end or the approval deadline, and a pending extension's time-out if sooner."""
    if row.state == RequestState.ACTIVE:
        due: datetime | None = row.ends_at
    elif row.state == RequestState.PENDING:
        due = row.approval_deadline_at
    elif row.state in APPROVED_STATES:
        due = row.starts_at
    else:
        return None
    if row.extension_deadline_at is not None and due is not None:
        due = min(due, row.extension_deadline_at)
    return due


def set_next_deadline(row: DeadlineRow, now: datetime) -> None:
    """Point the sweep at what is due next, unless a sweeper holds the row with a call
    in flight: its outcome is then dropped (the version moved) and the row made due."""
    claimed = row.claimed_by is not None and row.next_deadline_at is not None
    if claimed and row.next_deadline_at is not None and row.next_deadline_at > now:
        return
    due = natural_deadline(row)
    if row.state == RequestState.ACTIVE and backend_behind(row):
        due = now
    row.next_deadline_at = due


def mark_expiring(row: EndingRow, now: datetime, actor: str) -> None:
    """Record that the window's end is being enforced: the revoke is owed and the
    request ends as ``expired`` once it succeeds, whatever anyone asks meanwhile."""
    row.end_requested = Event.EXPIRE
    row.end_requested_by = actor
    row.end_requested_at = now
    row.end_requested_reason = WINDOW_ENDED
