"""A grant is revoked on the backend that made it, and every revoke owed is durable.

The crash cases (a process SIGKILLed between the backend's grant and its record) are in
``tests/faults/test_grant_left_behind.py``; these are the in-process races and changes
of configuration, under frozen time.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

import pytest
from sqlalchemy import create_engine, select, text

from conftest import ADMIN, APPROVER, PUBLISHER, START, make_service, utc
from jitaccess.app.reconcile import reconcile
from jitaccess.app.service import AppSpec, JitService, RetryPolicy
from jitaccess.domain.policy import ApprovalMode, Policy
from jitaccess.providers.base import GrantSpec, HeldGrant, ProviderError
from jitaccess.store.db import Database, normalise_url
from jitaccess.store.models import AccessRequest, AuditEvent, OutboxMessage

T0 = utc(START)
H = timedelta(hours=1)


class Backend:
    """A named backend that remembers what it holds and can be told to fail revokes;
    ``during_grant`` runs inside the grant call (a person acting meanwhile)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.held: dict[int, dict[str, object]] = {}
        self.calls: list[tuple[str, int]] = []
        self.revoke_failures = 0
        self.during_grant: list[object] = []

    def grant(self, spec: GrantSpec, now: datetime) -> None:
        self.calls.append(("grant", spec.request_id))
        while self.during_grant:
            action = self.during_grant.pop(0)
            assert callable(action)
            action()
        self.held[spec.request_id] = dict(spec.config)

    def revoke(self, spec: GrantSpec, now: datetime) -> None:
        self.calls.append(("revoke", spec.request_id))
        if self.revoke_failures:
            self.revoke_failures -= 1
            raise ProviderError(f"{self.name} answered 503")
        self.held.pop(spec.request_id, None)

    def list_grants(self, scope: str, config: object) -> list[HeldGrant]:
        return [HeldGrant(rid, scope, "", "") for rid in self.held]


def app_spec(
    provider: str, *, publishers: tuple[str, ...] = (PUBLISHER,), **config: object
) -> AppSpec:
    return AppSpec(
        name="crm",
        scope="/subscriptions/s1/resourceGroups/mrg-crm",
        publishers=publishers,
        roles=("Contributor",),
        admins=(ADMIN,),
        policy=Policy(mode=ApprovalMode.AUTOMATIC, approvers=(APPROVER,)),
        provider=provider,
        provider_config=dict(config),
    )


def setup(db: Database, *names: str) -> tuple[JitService, dict[str, Backend]]:
    service, _ = make_service(db)
    backends = {name: Backend(name) for name in names}
    for backend in backends.values():
        service.providers.register(backend)
    service.register_app(app_spec(names[0], tenant="old"), actor="test", now=T0)
    return service, backends


def submit(service: JitService, start: datetime = T0 + H) -> int:
    return service.submit(
        "crm",
        requester=PUBLISHER,
        role="Contributor",
        duration=H,
        justification="maintenance",
        starts_at=start,
        now=T0,
    ).id


def actions(db: Database, request_id: int) -> list[str]:
    with db.transaction(readonly=True) as s:
        return list(
            s.execute(
                select(AuditEvent.action)
                .where(AuditEvent.request_id == request_id)
                .order_by(AuditEvent.seq)
            ).scalars()
        )


def test_cancel_during_the_grant_call_revokes_and_retries_until_the_backend_recovers(
    db: Database,
) -> None:
    """A cancel met by an in-flight grant is a durable revoke: retried, audited, alerted."""
    service, backends = setup(db, "arm")
    arm = backends["arm"]
    rid = submit(service)
    arm.revoke_failures = 3
    arm.during_grant.append(
        lambda: service.cancel(rid, actor=PUBLISHER, now=T0 + H, reason="not needed")
    )

    service.sweep(T0 + H)  # grants; the cancel lands mid-call; the revoke fails
    view = service.get_request(rid)
    assert view.state == "auto_approved" and view.end_requested == "cancel"
    assert view.revoke_failing_since == T0 + H
    assert rid in arm.held  # the backend holds it, and jitaccess knows
    with db.transaction(readonly=True) as s:
        alerted = set(
            s.execute(
                select(OutboxMessage.recipient).where(OutboxMessage.kind == "revoke_failing")
            ).scalars()
        )
    assert alerted == {APPROVER, ADMIN}

    for minutes in (1, 3, 10):  # backoff; the third retry works
        service.sweep(T0 + H + timedelta(minutes=minutes))
    view = service.get_request(rid)
    assert (view.state, view.ended_by, view.end_reason) == ("cancelled", PUBLISHER, "not needed")
    assert view.revoke_failing_since is None
    assert arm.held == {}
    assert actions(db, rid) == [
        "submit",
        "auto_approve",
        "revoke_failed",
        "revoke_failed",
        "revoke_failed",
        "cancel",
    ]


def test_provider_switched_while_active_revokes_on_the_backend_that_granted(
    db: Database,
) -> None:
    """`apps apply` to a new provider sends the later revoke to the old backend, with its config."""
    service, backends = setup(db, "old", "new")
    rid = submit(service)
    service.sweep(T0 + H)
    assert backends["old"].held == {rid: {"tenant": "old"}}

    service.apply_apps([app_spec("new", tenant="new")], actor="test", now=T0 + H)
    assert (
        reconcile(service, T0 + H + timedelta(minutes=1), db=db, providers=service.providers) == []
    )  # both backends agree

    service.sweep(T0 + 2 * H)
    assert service.get_request(rid).state == "expired"
    assert backends["old"].held == {}
    assert backends["old"].calls == [("grant", rid), ("revoke", rid)]
    assert backends["new"].calls == []


def test_reconcile_sees_a_grant_left_on_the_old_backend(db: Database) -> None:
    """A grant the old backend still holds after its request ended is reported as an orphan."""
    service, backends = setup(db, "old", "new")
    rid = submit(service)
    service.sweep(T0 + H)
    service.apply_apps([app_spec("new", tenant="new")], actor="test", now=T0 + H)
    backends["old"].held[999] = {}  # held for no request at all
    findings = reconcile(service, T0 + H + timedelta(minutes=1), db=db, providers=service.providers)
    assert [(f.kind, f.request_id) for f in findings] == [("orphan", 999)]
    assert "(old)" in findings[0].detail
    assert rid in backends["old"].held


def test_apps_apply_moves_standing_access_with_the_publishers_and_the_backend(
    db: Database,
) -> None:
    """Removed publishers lose standing access, new ones get it, a new backend takes it over."""
    service, backends = setup(db, "old", "new")
    catalog = service.catalog
    catalog._align_standing("crm", actor="test", now=T0)
    assert [(s.principal, s.held) for s in catalog.standing("crm")] == [(PUBLISHER, True)]
    first = len(backends["old"].held)

    catalog.apply(
        [],
        [(app_spec("old", publishers=("UPUB2",), tenant="old"), None, None)],
        actor="test",
        now=T0 + H,
    )
    standing = {(s.principal, s.desired, s.held) for s in catalog.standing("crm")}
    assert standing == {(PUBLISHER, False, False), ("UPUB2", True, True)}
    assert len(backends["old"].held) == first  # one revoked, one granted

    catalog.apply(
        [],
        [(app_spec("new", publishers=("UPUB2",), tenant="new"), None, None)],
        actor="test",
        now=T0 + 2 * H,
    )
    assert backends["old"].held == {}
    assert len(backends["new"].held) == 1
    assert {(s.principal, s.desired, s.held) for s in catalog.standing("crm")} == {
        (PUBLISHER, False, False),
        ("UPUB2", True, True),
    }


@pytest.mark.postgres
def test_a_person_s_action_waits_for_a_racing_lock_instead_of_skipping(pg_url: str) -> None:
    """An approval whose window is open activates at once even if its row is locked a moment."""
    db = Database(pg_url)
    db.upgrade()
    try:
        service, backends = setup(db, "arm")
        rid = submit(service, start=T0 + H)
        engine = create_engine(normalise_url(pg_url))
        with engine.connect() as other:
            other.execute(text("BEGIN"))
            other.execute(
                text("SELECT id FROM access_requests WHERE id = :id FOR UPDATE"), {"id": rid}
            )
            release = threading.Timer(0.5, other.execute, [text("COMMIT")])
            release.start()
            started = time.monotonic()
            report = service.run_due(T0 + H, [rid])
            release.join()
        engine.dispose()
        assert time.monotonic() - started >= 0.4  # it waited for the lock
        assert report.activated == 1
        assert service.get_request(rid).state == "active"
    finally:
        db.dispose()


class SlowBackend(Backend):
    """A backend whose grant takes ``seconds`` of wall time."""

    def __init__(self, seconds: float) -> None:
        super().__init__("slow")
        self.seconds = seconds

    def grant(self, spec: GrantSpec, now: datetime) -> None:
        time.sleep(self.seconds)
        super().grant(spec, now)


def claimed_by(db: Database, request_id: int) -> str | None:
    with db.transaction(readonly=True) as s:
        return s.execute(
            select(AccessRequest.claimed_by).where(AccessRequest.id == request_id)
        ).scalar_one()


def test_a_backend_call_longer_than_the_lease_is_never_taken_over(db: Database) -> None:
    """While a slow grant is in flight its lease is renewed, so a second sweeper never
    claims the row and calls the backend again."""
    lease = timedelta(seconds=1.5)
    slow = SlowBackend(seconds=3.0)
    first, _ = make_service(db, retry=RetryPolicy(lease=lease), worker_id="first")
    second, _ = make_service(Database(db.url), retry=RetryPolicy(lease=lease), worker_id="second")
    for service in (first, second):
        service.providers.register(slow)
    first.register_app(app_spec("slow"), actor="test", now=T0)
    rid = submit(first)

    sweeping = threading.Thread(target=first.sweep, args=(T0 + H,))
    started = time.monotonic()
    sweeping.start()
    while claimed_by(db, rid) != "first" and sweeping.is_alive():
        time.sleep(0.01)  # until the first sweeper has claimed the row
    # The second sweeper's clock runs with the wall clock, past the first lease.
    while sweeping.is_alive():
        second.sweep(T0 + H + timedelta(seconds=time.monotonic() - started))
        time.sleep(0.05)
    sweeping.join()
    elapsed = time.monotonic() - started
    assert elapsed > lease.total_seconds() * 1.5, elapsed  # the lease was outlived
    assert slow.calls == [("grant", rid)], slow.calls
    assert first.get_request(rid).state == "active"
