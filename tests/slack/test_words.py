"""Words a person understands (issue 19, part 3, Slack side): no raw state or mode,
automatic mode says who approved, a quorum shows its count, break-glass says who took
it and who reviewed it, every emoji shows, and /jit apps says who approves."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from freezegun import freeze_time

from conftest import ADMIN, APPROVER, APPROVER2, PUBLISHER, START, make_service, utc
from jitaccess.app.outbox import Notification, OutboxKind
from jitaccess.app.quorum import APPROVAL_RECORDED
from jitaccess.app.service import AppSpec
from jitaccess.app.views import ApprovalView
from jitaccess.domain.lifecycle import STATE_WORDS, Event, RequestState, state_words
from jitaccess.domain.policy import MODE_WORDS, ApprovalMode, Policy
from jitaccess.slack import notifier
from jitaccess.slack.blocks import cards, home, ids, markup
from jitaccess.slack.directory import SlackDirectory
from jitaccess.slack.runtime import slack_client
from jitaccess.store.db import Database
from jitaccess_sandbox import render
from jitaccess_sandbox.fake_slack import FakeSlack
from slack_harness import SlackWorld, texts
from test_card_offers import view as card_view

T0 = utc(START)
H = timedelta(hours=1)
GROUP = "SAPPROVERS"


@pytest.fixture
def world(fake_slack: FakeSlack, db: Database) -> Iterator[SlackWorld]:
    fake_slack.set_group(GROUP, [APPROVER, APPROVER2])
    with freeze_time(START):
        client = slack_client("xoxb-test-token", fake_slack.base_url)
        yield SlackWorld(fake_slack, db, directory=SlackDirectory(client))


def app(world: SlackWorld, name: str, policy: Policy) -> None:
    world.service.register_app(
        AppSpec(
            name=name,
            scope=f"/subscriptions/s1/resourceGroups/mrg-{name}",
            publishers=(PUBLISHER,),
            roles=("Contributor",),
            admins=(ADMIN,),
            policy=policy,
            provider="log",
        ),
        actor="test",
        now=T0,
    )


def note(payload: dict[str, object], request_id: int = 3) -> Notification:
    return Notification(
        1, "k", OutboxKind.REQUESTER_UPDATE.value, PUBLISHER, request_id, payload, 0
    )


# -- the one mapping ----------------------------------------------------------------------
def test_every_state_and_mode_has_plain_words() -> None:
    assert set(STATE_WORDS) == set(RequestState)
    assert set(MODE_WORDS) == set(ApprovalMode)
    for words in [*STATE_WORDS.values(), *MODE_WORDS.values()]:
        assert "_" not in words, words
    assert state_words("auto_approved") == "approved automatically"
    assert state_words("pending") == "waiting for approval"
    assert state_words("timed_out") == "timed out"
    assert state_words("some_new_state") == "some new state"  # never hidden, never raw


def test_the_status_line_uses_the_words_and_writes_times_as_told() -> None:
    pending = card_view(RequestState.PENDING, ending=False)
    assert pending.status_line(T0) == "waiting for approval"
    auto = card_view(RequestState.AUTO_APPROVED, ending=False)
    assert auto.status_line(auto.starts_at - H) == "approved automatically"
    failing = replace(
        card_view(RequestState.ACTIVE, ending=True), revoke_failing_since=auto.starts_at
    )
    # The CLI keeps calling status_line(now): a readable time, in UTC.
    assert failing.status_line(T0) == "being revoked (revoke failing since 2026-01-01 09:00 UTC)"
    # Slack passes its date tokens: each reader sees their own zone.
    assert failing.status_line(T0, at=markup.when) == (
        f"being revoked (revoke failing since {markup.when(auto.starts_at)})"
    )


# -- the requester's sentences ------------------------------------------------------------
def test_a_quorum_approval_names_the_approver_then_the_count() -> None:
    text = notifier.transition_text(
        note(
            {
                "event": APPROVAL_RECORDED,
                "to": "pending",
                "actor": APPROVER,
                "reason": "CHG-7",
                "approvals": 1,
                "required_approvals": 2,
            }
        )
    )
    assert (
        text
        == f"Request #3: <@{APPROVER}> approved (1 of 2): CHG-7; it still needs more approvals."
    )
    assert "was approved by" not in text


def test_automatic_mode_says_the_policy_approved_and_the_approvers_were_told() -> None:
    text = notifier.transition_text(note({"to": "auto_approved", "actor": "policy:crm"}))
    assert text == (
        "Request #3 was approved by the policy (automatic mode); the approvers were told."
    )
    assert "sent to the approvers" not in text


def test_an_extension_s_end_is_a_date_token() -> None:
    end = T0 + 3 * H
    text = notifier.transition_text(
        note({"event": "extension_requested", "to": "active", "new_ends_at": end.isoformat()})
    )
    assert (
        text == f"Your extension of request #3 (to {markup.when(end)}) was sent to the approvers."
    )


def test_an_unknown_state_is_said_in_words() -> None:
    assert notifier.transition_text(note({"to": "timed_out_again"})) == (
        "Request #3 is now timed out again."
    )


# -- break-glass ----------------------------------------------------------------------------
def test_a_break_glass_card_says_who_took_it_then_who_reviewed_it() -> None:
    taken = replace(
        card_view(RequestState.ACTIVE, ending=False, breakglass=True), decided_by="UPUB1"
    )
    _, body = cards.breakglass_alert(taken)
    shown = str(body)
    assert "Break-glass by <@UPUB1> · to be reviewed" in shown
    assert "Approved by" not in shown
    reviewed = replace(taken, reviewed_by=APPROVER, reviewed_at=T0, review_reason="INC-1 ok")
    for render_card in (
        lambda v: cards.breakglass_alert(v),
        lambda v: cards.requester_card(v),
        cards.feed_card,
    ):
        _, body = render_card(reviewed)
        assert f"Break-glass by <@UPUB1> · reviewed by <@{APPROVER}>: INC-1 ok" in str(body)
        assert "Approved by" not in str(body)


def test_a_break_glass_listing_names_no_approver() -> None:
    """In /jit list, /jit pending and /jit history, break-glass is tagged as such and
    never "decided by" its own requester."""
    taken = replace(
        card_view(RequestState.ACTIVE, ending=False, breakglass=True), decided_by="UPUB1"
    )
    listing = str(home.request_list("Yours", [taken], T0, empty="-"))
    assert "break-glass (INC-1), needs review" in listing
    assert "decided by" not in listing
    approved = card_view(RequestState.ACTIVE, ending=False)
    assert "decided by <@UAPP1>" in str(home.request_list("Yours", [approved], T0, empty="-"))


# -- emoji ------------------------------------------------------------------------------------
def test_every_emoji_the_app_sends_shows_in_the_sandbox() -> None:
    """The sandbox shows each shortcode as Slack does (a literal :mag: started the
    activity summary): every one the Slack adapter writes is in its emoji map."""
    source = Path(markup.__file__).parents[1]
    used = {
        name
        for path in source.rglob("*.py")
        for name in re.findall(r"(?<![\w`]):([a-z][a-z0-9_+\-]*):(?!`)", path.read_text())
        if name not in {"class", "func", "mod", "data", "meth", "attr"}
    }
    assert {"mag", "rotating_light", "large_blue_diamond"} <= used
    assert used - set(render.EMOJI) == set()
    assert render.mrkdwn(":mag: *What Pat did*") == "\U0001f50d <b>What Pat did</b>"


# -- flows ------------------------------------------------------------------------------------
def test_submitting_says_the_state_in_words(world: SlackWorld) -> None:
    app(world, "crm", Policy(ApprovalMode.MANUAL, approvers=(APPROVER, APPROVER2)))
    app(world, "erp", Policy(ApprovalMode.AUTOMATIC, approvers=(APPROVER,)))
    manual = world.say(PUBLISHER, "request crm Contributor 1h rotate")
    assert "It is waiting for approval. Waiting for one of:" in manual
    auto = world.say(PUBLISHER, "request erp Contributor 1h deploy")
    assert "It was approved by the policy (automatic mode); the approvers were told." in auto
    for raw in ("auto_approved", "It is pending"):
        assert raw not in manual + auto
    listing = world.say(PUBLISHER, "list")
    assert "waiting for approval" in listing and "approved automatically" in listing
    assert "auto_approved" not in listing


def test_a_quorum_shows_who_approved_and_the_count(world: SlackWorld) -> None:
    policy = Policy(ApprovalMode.MANUAL, approvers=(GROUP,), required_approvals=2)
    app(world, "crm", policy)
    world.say(PUBLISHER, "request crm Contributor 1h rotate")
    [view] = world.service.list_requests(requester=PUBLISHER, limit=1)
    world.deliver()
    world.click(APPROVER, world.card_for(APPROVER, view.id), ids.APPROVE)
    world.submit_reason(APPROVER, "CHG-7")
    world.deliver()
    latest = texts(world.fake.dms_to(PUBLISHER)[-1])
    assert f"Request #{view.id}: <@{APPROVER}> approved (1 of 2): CHG-7" in latest
    assert "was approved by" not in latest


def test_jit_apps_shows_the_quorum_and_the_approver_groups(world: SlackWorld) -> None:
    app(
        world,
        "crm",
        Policy(ApprovalMode.MANUAL, approvers=(GROUP, APPROVER), required_approvals=2),
    )
    app(world, "erp", Policy(ApprovalMode.AUTOMATIC, approvers=(APPROVER2,)))
    listing = world.say(PUBLISHER, "apps")
    assert (
        f"*crm*: 2 approvals required from <!subteam^{GROUP}>, <@{APPROVER}>, up to 8h" in listing
    )
    assert f"*erp*: approved automatically by the policy; approvers told: <@{APPROVER2}>" in (
        listing
    )
    assert "manual" not in listing and "automatic approval" not in listing


def test_a_revoke_under_way_names_what_is_ending_in_words(db: Database) -> None:
    service, _ = make_service(db, inline=False)
    service.register_app(
        AppSpec(
            name="crm",
            scope="/subscriptions/s1/resourceGroups/mrg-crm",
            publishers=(PUBLISHER,),
            roles=("Contributor",),
            admins=(ADMIN,),
            policy=Policy(ApprovalMode.AUTOMATIC, approvers=(APPROVER,)),
            provider="log",
        ),
        actor="test",
        now=T0,
    )
    rid = service.submit(
        "crm", requester=PUBLISHER, role="Contributor", duration=H, justification="x", now=T0
    ).id
    service.sweep(T0)
    service.revoke(rid, actor=APPROVER, reason="done", now=T0)
    with pytest.raises(Exception, match=r"being ended \(a revoke by ") as refused:
        service.revoke(rid, actor=ADMIN, reason="again", now=T0)
    assert str(refused.value) == (
        f"Request {rid} is already being ended (a revoke by {APPROVER} at 2026-11-27 10:00 UTC)"
    )
    assert f"({Event.REVOKE.value} by" not in str(refused.value)  # the raw value, before


def test_approvals_line_is_unchanged_for_the_card() -> None:
    """The approver card's progress line keeps its shape (pinned elsewhere)."""
    line = markup.approvals_line((ApprovalView(APPROVER, "ok", T0),), 2)
    assert line == f"1 of 2 approved: <@{APPROVER}> (ok)"
