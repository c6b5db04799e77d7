"""The channel feed: an application's requests posted to a Slack channel and edited in
place, through the real Bolt app and WebClient against the fake Slack API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from freezegun import freeze_time
from sqlalchemy import select

from conftest import ADMIN, APPROVER, APPROVER2, PUBLISHER, START, Cli, flat, register, utc
from jitaccess.app.outbox import Notification, OutboxKind
from jitaccess.domain.errors import RuleViolation
from jitaccess.domain.policy import ApprovalMode
from jitaccess.slack.blocks import ids, markup
from jitaccess.store.db import Database
from jitaccess.store.models import AuditEvent, OutboxMessage
from jitaccess_sandbox.fake_slack import FakeSlack
from slack_harness import SlackWorld, now, texts

T0 = utc(START)
H = timedelta(hours=1)
FEED = "C0FEED"


@pytest.fixture
def world(fake_slack: FakeSlack, db: Database) -> Iterator[SlackWorld]:
    with freeze_time(START):
        yield SlackWorld(fake_slack, db)


def with_feed(world: SlackWorld, channel: str = FEED, **kwargs: object) -> None:
    register(world.service, **kwargs)  # type: ignore[arg-type]
    world.service.set_policy("crm", actor=ADMIN, now=now(), feed_channel=channel)


def feed_rows(db: Database) -> list[OutboxMessage]:
    with db.transaction(readonly=True) as session:
        rows = session.execute(
            select(OutboxMessage)
            .where(OutboxMessage.kind == OutboxKind.FEED_CARD.value)
            .order_by(OutboxMessage.id)
        ).scalars()
        return list(rows)


def channel_calls(fake: FakeSlack, method: str, channel: str = FEED) -> int:
    return sum(1 for c in fake.calls_to(method) if c.args.get("channel") == channel)


def has_buttons(message: dict[str, object]) -> bool:
    return any(b.get("type") == "actions" for b in message["blocks"])  # type: ignore[attr-defined]


def test_a_requests_life_is_one_channel_message_updated_in_place(world: SlackWorld) -> None:
    """Submitted, approved, active, released: one channel message shows each step."""
    life_in_the_feed(world)


def test_the_feed_on_postgresql(fake_slack: FakeSlack, pg_url: str) -> None:
    """The same life, on PostgreSQL (the migration adds the columns there too)."""
    db = Database(pg_url)
    db.upgrade()
    try:
        with freeze_time(START):
            life_in_the_feed(SlackWorld(fake_slack, db))
    finally:
        db.dispose()


def life_in_the_feed(world: SlackWorld) -> None:
    fake = world.fake
    with_feed(world)
    rid = world.service.submit(
        "crm",
        requester=PUBLISHER,
        role="Contributor",
        duration=2 * H,
        justification="Rotate the storage keys after INC-1234",
        starts_at=T0 + H,
        now=now(),
    ).id
    world.deliver()
    [message] = fake.messages_in(FEED)
    shown = texts(message)
    for expected in (
        f"Access request #{rid}",
        f"<@{PUBLISHER}>",
        "Contributor",
        "mrg-crm",
        "Rotate the storage keys after INC-1234",
        "Pending approval",
        f"<@{APPROVER}>",
        "UTC",
    ):
        assert expected in shown, (expected, shown)
    assert not has_buttons(message)  # decisions stay in the approvers' DMs

    world.click(APPROVER, world.card_for(APPROVER, rid), ids.APPROVE)
    world.submit_reason(APPROVER, "Matches change CHG-77")
    world.deliver()
    [message] = fake.messages_in(FEED)
    assert f"Approved by <@{APPROVER}>: Matches change CHG-77" in texts(message)
    assert not has_buttons(message)
    # The approvers' DM cards are updated as before, alongside the feed.
    assert "Matches change CHG-77" in texts(world.card_for(APPROVER2, rid))

    with freeze_time(T0 + H):
        world.tick()
        [message] = fake.messages_in(FEED)
        assert "Active" in texts(message) and "Access granted" in texts(message)
        world.say(PUBLISHER, f"release {rid}")
        world.tick()
        [message] = fake.messages_in(FEED)
        assert world.service.get_request(rid).state == "revoked"
        # The end as a date token: each reader of the channel sees it in their own zone.
        ended = f"Ended {markup.when(T0 + H)} by <@{PUBLISHER}>"
        assert "Revoked" in texts(message) and ended in texts(message)
        assert "|2026-11-27 11:00 UTC>" in ended
    assert channel_calls(fake, "chat.postMessage") == 1
    assert channel_calls(fake, "chat.update") == 3  # approved, active, revoked
    assert all(row.delivered_at is not None for row in feed_rows(world.db))


def test_automatic_and_denied_requests_show_their_outcome(world: SlackWorld) -> None:
    """An automatic approval and a denial with its reason read the same in the channel."""
    with_feed(world)
    world.service.set_policy(
        "crm", actor=ADMIN, now=now(), mode=ApprovalMode.AUTOMATIC, approvers=[APPROVER]
    )
    auto = world.say(PUBLISHER, "request crm Owner 1h deploy hotfix")
    assert "It was approved by the policy (automatic mode); the approvers were told." in auto
    assert "auto_approved" not in auto
    world.service.set_policy("crm", actor=ADMIN, now=now(), mode=ApprovalMode.MANUAL)
    world.say(PUBLISHER, "request crm Contributor 1h read logs")
    world.deliver()
    second = world.service.list_requests(requester=PUBLISHER)[0].id
    world.click(APPROVER, world.card_for(APPROVER, second), ids.DENY)
    world.submit_reason(APPROVER, "Use the Reader role for this")
    world.tick()
    first_msg, second_msg = world.fake.messages_in(FEED)
    assert "Approved automatically by the policy" in texts(first_msg)
    assert "Active" in texts(first_msg)
    assert f"Denied by <@{APPROVER}>: Use the Reader role for this" in texts(second_msg)


def test_queued_steps_of_one_request_make_one_slack_call(world: SlackWorld) -> None:
    """Submitted and approved before the relay ran: one post shows the approval."""
    with_feed(world)
    world.say(PUBLISHER, "request crm Contributor 1h read logs")
    rid = world.service.list_requests(requester=PUBLISHER)[0].id
    world.service.approve(rid, actor=APPROVER, reason="CHG-9", now=now())
    report = world.deliver()
    assert report.superseded >= 1
    [message] = world.fake.messages_in(FEED)
    assert f"Approved by <@{APPROVER}>: CHG-9" in texts(message)
    assert channel_calls(world.fake, "chat.postMessage") == 1
    assert channel_calls(world.fake, "chat.update") == 0
    rows = feed_rows(world.db)
    assert len(rows) == 2 and all(row.settled_at is not None for row in rows)
    assert sum(row.delivered_at is not None for row in rows) == 1  # the other: superseded


def test_a_redelivered_feed_message_changes_nothing(world: SlackWorld) -> None:
    """A feed message delivered again after a crash makes no second post or edit."""
    with_feed(world)
    world.say(PUBLISHER, "request crm Contributor 1h read logs")
    world.deliver()
    [row] = feed_rows(world.db)
    calls = len(world.fake.calls)
    world.runtime.notifier.deliver(
        Notification(
            row.id, row.dedup_key, row.kind, row.recipient, row.request_id, row.payload, 1
        ),
        now(),
    )
    assert len(world.fake.calls) == calls
    assert len(world.fake.messages_in(FEED)) == 1


@pytest.mark.parametrize(
    ("private", "error"), [(False, "not_in_channel"), (True, "channel_not_found")]
)
def test_a_channel_without_the_bot_is_recorded_not_delivered(
    world: SlackWorld, private: bool, error: str
) -> None:
    """Slack's refusal is settled with what to do; the DMs still go out; invited, it posts."""
    channel = "G0SECRET" if private else FEED
    world.fake.add_channel(channel, "jit-requests", bot_member=False)
    with_feed(world, channel)
    world.say(PUBLISHER, "request crm Contributor 1h read logs")
    report = world.deliver()
    assert report.dropped == 1 and report.failed == 0
    [row] = feed_rows(world.db)
    assert row.settled_at is not None and row.delivered_at is None
    assert row.last_error is not None
    assert error in row.last_error and "/invite @jitaccess" in row.last_error
    assert world.fake.messages_in(channel) == []
    rid = world.service.list_requests(requester=PUBLISHER)[0].id
    assert world.card_for(APPROVER, rid)  # the approvers were told all the same

    world.fake.invite_bot(channel)
    world.say(PUBLISHER, "request crm Owner 1h deploy")
    world.deliver()
    [posted] = world.fake.messages_in(channel)
    assert "Owner" in texts(posted)
    # The refused request appears with its next step.
    world.click(APPROVER, world.card_for(APPROVER, rid), ids.DENY)
    world.submit_reason(APPROVER, "not today")
    world.deliver()
    second, first = world.fake.messages_in(channel)
    assert f"Access request #{rid}" in texts(first) and "not today" in texts(first)


def test_a_channel_outage_is_retried_not_dropped(world: SlackWorld) -> None:
    """A Slack error that may pass leaves the feed message queued, then it is posted."""
    with_feed(world)
    world.fake.fail_next("chat.postMessage", times=3, status=500)
    world.say(PUBLISHER, "request crm Contributor 1h read logs")
    world.deliver()
    assert any(row.delivered_at is None and row.settled_at is None for row in feed_rows(world.db))
    with freeze_time(T0 + timedelta(minutes=5)):
        world.deliver()
        world.deliver()
    assert len(world.fake.messages_in(FEED)) == 1
    assert all(row.delivered_at is not None for row in feed_rows(world.db))


def test_turning_the_feed_off_stops_new_posts(world: SlackWorld) -> None:
    """After the feed is turned off no request is posted; one already there stays current."""
    with_feed(world)
    world.say(PUBLISHER, "request crm Contributor 1h read logs")
    world.deliver()
    first = world.service.list_requests(requester=PUBLISHER)[0].id
    world.say(PUBLISHER, "request crm Owner 1h deploy")  # queued, not yet delivered
    world.service.set_policy("crm", actor=ADMIN, now=now(), feed_channel="")
    world.say(PUBLISHER, "request crm Owner 2h migrate")
    world.click(APPROVER, world.card_for(APPROVER, first), ids.APPROVE)
    world.submit_reason(APPROVER, "fine")
    report = world.deliver()
    assert report.skipped == 1  # the queued one: never started in a channel now off
    [message] = world.fake.messages_in(FEED)
    assert f"Access request #{first}" in texts(message)
    assert "Approved by" in texts(message)
    assert world.service.get_app("crm").policy.feed_channel is None


def test_jit_apps_names_the_feed_channel(world: SlackWorld) -> None:
    """/jit apps tells people where an application's requests are posted."""
    with_feed(world)
    register(world.service, "erp")
    listing = world.say(PUBLISHER, "apps")
    # Who approves (the quorum and the approvers), then the limits, then the feed.
    approvers = f"1 approval required from <@{APPROVER}>, <@{APPROVER2}>"
    assert f"*crm*: {approvers}, up to 8h, roles Contributor, Owner · feed <#{FEED}>" in listing
    assert f"*erp*: {approvers}, up to 8h, roles Contributor, Owner · you" in listing


def test_feed_channel_must_be_a_channel_id(world: SlackWorld) -> None:
    """A #name or user ID is refused with where to find the ID, and changes nothing."""
    register(world.service)
    for bad in ("#ops", "general", "UAPP1", "C0 FEED"):
        with pytest.raises(RuleViolation) as refused:
            world.service.set_policy("crm", actor=ADMIN, now=now(), feed_channel=bad)
        assert "not a Slack channel ID" in str(refused.value)
        assert "About" in str(refused.value)
    assert world.service.get_app("crm").policy.feed_channel is None
    with world.db.transaction(readonly=True) as session:
        changes = session.execute(
            select(AuditEvent).where(AuditEvent.action == "policy_changed")
        ).all()
    assert changes == []


def test_feed_changes_are_audited(world: SlackWorld) -> None:
    """Setting and clearing the feed are policy changes in the audit log."""
    register(world.service)
    world.service.set_policy("crm", actor=ADMIN, now=now(), feed_channel=" C0FEED ")
    world.service.set_policy("crm", actor=ADMIN, now=now(), feed_channel="")
    with world.db.transaction(readonly=True) as session:
        entries = list(
            session.execute(
                select(AuditEvent).where(AuditEvent.action == "policy_changed")
            ).scalars()
        )
    assert [
        (e.details["before"]["feed_channel"], e.details["after"]["feed_channel"]) for e in entries
    ] == [
        (None, FEED),
        (FEED, None),
    ]
    assert {e.actor for e in entries} == {ADMIN}


def test_config_modal_sets_and_checks_the_feed_channel(world: SlackWorld) -> None:
    """/jit config shows the feed channel, refuses a #name inline and saves an ID."""
    register(world.service)
    world.command(ADMIN, "config crm")
    modal = world.last_modal(ADMIN)
    assert "Feed channel" in texts(modal["view"])
    values = {
        "mode": {"mode": {"type": "static_select", "selected_option": {"value": "manual"}}},
        "max_duration": {
            "max_duration": {"type": "static_select", "selected_option": {"value": "8h"}}
        },
        "approvers": {"approvers": {"type": "multi_users_select", "selected_users": [APPROVER]}},
        "approval_timeout": {
            "approval_timeout": {"type": "static_select", "selected_option": {"value": "24h"}}
        },
        "feed_channel": {"feed_channel": {"type": "plain_text_input", "value": "#ops"}},
    }
    refused = json.loads(world.submit(ADMIN, modal, values).body)
    assert "not a Slack channel ID" in refused["errors"]["feed_channel"]
    assert world.service.get_app("crm").policy.approvers == (APPROVER, APPROVER2)
    values["feed_channel"]["feed_channel"]["value"] = FEED
    assert world.submit(ADMIN, modal, values).status == 200
    assert world.service.get_app("crm").policy.feed_channel == FEED
    world.command(ADMIN, "config crm")
    assert FEED in json.dumps(world.last_modal(ADMIN)["view"])


def test_cli_sets_shows_and_clears_the_feed_channel(cli: Cli, tmp_path: Path) -> None:
    """register, policy and apply take --feed-channel / feed_channel, checked the same way."""
    base = ("apps", "register", "crm", "--scope", "/s/rg", "--publisher", PUBLISHER)
    refused = cli(*base, "--admin", ADMIN, "--feed-channel", "#jit", code=1)
    assert "not a Slack channel ID" in flat(refused.stderr)
    cli(*base, "--admin", ADMIN, "--feed-channel", FEED)
    assert cli.json("apps", "show", "crm")["policy"]["feed_channel"] == FEED
    assert f"Feed channel {FEED}" in flat(cli("apps", "show", "crm").stdout)
    cli("apps", "policy", "crm", "--as", ADMIN, "--feed-channel", "")
    assert cli.json("apps", "show", "crm")["policy"]["feed_channel"] is None
    apps_file = tmp_path / "apps.yaml"
    apps_file.write_text(
        "apps:\n"
        "  - name: crm\n    scope: /s/rg\n"
        f"    publishers: [{PUBLISHER}]\n    admins: [{ADMIN}]\n"
        f"    policy: {{feed_channel: G0PRIVATE}}\n"
    )
    assert "updated: crm" in cli("apps", "apply", "-f", apps_file).stdout
    assert cli.json("apps", "show", "crm")["policy"]["feed_channel"] == "G0PRIVATE"


def test_break_glass_extension_and_quorum_show_in_the_channel(world: SlackWorld) -> None:
    """The feed says break-glass with its incident and review, a waiting extension,
    and how far a quorum has come."""
    with_feed(world)
    world.service.set_policy(
        "crm", actor=ADMIN, now=now(), breakglass=[PUBLISHER], required_approvals=2
    )
    world.say(PUBLISHER, "breakglass crm Owner 30m INC-4711 payments database is down")
    world.tick()
    [glass] = world.fake.messages_in(FEED)
    assert "Break-glass access #1" in texts(glass)
    assert "INC-4711" in texts(glass) and "needs review" in texts(glass)
    world.say(APPROVER, "ack 1 checked the incident timeline")
    world.deliver()
    assert "reviewed" in texts(world.fake.messages_in(FEED)[0])
    assert "needs review" not in texts(world.fake.messages_in(FEED)[0])

    world.say(PUBLISHER, "request crm Contributor 1h read logs")
    world.deliver()
    world.click(APPROVER, world.card_for(APPROVER, 2), ids.APPROVE)
    world.submit_reason(APPROVER, "CHG-1 is approved")
    world.deliver()
    assert f"1 of 2 approved: <@{APPROVER}> (CHG-1 is approved)" in texts(
        world.fake.messages_in(FEED)[1]
    )
    world.click(APPROVER2, world.card_for(APPROVER2, 2), ids.APPROVE)
    world.submit_reason(APPROVER2, "fine by me")
    world.tick()
    world.say(PUBLISHER, "extend 2 30m tests still running")
    world.deliver()
    assert "Extension to" in texts(world.fake.messages_in(FEED)[1])
