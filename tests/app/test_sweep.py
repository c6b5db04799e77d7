"""Durable deadlines: the sweep, restarts, ordering, and failing backends."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from freezegun import freeze_time
from sqlalchemy import select, text

from conftest import APPROVER, PUBLISHER, START, crowd, make_service, register, utc
from jitaccess.app.outbox import LoggingNotifier, OutboxRelay
from jitaccess.app.service import JitService, RetryPolicy
from jitaccess.domain.policy import ApprovalMode
from jitaccess.providers.base import GrantSpec, ProviderError
from jitaccess.scheduler import DeadlineScheduler
from jitaccess.store.db import Database
from jitaccess.store.models import AuditEvent, LogGrant

T0 = utc(START)
H = timedelta(hours=1)


class FlakyProvider:
    """A backend that fails the first N grants / revokes, then works; it records
    every call so tests can prove nothing was granted or revoked twice."""

    name = "flaky"

    def __init__(self, grant_failures: int = 0, revoke_failures: int = 0) -> None:
        self.grant_failures = grant_failures
        self.revoke_failures = revoke_failures
        self.calls: list[tuple[str, int]] = []
        self.held: set[int] = set()

    def grant(self, spec: GrantSpec, now: datetime) -> None:
        self.calls.append(("grant", spec.request_id))
        if self.grant_failures > 0:
            self.grant_failures -= 1
            raise ProviderError("ARM answered 503 Service Unavailable")
        self.held.add(spec.request_id)

    def revoke(self, spec: GrantSpec, now: datetime) -> None:
        self.calls.append(("revoke", spec.request_id))
        if self.revoke_failures > 0:
            self.revoke_failures -= 1
            raise ProviderError("ARM answered 429 Too Many Requests")
        self.held.discard(spec.request_id)


def auto_submit(
    service: JitService,
    *,
    start: datetime,
    hours: float = 1,
    app: str = "crm",
    who: str = PUBLISHER,
) -> int:
    return service.submit(
        app,
        requester=who,
        role="Contributor",
        duration=timedelta(hours=hours),
        justification="maintenance",
        starts_at=start,
        now=T0,
    ).id


def test_first_sweep_after_downtime_does_everything_once_expiries_first(db: Database) -> None:
    service, log_provider = make_service(db)
    people = crowd(5)  # one person may not hold overlapping requests for one role
    register(service, mode=ApprovalMode.AUTOMATIC, approvers=(), publishers=people)
    early = [
        auto_submit(service, start=T0 + timedelta(minutes=i), who=p) for i, p in enumerate(people)
    ]
    service.sweep(T0 + timedelta(minutes=10))  # all five active
    late = [
        auto_submit(service, start=T0 + 2 * H + timedelta(minutes=i), who=p)
        for i, p in enumerate(people)
    ]

    # Nothing runs for four hours: the early grants should have ended, the late started.
    restarted, _ = make_service(Database(db.url))
    report = restarted.sweep(T0 + 2 * H + timedelta(minutes=30))
    assert (report.expired, report.activated) == (5, 5)
    assert restarted.sweep(T0 + 2 * H + timedelta(minutes=30)).transitions == 0

    with db.transaction(readonly=True) as s:
        grants = {g.request_id: g for g in s.execute(select(LogGrant)).scalars()}
        events = (
            s.execute(select(AuditEvent.action).where(AuditEvent.seq > 0).order_by(AuditEvent.seq))
            .scalars()
            .all()
        )
    assert all(grants[i].grant_calls == 1 and grants[i].revoke_calls == 1 for i in early)
    assert all(grants[i].grant_calls == 1 and grants[i].revoked_at is None for i in late)
    tail = events[-10:]
    assert tail == ["expire"] * 5 + ["activate"] * 5  # overdue expiries first


def test_window_that_passed_entirely_during_downtime_is_never_granted(db: Database) -> None:
    service, log_provider = make_service(db)
    register(service, mode=ApprovalMode.AUTOMATIC, approvers=())
    rid = auto_submit(service, start=T0 + H, hours=1)
    report = service.sweep(T0 + 5 * H)
    assert report.lapsed == 1
    view = service.get_request(rid)
    assert view.state == "expired" and view.activated_at is None
    with db.transaction(readonly=True) as s:
        assert s.execute(select(LogGrant)).first() is None


def test_window_over_counts_as_no_access_before_the_sweep_runs(db: Database) -> None:
    service, _ = make_service(db)
    register(service, mode=ApprovalMode.AUTOMATIC, approvers=())
    rid = auto_submit(service, start=T0)
    service.sweep(T0)
    view = service.get_request(rid)
    assert view.holds_access(T0 + 59 * timedelta(minutes=1))
    assert not view.holds_access(T0 + H)
    assert view.status_line(T0 + H) == "active (window over, revoking)"


def test_grant_failing_twice_activates_on_the_third_sweep(db: Database) -> None:
    service, _ = make_service(db)
    flaky = FlakyProvider(grant_failures=2)
    service.providers.register(flaky)
    register(service, mode=ApprovalMode.AUTOMATIC, approvers=(), provider="flaky")
    rid = auto_submit(service, start=T0 + H)

    at = T0 + H
    assert service.sweep(at).retrying == 1
    view = service.get_request(rid)
    assert (view.state, view.attempts) == ("auto_approved", 1)
    assert view.last_error == "ARM answered 503 Service Unavailable"
    assert service.sweep(at + timedelta(seconds=5)).transitions == 0  # backing off
    at += timedelta(seconds=10)  # first backoff: 10 s
    assert service.sweep(at).retrying == 1
    at += timedelta(seconds=20)  # second backoff: 20 s
    assert service.sweep(at).activated == 1
    view = service.get_request(rid)
    assert (view.state, view.attempts, view.last_error) == ("active", 0, None)
    assert flaky.calls == [("grant", rid)] * 3


def test_grant_that_keeps_failing_ends_failed_with_the_last_error(db: Database) -> None:
    service, _ = make_service(
        db,
        retry=RetryPolicy(
            base=timedelta(seconds=1), cap=timedelta(seconds=1), max_grant_attempts=3
        ),
    )
    flaky = FlakyProvider(grant_failures=99)
    service.providers.register(flaky)
    register(service, mode=ApprovalMode.AUTOMATIC, approvers=(APPROVER,), provider="flaky")
    rid = auto_submit(service, start=T0 + H)
    for i in range(5):
        service.sweep(T0 + H + timedelta(seconds=2 * i))
    view = service.get_request(rid)
    assert view.state == "failed"
    assert "grant failed after 3 attempts" in (view.end_reason or "") or view.last_error
    assert view.last_error == "ARM answered 503 Service Unavailable"
    # A failed call may still have granted: the request fails only after a revoke.
    assert flaky.calls == [("grant", rid)] * 3 + [("revoke", rid)]


def test_failing_revoke_keeps_the_grant_active_and_visible_until_it_succeeds(
    db: Database,
) -> None:
    service, _ = make_service(db)
    flaky = FlakyProvider(revoke_failures=4)
    service.providers.register(flaky)
    register(service, mode=ApprovalMode.AUTOMATIC, approvers=(APPROVER,), provider="flaky")
    rid = auto_submit(service, start=T0)
    service.sweep(T0)
    end = T0 + H
    at = end
    for _ in range(4):
        service.sweep(at)
        view = service.get_request(rid)
        assert view.state == "active"  # never expired while the backend may still hold it
        assert view.revoke_failing_since == end
        assert view.status_line(at).startswith("active (revoke failing since")
        at += timedelta(minutes=5)
    assert rid in flaky.held
    assert service.sweep(at).expired == 1
    view = service.get_request(rid)
    assert (view.state, view.revoke_failing_since) == ("expired", None)
    assert rid not in flaky.held
    with db.transaction(readonly=True) as s:
        actions = (
            s.execute(
                select(AuditEvent.action)
                .where(AuditEvent.request_id == rid)
                .order_by(AuditEvent.seq)
            )
            .scalars()
            .all()
        )
    assert actions.count("revoke_failed") == 4 and actions[-1] == "expire"


def test_cancel_while_the_grant_is_in_flight_takes_the_grant_back(db: Database) -> None:
    """The requester cancels between the sweep's claim and its outcome."""
    service, _ = make_service(db)

    class CancelsDuringGrant(FlakyProvider):
        def grant(self, spec: GrantSpec, now: datetime) -> None:
            super().grant(spec, now)
            service.cancel(spec.request_id, actor=PUBLISHER, now=now)

    provider = CancelsDuringGrant()
    service.providers.register(provider)
    register(service, mode=ApprovalMode.AUTOMATIC, approvers=(), provider="flaky")
    rid = auto_submit(service, start=T0 + H)
    service.sweep(T0 + H)
    assert service.get_request(rid).state == "cancelled"
    assert provider.calls == [("grant", rid), ("revoke", rid)]
    assert provider.held == set()


def test_crash_after_claim_is_recovered_when_the_lease_lapses(db: Database) -> None:
    """A sweeper claimed a row and died before recording the outcome."""
    service, _ = make_service(db)
    register(service, mode=ApprovalMode.AUTOMATIC, approvers=())
    rid = auto_submit(service, start=T0 + H)
    with db.transaction() as s:  # what a claim leaves behind
        s.execute(
            text(
                "UPDATE access_requests SET next_deadline_at = :lease, "
                "claimed_by = 'dead-worker' WHERE id = :id"
            ),
            {"lease": (T0 + H + timedelta(seconds=60)).replace(tzinfo=None), "id": rid},
        )
    assert service.sweep(T0 + H + timedelta(seconds=30)).transitions == 0
    assert service.sweep(T0 + H + timedelta(seconds=60)).activated == 1


def test_scheduler_calls_the_sweep_and_relays_notifications(db: Database) -> None:
    service, _ = make_service(db)
    notifier = LoggingNotifier()
    relay = OutboxRelay(db, notifier)
    register(service, mode=ApprovalMode.AUTOMATIC, approvers=(APPROVER,))
    with freeze_time(T0 + 2 * H):
        rid = auto_submit(service, start=T0 + H, hours=3)  # due: awaits the sweep
        scheduler = DeadlineScheduler(service, relay, sweep_interval=5, relay_interval=1)
        scheduler.sweep_now()  # what the interval job runs
    assert service.get_request(rid).state == "active"
    delivered = {(n.kind, n.recipient, n.payload["to"]) for n in notifier.delivered}
    assert ("requester_update", PUBLISHER, "active") in delivered
    assert ("approver_card", APPROVER, "active") in delivered


@pytest.mark.parametrize("batch_size", [1, 7, 500])
def test_sweep_batches_cover_everything_due(db: Database, batch_size: int) -> None:
    service, _ = make_service(db)
    people = crowd(20)
    register(service, mode=ApprovalMode.AUTOMATIC, approvers=(), publishers=people)
    ids = [
        auto_submit(service, start=T0 + timedelta(minutes=i + 1), who=p)
        for i, p in enumerate(people)
    ]
    report = service.sweep(T0 + 3 * H, batch_size=batch_size)
    assert report.lapsed == 20
    assert {service.get_request(i).state for i in ids} == {"expired"}


def test_grant_taken_back_from_a_backend_that_writes_to_this_database(db: Database) -> None:
    """The compensating revoke runs after the outcome transaction: the log provider's own
    write must not wait on the sweep's lock (it used to stall 30 s and keep the grant)."""
    service, log_provider = make_service(db)

    class CancelsDuringGrant:
        name = "cancels"

        def grant(self, spec: GrantSpec, now: datetime) -> None:
            log_provider.grant(spec, now)
            service.cancel(spec.request_id, actor=PUBLISHER, now=now)

        def revoke(self, spec: GrantSpec, now: datetime) -> None:
            log_provider.revoke(spec, now)

    service.providers.register(CancelsDuringGrant())
    register(service, mode=ApprovalMode.AUTOMATIC, approvers=(), provider="cancels")
    rid = auto_submit(service, start=T0 + H)
    service.sweep(T0 + H)
    assert service.get_request(rid).state == "cancelled"
    assert log_provider.held() == []
