"""The request lifecycle end to end through the service, under frozen time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time
from sqlalchemy import func, select

from conftest import ADMIN, APPROVER, APPROVER2, OUTSIDER, PUBLISHER, START, register, utc
from jitaccess.app.service import JitService
from jitaccess.domain.errors import Conflict, NotFound, RuleViolation
from jitaccess.domain.policy import ApprovalMode
from jitaccess.providers.log import LogProvider
from jitaccess.store.models import AuditEvent, OutboxMessage

T0 = utc(START)
H = timedelta(hours=1)


def now() -> datetime:
    return datetime.now(UTC)


def submit(
    service: JitService,
    *,
    start: datetime | None = None,
    hours: float = 2,
    app: str = "crm",
    who: str = PUBLISHER,
    role: str = "Contributor",
) -> int:
    return service.submit(
        app,
        requester=who,
        role=role,
        duration=timedelta(hours=hours),
        justification="rotate the keys",
        starts_at=start,
        now=now(),
    ).id


def audit_trail(service: JitService, request_id: int) -> list[tuple[str, str | None, str | None]]:
    with service.db.transaction(readonly=True) as s:
        rows = s.execute(
            select(AuditEvent).where(AuditEvent.request_id == request_id).order_by(AuditEvent.seq)
        ).scalars()
        return [(r.action, r.from_state, r.to_state) for r in rows]


def test_manual_request_is_granted_at_start_and_revoked_at_end(
    service: JitService, log_provider: LogProvider
) -> None:
    with freeze_time(START) as clock:
        register(service)
        rid = submit(service, start=T0 + 30 * timedelta(minutes=1))
        assert service.get_request(rid).state == "pending"

        clock.tick(timedelta(minutes=5))
        view = service.approve(rid, actor=APPROVER, reason="change ticket CHG-1", now=now())
        assert (view.state, view.decided_by, view.decision_reason) == (
            "approved",
            APPROVER,
            "change ticket CHG-1",
        )
        assert service.sweep(now()).transitions == 0
        assert log_provider.held() == []

        clock.move_to(T0 + timedelta(minutes=30))
        assert service.sweep(now()).activated == 1
        view = service.get_request(rid)
        assert view.state == "active" and view.holds_access(now())
        assert [(g.request_id, g.role, g.principal) for g in log_provider.held()] == [
            (rid, "Contributor", PUBLISHER)
        ]

        clock.move_to(T0 + timedelta(minutes=150))
        assert service.sweep(now()).expired == 1
        view = service.get_request(rid)
        assert view.state == "expired" and view.ended_at == now()
        assert log_provider.held() == []

    assert audit_trail(service, rid) == [
        ("submit", None, "pending"),
        ("approve", "pending", "approved"),
        ("activate", "approved", "active"),
        ("expire", "active", "expired"),
    ]


def test_automatic_mode_approves_at_once_and_still_notifies_approvers(
    service: JitService, log_provider: LogProvider
) -> None:
    with freeze_time(START):
        register(service, mode=ApprovalMode.AUTOMATIC, approvers=(APPROVER,))
        rid = submit(service)
        view = service.get_request(rid)
        assert view.state == "active"  # start defaulted to now: granted straight away
        assert view.decided_by == "policy:automatic"
        assert len(log_provider.held()) == 1
    assert [a for a, *_ in audit_trail(service, rid)] == ["submit", "auto_approve", "activate"]
    with service.db.transaction(readonly=True) as s:
        cards = (
            s.execute(
                select(OutboxMessage.payload["to"]).where(
                    OutboxMessage.kind == "approver_card", OutboxMessage.recipient == APPROVER
                )
            )
            .scalars()
            .all()
        )
    assert {str(c).strip('"') for c in cards} >= {"pending", "auto_approved"}


def test_pending_request_times_out_at_the_approval_deadline(service: JitService) -> None:
    with freeze_time(START) as clock:
        register(service)
        rid = submit(service, start=T0 + 48 * H, hours=2)  # timeout (24h) comes first
        clock.move_to(T0 + 24 * H - timedelta(seconds=1))
        service.sweep(now())
        assert service.get_request(rid).state == "pending"
        clock.move_to(T0 + 24 * H)
        assert service.sweep(now()).timed_out == 1
        assert service.get_request(rid).state == "timed_out"
        with pytest.raises(Conflict, match="has already timed out"):
            service.approve(rid, actor=APPROVER, reason="late", now=now())


def test_pending_request_times_out_when_its_window_ends_before_the_timeout(
    service: JitService,
) -> None:
    with freeze_time(START) as clock:
        register(service)
        submit(service, hours=1)  # window ends after 1h, timeout would be 24h
        clock.move_to(T0 + H)
        assert service.sweep(now()).timed_out == 1


def test_approval_after_the_deadline_but_before_the_sweep_is_a_timeout(
    service: JitService,
) -> None:
    with freeze_time(START) as clock:
        register(service)
        rid = submit(service, hours=1)
        clock.move_to(T0 + 2 * H)
        with pytest.raises(Conflict, match="timed out .* submit a new request"):
            service.approve(rid, actor=APPROVER, reason="sorry, late", now=now())
        assert service.get_request(rid).state == "timed_out"


def test_request_approved_after_its_start_is_active_until_its_original_end(
    service: JitService,
) -> None:
    with freeze_time(START) as clock:
        register(service)
        rid = submit(service, hours=2)  # starts now
        clock.tick(timedelta(minutes=40))
        view = service.approve(rid, actor=APPROVER, reason="ok", now=now())
        assert view.state == "active"
        assert view.ends_at == T0 + 2 * H


def test_deny_records_who_and_why_and_grants_nothing(
    service: JitService, log_provider: LogProvider
) -> None:
    with freeze_time(START):
        register(service)
        rid = submit(service)
        view = service.deny(rid, actor=APPROVER2, reason="use the read-only role", now=now())
        assert (view.state, view.decided_by, view.decision_reason) == (
            "denied",
            APPROVER2,
            "use the read-only role",
        )
        assert log_provider.held() == []


def test_only_listed_approvers_decide_and_never_on_their_own_request(
    service: JitService,
) -> None:
    with freeze_time(START):
        register(service, approvers=(APPROVER, PUBLISHER))
        rid = submit(service)
        with pytest.raises(RuleViolation, match="you are not one"):
            service.approve(rid, actor=OUTSIDER, reason="sure", now=now())
        with pytest.raises(RuleViolation, match="cannot approve your own request"):
            service.approve(rid, actor=PUBLISHER, reason="sure", now=now())
        with pytest.raises(RuleViolation, match="reason is required"):
            service.approve(rid, actor=APPROVER, reason="  ", now=now())
        assert service.get_request(rid).state == "pending"


def test_second_decision_is_told_who_won(service: JitService) -> None:
    with freeze_time(START):
        register(service)
        rid = submit(service, start=T0 + H)
        service.approve(rid, actor=APPROVER, reason="ticket 42", now=now())
        with pytest.raises(Conflict, match="already approved by UAPP1 .*: ticket 42"):
            service.deny(rid, actor=APPROVER2, reason="no", now=now())
        assert service.get_request(rid).decided_by == APPROVER


def test_requester_cancels_before_start_only(service: JitService) -> None:
    with freeze_time(START) as clock:
        register(service)
        pending = submit(service, start=T0 + H)
        approved = submit(service, start=T0 + H, role="Owner")  # overlapping: another role
        service.approve(approved, actor=APPROVER, reason="ok", now=now())
        with pytest.raises(RuleViolation, match=r"Only the requester \(UPUB1\) may cancel"):
            service.cancel(pending, actor=APPROVER, now=now())
        assert service.cancel(pending, actor=PUBLISHER, now=now()).state == "cancelled"
        assert service.cancel(approved, actor=PUBLISHER, now=now()).state == "cancelled"
        clock.move_to(T0 + 2 * H)
        assert service.sweep(now()).activated == 0  # the cancelled one is never granted
        with pytest.raises(Conflict, match="already cancelled"):
            service.cancel(pending, actor=PUBLISHER, now=now())


def test_release_ends_own_access_early(service: JitService, log_provider: LogProvider) -> None:
    with freeze_time(START) as clock:
        register(service, mode=ApprovalMode.AUTOMATIC, approvers=())
        rid = submit(service)
        clock.tick(timedelta(minutes=20))
        with pytest.raises(RuleViolation, match="Only the requester"):
            service.release(rid, actor=ADMIN, now=now())
        view = service.release(rid, actor=PUBLISHER, now=now())
        assert (view.state, view.ended_by) == ("revoked", PUBLISHER)
        assert "released" in (view.end_reason or "")
        assert log_provider.held() == []


def test_approver_or_admin_revokes_early_with_a_reason(
    service: JitService, log_provider: LogProvider
) -> None:
    with freeze_time(START):
        register(service, mode=ApprovalMode.AUTOMATIC, approvers=(APPROVER,))
        first, second = submit(service), submit(service, role="Owner")
        with pytest.raises(RuleViolation, match="approvers and consumer admins may revoke"):
            service.revoke(first, actor=PUBLISHER, reason="x", now=now())
        with pytest.raises(RuleViolation, match="reason is required"):
            service.revoke(first, actor=APPROVER, reason="", now=now())
        a = service.revoke(first, actor=APPROVER, reason="incident over", now=now())
        b = service.revoke(second, actor=ADMIN, reason="audit finding", now=now())
        assert (a.state, a.ended_by, a.end_reason) == ("revoked", APPROVER, "incident over")
        assert (b.state, b.ended_by) == ("revoked", ADMIN)
        assert log_provider.held() == []


def test_policy_change_mid_flight_does_not_alter_decided_or_pending_requests(
    service: JitService,
) -> None:
    with freeze_time(START) as clock:
        register(service, max_duration=8 * H)
        decided = submit(service, start=T0 + H, hours=6)
        service.approve(decided, actor=APPROVER, reason="ok", now=now())
        pending = submit(service, start=T0 + H, hours=6, role="Owner")
        with pytest.raises(RuleViolation, match="consumer admins may change"):
            service.set_policy("crm", actor=APPROVER, now=now(), max_duration=H)
        service.set_policy(
            "crm", actor=ADMIN, now=now(), max_duration=H, mode=ApprovalMode.AUTOMATIC
        )
        assert service.get_request(decided).ends_at == T0 + 7 * H
        assert service.get_request(pending).approval_mode == "manual"
        with pytest.raises(RuleViolation, match="maximum of 1h"):
            submit(service, hours=2)
        clock.move_to(T0 + H)
        service.sweep(now())
        assert service.get_request(decided).state == "active"
        assert service.get_request(decided).ends_at == T0 + 7 * H


def test_jit_disabled_app_refuses_every_request(service: JitService) -> None:
    with freeze_time(START):
        register(service, jit=False)
        with pytest.raises(
            RuleViolation,
            match="JIT is disabled for crm: the publisher already has permanent access",
        ):
            submit(service)
        assert service.list_requests() == []


def test_unknown_names_are_reported(service: JitService) -> None:
    with pytest.raises(NotFound, match="No application named 'nope'"):
        service.submit(
            "nope", requester=PUBLISHER, role="Owner", duration=H, justification="x", now=T0
        )
    with pytest.raises(NotFound, match="No request 999"):
        service.approve(999, actor=APPROVER, reason="x", now=T0)


def test_every_transition_queues_its_notifications_exactly_once(service: JitService) -> None:
    with freeze_time(START) as clock:
        register(service)
        rid = submit(service)
        service.approve(rid, actor=APPROVER, reason="ok", now=now())
        clock.move_to(T0 + 3 * H)
        service.sweep(now())
        service.sweep(now())
    with service.db.transaction(readonly=True) as s:
        messages = s.execute(select(OutboxMessage)).scalars().all()
        transitions = s.execute(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.request_id == rid)
        ).scalar_one()
    keys = [m.dedup_key for m in messages]
    assert len(keys) == len(set(keys))
    # each transition: one message for the requester and one card per approver
    assert len([m for m in messages if m.kind != "ending_soon"]) == transitions * 3
    # plus one reminder, due 15 minutes before the end of the 2-hour window
    [reminder] = [m for m in messages if m.kind == "ending_soon"]
    assert (reminder.recipient, reminder.available_at) == (
        PUBLISHER,
        T0 + 2 * H - timedelta(minutes=15),
    )


def test_the_transition_log_names_a_new_requests_first_state(
    service: JitService, caplog: pytest.LogCaptureFixture
) -> None:
    """A submission logs `request N new -> pending`, not `None -> pending`."""
    import logging

    with freeze_time(START):
        register(service)
        caplog.set_level(logging.INFO, logger="jitaccess.service")
        rid = submit(service, start=T0 + timedelta(minutes=30))
        service.approve(rid, actor=APPROVER, reason="CHG-1", now=now())
    lines = [r.getMessage() for r in caplog.records if r.name == "jitaccess.service"]
    assert f"request {rid} new -> pending by {PUBLISHER}" in lines
    assert f"request {rid} pending -> approved by {APPROVER}" in lines
    assert not [line for line in lines if "None" in line]
    [first] = [r for r in caplog.records if getattr(r, "to_state", None) == "pending"]
    assert first.from_state is None  # JSON logs keep the structured value
