"""Extend without a gap: the same grant's end moves, under frozen time."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time
from sqlalchemy import select

from conftest import (
    ADMIN,
    APPROVER,
    APPROVER2,
    OUTSIDER,
    PUBLISHER,
    START,
    Cli,
    flat,
    make_service,
    register,
    utc,
)
from fakes.webhook_receiver import WebhookReceiver
from jitaccess.app.audit_log import verify
from jitaccess.app.service import AppSpec, JitService
from jitaccess.domain.errors import Conflict, RuleViolation
from jitaccess.domain.policy import ApprovalMode
from jitaccess.providers.log import LogProvider
from jitaccess.providers.webhook import WebhookProvider
from jitaccess.store.db import Database
from jitaccess.store.models import AuditEvent, LogGrant, OutboxMessage

T0 = utc(START)
H = timedelta(hours=1)
M = timedelta(minutes=1)
SECRET = "extend-secret"


def now() -> datetime:
    return datetime.now(UTC)


def submit(service: JitService, *, hours: float = 2, start: datetime | None = None) -> int:
    return service.submit(
        "crm",
        requester=PUBLISHER,
        role="Contributor",
        duration=timedelta(hours=hours),
        justification="rotate the keys",
        starts_at=start,
        now=now(),
    ).id


def active_request(service: JitService, *, mode: ApprovalMode, hours: float = 2) -> int:
    register(service, mode=mode)
    rid = submit(service, hours=hours)
    if mode is ApprovalMode.MANUAL:
        service.approve(rid, actor=APPROVER, reason="CHG-1", now=now())
    assert service.get_request(rid).state == "active"
    return rid


def audit_actions(service: JitService, rid: int) -> list[tuple[str, str | None]]:
    with service.db.transaction(readonly=True) as s:
        rows = s.execute(
            select(AuditEvent).where(AuditEvent.request_id == rid).order_by(AuditEvent.seq)
        ).scalars()
        return [(r.action, r.actor) for r in rows]


def log_grant(service: JitService, rid: int) -> LogGrant:
    with service.db.transaction(readonly=True) as s:
        row = s.get(LogGrant, (rid, False))
        assert row is not None
        s.expunge(row)
        return row


def outbox(service: JitService, rid: int, kind: str) -> list[OutboxMessage]:
    with service.db.transaction(readonly=True) as s:
        found = list(
            s.execute(
                select(OutboxMessage)
                .where(OutboxMessage.request_id == rid, OutboxMessage.kind == kind)
                .order_by(OutboxMessage.id)
            ).scalars()
        )
        for row in found:
            s.expunge(row)
        return found


def test_automatic_extension_moves_the_end_and_never_revokes_at_the_old_end(
    service: JitService,
) -> None:
    """Automatic mode extends at once; the log grant is not revoked at the old end."""
    with freeze_time(START) as clock:
        rid = active_request(service, mode=ApprovalMode.AUTOMATIC)
        clock.tick(90 * M)
        outcome = service.extensions.extend(
            rid, actor=PUBLISHER, added=H, reason="migration runs long", now=now()
        )
        assert outcome.status == "extended"
        assert outcome.request.ends_at == T0 + 3 * H
        clock.tick(45 * M)  # past the old end (T0+2h)
        service.sweep(now())
        assert service.get_request(rid).state == "active"
        assert log_grant(service, rid).revoke_calls == 0
        clock.tick(45 * M)  # past the new end
        service.sweep(now())
        assert service.get_request(rid).state == "expired"
        grant = log_grant(service, rid)
        assert (grant.grant_calls, grant.revoke_calls) == (1, 1)
    actions = audit_actions(service, rid)
    assert ("extend", "policy:automatic") in actions
    with service.db.transaction(readonly=True) as s:
        entry = s.execute(
            select(AuditEvent).where(AuditEvent.request_id == rid, AuditEvent.action == "extend")
        ).scalar_one()
        assert entry.details["old_ends_at"] == (T0 + 2 * H).isoformat()
        assert entry.details["new_ends_at"] == (T0 + 3 * H).isoformat()
        assert entry.reason == "migration runs long"


def test_extension_beyond_the_maximum_is_refused_and_changes_nothing(
    service: JitService,
) -> None:
    """The whole window, counted from the original start, stays within the maximum."""
    with freeze_time(START):
        rid = active_request(service, mode=ApprovalMode.AUTOMATIC, hours=6)
        before = service.get_request(rid)
        with pytest.raises(RuleViolation) as refused:
            service.extensions.extend(rid, actor=PUBLISHER, added=3 * H, reason="more", now=now())
        message = str(refused.value)
        assert "maximum of 8h" in message and "at most 2h can still be added" in message
        after = service.get_request(rid)
        assert after.ends_at == before.ends_at and after.version == before.version
        assert "extend" not in [a for a, _ in audit_actions(service, rid)]


def test_only_the_requester_may_extend_and_only_an_open_request(service: JitService) -> None:
    """Someone else's request, a pending one and a finished one are refused with a reason."""
    with freeze_time(START) as clock:
        register(service)
        pending = submit(service)
        with pytest.raises(RuleViolation, match="only an approved or active request"):
            service.extensions.extend(pending, actor=PUBLISHER, added=H, reason="x", now=now())
        service.approve(pending, actor=APPROVER, reason="ok", now=now())
        with pytest.raises(RuleViolation, match="Only the requester may extend"):
            service.extensions.extend(pending, actor=OUTSIDER, added=H, reason="x", now=now())
        with pytest.raises(RuleViolation, match="A reason is required"):
            service.extensions.extend(pending, actor=PUBLISHER, added=H, reason="  ", now=now())
        clock.tick(3 * H)
        service.sweep(now())
        with pytest.raises(RuleViolation, match="expired"):
            service.extensions.extend(pending, actor=PUBLISHER, added=H, reason="x", now=now())


def test_manual_extension_is_approved_with_a_reason_and_moves_the_end(
    service: JitService, log_provider: LogProvider
) -> None:
    """Manual mode: approvers get an extension card; one approval moves ends_at."""
    with freeze_time(START) as clock:
        rid = active_request(service, mode=ApprovalMode.MANUAL)
        clock.tick(H)
        outcome = service.extensions.extend(
            rid, actor=PUBLISHER, added=H, reason="tests still running", now=now()
        )
        assert outcome.status == "pending"
        assert outcome.request.ends_at == T0 + 2 * H
        assert outcome.request.extension_ends_at == T0 + 3 * H
        cards = outbox(service, rid, "extension_card")
        assert {c.recipient for c in cards} == {APPROVER, APPROVER2}
        with pytest.raises(Conflict, match="already has an extension"):
            service.extensions.extend(rid, actor=PUBLISHER, added=H, reason="x", now=now())
        with pytest.raises(RuleViolation, match="A reason is required"):
            service.extensions.approve(rid, actor=APPROVER, reason="", now=now())
        view = service.extensions.approve(rid, actor=APPROVER2, reason="CHG-2", now=now())
        assert view.ends_at == T0 + 3 * H and view.extension_ends_at is None
        clock.tick(75 * M)  # past the old end
        service.sweep(now())
        assert service.get_request(rid).state == "active"
        assert log_grant(service, rid).revoke_calls == 0
    assert ("extension_requested", PUBLISHER) in audit_actions(service, rid)
    assert ("extend", APPROVER2) in audit_actions(service, rid)
    assert verify(service.db).problems == []  # the chain holds the extension's entries


def test_denied_extension_leaves_the_window_and_tells_the_requester(
    service: JitService,
) -> None:
    """A denial keeps the old end; the requester gets a status message saying so."""
    with freeze_time(START) as clock:
        rid = active_request(service, mode=ApprovalMode.MANUAL)
        service.extensions.extend(rid, actor=PUBLISHER, added=H, reason="more", now=now())
        with pytest.raises(RuleViolation, match="approvers may approve extensions"):
            service.extensions.approve(rid, actor=PUBLISHER, reason="me", now=now())
        view = service.extensions.deny(rid, actor=APPROVER, reason="not today", now=now())
        assert view.ends_at == T0 + 2 * H and view.extension_ends_at is None
        updates = outbox(service, rid, "requester_update")
        assert updates[-1].payload["event"] == "extension_denied"
        assert updates[-1].payload["reason"] == "not today"
        clock.tick(2 * H)
        service.sweep(now())
        assert service.get_request(rid).state == "expired"


def test_undecided_extension_times_out_at_the_current_end(db: Database) -> None:
    """No decision: the sweep times the extension out (at the end at the latest)."""
    service, log_provider = make_service(db)
    with freeze_time(START) as clock:
        rid = active_request(service, mode=ApprovalMode.MANUAL)
        clock.tick(30 * M)
        service.extensions.extend(rid, actor=PUBLISHER, added=H, reason="more", now=now())
        assert service.get_request(rid).extension_deadline_at == T0 + 2 * H
        clock.tick(90 * M)
        service.sweep(now())
        view = service.get_request(rid)
        assert view.state == "expired" and view.extension_ends_at is None
        assert ("extension_timed_out", "system") in audit_actions(service, rid)
        with pytest.raises(Conflict, match="is expired: its extension can no longer be decided"):
            service.extensions.approve(rid, actor=APPROVER, reason="late", now=now())


def test_racing_extension_approvals_decide_once(pg_url: str) -> None:
    """Two approvers click at once (PostgreSQL row lock): one wins, the other is told."""
    db = Database(pg_url)
    db.upgrade()
    try:
        service, _ = make_service(db)
        with freeze_time(START):
            rid = active_request(service, mode=ApprovalMode.MANUAL)
            service.extensions.extend(rid, actor=PUBLISHER, added=H, reason="more", now=now())
            at = now()
        results: list[str] = []
        barrier = threading.Barrier(2)

        def decide(who: str) -> None:
            barrier.wait()
            try:
                service.extensions.approve(rid, actor=who, reason=f"by {who}", now=at)
                results.append("won")
            except Conflict as exc:
                results.append(str(exc))

        threads = [threading.Thread(target=decide, args=(w,)) for w in (APPROVER, APPROVER2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results.count("won") == 1
        assert any("no extension waiting" in r for r in results)
        assert service.get_request(rid).ends_at == T0 + 3 * H
        assert [a for a, _ in audit_actions(service, rid)].count("extend") == 1
    finally:
        db.dispose()


def test_overlapping_request_is_refused_pointing_at_extend(service: JitService) -> None:
    """A second request for the same role and scope that overlaps is refused; a later
    one, back to back, is accepted."""
    with freeze_time(START):
        rid = active_request(service, mode=ApprovalMode.AUTOMATIC)
        with pytest.raises(RuleViolation) as refused:
            submit(service, hours=1, start=T0 + H)
        assert f"/jit extend {rid} DURATION" in str(refused.value)
        assert len(service.list_requests(requester=PUBLISHER)) == 1
        later = submit(service, hours=1, start=T0 + 2 * H)
        assert service.get_request(later).state == "auto_approved"


def test_overlap_is_by_scope_not_application_name(service: JitService) -> None:
    """Another application on the same resource group counts as the same scope."""
    with freeze_time(START):
        rid = active_request(service, mode=ApprovalMode.AUTOMATIC)
        scope = service.get_app("crm").scope
        service.register_app(
            AppSpec(name="crm2", scope=scope, publishers=(PUBLISHER,), roles=("Contributor",)),
            actor="test",
            now=now(),
        )
        with pytest.raises(RuleViolation, match=f"Request {rid} already gives you"):
            service.submit(
                "crm2",
                requester=PUBLISHER,
                role="contributor",
                duration=H,
                justification="x",
                now=now(),
            )


@pytest.fixture
def webhook_service(db: Database) -> Iterator[tuple[JitService, WebhookReceiver]]:
    with WebhookReceiver(SECRET, clock=lambda: now().timestamp()) as rx:
        service, _ = make_service(db)
        service.providers.register(WebhookProvider())
        service.register_app(
            AppSpec(
                name="crm",
                scope="/subscriptions/s1/resourceGroups/mrg-crm",
                publishers=(PUBLISHER,),
                roles=("Contributor",),
                admins=(ADMIN,),
                provider="webhook",
                provider_config={"url": rx.url, "secret": SECRET},
            ),
            actor="test",
            now=T0,
        )
        yield service, rx


def test_webhook_hears_one_extend_event_and_no_revoke_until_the_new_end(
    webhook_service: tuple[JitService, WebhookReceiver],
) -> None:
    """The receiver gets a signed extend with the new ends_at; revoke only at the new end."""
    service, rx = webhook_service
    with freeze_time(START) as clock:
        rid = submit(service)
        clock.tick(H)
        service.extensions.extend(rid, actor=PUBLISHER, added=H, reason="more", now=now())
        assert rx.actions(rid) == ["grant", "extend"]
        assert rx.held_ends_at(rid) == (T0 + 3 * H).isoformat()
        extend_call = rx.calls[-1]
        assert extend_call.body["idempotency_key"] == f"extend:{rid}:{(T0 + 3 * H).isoformat()}"
        clock.tick(90 * M)  # past the old end
        service.sweep(now())
        assert rx.actions(rid) == ["grant", "extend"]
        clock.tick(31 * M)  # past the new end
        service.sweep(now())
        assert rx.actions(rid) == ["grant", "extend", "revoke"]
    assert rx.rejected == []
    assert ("backend_extended", "system") in audit_actions(service, rid)


def test_failing_extend_call_is_retried_before_the_old_end(
    webhook_service: tuple[JitService, WebhookReceiver],
) -> None:
    """The backend refuses the extend: the grant stays, the sweep retries until it lands."""
    service, rx = webhook_service
    with freeze_time(START) as clock:
        rid = submit(service)
        clock.tick(H)
        rx.mode = "error"
        service.extensions.extend(rid, actor=PUBLISHER, added=H, reason="more", now=now())
        view = service.get_request(rid)
        assert view.state == "active" and view.attempts == 1 and view.last_error
        assert rx.actions(rid) == ["grant"]
        rx.mode = "ok"
        clock.tick(30 * timedelta(seconds=1))
        service.sweep(now())
        assert rx.actions(rid) == ["grant", "extend"]
        assert service.get_request(rid).attempts == 0
    assert ("extend_failed", "system") in audit_actions(service, rid)


def test_each_approved_extension_reaches_the_webhook_before_the_approval_returns(
    webhook_service: tuple[JitService, WebhookReceiver],
) -> None:
    """Inline (the CLI), an approval returns only once the receiver holds the new end.
    (How long that takes is measured by bench.azure_extend, never asserted here.)"""
    service, rx = webhook_service
    service.set_policy("crm", actor=ADMIN, now=T0, mode=ApprovalMode.MANUAL, approvers=[APPROVER])
    with freeze_time(START) as clock:
        rid = service.submit(
            "crm",
            requester=PUBLISHER,
            role="Contributor",
            duration=15 * M,
            justification="migration",
            now=now(),
        ).id
        service.approve(rid, actor=APPROVER, reason="ok", now=now())
        for _ in range(3):
            clock.tick(M)
            service.extensions.extend(rid, actor=PUBLISHER, added=M, reason="more", now=now())
            wanted = service.get_request(rid).extension_ends_at
            assert wanted is not None and rx.held_ends_at(rid) != wanted.isoformat()
            service.extensions.approve(rid, actor=APPROVER, reason="ok", now=now())
            assert rx.held_ends_at(rid) == wanted.isoformat()
    assert rx.actions(rid) == ["grant", "extend", "extend", "extend"]


def test_cli_extends_and_decides_extensions(cli: Cli) -> None:
    """`requests extend`, `approve-extension`: the same rules, exit 1 on a refusal."""
    with freeze_time(START):
        cli(
            "apps", "register", "ops", "--scope", "/subscriptions/s1/resourceGroups/mrg-ops",
            "--publisher", PUBLISHER, "--admin", ADMIN, "--mode", "manual",
            "--approver", APPROVER,
        )  # fmt: skip
        rid = cli.json(
            "requests", "submit", "ops", "--as", PUBLISHER, "--role", "Contributor",
            "--duration", "2h", "--reason", "deploy",
        )["id"]  # fmt: skip
        cli("requests", "approve", rid, "--as", APPROVER, "--reason", "ok")
        refused = cli(
            "requests", "extend", rid, "--as", PUBLISHER, "--duration", "7h", "--reason", "x",
            code=1,
        )  # fmt: skip
        assert "at most 6h can still be added" in flat(refused.stderr)
        asked = cli(
            "requests", "extend", rid, "--as", PUBLISHER, "--duration", "1h", "--reason", "more",
        ).stdout  # fmt: skip
        assert "waits for the approvers" in flat(asked)
        decided = cli.json(
            "requests", "approve-extension", rid, "--as", APPROVER, "--reason", "CHG-3"
        )
    assert decided["ends_at"] == (T0 + 3 * H).isoformat()
    assert decided["state"] == "active"


def test_extension_before_the_start_is_granted_with_the_new_end(
    webhook_service: tuple[JitService, WebhookReceiver],
) -> None:
    """Extended before the window opens: one grant carrying the new end, no extend call."""
    service, rx = webhook_service
    with freeze_time(START) as clock:
        rid = submit(service, start=T0 + H)
        view = service.extensions.extend(rid, actor=PUBLISHER, added=H, reason="more", now=now())
        assert view.request.state == "auto_approved" and rx.actions(rid) == []
        clock.move_to(T0 + H)
        service.sweep(now())
        assert rx.actions(rid) == ["grant"]
        assert rx.held_ends_at(rid) == (T0 + 4 * H).isoformat()


def test_racing_identical_submissions_make_one_request(pg_url: str) -> None:
    """A double submit on PostgreSQL: exactly one request, the other refused."""
    db = Database(pg_url)
    db.upgrade()
    try:
        service, _ = make_service(db)
        register(service, mode=ApprovalMode.AUTOMATIC)
        barrier = threading.Barrier(2)
        outcomes: list[str] = []

        def ask() -> None:
            barrier.wait()
            try:
                service.submit(
                    "crm",
                    requester=PUBLISHER,
                    role="Contributor",
                    duration=H,
                    justification="double click",
                    starts_at=T0 + H,
                    now=T0,
                )
                outcomes.append("ok")
            except RuleViolation as exc:
                outcomes.append(str(exc))

        for _ in range(5):  # repeat: races are rare events
            outcomes.clear()
            for request in service.list_requests(requester=PUBLISHER, state="auto_approved"):
                service.cancel(request.id, actor=PUBLISHER, now=T0)  # the last round's
            threads = [threading.Thread(target=ask) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert outcomes.count("ok") == 1, outcomes
            assert any("extend it instead" in o for o in outcomes)
    finally:
        db.dispose()


def test_two_extensions_in_the_same_instant_are_both_recorded(service: JitService) -> None:
    """A double extension at one instant extends twice; it never fails on a duplicate key."""
    with freeze_time(START):
        rid = active_request(service, mode=ApprovalMode.AUTOMATIC)
        for _ in range(2):
            outcome = service.extensions.extend(
                rid, actor=PUBLISHER, added=30 * M, reason="one more run", now=now()
            )
            assert outcome.status == "extended"
        assert service.get_request(rid).ends_at == T0 + 3 * H
    assert [a for a, _ in audit_actions(service, rid)].count("extend") == 2
    assert len(outbox(service, rid, "requester_update")) >= 2
