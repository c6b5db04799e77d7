"""Break-glass end to end: the real Bolt app and WebClient against the fake Slack API,
under frozen time, with the log provider as the backend."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time

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
from jitaccess.app import audit_log
from jitaccess.app.directory import StaticDirectory
from jitaccess.domain.errors import Conflict, RuleViolation
from jitaccess.domain.policy import Policy
from jitaccess.slack.blocks import ids
from jitaccess.slack.principals import SLACK_PRINCIPALS
from jitaccess.store.db import Database
from jitaccess_sandbox import demo
from jitaccess_sandbox.fake_slack import FakeSlack
from jitaccess_sandbox.run import Sandbox
from slack_harness import SlackWorld, first_line, texts
from test_sandbox import call, eventually, open_modal, start_sandbox, state, timeline_text

T0 = utc(START)
H = timedelta(hours=1)
TAKE = "breakglass crm Owner 30m INC-4711 payments database is down"


@pytest.fixture
def world(fake_slack: FakeSlack, db: Database) -> Iterator[SlackWorld]:
    with freeze_time(START):
        world = SlackWorld(fake_slack, db, directory=StaticDirectory({"SONCALL": [PUBLISHER]}))
        register(world.service)
        world.service.set_policy("crm", actor=ADMIN, now=T0, breakglass=[PUBLISHER])
        yield world


def take(world: SlackWorld, text: str = TAKE) -> int:
    reply = world.say(PUBLISHER, text)
    assert "Break-glass request #" in reply and "being granted now" in reply, reply
    assert "Every approver and admin was alerted" in reply
    [view] = world.service.list_requests(requester=PUBLISHER, limit=1)
    return view.id


def audit_entries(world: SlackWorld, request_id: int) -> list[dict[str, object]]:
    return [e for e in audit_log.export_rows(world.db) if e["request_id"] == request_id]


def alert_card(world: SlackWorld, person: str, request_id: int) -> dict[str, object]:
    cards = [
        m
        for m in world.fake.cards_to(person)
        if f"Break-glass access #{request_id}" in json.dumps(m.get("blocks"))
    ]
    assert len(cards) == 1, f"expected one alert card for {person}, got {len(cards)}"
    return cards[0]


def test_breakglass_grants_at_once_and_ends_at_the_capped_time(world: SlackWorld) -> None:
    """The holder's access is on the backend after one sweep and revoked at its end."""
    rid = take(world)
    view = world.service.get_request(rid)
    assert (view.state, view.breakglass, view.incident_ref) == ("auto_approved", True, "INC-4711")
    assert view.ends_at == T0 + timedelta(minutes=30)
    world.tick()
    assert world.service.get_request(rid).state == "active"
    assert [g.request_id for g in world.log_provider.held()] == [rid]
    # Pat's one card for it says Active; how it began is the first reply in its thread.
    card = world.requester_card(PUBLISHER, rid)
    assert "Active" in first_line(card) and "Break-glass" in first_line(card)
    assert "You broke glass for INC-4711" in texts(world.thread(PUBLISHER, card)[0])
    with freeze_time(T0 + timedelta(minutes=30)):
        world.tick()
    assert world.service.get_request(rid).state == "expired"
    assert world.log_provider.held() == []
    assert "you: publisher, break-glass" in world.say(PUBLISHER, "apps")


def test_alerts_reach_every_approver_and_admin_at_once(world: SlackWorld) -> None:
    """Approvers and admins each get an alert card with Acknowledge and Revoke."""
    rid = take(world)
    world.deliver()
    for person in (APPROVER, APPROVER2, ADMIN):
        shown = texts(alert_card(world, person, rid))
        for expected in (f"<@{PUBLISHER}> broke glass", "INC-4711", "payments database is down"):
            assert expected in shown, (expected, shown)
        assert ids.BREAKGLASS_ACK in shown and ids.REVOKE in shown
        assert ids.APPROVE not in shown
    # The requester hears it was granted, never "sent to the approvers".
    assert not any("sent to the approvers" in texts(m) for m in world.fake.dms_to(PUBLISHER))


def test_audit_marks_every_step_breakglass_with_the_incident(world: SlackWorld) -> None:
    """Every audit entry of the request carries breakglass and the incident."""
    rid = take(world)
    world.tick()
    entries = audit_entries(world, rid)
    actions = [e["action"] for e in entries]
    assert actions == ["submit", "breakglass_used", "auto_approve", "activate"]
    for entry in entries:
        details = entry["details"]
        assert isinstance(details, dict)
        assert (details["breakglass"], details["incident_ref"]) == (True, "INC-4711")
    assert audit_log.verify(world.db).problems == []


def test_unreviewed_stays_listed_until_acknowledged_with_a_reason(world: SlackWorld) -> None:
    """Home and /jit pending list it after access ended, until a reviewer acknowledges."""
    rid = take(world)
    world.tick()
    with freeze_time(T0 + H):
        world.tick()  # access over
        assert world.service.get_request(rid).state == "expired"
        for person in (APPROVER, ADMIN):
            assert "needs review" in world.say(person, "pending")
            world.home_opened(person, f"Ev-{person}")
            home = texts(world.fake.current_home(person) or {})
            assert "Break-glass, needs review" in home and f"#{rid}" in home
        assert "cannot review your own" in world.say(PUBLISHER, f"ack {rid} all fine")
        assert "approvers and consumer admins" in world.say(OUTSIDER, f"ack {rid} fine")

        world.click(APPROVER2, alert_card(world, APPROVER2, rid), ids.BREAKGLASS_ACK)
        modal = world.last_modal(APPROVER2)
        assert modal["view"]["callback_id"] == ids.REVIEW_MODAL
        reason = {"reason": {"reason": {"type": "plain_text_input", "value": "  "}}}
        assert json.loads(world.submit(APPROVER2, modal, reason).body)["errors"]["reason"]
        assert world.service.get_request(rid).reviewed_at is None
        reason["reason"]["reason"]["value"] = "Checked INC-4711: key rotation only"
        assert world.submit(APPROVER2, modal, reason).status == 200
        view = world.service.get_request(rid)
        assert (view.reviewed_by, view.review_reason) == (
            APPROVER2,
            "Checked INC-4711: key rotation only",
        )
        world.deliver()
        for person in (APPROVER, APPROVER2, ADMIN):
            card = texts(alert_card(world, person, rid))  # the same card, edited in place
            assert f"Reviewed by <@{APPROVER2}>" in card and ids.BREAKGLASS_ACK not in card
        assert "was reviewed by" in texts(world.fake.dms_to(PUBLISHER)[-1])
        assert "needs review" not in world.say(APPROVER, "pending")
        assert "already reviewed" in world.say(ADMIN, f"ack {rid} me too")
        assert "breakglass_reviewed" in [e["action"] for e in audit_entries(world, rid)]


@pytest.mark.parametrize(
    ("user", "text", "message"),
    [
        (OUTSIDER, TAKE, "not named for break-glass"),
        (PUBLISHER, "breakglass crm Owner 2h INC-1 long fix", "at most 1h"),
        (PUBLISHER, "breakglass crm Janitor 30m INC-1 fix", "not an eligible role"),
        (PUBLISHER, "breakglass crm Owner 30m INC-1", "Usage: `/jit breakglass"),
        (PUBLISHER, "breakglass crm Owner 30m database is down", "incident reference"),
        (PUBLISHER, "breakglass legacy Owner 30m INC-1 fix", "JIT is disabled"),
        (PUBLISHER, "breakglass erp Owner 30m INC-1 fix", "allows no break-glass"),
    ],
)
def test_refusals_say_what_to_change_and_change_nothing(
    world: SlackWorld, user: str, text: str, message: str
) -> None:
    """Each refusal is an ephemeral message; no request, grant or audit entry appears."""
    register(world.service, "legacy", jit=False)
    register(world.service, "erp")
    before = list(audit_log.export_rows(world.db))
    assert message in world.say(user, text)
    world.tick()
    assert world.service.list_requests() == []
    assert world.log_provider.held() == []
    assert list(audit_log.export_rows(world.db)) == before


def test_a_person_removed_from_the_breakglass_group_is_refused(world: SlackWorld) -> None:
    """Groups are expanded when glass is broken: who left the group cannot."""
    world.service.set_policy("crm", actor=ADMIN, now=T0, breakglass=["SONCALL"])
    take(world)
    groups = world.service.directory
    assert isinstance(groups, StaticDirectory)
    groups.groups["SONCALL"] = (APPROVER,)  # the publisher left the group
    assert "not named for break-glass" in world.say(PUBLISHER, TAKE)
    assert len(world.service.list_requests()) == 1


def test_policy_refuses_malformed_holders_and_caps() -> None:
    """Holders must be user or group ids; the cap is validated like other durations."""
    with pytest.raises(RuleViolation, match="not a Slack user ID nor a user group ID"):
        Policy(breakglass=("ops@example.com",)).validated(SLACK_PRINCIPALS)
    with pytest.raises(RuleViolation, match="Break-glass maximum 31d is too long"):
        Policy(breakglass=("SONCALL",), breakglass_max=timedelta(days=31)).validated(
            SLACK_PRINCIPALS
        )
    assert Policy(breakglass=("SONCALL", "UPUB1", "SONCALL")).validated(
        SLACK_PRINCIPALS
    ).breakglass == (
        "SONCALL",
        "UPUB1",
    )


def test_cli_sets_the_policy_breaks_glass_inline_and_reviews(cli: Cli, tmp_path: Path) -> None:
    """apps policy/apply set holders and cap; requests breakglass grants before returning."""
    scope = "/subscriptions/s1/resourceGroups/mrg-crm"
    cli(
        "apps",
        "register",
        "crm",
        "--scope",
        scope,
        "--publisher",
        PUBLISHER,
        "--role",
        "Owner",
        "--admin",
        ADMIN,
        "--mode",
        "manual",
        "--approver",
        APPROVER,
    )
    taken = (
        "requests",
        "breakglass",
        "crm",
        "--as",
        PUBLISHER,
        "--role",
        "Owner",
        "--duration",
        "45m",
        "--incident",
        "INC-9",
        "--reason",
        "disk full",
    )
    assert "allows no break-glass" in flat(cli(*taken, code=1).stderr)
    cli(
        "apps", "policy", "crm", "--as", ADMIN, "--breakglass", PUBLISHER, "--breakglass-max", "30m"
    )
    assert f"{PUBLISHER}, up to 30m" in flat(cli("apps", "show", "crm").stdout)
    assert "at most 30m" in flat(cli(*taken, code=1).stderr)
    refused = flat(
        cli("apps", "policy", "crm", "--as", ADMIN, "--breakglass", "ops", code=1).stderr
    )
    assert "not a Slack user ID nor a user group ID" in refused

    file = tmp_path / "apps.yaml"
    file.write_text(
        "apps:\n  - name: crm\n    scope: " + scope + "\n    publishers: [" + PUBLISHER + "]\n"
        "    roles: [Owner]\n    admins: ["
        + ADMIN
        + "]\n    policy: {mode: manual, approvers: ["
        + APPROVER
        + "], breakglass: ["
        + PUBLISHER
        + ", SONCALL], breakglass_max: 1h}\n"
    )
    assert "updated: crm" in cli("apps", "apply", "-f", file).stdout
    assert cli.json("apps", "show", "crm")["policy"]["breakglass"] == [PUBLISHER, "SONCALL"]

    view = cli.json(*taken)
    assert (view["state"], view["breakglass"], view["incident_ref"]) == ("active", True, "INC-9")
    rid = view["id"]
    assert "NEEDS REVIEW" in cli("requests", "show", rid).stdout
    assert "own" in flat(
        cli("requests", "review", rid, "--as", PUBLISHER, "--reason", "ok", code=1).stderr
    )
    cli("requests", "review", rid, "--as", APPROVER, "--reason", "disk cleaned, fine")
    assert f"by {APPROVER}" in flat(cli("requests", "show", rid).stdout)


def test_review_leaves_the_row_version_alone(world: SlackWorld) -> None:
    """A review while access is held never invalidates a sweep's in-flight outcome."""
    rid = take(world)
    world.tick()
    before = world.service.get_request(rid).version
    world.say(APPROVER, f"ack {rid} seen it")
    after = world.service.get_request(rid)
    assert (after.version, after.reviewed_by) == (before, APPROVER)


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    instance = start_sandbox(tmp_path)
    yield instance
    instance.stop()


def test_the_sandbox_demo_lets_pat_break_glass_and_ava_acknowledge(sandbox: Sandbox) -> None:
    """In the sandbox page: Pat breaks glass, Ava's alert card takes her review."""
    pat, ava = demo.PUBLISHER, demo.APPROVER
    text = "/jit breakglass contoso-crm Owner 30m INC-4711 CRM database is down"
    assert call(sandbox, "command", {"user": pat, "text": text})[1]["ok"]
    eventually(lambda: "Break-glass request #1" in timeline_text(sandbox, pat))
    eventually(lambda: "is active" in timeline_text(sandbox, pat))

    def alert() -> dict[str, Any] | None:
        items = state(sandbox, ava)["timeline"]
        return next((i for i in items if "Break-glass access #1" in i["html"]), None)

    card = eventually(alert)
    status, body = call(
        sandbox,
        "click",
        {
            "user": ava,
            "source": "message",
            "channel": card["channel"],
            "ts": card["ts"],
            "block_id": "breakglass:1",
            "action_id": ids.BREAKGLASS_ACK,
            "value": "1",
        },
    )
    assert body["ok"], body
    modal = open_modal(sandbox, ava, ids.REVIEW_MODAL)
    values = {"reason": "Checked INC-4711 with Pat"}
    body = call(sandbox, "submit", {"user": ava, "view_id": modal["id"], "values": values})[1]
    assert body["ok"] and body["response_action"] is None, body
    eventually(lambda: (found := alert()) and "Reviewed by" in found["html"])


def test_take_grant_and_review_on_postgresql(pg_url: str) -> None:
    """The same use cases on PostgreSQL: granted inline, reviewed once, audit verifies."""
    database = Database(pg_url)
    database.upgrade()
    try:
        service, log_provider = make_service(database)
        register(service)
        service.set_policy("crm", actor=ADMIN, now=T0, breakglass=[PUBLISHER])
        view = service.breakglass.take(
            "crm",
            actor=PUBLISHER,
            role="Owner",
            duration=timedelta(minutes=20),
            incident_ref="https://status.example.com/incidents/42",
            reason="checkout is failing",
            now=T0,
        )
        assert view.state == "active" and [g.request_id for g in log_provider.held()] == [view.id]
        reviewed = service.breakglass.review(view.id, actor=APPROVER, reason="fine", now=T0)
        assert reviewed.reviewed_by == APPROVER and reviewed.version == view.version
        with pytest.raises(Conflict, match="already reviewed"):
            service.breakglass.review(view.id, actor=ADMIN, reason="me too", now=T0)
        assert service.breakglass.needs_review(ADMIN) == []
        assert audit_log.verify(database).problems == []
    finally:
        database.dispose()


def test_breakglass_over_an_open_request_for_the_same_role_is_refused_with_the_way_out(
    world: SlackWorld,
) -> None:
    """Glass broken while a request for the same role is open is refused, naming it."""
    first = world.service.submit(
        "crm",
        requester=PUBLISHER,
        role="Owner",
        duration=2 * H,
        justification="deploy",
        now=T0,
    )
    before = world.service.list_requests(requester=PUBLISHER, limit=10)
    reply = world.say(PUBLISHER, TAKE)
    assert f"Request {first.id} already covers this role here" in reply, reply
    assert f"/jit cancel {first.id}" in reply and f"/jit extend {first.id}" in reply
    assert world.service.list_requests(requester=PUBLISHER, limit=10) == before
    # Another role is not an overlap: glass breaks.
    assert "being granted now" in world.say(
        PUBLISHER, "breakglass crm Contributor 30m INC-4711 payments database is down"
    )
