"""Every time Slack shows is in the reader's own zone (issue 19, part 2).

Every flow runs through the real Bolt app and WebClient against the fake Slack; every
payload Slack was sent (posts, edits, ephemerals, views, response_url bodies, acks) is
then scanned: a clock time or timestamp may appear in mrkdwn only inside a
``<!date^…>`` token (which Slack formats in each reader's zone), and never in
plain_text (headers, buttons, modal titles and errors), where Slack formats nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from freezegun import freeze_time

from conftest import ADMIN, APPROVER, APPROVER2, PUBLISHER, START, register, utc
from jitaccess.app.outbox import Notification, OutboxKind
from jitaccess.app.service import AppSpec
from jitaccess.domain.errors import Moment, RuleViolation
from jitaccess.domain.policy import ApprovalMode, Policy
from jitaccess.providers.base import GrantSpec, HeldGrant, ProviderError
from jitaccess.slack.blocks import ids, markup
from jitaccess.store.db import Database
from jitaccess_sandbox.fake_slack import FakeSlack
from slack_harness import SlackWorld, bare_times, now, select, shown_texts, time_problems
from test_card_offers import view as card_view
from test_escaping import Hostile, run_every_flow

T0 = utc(START)
H = timedelta(hours=1)
M = timedelta(minutes=1)


@pytest.fixture
def world(fake_slack: FakeSlack, db: Database) -> Iterator[SlackWorld]:
    with freeze_time(START):
        yield SlackWorld(fake_slack, db)


# -- the scanner ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "Ends 18:32 UTC",
        "(to 2026-12-07 18:32 UTC)",
        "since 2026-12-07T18:32:00+00:00",
        "at 6:32 PM",
        "until Mon 07 Dec 19:32 CET",
        "sent 2026-12-07",
    ],
)
def test_the_scanner_flags_a_bare_time_in_mrkdwn_and_plain_text(text: str) -> None:
    assert bare_times(text, mrkdwn=True)
    assert bare_times(text, mrkdwn=False)


def test_the_scanner_passes_date_tokens_and_durations_in_mrkdwn_only() -> None:
    token = markup.when(utc("2026-12-07 18:32"))
    assert token == "<!date^1796668320^{date_short_pretty} {time}|2026-12-07 18:32 UTC>"
    assert bare_times(f"Ends {token} (2h 15m, 1 of 2 approved)", mrkdwn=True) == []
    # In plain_text Slack formats nothing: the token, fallback and all, shows as written.
    assert bare_times(f"Ends {token}", mrkdwn=False)
    assert bare_times("Until the end of the window (2h 15m)", mrkdwn=False) == []


def test_the_scanner_reads_every_kind_of_payload(world: SlackWorld) -> None:
    """A bare time in a post, a response_url body or a modal's ack errors is found."""
    world.runtime.app.client.chat_postMessage(channel=PUBLISHER, text="ends 18:32 UTC")
    acks = [json.dumps({"response_action": "errors", "errors": {"start": "from 10:00"}})]
    problems = time_problems(world.fake, acks)
    assert any("chat.postMessage text" in p and "18:32" in p for p in problems), problems
    assert any("ack.errors.start" in p and "10:00" in p for p in problems), problems


# -- every flow -------------------------------------------------------------------------
def test_every_flow_shows_times_only_as_date_tokens(world: SlackWorld) -> None:
    """Request (command and form), approve, deny, cancel, release, extend and its
    decisions, revoke, time out, break-glass and its review, the listings, /jit apps,
    the feed and the App Home: no bare time anywhere Slack shows text."""
    h = Hostile(world, "CHG-7 rotate the keys")
    run_every_flow(h)
    assert time_problems(world.fake, h.acks) == []
    shown = shown_texts(world.fake, h.acks)
    assert sum("<!date^" in text for _, text, _ in shown) >= 50  # the times are there


class FailingRevokes:
    """A backend that grants but cannot revoke (a revoke that keeps failing)."""

    name = "flaky"

    def grant(self, spec: GrantSpec, now: datetime) -> None:
        return None

    def revoke(self, spec: GrantSpec, now: datetime) -> None:
        raise ProviderError("flaky answered 503")

    def list_grants(self, scope: str, config: object) -> list[HeldGrant]:
        return []


def _app(world: SlackWorld, name: str, policy: Policy, provider: str = "log") -> None:
    world.service.register_app(
        AppSpec(
            name=name,
            scope=f"/subscriptions/s1/resourceGroups/mrg-{name}",
            publishers=(PUBLISHER,),
            roles=("Contributor", "Owner"),
            admins=(ADMIN,),
            policy=policy,
            provider=provider,
        ),
        actor="test",
        now=T0,
    )


def test_quorum_automatic_reminder_expiry_revoke_failing_and_the_rest(
    world: SlackWorld,
) -> None:
    """The flows the other walk does not take: a quorum of two, automatic mode, the
    15-minute reminder and the expiry, a revoke that keeps failing (alerts, Home,
    /jit list), the activity summary, /jit help and config, and the inline errors of
    the request form and the extension form."""
    fake, acks = world.fake, []
    world.service.providers.register(FailingRevokes())
    _app(world, "crm", Policy(ApprovalMode.MANUAL, approvers=(APPROVER, APPROVER2)))
    world.service.set_policy("crm", actor=ADMIN, now=T0, required_approvals=2)
    _app(world, "erp", Policy(ApprovalMode.AUTOMATIC, approvers=(APPROVER,)))
    _app(world, "flaky", Policy(ApprovalMode.AUTOMATIC, approvers=(APPROVER,)), "flaky")

    # A quorum of two: the first approval on the card, the second by command.
    world.say(PUBLISHER, "request crm Contributor 2h rotate the keys")
    [quorum] = world.service.list_requests(requester=PUBLISHER, limit=1)
    world.deliver()
    world.click(APPROVER, world.card_for(APPROVER, quorum.id), ids.APPROVE)
    world.submit_reason(APPROVER, "matches CHG-7")
    world.deliver()
    world.say(APPROVER2, f"approve {quorum.id} fine by me")
    world.tick()
    assert world.service.get_request(quorum.id).state == "active"
    # Extending past the window's limit is refused on the form, inline (plain text).
    world.click(PUBLISHER, world.requester_card(PUBLISHER, quorum.id), ids.EXTEND)
    modal = world.last_modal(PUBLISHER)
    too_long = {"duration": {"duration": select("8h")}, "reason": {"reason": {"value": "more"}}}
    acks.append(world.submit(PUBLISHER, modal, too_long).body)
    # A second request overlapping the first is refused on the form, inline.
    world.command(PUBLISHER, "request")
    acks.append(
        world.submit_request(
            PUBLISHER, app="crm", role="Contributor", duration="1h", justification="again"
        ).body
    )
    assert "at most 6h can still be added" in acks[0]  # inline, a duration
    # The overlap is found by the write: its refusal is a message, with a date token.
    refusal = "Request 1 already gives you this role here until <!date^"
    assert any(refusal in text for _, text, _ in shown_texts(fake))

    # Automatic mode, and a grant whose revoke keeps failing.
    world.say(PUBLISHER, "request erp Owner 1h deploy the hotfix")
    world.say(PUBLISHER, "request flaky Owner 1h look at the logs")
    [flaky] = world.service.list_requests(app="flaky")
    world.tick()
    world.say(APPROVER, f"revoke {flaky.id} done early")
    for minutes in (0, 5, 10):
        with freeze_time(T0 + minutes * M):
            world.tick()
    assert world.service.get_request(flaky.id).revoke_failing_since is not None
    world.home_opened(APPROVER, "Ev-failing")
    world.say(PUBLISHER, "list")
    world.say(ADMIN, "pending")

    # The reminder 15 minutes before the end, then the end.
    with freeze_time(T0 + 2 * H - 15 * M):
        world.tick()
    with freeze_time(T0 + 2 * H):
        world.tick()
        assert world.service.get_request(quorum.id).state == "expired"
        world.home_opened(PUBLISHER, "Ev-ended")

    # The activity summary of the first request.
    summary = {
        "window_start": T0.isoformat(),
        "window_end": (T0 + 2 * H).isoformat(),
        "operations_total": 2,
        "failures_total": 1,
        "resources_total": 1,
        "operations": [["Microsoft.Storage/storageAccounts/regenerateKey/action", 2]],
        "resources": ["stcrm"],
        "failures": [{"at": (T0 + H).isoformat(), "operation": "regenerateKey", "resource": "st"}],
    }
    note = Notification(
        0,
        "summary-1",
        OutboxKind.ACTIVITY_SUMMARY.value,
        PUBLISHER,
        quorum.id,
        {"summary": summary, "sha256": "ab" * 32},
        0,
    )
    world.runtime.notifier.deliver(note, now())

    # /jit help and the policy form.
    world.say(PUBLISHER, "help")
    world.command(ADMIN, "config crm")
    assert world.last_modal(ADMIN)["view"]["callback_id"] == ids.CONFIG_MODAL

    assert time_problems(fake, acks) == []
    dms = json.dumps(fake.dms_to(PUBLISHER))
    assert "approved (1 of 2)" in dms and "ends <!date^" in dms  # the steps were shown


def test_an_error_with_a_time_reads_in_each_reader_s_zone() -> None:
    """A refusal naming a time: a date token in mrkdwn (replies), a duration from now in
    plain_text (a modal's inline error), UTC text for the CLI."""
    error = RuleViolation("Request 4 already gives you this role here until ", Moment(T0 + 2 * H))
    assert markup.mention_users(error).endswith(markup.when(T0 + 2 * H))
    assert markup.plain_message(error, T0 + 15 * M).endswith("until in 1h45m")
    assert str(error).endswith("until 2026-11-27 12:00 UTC")
    assert markup.relative(T0 - 90 * M, T0) == "1h30m ago"
    assert markup.relative(T0 + timedelta(seconds=20), T0) == "now"


def test_a_window_on_one_day_shows_its_end_as_a_time_only() -> None:
    view = card_view("active", ending=False)  # 2026-01-01 09:00 to 11:00 UTC
    shown = markup.window(view)
    start, end = int(view.starts_at.timestamp()), int(view.ends_at.timestamp())
    assert shown == (
        f"<!date^{start}^{{date_short_pretty}} {{time}}|2026-01-01 09:00 UTC> – "
        f"<!date^{end}^{{time}}|11:00 UTC> (2h)"
    )
    overnight = replace(view, ends_at=view.starts_at + 20 * H)
    assert "^{date_short_pretty} {time}|2026-01-02 05:00 UTC> (20h)" in markup.window(overnight)


def test_a_date_token_links_only_a_web_address() -> None:
    moment = utc("2026-12-07 18:32")
    assert markup.date_token(moment, "{date_num}", link_url="https://portal.azure.com/x") == (
        "<!date^1796668320^{date_num}^https://portal.azure.com/x|2026-12-07 18:32 UTC>"
    )
    assert "^javascript" not in markup.date_token(moment, link_url="javascript:alert(1)")


def test_plain_text_fields_carry_no_clock_time(world: SlackWorld) -> None:
    """Headers, buttons, modal titles: the walk above covers them; here the reason form
    of an extension, whose plain_text labels name no end."""
    register(world.service)
    world.say(PUBLISHER, "request crm Contributor 2h rotate")
    [view] = world.service.list_requests(requester=PUBLISHER, limit=1)
    world.say(APPROVER, f"approve {view.id} ok")
    world.tick()
    world.click(PUBLISHER, world.requester_card(PUBLISHER, view.id), ids.EXTEND)
    plain = [text for _, text, mrkdwn in shown_texts(world.fake) if not mrkdwn]
    assert plain and all(bare_times(text, mrkdwn=False) == [] for text in plain), plain
