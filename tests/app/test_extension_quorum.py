"""Extensions obey the quorum and never overlap another request: through the service,
through Slack (button → reason modal → card text in the fake Slack) and racing on
PostgreSQL, under frozen time."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from freezegun import freeze_time
from sqlalchemy import func, select, update

from conftest import ADMIN, APPROVER, APPROVER2, OUTSIDER, PUBLISHER, START, make_service, utc
from jitaccess.app.directory import DirectoryError, StaticDirectory
from jitaccess.app.service import AppSpec, JitService
from jitaccess.domain.errors import Conflict, RuleViolation
from jitaccess.domain.policy import ApprovalMode, Policy
from jitaccess.slack.blocks import ids
from jitaccess.store.db import Database
from jitaccess.store.models import AccessRequest, AuditEvent, OutboxMessage
from jitaccess_sandbox.fake_slack import FakeSlack
from slack_harness import SlackWorld, text_value, texts
from slack_harness import select as choose

T0 = utc(START)
H = timedelta(hours=1)
M = timedelta(minutes=1)
#: Three approvers, two of whom must approve.
THREE = (APPROVER, APPROVER2, ADMIN)


def now() -> datetime:
    return datetime.now(UTC)


def register(
    service: JitService,
    *,
    mode: ApprovalMode = ApprovalMode.MANUAL,
    approvers: tuple[str, ...] = THREE,
    required: int = 2,
) -> None:
    service.register_app(
        AppSpec(
            name="crm",
            scope="/subscriptions/s1/resourceGroups/mrg-crm",
            publishers=(PUBLISHER,),
            roles=("Contributor",),
            admins=(ADMIN,),
            policy=Policy(
                mode=mode,
                approvers=approvers,
                required_approvals=required if mode is ApprovalMode.MANUAL else 1,
                max_duration=timedelta(hours=8),
            ),
        ),
        actor="test",
        now=T0,
    )


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


def active(service: JitService, settle: Any = None, **kwargs: Any) -> int:
    """A request active from T0 to T0 + 2h (approved by the quorum in manual mode);
    ``settle`` runs the sweep where the service does not (the Slack world)."""
    register(service, **kwargs)
    rid = submit(service)
    view = service.get_request(rid)
    for approver in (APPROVER, APPROVER2)[: view.required_approvals]:
        if view.approval_mode == ApprovalMode.MANUAL:
            service.approve(rid, actor=approver, reason="CHG-1", now=now())
    if settle is not None:
        settle()
    assert service.get_request(rid).state == "active"
    return rid


def actions(db: Database, rid: int) -> list[tuple[str, str | None, dict[str, Any]]]:
    with db.transaction(readonly=True) as s:
        rows = s.execute(
            select(AuditEvent).where(AuditEvent.request_id == rid).order_by(AuditEvent.seq)
        ).scalars()
        return [(r.action, r.actor, dict(r.details or {})) for r in rows]


def counts(db: Database) -> tuple[int, int]:
    """Audit entries and outbox messages: what a refusal must not change."""
    with db.transaction(readonly=True) as s:
        return (
            s.execute(select(func.count()).select_from(AuditEvent)).scalar_one(),
            s.execute(select(func.count()).select_from(OutboxMessage)).scalar_one(),
        )


# -- the quorum, through the service ------------------------------------------------


def test_extension_needs_two_different_approvers_when_the_policy_says_two(
    service: JitService,
) -> None:
    """One approval is recorded (audited with counts) but moves nothing; the second,
    from another approver, moves the end once; the requester (an approver here too)
    never counts."""
    with freeze_time(START):
        rid = active(service, approvers=(*THREE, PUBLISHER))
        service.extensions.extend(rid, actor=PUBLISHER, added=H, reason="more", now=now())
        view = service.extensions.approve(rid, actor=APPROVER, reason="CHG-2 ok", now=now())
        assert view.ends_at == T0 + 2 * H and view.extension_ends_at == T0 + 3 * H
        assert [(a.approver, a.reason) for a in view.extension_approvals] == [
            (APPROVER, "CHG-2 ok")
        ]
        recorded = [d for a, _, d in actions(service.db, rid) if a == "extension_approval_recorded"]
        assert [(d["approvals"], d["required_approvals"]) for d in recorded] == [(1, 2)]
        before = counts(service.db)
        with pytest.raises(RuleViolation, match="already approved the extension.*another"):
            service.extensions.approve(rid, actor=APPROVER, reason="again", now=now())
        with pytest.raises(RuleViolation, match="cannot approve the extension of your own"):
            service.extensions.approve(rid, actor=PUBLISHER, reason="me", now=now())
        assert counts(service.db) == before
        assert len(service.get_request(rid).extension_approvals) == 1
        view = service.extensions.approve(rid, actor=ADMIN, reason="fine", now=now())
        assert view.ends_at == T0 + 3 * H and view.extension_ends_at is None
        assert view.extension_approvals == ()
    [extend] = [(actor, d) for a, actor, d in actions(service.db, rid) if a == "extend"]
    assert extend[0] == ADMIN
    assert [a["approver"] for a in extend[1]["approvals"]] == [APPROVER, ADMIN]


def test_one_denial_denies_the_extension_and_its_approvals_go_with_it(
    service: JitService,
) -> None:
    """An approval, then a denial: denied, the end stays; the next extension starts
    from zero approvals."""
    with freeze_time(START) as clock:
        rid = active(service)
        service.extensions.extend(rid, actor=PUBLISHER, added=H, reason="more", now=now())
        service.extensions.approve(rid, actor=APPROVER, reason="ok", now=now())
        view = service.extensions.deny(rid, actor=APPROVER2, reason="not today", now=now())
        assert view.ends_at == T0 + 2 * H and view.extension_ends_at is None
        assert view.extension_approvals == ()
        clock.tick(M)
        service.extensions.extend(rid, actor=PUBLISHER, added=H, reason="again", now=now())
        view = service.extensions.approve(rid, actor=APPROVER, reason="ok", now=now())
        assert view.ends_at == T0 + 2 * H and len(view.extension_approvals) == 1


def test_a_timed_out_extension_drops_its_approvals(service: JitService) -> None:
    """Half-approved and then nobody else decides: the sweep times it out, the end
    stays, and a late second approval is refused."""
    with freeze_time(START) as clock:
        rid = active(service)
        clock.tick(30 * M)
        service.extensions.extend(rid, actor=PUBLISHER, added=H, reason="more", now=now())
        service.extensions.approve(rid, actor=APPROVER, reason="ok", now=now())
        clock.tick(2 * H)
        service.sweep(now())
        view = service.get_request(rid)
        assert view.state == "expired" and view.extension_approvals == ()
        with pytest.raises(Conflict, match="can no longer be decided"):
            service.extensions.approve(rid, actor=APPROVER2, reason="late", now=now())


def test_a_quorum_of_one_still_extends_on_the_first_approval(service: JitService) -> None:
    """The default policy (one approval) behaves as before: no progress step."""
    with freeze_time(START):
        rid = active(service, approvers=(APPROVER, APPROVER2), required=1)
        service.extensions.extend(rid, actor=PUBLISHER, added=H, reason="more", now=now())
        view = service.extensions.approve(rid, actor=APPROVER2, reason="ok", now=now())
        assert view.ends_at == T0 + 3 * H
    assert "extension_approval_recorded" not in [a for a, _, _ in actions(service.db, rid)]


# -- overlap, through the service ---------------------------------------------------


def test_extension_into_a_later_request_is_refused_when_asked(service: JitService) -> None:
    """Running into the requester's next request is refused, naming it, the cancel
    command and how much may still be added; extending up to it is fine."""
    with freeze_time(START):
        rid = active(service, mode=ApprovalMode.AUTOMATIC)
        later = submit(service, hours=1, start=T0 + 3 * H)
        before = counts(service.db)
        with pytest.raises(RuleViolation) as refused:
            service.extensions.extend(rid, actor=PUBLISHER, added=2 * H, reason="x", now=now())
        message = str(refused.value)
        assert f"would overlap request {later}" in message
        assert f"/jit cancel {later}" in message and "at most 1h" in message
        assert counts(service.db) == before
        assert service.get_request(rid).ends_at == T0 + 2 * H
        outcome = service.extensions.extend(rid, actor=PUBLISHER, added=H, reason="x", now=now())
        assert outcome.request.ends_at == T0 + 3 * H


def test_a_request_into_a_waiting_extension_is_refused_at_submission(
    service: JitService,
) -> None:
    """A window runs to its waiting extension's end: a request into it is refused."""
    with freeze_time(START):
        rid = active(service, approvers=(APPROVER, APPROVER2), required=1)
        service.extensions.extend(rid, actor=PUBLISHER, added=H, reason="more", now=now())
        before = counts(service.db)
        with pytest.raises(RuleViolation, match=f"Request {rid} already gives you this role"):
            submit(service, hours=1, start=T0 + 150 * M)
        assert counts(service.db) == before
        # After the waiting extension's end, it is back to back: allowed.
        assert submit(service, hours=1, start=T0 + 3 * H)


def test_overlap_is_checked_again_when_the_extension_is_approved(service: JitService) -> None:
    """Defence in depth: a request that overlaps the waiting extension anyway (here
    moved by hand, as a writer without the rule could) makes the approval refused,
    nothing changes, and once that request is cancelled it goes through."""
    with freeze_time(START):
        rid = active(service, approvers=(APPROVER, APPROVER2), required=1)
        service.extensions.extend(rid, actor=PUBLISHER, added=H, reason="more", now=now())
        later = submit(service, hours=1, start=T0 + 3 * H)
        with service.db.transaction() as s:
            s.execute(
                update(AccessRequest)
                .where(AccessRequest.id == later)
                .values(starts_at=T0 + 150 * M, ends_at=T0 + 210 * M)
            )
        before = counts(service.db)
        with pytest.raises(RuleViolation) as refused:
            service.extensions.approve(rid, actor=APPROVER, reason="ok", now=now())
        message = str(refused.value)
        assert f"would overlap request {later}" in message and "deny this extension" in message
        assert counts(service.db) == before
        view = service.get_request(rid)
        assert view.ends_at == T0 + 2 * H and view.extension_ends_at == T0 + 3 * H
        service.cancel(later, actor=PUBLISHER, now=now())
        assert service.extensions.approve(rid, actor=APPROVER, reason="ok", now=now()).ends_at == (
            T0 + 3 * H
        )


# -- racing clicks on PostgreSQL ----------------------------------------------------


@pytest.mark.postgres
def test_racing_extension_approvals_move_the_end_exactly_once_on_postgres(pg_url: str) -> None:
    """Two approvers click at once, with none or one approval given: the end moves
    once (never twice), every approval is counted or refused, never lost."""
    db = Database(pg_url)
    db.upgrade()
    try:
        service, _ = make_service(db, inline=False)
        with freeze_time(START):
            register(service, approvers=(APPROVER, APPROVER2, ADMIN, OUTSIDER))
        for given in (0, 1, 0, 1):
            with freeze_time(START):
                rid = submit(service, start=T0 + H + len(service.list_requests()) * 3 * H)
                service.approve(rid, actor=APPROVER, reason="a", now=T0)
                service.approve(rid, actor=APPROVER2, reason="b", now=T0)
            at = service.get_request(rid).starts_at + 10 * M
            service.sweep(at)
            service.extensions.extend(rid, actor=PUBLISHER, added=H, reason="more", now=at)
            if given:
                service.extensions.approve(rid, actor=APPROVER, reason="first", now=at)
            barrier = threading.Barrier(2)
            outcomes: list[str] = []

            def click(
                who: str,
                rid: int = rid,
                at: datetime = at,
                barrier: threading.Barrier = barrier,
                outcomes: list[str] = outcomes,
            ) -> None:
                barrier.wait()
                try:
                    service.extensions.approve(rid, actor=who, reason="go", now=at)
                    outcomes.append("counted")
                except Conflict as exc:
                    outcomes.append(f"refused: {exc}")

            threads = [threading.Thread(target=click, args=(w,)) for w in (ADMIN, OUTSIDER)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            view = service.get_request(rid)
            assert view.ends_at == view.starts_at + 3 * H, (given, outcomes)
            assert view.extension_ends_at is None
            done = [a for a, _, _ in actions(db, rid)]
            assert done.count("extend") == 1
            if given:
                assert sorted(o.split(":")[0] for o in outcomes) == ["counted", "refused"]
                assert "no extension waiting" in "".join(outcomes)
            else:
                assert outcomes == ["counted", "counted"]
                assert done.count("extension_approval_recorded") == 1
    finally:
        db.dispose()


# -- through Slack -------------------------------------------------------------------


@pytest.fixture
def world(fake_slack: FakeSlack, db: Database) -> Iterator[SlackWorld]:
    with freeze_time(START):
        yield SlackWorld(fake_slack, db)


def extension_card(world: SlackWorld, approver: str, rid: int) -> dict[str, Any]:
    [card] = [
        m
        for m in world.fake.dms_to(approver)
        if f"Extension of request #{rid}" in json.dumps(m.get("blocks"))
    ]
    return card


def ask_to_extend(world: SlackWorld, rid: int, duration: str, reason: str) -> Any:
    world.click(PUBLISHER, world.requester_cards(PUBLISHER, rid)[-1], ids.EXTEND)
    modal = world.last_modal(PUBLISHER)
    assert modal["view"]["callback_id"] == ids.EXTEND_MODAL, modal["view"]
    values = {"duration": {"duration": choose(duration)}, "reason": {"reason": text_value(reason)}}
    return world.submit(PUBLISHER, modal, values)


def approve_on_card(world: SlackWorld, approver: str, rid: int, reason: str) -> None:
    world.click(approver, extension_card(world, approver, rid), ids.APPROVE_EXTENSION)
    assert world.last_modal(approver)["view"]["callback_id"] == ids.DECISION_MODAL
    assert world.submit_reason(approver, reason).status == 200
    world.deliver()


def test_extension_cards_show_the_quorum_and_who_approved_loses_the_buttons(
    world: SlackWorld,
) -> None:
    """Two of three: after the first approval every card and the requester's status
    say "1 of 2 approved: @ava (reason)"; the one who approved has no buttons and a
    second click is refused; the second approval extends."""
    rid = active(world.service, world.tick)
    world.deliver()
    assert ask_to_extend(world, rid, "1h", "tests still running").status == 200
    world.deliver()
    first = texts(extension_card(world, APPROVER, rid))
    assert "2 approvers must approve" in first and ids.APPROVE_EXTENSION in first

    approve_on_card(world, APPROVER, rid, "CHG-7 covers it")
    assert world.service.get_request(rid).ends_at == T0 + 2 * H
    progress = f"1 of 2 approved: <@{APPROVER}> (CHG-7 covers it)"
    mine = texts(extension_card(world, APPROVER, rid))
    assert progress in mine and ids.APPROVE_EXTENSION not in mine
    assert "You approved" in mine
    for other in (APPROVER2, ADMIN):
        theirs = texts(extension_card(world, other, rid))
        assert progress in theirs and ids.APPROVE_EXTENSION in theirs
    # Pat's step reply says it still needs approvals; their one card shows who approved.
    card = world.requester_card(PUBLISHER, rid)
    status = texts(world.thread(PUBLISHER, card)[-1])
    assert "still needs more approvals" in status and progress in texts(card)

    before = counts(world.db)
    stale = {"blocks": extension_card(world, APPROVER2, rid)["blocks"]}  # a card with buttons
    world.click(APPROVER, {**extension_card(world, APPROVER, rid), **stale}, ids.APPROVE_EXTENSION)
    refused = json.dumps(world.last_modal(APPROVER))
    assert "Nothing to do" in refused and "already approved the extension" in refused
    assert counts(world.db)[0] == before[0]  # nothing audited

    approve_on_card(world, APPROVER2, rid, "fine by me")
    assert world.service.get_request(rid).ends_at == T0 + 3 * H
    for approver in THREE:
        done = texts(extension_card(world, approver, rid))  # edited in place
        assert "Extended* · 2 of 2 approved" in done and "(fine by me)" in done
        assert ids.APPROVE_EXTENSION not in done
    assert "was extended" in texts(world.fake.dms_to(PUBLISHER)[-1])


def test_extending_into_a_later_request_is_refused_in_the_form(world: SlackWorld) -> None:
    """The Extend form says inline which request it would overlap and what to do;
    nothing changes."""
    rid = active(world.service, world.tick, mode=ApprovalMode.AUTOMATIC)
    with freeze_time(START):
        later = submit(world.service, hours=1, start=T0 + 3 * H)
    world.deliver()
    response = ask_to_extend(world, rid, "2h", "migration runs long")
    errors = json.loads(response.body)["errors"]
    assert f"overlap request {later}" in errors["duration"]
    assert f"/jit cancel {later}" in errors["duration"] and "at most 1h" in errors["duration"]
    assert world.service.get_request(rid).ends_at == T0 + 2 * H


def test_an_old_extension_card_cannot_decide_a_later_extension(world: SlackWorld) -> None:
    """Approve on a card for an extension that is over refuses the one waiting now."""
    rid = active(world.service, world.tick, required=1)
    world.deliver()
    ask_to_extend(world, rid, "30m", "a bit more")
    world.deliver()
    old_card = extension_card(world, APPROVER, rid)  # as a stale client still shows it
    world.click(APPROVER2, extension_card(world, APPROVER2, rid), ids.DENY_EXTENSION)
    world.submit_reason(APPROVER2, "not today")
    world.deliver()
    ask_to_extend(world, rid, "5h", "much more")
    world.deliver()
    before = counts(world.db)
    world.click(APPROVER, old_card, ids.APPROVE_EXTENSION)
    world.submit_reason(APPROVER, "sure")
    world.deliver()
    view = world.service.get_request(rid)
    assert view.ends_at == T0 + 2 * H and view.extension_ends_at == T0 + 7 * H
    assert counts(world.db)[0] == before[0]  # nothing audited
    told = [
        json.dumps(c.args) for c in world.fake.calls if "earlier extension" in json.dumps(c.args)
    ]
    assert told and "decide on its own card" in told[-1]
    assert APPROVER in told[-1]  # told to the approver who clicked


def test_an_approval_by_someone_who_left_the_group_no_longer_counts(
    db: Database,
) -> None:
    """Quorum of two from a group: the first approver leaves; one more is still needed."""
    groups = StaticDirectory({"SOPS": [APPROVER, APPROVER2, ADMIN]})
    service = make_service(db, directory=groups)[0]
    with freeze_time(START):
        register(service, approvers=("SOPS",), required=2)
        rid = submit(service)
        service.approve(rid, actor=APPROVER, reason="ok", now=now())
        groups.groups["SOPS"] = (APPROVER2, ADMIN)
        assert service.approve(rid, actor=APPROVER2, reason="ok", now=now()).state == "pending"
        assert service.approve(rid, actor=ADMIN, reason="ok", now=now()).state in (
            "approved",
            "active",
        )
        # The same holds for an extension of it.
        service.sweep(now() + H)
        service.extensions.extend(rid, actor=PUBLISHER, added=H, reason="more", now=now() + H)
        service.extensions.approve(rid, actor=APPROVER2, reason="ok", now=now() + H)
        groups.groups["SOPS"] = (ADMIN, OUTSIDER)
        view = service.extensions.approve(rid, actor=ADMIN, reason="ok", now=now() + H)
        assert view.extension_ends_at is not None, "a former member's approval counted"


def test_slack_failing_to_list_a_group_refuses_an_extension_decision(
    db: Database,
) -> None:
    """If Slack cannot say who is in the group, the decision is refused; nothing changes."""

    class Unreachable(StaticDirectory):
        broken = False

        def members(self, group_id: str) -> tuple[str, ...]:
            if self.broken:
                raise DirectoryError("Slack said ratelimited")
            return super().members(group_id)

    groups = Unreachable({"SOPS": [APPROVER, APPROVER2]})
    service = make_service(db, directory=groups)[0]
    with freeze_time(START):
        rid = active(service, approvers=("SOPS",), required=1)
        service.extensions.extend(rid, actor=PUBLISHER, added=H, reason="more", now=now())
        groups.broken = True
        before = counts(service.db)
        with pytest.raises(RuleViolation, match="Couldn't check who is in the approver group"):
            service.extensions.approve(rid, actor=APPROVER, reason="ok", now=now())
        refusal = service.extensions.refusal(rid, APPROVER, "approve_extension")
        assert refusal is not None and "Couldn't check" in str(refusal)
        assert counts(service.db) == before


def test_a_timed_out_extension_takes_the_buttons_off_every_card_it_sent(
    db: Database,
) -> None:
    """Group members' cards are updated too when an extension times out."""
    groups = StaticDirectory({"SOPS": [APPROVER, APPROVER2]})
    service = make_service(db, directory=groups)[0]
    with freeze_time(START):
        rid = active(service, approvers=("SOPS",), required=1)
        service.extensions.extend(rid, actor=PUBLISHER, added=H, reason="more", now=now())
        deadline = service.get_request(rid).extension_deadline_at
    assert deadline is not None
    service.sweep(deadline)
    with service.db.transaction(readonly=True) as s:
        told = {
            m.recipient
            for m in s.scalars(select(OutboxMessage).where(OutboxMessage.kind == "extension_card"))
            if (m.payload or {}).get("event") == "extension_timed_out"
        }
    assert told == {APPROVER, APPROVER2}
