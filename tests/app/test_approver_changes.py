"""Approvers added to or removed from a policy while requests are open: through the
real Bolt app and WebClient against the fake Slack API."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from freezegun import freeze_time

from conftest import ADMIN, APPROVER, APPROVER2, OUTSIDER, PUBLISHER, START, crowd, register, utc
from jitaccess.app.service import AppSpec
from jitaccess.domain.policy import ApprovalMode, Policy
from jitaccess.slack.blocks import ids
from jitaccess.store.db import Database
from jitaccess_sandbox.fake_slack import FakeSlack
from slack_harness import SlackWorld, now, texts

T0 = utc(START)
H = timedelta(hours=1)
NO_LONGER = "You are no longer an approver of crm; this request is decided by the current approvers"


@pytest.fixture
def world(fake_slack: FakeSlack, db: Database) -> Iterator[SlackWorld]:
    with freeze_time(START):
        yield SlackWorld(fake_slack, db)


def pending_request(world: SlackWorld) -> int:
    reply = world.say(PUBLISHER, "request crm Contributor 2h rotate the storage keys")
    assert "submitted" in reply
    [request] = world.service.list_requests(requester=PUBLISHER)[:1]
    world.deliver()
    return request.id


def config_values(approvers: list[str]) -> dict[str, object]:
    def picked(value: str) -> dict[str, object]:
        return {"type": "static_select", "selected_option": {"value": value}}

    return {
        "mode": {"mode": picked("manual")},
        "max_duration": {"max_duration": picked("8h")},
        "approvers": {"approvers": {"type": "multi_users_select", "selected_users": approvers}},
        "approval_timeout": {"approval_timeout": picked("24h")},
    }


def test_approver_added_by_config_gets_the_pending_card_and_can_approve(
    world: SlackWorld,
) -> None:
    """An approver added with /jit config gets a pending request's card and approves it."""
    register(world.service)
    rid = pending_request(world)
    assert world.fake.dms_to(OUTSIDER) == []

    world.command(ADMIN, "config crm")
    modal = world.last_modal(ADMIN)
    assert world.submit(ADMIN, modal, config_values([APPROVER, APPROVER2, OUTSIDER])).status == 200
    world.deliver()

    card = world.card_for(OUTSIDER, rid)
    shown = texts(card)
    assert "Approve" in shown and "Deny" in shown and "Contributor" in shown
    assert OUTSIDER in world.service.get_request(rid).notified_approvers
    world.click(OUTSIDER, card, ids.APPROVE)
    assert world.submit_reason(OUTSIDER, "covering for Ava").status == 200
    assert world.service.get_request(rid).decided_by == OUTSIDER
    world.deliver()
    assert f"Approved by <@{OUTSIDER}>: covering for Ava" in texts(world.card_for(APPROVER, rid))
    assert ids.APPROVE not in texts(world.card_for(OUTSIDER, rid))


def test_removed_approver_card_changes_in_place_and_their_click_is_refused(
    world: SlackWorld,
) -> None:
    """A removed approver's card says they no longer decide, has no buttons, and refuses."""
    register(world.service)
    rid = pending_request(world)
    stale = world.card_for(APPROVER2, rid)  # still on their screen, with buttons
    assert ids.APPROVE in texts(stale)
    posted = len(world.fake.calls_to("chat.postMessage"))

    world.service.set_policy("crm", actor=ADMIN, now=now(), approvers=[APPROVER])
    world.deliver()

    card = world.card_for(APPROVER2, rid)  # still one card: edited, not a new message
    assert card["ts"] == stale["ts"]
    assert NO_LONGER in texts(card)
    assert ids.APPROVE not in texts(card) and ids.DENY not in texts(card)
    assert len(world.fake.calls_to("chat.postMessage")) == posted
    assert ids.APPROVE in texts(world.card_for(APPROVER, rid))  # the others are untouched

    world.click(APPROVER2, stale, ids.APPROVE)  # the old copy of the card, still clicked
    assert "you are not one" in world.fake.ephemerals_to(APPROVER2)[-1]["text"]
    assert world.service.get_request(rid).state == "pending"


def test_approver_removed_then_added_back_gets_the_buttons_again(world: SlackWorld) -> None:
    """Removing then re-adding an approver turns their same card back into a live one."""
    register(world.service)
    rid = pending_request(world)
    world.service.set_policy("crm", actor=ADMIN, now=now(), approvers=[APPROVER])
    world.service.set_policy("crm", actor=ADMIN, now=now(), approvers=[APPROVER, APPROVER2])
    world.deliver()
    card = world.card_for(APPROVER2, rid)
    assert ids.APPROVE in texts(card) and NO_LONGER not in texts(card)


def test_apps_apply_adds_and_removes_approvers_of_pending_requests(world: SlackWorld) -> None:
    """`apps apply` swapping approvers sends the new one a card and tells the old one."""
    register(world.service)
    rid = pending_request(world)
    spec = AppSpec(
        name="crm",
        scope="/subscriptions/s1/resourceGroups/mrg-crm",
        publishers=(PUBLISHER,),
        roles=("Contributor", "Owner"),
        admins=(ADMIN,),
        policy=Policy(mode=ApprovalMode.MANUAL, approvers=(APPROVER, OUTSIDER)),
    )
    assert world.service.apply_apps([spec], actor=ADMIN, now=now()).updated == ["crm"]
    world.deliver()
    assert ids.APPROVE in texts(world.card_for(OUTSIDER, rid))
    assert NO_LONGER in texts(world.card_for(APPROVER2, rid))
    assert ids.APPROVE not in texts(world.card_for(APPROVER2, rid))


def test_removed_approver_of_active_grant_loses_the_revoke_button(world: SlackWorld) -> None:
    """In automatic mode, a removed approver's card for an active grant drops Revoke."""
    register(world.service, mode=ApprovalMode.AUTOMATIC, approvers=(APPROVER, APPROVER2))
    world.say(PUBLISHER, "request crm Owner 1h hotfix")
    world.tick()
    [request] = world.service.list_requests()
    assert request.state == "active"
    assert ids.REVOKE in texts(world.card_for(APPROVER2, request.id))
    world.service.set_policy("crm", actor=ADMIN, now=now(), approvers=[APPROVER])
    world.deliver()
    card = texts(world.card_for(APPROVER2, request.id))
    assert "You are no longer an approver of crm." in card and ids.REVOKE not in card
    assert ids.REVOKE in texts(world.card_for(APPROVER, request.id))


@pytest.mark.postgres
def test_policy_change_racing_an_approval_on_postgres_both_succeed(pg_url: str) -> None:
    """On PostgreSQL, adding an approver while another approves loses neither change."""
    from conftest import make_service
    from test_postgres import run_together

    database = Database(pg_url)
    database.upgrade()
    try:
        service, _ = make_service(database)
        register(service, publishers=crowd(8))
        for round_ in range(8):  # repeat: races are rare events
            view = service.submit(
                "crm",
                requester=crowd(8)[round_],  # one person's windows for a role may not overlap
                role="Contributor",
                duration=H,
                justification="race",
                now=T0,
                starts_at=T0 + H,
            )
            approvers = [APPROVER, APPROVER2] + ([OUTSIDER] if round_ % 2 == 0 else [])
            results = run_together(
                lambda rid=view.id: service.approve(rid, actor=APPROVER, reason="ok", now=T0),
                lambda who=approvers: service.set_policy("crm", actor=ADMIN, now=T0, approvers=who),
            )
            assert not [r for r in results if isinstance(r, Exception)], results
            assert service.get_request(view.id).state == "approved"
            assert service.get_app("crm").policy.approvers == tuple(approvers)
    finally:
        database.dispose()
