"""Concurrency on PostgreSQL: the invariants that need a real multi-connection database.

Skipped (with the reason shown) unless JITACCESS_TEST_DATABASE_URL is set; CI sets it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from conftest import APPROVER, APPROVER2, START, crowd, make_service, register, utc
from jitaccess.app.audit_log import verify
from jitaccess.domain.errors import Conflict
from jitaccess.domain.policy import ApprovalMode
from jitaccess.store.db import Database
from jitaccess.store.models import AccessRequest, AuditEvent, LogGrant

T0 = utc(START)
H = timedelta(hours=1)


@pytest.fixture
def pg(pg_url: str) -> Iterator[Database]:
    database = Database(pg_url)
    database.upgrade()
    yield database
    database.dispose()


def run_together(*jobs: Callable[[], object]) -> list[object]:
    """Start every job at the same instant (barrier) and collect results or errors."""
    barrier = threading.Barrier(len(jobs))
    results: list[object] = [None] * len(jobs)

    def runner(index: int, job: Callable[[], object]) -> None:
        barrier.wait()
        try:
            results[index] = job()
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=runner, args=(i, j)) for i, j in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


@pytest.mark.postgres
def test_two_approvers_clicking_at_once_one_wins_the_other_is_told_who(pg: Database) -> None:
    service, _ = make_service(pg)
    people = crowd(10)  # one person may not hold overlapping requests for one role
    register(service, publishers=people)
    for who in people:  # repeat: races are rare events
        rid = service.submit(
            "crm",
            requester=who,
            role="Owner",
            duration=H,
            justification="incident",
            starts_at=T0 + H,
            now=T0,
        ).id
        a, b = run_together(
            lambda rid=rid: service.approve(rid, actor=APPROVER, reason="from A", now=T0),
            lambda rid=rid: service.approve(rid, actor=APPROVER2, reason="from B", now=T0),
        )
        winners = [r for r in (a, b) if not isinstance(r, Exception)]
        losers = [r for r in (a, b) if isinstance(r, Exception)]
        assert len(winners) == 1 and len(losers) == 1
        assert isinstance(losers[0], Conflict)
        winner = service.get_request(rid).decided_by
        assert f"already approved by {winner}" in str(losers[0])
        with pg.transaction(readonly=True) as s:
            approvals = s.execute(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.request_id == rid, AuditEvent.action == "approve")
            ).scalar_one()
        assert approvals == 1
    assert verify(pg).problems == []


@pytest.mark.postgres
def test_two_sweepers_over_1000_due_requests_process_each_exactly_once(pg: Database) -> None:
    service, _ = make_service(pg)
    people = crowd(1000)  # one person may not hold overlapping requests for one role
    register(service, mode=ApprovalMode.AUTOMATIC, approvers=(), publishers=people)
    ids = []
    for i, who in enumerate(people):
        ids.append(
            service.submit(
                "crm",
                requester=who,
                role="Contributor",
                duration=H,
                justification=f"job {i}",
                starts_at=T0 + timedelta(minutes=1),
                now=T0,
            ).id
        )
    at = T0 + timedelta(minutes=2)
    one, _ = make_service(Database(pg.url), worker_id="replica-1")
    two, _ = make_service(Database(pg.url), worker_id="replica-2")
    r1, r2 = run_together(
        lambda: one.sweep(at, batch_size=50), lambda: two.sweep(at, batch_size=50)
    )
    assert not isinstance(r1, Exception), r1
    assert not isinstance(r2, Exception), r2
    assert r1.activated + r2.activated == 1000  # type: ignore[union-attr]
    with pg.transaction(readonly=True) as s:
        calls = s.execute(select(func.sum(LogGrant.grant_calls), func.count())).one()
        activations = s.execute(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "activate")
        ).scalar_one()
        states = set(s.execute(select(AccessRequest.state).distinct()).scalars())
    assert tuple(calls) == (1000, 1000)  # one grant call per request, none doubled
    assert activations == 1000
    assert states == {"active"}
    assert verify(pg).problems == []
