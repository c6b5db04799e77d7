"""Quorum: a policy may require several approvers to approve; one denial denies, the
requester never counts, and the approval reaching the quorum approves exactly once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from freezegun import freeze_time
from sqlalchemy import func, select

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
    utc,
)
from jitaccess.app.service import AppSpec, JitService
from jitaccess.domain.errors import Conflict, RuleViolation
from jitaccess.domain.policy import ApprovalMode, Policy
from jitaccess.slack.blocks import ids
from jitaccess.slack.principals import SLACK_PRINCIPALS
from jitaccess.store.db import Database
from jitaccess.store.models import Approval, AuditEvent, OutboxMessage
from jitaccess_sandbox.fake_slack import FakeSlack
from slack_harness import SlackWorld, find_button, texts

T0 = utc(START)
H = timedelta(hours=1)
#: Three approvers, two of whom must approve.
THREE = (APPROVER, APPROVER2, ADMIN)


def register_quorum(
    service: JitService, *, approvers: tuple[str, ...] = THREE, required: int = 2
) -> None:
    service.register_app(
        AppSpec(
            name="crm",
            scope="/subscriptions/s1/resourceGroups/mrg-crm",
            publishers=(PUBLISHER,),
            roles=("Contributor",),
            admins=(ADMIN,),
            policy=Policy(
                mode=ApprovalMode.MANUAL, approvers=approvers, required_approvals=required
            ),
        ),
        actor="test",
        now=T0,
    )


def submit(service: JitService, *, slot: int = 0) -> int:
    """A request for two hours; each ``slot`` is a later window, so they never overlap."""
    view = service.submit(
        "crm",
        requester=PUBLISHER,
        role="Contributor",
        duration=2 * H,
        justification="rotate keys",
        starts_at=T0 + H + slot * 2 * H,
        now=T0,
    )
    return view.id


def counts(db: Database) -> tuple[int, int, int]:
    """Approvals, audit entries and outbox messages: what a refusal must not change."""
    with db.transaction(readonly=True) as s:
        return (
            s.execute(select(func.count()).select_from(Approval)).scalar_one(),
            s.execute(select(func.count()).select_from(AuditEvent)).scalar_one(),
            s.execute(select(func.count()).select_from(OutboxMessage)).scalar_one(),
        )


@pytest.fixture
def world(fake_slack: FakeSlack, db: Database) -> Iterator[SlackWorld]:
    with freeze_time(START):
        yield SlackWorld(fake_slack, db)


def approve_on_card(world: SlackWorld, approver: str, rid: int, reason: str) -> None:
    response = world.click(approver, world.card_for(approver, rid), ids.APPROVE)
    assert response.status == 200
    result = world.submit_reason(approver, reason)
    assert result.status == 200 and not result.body, result.body
    world.deliver()


def test_two_of_three_approve_through_slack_and_every_card_shows_the_progress(
    world: SlackWorld,
) -> None:
    """The first approval keeps the request pending and every card says "1 of 2 approved"."""
    register_quorum(world.service)
    world.say(PUBLISHER, "request crm Contributor 2h rotate keys")
    [rid] = [r.id for r in world.service.list_requests()]
    world.deliver()
    assert "2 approvers must approve" in texts(world.card_for(APPROVER, rid))

    approve_on_card(world, APPROVER, rid, "change CHG-1 is approved")
    assert world.service.get_request(rid).state == "pending"
    progress = f"1 of 2 approved: <@{APPROVER}> (change CHG-1 is approved)"
    for other in (APPROVER2, ADMIN):
        card = world.card_for(other, rid)
        assert progress in texts(card)
        find_button(card["blocks"], ids.APPROVE)  # still theirs to decide
    mine = world.card_for(APPROVER, rid)
    assert progress in texts(mine) and "You approved" in texts(mine)
    with pytest.raises(AssertionError):
        find_button(mine["blocks"], ids.APPROVE)  # nothing left for Ava to click
    # Pat's one card shows the progress; the step is a quiet reply in its thread.
    card = world.requester_card(PUBLISHER, rid)
    assert progress in texts(card)
    step = world.thread(PUBLISHER, card)[-1]
    assert f"<@{APPROVER}> approved (1 of 2)" in texts(step), texts(step)
    assert "still needs more approvals" in texts(step)

    approve_on_card(world, APPROVER2, rid, "fine by me")
    view = world.service.get_request(rid)
    assert view.state == "approved" and view.decided_by == APPROVER2
    done = texts(world.card_for(ADMIN, rid))
    assert f"Approved by <@{APPROVER2}>: fine by me" in done
    assert f"2 of 2 approved: <@{APPROVER}> (change CHG-1 is approved), <@{APPROVER2}>" in done


def test_one_denial_after_an_approval_denies(service: JitService) -> None:
    """A denial decides at once, whatever approvals were given before it."""
    register_quorum(service)
    rid = submit(service)
    service.approve(rid, actor=APPROVER, reason="ok", now=T0)
    view = service.deny(rid, actor=APPROVER2, reason="not during the freeze", now=T0)
    assert view.state == "denied" and view.decided_by == APPROVER2
    assert [a.approver for a in view.approvals] == [APPROVER]
    with pytest.raises(Conflict, match="already denied"):
        service.approve(rid, actor=ADMIN, reason="late", now=T0)


def test_the_same_approver_approving_twice_is_refused_and_changes_nothing(
    service: JitService, db: Database
) -> None:
    """Nobody counts twice toward a quorum; the second click says so."""
    register_quorum(service)
    rid = submit(service)
    service.approve(rid, actor=APPROVER, reason="ok", now=T0)
    before = counts(db)
    with pytest.raises(RuleViolation, match="You already approved request .*another approver"):
        service.approve(rid, actor=APPROVER, reason="again", now=T0)
    assert counts(db) == before
    assert service.get_request(rid).state == "pending"
    assert service.decision_refusal(rid, APPROVER, "approve") is not None
    assert [v.id for v in service.pending_for(APPROVER)] == []  # not waiting on Ava now
    assert [v.id for v in service.pending_for(APPROVER2)] == [rid]


def test_the_requester_never_counts(service: JitService, db: Database) -> None:
    """A requester among the approvers cannot approve, nor make up the numbers."""
    register_quorum(service, approvers=(PUBLISHER, APPROVER), required=2)
    before = counts(db)
    with pytest.raises(RuleViolation) as refused:
        submit(service)
    assert "needs 2 approvals but only 1 approver other than you" in str(refused.value)
    assert "consumer admins" in str(refused.value)
    assert counts(db) == before

    service.set_policy("crm", actor=ADMIN, now=T0, approvers=(PUBLISHER, APPROVER, APPROVER2))
    rid = submit(service)
    with pytest.raises(RuleViolation, match="cannot approve your own request"):
        service.approve(rid, actor=PUBLISHER, reason="me", now=T0)


def test_the_quorum_is_the_one_in_force_when_the_request_was_made(service: JitService) -> None:
    """Raising the quorum later does not move the goalposts of a pending request."""
    register_quorum(service, required=1)
    rid = submit(service)
    service.set_policy("crm", actor=ADMIN, now=T0, required_approvals=3)
    assert service.approve(rid, actor=APPROVER, reason="ok", now=T0).state == "approved"
    assert service.get_app("crm").policy.required_approvals == 3


def test_approvals_short_of_the_quorum_are_audited(service: JitService, db: Database) -> None:
    """Each approval is in the audit log with its reason; the deciding one lists all."""
    register_quorum(service)
    rid = submit(service)
    service.approve(rid, actor=APPROVER, reason="first", now=T0)
    service.approve(rid, actor=ADMIN, reason="second", now=T0)
    with db.transaction(readonly=True) as s:
        rows = s.execute(
            select(AuditEvent).where(AuditEvent.request_id == rid).order_by(AuditEvent.seq)
        ).scalars()
        entries = [(e.action, e.actor, e.reason, e.details.get("approvals")) for e in rows]
    assert entries[1] == ("approval_recorded", APPROVER, "first", 1)
    assert entries[2][:3] == ("approve", ADMIN, "second")
    assert entries[2][3] == [
        {"approver": APPROVER, "reason": "first"},
        {"approver": ADMIN, "reason": "second"},
    ]


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (Policy(ApprovalMode.MANUAL, approvers=(APPROVER,), required_approvals=2), "add approvers"),
        (Policy(ApprovalMode.MANUAL, approvers=(APPROVER,), required_approvals=0), "at least 1"),
        (
            Policy(ApprovalMode.MANUAL, approvers=("X123",)),
            "is not a Slack user ID nor a user group ID",
        ),
        (Policy(ApprovalMode.MANUAL, approvers=("s0lower",)), r"user group ID \(like S0123ABCD"),
    ],
)
def test_a_quorum_too_high_or_an_invalid_approver_is_refused(policy: Policy, message: str) -> None:
    """The policy says what to change."""
    with pytest.raises(RuleViolation, match=message):
        policy.validated(SLACK_PRINCIPALS)


def test_cli_sets_and_refuses_a_quorum(cli: Cli) -> None:
    """`apps policy --required-approvals` sets it; one too many is refused with the fix."""
    cli(
        "apps", "register", "crm", "--scope", "/subscriptions/s/resourceGroups/mrg",
        "--publisher", PUBLISHER, "--admin", ADMIN, "--mode", "manual",
        "--approver", APPROVER, "--approver", APPROVER2, "--required-approvals", "2",
    )  # fmt: skip
    assert cli.json("apps", "show", "crm")["policy"]["required_approvals"] == 2
    refused = cli(
        "apps", "policy", "crm", "--as", ADMIN, "--required-approvals", "3", code=1
    )  # fmt: skip
    assert "only 2 approvers are listed" in flat(refused.stdout + refused.stderr)
    assert cli.json("apps", "show", "crm")["policy"]["required_approvals"] == 2
    shown = flat(cli("apps", "show", "crm").stdout)
    assert "Required approvals 2" in shown


def test_yaml_apply_takes_required_approvals(cli: Cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`apps apply` reads `required_approvals` beside the approvers."""
    path = tmp_path / "apps.yaml"
    path.write_text(
        f"""
apps:
  - name: crm
    scope: /subscriptions/s/resourceGroups/mrg
    publishers: [{PUBLISHER}]
    admins: [{ADMIN}]
    policy:
      mode: manual
      approvers: [{APPROVER}, {APPROVER2}, {OUTSIDER}]
      required_approvals: 3
"""
    )
    cli("apps", "apply", "-f", path)
    assert cli.json("apps", "show", "crm")["policy"]["required_approvals"] == 3


@pytest.mark.postgres
def test_racing_approvals_reach_the_quorum_exactly_once_on_postgres(pg_url: str) -> None:
    """Two approvers clicking at once: approved once, both approvals kept or one refused."""
    db = Database(pg_url)
    db.upgrade()
    try:
        service, _ = make_service(db, inline=False)
        register_quorum(service, approvers=(APPROVER, APPROVER2, ADMIN, OUTSIDER), required=2)
        for slot in range(5):
            rid = submit(service, slot=slot)
            service.approve(rid, actor=APPROVER, reason="first", now=T0)
            start = threading.Barrier(2)
            outcomes: list[str] = []

            def click(
                actor: str,
                rid: int = rid,
                start: threading.Barrier = start,
                outcomes: list[str] = outcomes,
            ) -> None:
                start.wait()
                try:
                    outcomes.append(service.approve(rid, actor=actor, reason="go", now=T0).state)
                except Conflict as exc:
                    outcomes.append(f"refused: {exc}")

            threads = [threading.Thread(target=click, args=(a,)) for a in (APPROVER2, ADMIN)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert sorted(o.split(":")[0] for o in outcomes) == ["approved", "refused"], outcomes
            view = service.get_request(rid)
            assert view.state == "approved" and len(view.approvals) == 2
            with db.transaction(readonly=True) as s:
                approves = s.execute(
                    select(func.count())
                    .select_from(AuditEvent)
                    .where(AuditEvent.request_id == rid, AuditEvent.action == "approve")
                ).scalar_one()
            assert approves == 1
    finally:
        db.dispose()
