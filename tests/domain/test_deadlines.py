"""The deadline rules (domain/deadlines.py) on a plain object: no store, no clock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from jitaccess.domain import deadlines
from jitaccess.domain.deadlines import (
    backend_behind,
    mark_expiring,
    natural_deadline,
    set_next_deadline,
)
from jitaccess.domain.lifecycle import Event, RequestState

T0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)


@dataclass
class Row:
    state: str = RequestState.PENDING
    starts_at: datetime = T0 + timedelta(hours=1)
    ends_at: datetime = T0 + timedelta(hours=3)
    approval_deadline_at: datetime = T0 + timedelta(minutes=30)
    backend_ends_at: datetime | None = None
    extension_deadline_at: datetime | None = None
    claimed_by: str | None = None
    next_deadline_at: datetime | None = None
    end_requested: str | None = None
    end_requested_by: str | None = None
    end_requested_at: datetime | None = None
    end_requested_reason: str | None = None


@pytest.mark.parametrize(
    ("state", "due"),
    [
        (RequestState.PENDING, T0 + timedelta(minutes=30)),
        (RequestState.APPROVED, T0 + timedelta(hours=1)),
        (RequestState.AUTO_APPROVED, T0 + timedelta(hours=1)),
        (RequestState.ACTIVE, T0 + timedelta(hours=3)),
        (RequestState.EXPIRED, None),
        (RequestState.REVOKED, None),
    ],
)
def test_the_natural_deadline_follows_the_state(state: RequestState, due: datetime | None) -> None:
    assert natural_deadline(Row(state=state)) == due


def test_a_pending_extension_times_out_before_the_end() -> None:
    row = Row(state=RequestState.ACTIVE, extension_deadline_at=T0 + timedelta(hours=2))
    assert natural_deadline(row) == T0 + timedelta(hours=2)
    later = Row(state=RequestState.ACTIVE, extension_deadline_at=T0 + timedelta(hours=5))
    assert natural_deadline(later) == T0 + timedelta(hours=3)


def test_a_backend_behind_makes_an_active_row_due_now() -> None:
    row = Row(state=RequestState.ACTIVE, backend_ends_at=T0 + timedelta(hours=2))
    assert backend_behind(row)
    set_next_deadline(row, T0)
    assert row.next_deadline_at == T0
    row.backend_ends_at = row.ends_at
    assert not backend_behind(row)
    set_next_deadline(row, T0)
    assert row.next_deadline_at == row.ends_at


def test_a_claimed_row_keeps_its_lease() -> None:
    lease_end = T0 + timedelta(seconds=60)
    row = Row(state=RequestState.ACTIVE, claimed_by="w1", next_deadline_at=lease_end)
    set_next_deadline(row, T0)
    assert row.next_deadline_at == lease_end
    set_next_deadline(row, lease_end + timedelta(seconds=1))  # the lease lapsed
    assert row.next_deadline_at == row.ends_at


def test_mark_expiring_records_the_end_being_enforced() -> None:
    row = Row(state=RequestState.ACTIVE)
    mark_expiring(row, T0, "system")
    assert (row.end_requested, row.end_requested_by, row.end_requested_at) == (
        "expire",
        "system",
        T0,
    )
    assert row.end_requested == Event.EXPIRE
    assert row.end_requested_reason == deadlines.WINDOW_ENDED


def test_the_domain_imports_no_store() -> None:
    import ast
    from pathlib import Path

    tree = ast.parse(Path(deadlines.__file__).read_text())
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)] + [
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    ]
    assert [
        m
        for m in imported
        if not m.startswith(("jitaccess.domain", "__future__", "datetime", "typing"))
    ] == []
