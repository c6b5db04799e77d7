"""The sweep's due-rows queries are answered by ``ix_access_requests_due``.

The SQL is the service's own: captured with SQLAlchemy's ``before_cursor_execute``
while one real sweep runs, then explained with the same parameters (SQLite's
``EXPLAIN QUERY PLAN``; PostgreSQL's ``EXPLAIN`` when JITACCESS_TEST_DATABASE_URL is
set). The table holds thousands of rows, mostly finished or not yet due, so a plan
that scans it would be a real regression. Not a timing test.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, insert, select

from conftest import APPROVER, PUBLISHER, START, make_service, register, utc
from jitaccess.app.service import JitService
from jitaccess.store.db import Database
from jitaccess.store.models import AccessRequest, Application

INDEX = "ix_access_requests_due"
NOW = utc(START)
SWEPT_STATES = {"active", "pending", "approved", "auto_approved"}


def populate(db: Database) -> JitService:
    """An application and 5,000 requests: most finished, some waiting, a few due."""
    service, _ = make_service(db)
    register(service)
    with db.engine.begin() as conn:
        app_id = conn.execute(select(Application.id)).scalar_one()
        rows: list[dict[str, Any]] = []
        for i in range(5000):
            if i % 50 == 0:  # 100 due now, spread over the swept states
                state, deadline = sorted(SWEPT_STATES)[i // 50 % 4], NOW - timedelta(minutes=i)
            elif i % 5 == 0:  # 900 waiting for a future deadline
                state, deadline = "active", NOW + timedelta(minutes=i)
            else:  # 4,000 finished: no deadline any more
                state, deadline = "expired", None
            starts = NOW - timedelta(hours=2)
            rows.append(
                {
                    "app_id": app_id,
                    "requester": PUBLISHER,
                    "role": "Contributor",
                    "justification": f"ticket {i}",
                    "starts_at": starts,
                    "ends_at": starts + timedelta(hours=4),
                    "approval_deadline_at": starts,
                    "state": state,
                    "approval_mode": "manual",
                    "notified_approvers": [APPROVER],
                    "created_at": starts,
                    "next_deadline_at": deadline,
                    "attempts": 0,
                    "revoke_alerts_sent": 0,
                    "version": 1,
                }
            )
        conn.execute(insert(AccessRequest), rows)
        conn.exec_driver_sql("ANALYZE")
    return service


def due_queries(service: JitService, db: Database) -> list[tuple[str, Any]]:
    """The due-rows SELECTs one real sweep sends, with their parameters."""
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and (
            "access_requests.next_deadline_at <=" in statement
        ):
            captured.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", capture)
    try:
        report = service.sweep(NOW, batch_size=1000)
    finally:
        event.remove(db.engine, "before_cursor_execute", capture)
    assert report.transitions > 0, "the sweep should have had due rows to act on"
    assert len(captured) >= len(SWEPT_STATES), captured
    return captured


def explain(db: Database, statement: str, parameters: Any) -> list[str]:
    prefix = "EXPLAIN QUERY PLAN " if db.is_sqlite else "EXPLAIN "
    with db.engine.connect() as conn:
        rows = conn.exec_driver_sql(prefix + statement, parameters).all()
    # SQLite: (id, parent, notused, detail); PostgreSQL: one plan line per row.
    return [str(row[-1]) for row in rows]


def test_sqlite_sweep_uses_the_due_index(db: Database) -> None:
    service = populate(db)
    for statement, parameters in due_queries(service, db):
        plan = explain(db, statement, parameters)
        requests = [line for line in plan if "access_requests" in line]
        assert any(f"USING INDEX {INDEX}" in line for line in requests), (statement, plan)
        assert any("next_deadline_at<" in line for line in requests), (statement, plan)
        assert not any(line.startswith("SCAN access_requests") for line in requests), plan
        # The index also yields the rows oldest deadline first: no sort step.
        assert not any("TEMP B-TREE FOR ORDER BY" in line for line in plan), plan


@pytest.mark.postgres
def test_postgres_sweep_uses_the_due_index(pg_url: str) -> None:
    db = Database(pg_url)
    db.upgrade()
    try:
        service = populate(db)
        for statement, parameters in due_queries(service, db):
            assert "SKIP LOCKED" in statement
            plan = explain(db, statement, parameters)
            assert any(INDEX in line for line in plan), (statement, plan)
            assert not any("Seq Scan on access_requests" in line for line in plan), plan
    finally:
        db.dispose()
