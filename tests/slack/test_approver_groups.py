"""Approver groups: Slack user groups (``S…``) approve like people. Their members are
read from Slack (``usergroups.users.list``) when cards are sent and again at every
click, so someone who left the group can no longer decide."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from freezegun import freeze_time
from sqlalchemy import func, select

from conftest import ADMIN, APPROVER, APPROVER2, OUTSIDER, PUBLISHER, START, Cli, make_service, utc
from jitaccess.app.directory import StaticDirectory
from jitaccess.app.service import AppSpec
from jitaccess.domain.policy import ApprovalMode, Policy
from jitaccess.providers.base import GrantSpec, HeldGrant, ProviderError
from jitaccess.slack.blocks import ids, markup
from jitaccess.slack.directory import SlackDirectory
from jitaccess.slack.runtime import slack_client
from jitaccess.store.db import Database
from jitaccess.store.models import Approval, AuditEvent, OutboxMessage
from jitaccess_sandbox import demo
from jitaccess_sandbox.fake_slack import FakeSlack
from jitaccess_sandbox.run import Sandbox
from slack_harness import SlackWorld, signed_headers, texts
from test_sandbox import call, eventually, sandbox, timeline_text

__all__ = ["sandbox"]  # the sandbox fixture, shared with test_sandbox
from slack_harness import select as picked

T0 = utc(START)
H = timedelta(hours=1)
GROUP = "SAPPROVERS"


@pytest.fixture
def world(fake_slack: FakeSlack, db: Database) -> Iterator[SlackWorld]:
    """The Slack world, with group membership read from the fake Slack as under serve."""
    fake_slack.set_group(GROUP, [APPROVER, APPROVER2])
    with freeze_time(START):
        client = slack_client("xoxb-test-token", fake_slack.base_url)
        world = SlackWorld(
            fake_slack,
            db,
            directory=SlackDirectory(client),
            # serve caches members for a minute for cards and lists; here every change is
            # seen at once, so each test shows what a click or a card does with it.
            listing_directory=SlackDirectory(client),
        )
        yield world


def register_group_app(world: SlackWorld, *, approvers: tuple[str, ...] = (GROUP,)) -> None:
    world.service.register_app(
        AppSpec(
            name="crm",
            scope="/subscriptions/s1/resourceGroups/mrg-crm",
            publishers=(PUBLISHER,),
            roles=("Contributor",),
            admins=(ADMIN,),
            policy=Policy(mode=ApprovalMode.MANUAL, approvers=approvers),
        ),
        actor="test",
        now=T0,
    )


def request(world: SlackWorld) -> int:
    reply = world.say(PUBLISHER, "request crm Contributor 2h rotate keys")
    assert "Request #" in reply, reply
    world.deliver()
    return world.service.list_requests()[0].id


def unchanged(db: Database) -> tuple[int, int]:
    with db.transaction(readonly=True) as s:
        return (
            s.execute(select(func.count()).select_from(Approval)).scalar_one(),
            s.execute(select(func.count()).select_from(AuditEvent)).scalar_one(),
        )


def test_cards_go_to_every_member_of_an_approver_group(world: SlackWorld) -> None:
    """Each member gets a decision card, and either can approve."""
    register_group_app(world)
    rid = request(world)
    assert world.service.get_request(rid).notified_approvers == (APPROVER, APPROVER2)
    for member in (APPROVER, APPROVER2):
        assert "Approve" in texts(world.card_for(member, rid))
    assert world.fake.calls_to("usergroups.users.list")
    assert f"#{rid}" in world.say(APPROVER2, "pending")  # /jit pending knows the members
    world.click(APPROVER2, world.card_for(APPROVER2, rid), ids.APPROVE)
    world.submit_reason(APPROVER2, "on call")
    assert world.service.get_request(rid).state == "approved"


def test_someone_removed_from_the_group_can_no_longer_decide(world: SlackWorld) -> None:
    """Membership is read again at the click: a former member is refused, nothing changes."""
    register_group_app(world)
    rid = request(world)
    world.fake.set_group(GROUP, [APPROVER2])  # Ava leaves the group in Slack
    before = unchanged(world.db)

    world.click(APPROVER, world.card_for(APPROVER, rid), ids.APPROVE)
    notice = texts(world.last_modal(APPROVER)["view"])
    assert "Only this application's approvers may approve" in notice
    refused = world.say(APPROVER, f"approve {rid} still me")
    assert "Only this application's approvers may approve" in refused
    assert unchanged(world.db) == before
    assert world.service.get_request(rid).state == "pending"
    assert world.service.pending_for(APPROVER) == []


def test_when_slack_cannot_say_who_is_in_the_group_the_click_is_refused(
    world: SlackWorld,
) -> None:
    """A directory failure refuses with "try again" and changes nothing."""
    register_group_app(world)
    rid = request(world)
    before = unchanged(world.db)
    world.fake.fail_next("usergroups.users.list", times=3, status=200, error="internal_error")
    reply = world.say(APPROVER, f"approve {rid} looks fine")
    assert "Couldn't check who is in the approver group SAPPROVERS" in reply
    assert "try again" in reply and "Traceback" not in reply
    assert unchanged(world.db) == before
    assert world.service.get_request(rid).state == "pending"


def test_a_group_that_does_not_exist_refuses_the_request_with_what_to_do(
    world: SlackWorld,
) -> None:
    """A request whose only approver group is unknown to Slack is refused, not lost."""
    register_group_app(world, approvers=("SNOSUCH",))
    reply = world.say(PUBLISHER, "request crm Contributor 2h rotate keys")
    assert "Slack knows no such user group" in reply
    assert world.service.list_requests() == []


def test_quorum_of_two_from_one_group(world: SlackWorld) -> None:
    """ "2 of the group" works: the members count one by one, the requester never."""
    world.service.register_app(
        AppSpec(
            name="crm",
            scope="/subscriptions/s1/resourceGroups/mrg-crm",
            publishers=(PUBLISHER,),
            admins=(ADMIN,),
            policy=Policy(ApprovalMode.MANUAL, approvers=(GROUP,), required_approvals=2),
        ),
        actor="test",
        now=T0,
    )
    rid = request(world)
    world.say(APPROVER, f"approve {rid} first")
    world.deliver()
    assert "1 of 2 approved: <@UAPP1> (first)" in texts(world.card_for(APPROVER2, rid))
    world.say(APPROVER2, f"approve {rid} second")
    assert world.service.get_request(rid).state == "approved"

    world.fake.set_group(GROUP, [APPROVER, PUBLISHER])  # only one other than Pat now
    reply = world.say(PUBLISHER, "request crm Contributor 1h again")
    assert "needs 2 approvals but only 1 approver other than you" in reply


def test_config_modal_accepts_groups_and_a_quorum(world: SlackWorld) -> None:
    """/jit config takes group ids and "approvals required"; a person typed there is refused."""
    register_group_app(world, approvers=(APPROVER,))
    world.command(ADMIN, "config crm")
    modal = world.last_modal(ADMIN)
    values = {
        "mode": {"mode": picked("manual")},
        "max_duration": {"max_duration": picked("4h")},
        "approvers": {"approvers": {"type": "multi_users_select", "selected_users": [OUTSIDER]}},
        "approver_groups": {"approver_groups": {"type": "plain_text_input", "value": "UAPP2"}},
        "required_approvals": {"required_approvals": picked("2")},
        "approval_timeout": {"approval_timeout": picked("1h")},
    }
    refused = json.loads(world.submit(ADMIN, modal, values).body)
    assert "is a person, not a user group" in refused["errors"]["approver_groups"]
    values["approver_groups"]["approver_groups"]["value"] = GROUP
    assert world.submit(ADMIN, modal, values).status == 200
    policy = world.service.get_app("crm").policy
    assert (policy.approvers, policy.required_approvals) == ((OUTSIDER, GROUP), 2)
    world.command(ADMIN, "config crm")  # the form shows them back
    form = {b.get("block_id"): b for b in world.last_modal(ADMIN)["view"]["blocks"]}
    assert form["approver_groups"]["element"]["initial_value"] == GROUP
    assert form["required_approvals"]["element"]["initial_option"]["value"] == "2"


def test_cli_and_apps_file_accept_groups(cli: Cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`apps policy --approver S…` and `apps apply` take groups; a malformed id is refused."""
    cli(
        "apps", "register", "crm", "--scope", "/subscriptions/s/resourceGroups/mrg",
        "--publisher", PUBLISHER, "--admin", ADMIN,
    )  # fmt: skip
    cli("apps", "policy", "crm", "--as", ADMIN, "--mode", "manual", "--approver", GROUP)
    assert cli.json("apps", "show", "crm")["policy"]["approvers"] == [GROUP]
    refused = cli("apps", "policy", "crm", "--as", ADMIN, "--approver", "approvers", code=1)
    assert "user group ID" in refused.stdout + refused.stderr
    path = tmp_path / "apps.yaml"
    path.write_text(
        f"""
apps:
  - name: crm
    scope: /subscriptions/s/resourceGroups/mrg
    publishers: [{PUBLISHER}]
    admins: [{ADMIN}]
    policy: {{mode: manual, approvers: [{GROUP}, {APPROVER}], required_approvals: 2}}
"""
    )
    cli("apps", "apply", "-f", path)
    policy = cli.json("apps", "show", "crm")["policy"]
    assert (policy["approvers"], policy["required_approvals"]) == ([GROUP, APPROVER], 2)


def test_group_mentions_render_as_slack_group_mentions() -> None:
    """A group is shown as a Slack group mention where a person would be mentioned."""
    assert markup.user(GROUP) == f"<!subteam^{GROUP}>"
    assert markup.user(APPROVER) == f"<@{APPROVER}>"


def test_cards_may_use_a_short_cache_but_decisions_ask_slack_every_time(
    fake_slack: FakeSlack,
) -> None:
    """The card directory reads a group once a minute; the click directory every time."""
    fake_slack.set_group(GROUP, [APPROVER])
    client = slack_client("xoxb-test-token", fake_slack.base_url)
    seconds = [0.0]
    cached = SlackDirectory(client, cache_seconds=60, clock=lambda: seconds[0])
    fresh = SlackDirectory(client)
    assert cached.members(GROUP) == fresh.members(GROUP) == (APPROVER,)
    fake_slack.set_group(GROUP, [APPROVER2])
    assert cached.members(GROUP) == (APPROVER,)  # within the minute
    assert fresh.members(GROUP) == (APPROVER2,)
    seconds[0] = 61.0
    assert cached.members(GROUP) == (APPROVER2,)
    assert (cached.calls, fresh.calls) == (2, 2)


class FailingRevokes:
    """A backend that grants but cannot revoke (a revoke that keeps failing)."""

    name = "flaky"

    def grant(self, spec: GrantSpec, now: datetime) -> None:
        return None

    def revoke(self, spec: GrantSpec, now: datetime) -> None:
        raise ProviderError("flaky answered 503")

    def list_grants(self, scope: str, config: object) -> list[HeldGrant]:
        return []


def test_a_failing_revoke_alerts_the_group_s_members_not_the_group_id(db: Database) -> None:
    """The "revoke failing" alert reaches each member a card went to, and the admins."""
    service, _ = make_service(db, directory=StaticDirectory({GROUP: [APPROVER, APPROVER2]}))
    service.providers.register(FailingRevokes())
    service.register_app(
        AppSpec(
            name="crm",
            scope="/subscriptions/s1/resourceGroups/mrg-crm",
            publishers=(PUBLISHER,),
            admins=(ADMIN,),
            policy=Policy(ApprovalMode.MANUAL, approvers=(GROUP,)),
            provider="flaky",
        ),
        actor="test",
        now=T0,
    )
    rid = service.submit(
        "crm", requester=PUBLISHER, role="Contributor", duration=H, justification="x", now=T0
    ).id
    assert service.approve(rid, actor=APPROVER, reason="ok", now=T0).state == "active"
    service.revoke(rid, actor=APPROVER2, reason="done early", now=T0)
    with db.transaction(readonly=True) as s:
        alerted = set(
            s.execute(
                select(OutboxMessage.recipient).where(OutboxMessage.kind == "revoke_failing")
            ).scalars()
        )
    assert alerted == {APPROVER, APPROVER2, ADMIN}


def test_the_sandbox_demo_needs_two_approvals_from_its_approvers_group(sandbox: Sandbox) -> None:
    """In the sandbox, northwind-hr's group members each approve; the second approves it."""
    call(
        sandbox,
        "command",
        {"user": demo.PUBLISHER, "text": "request northwind-hr Contributor 1h payroll fix"},
    )
    eventually(lambda: "Access request #1" in timeline_text(sandbox, demo.APPROVER2))
    call(sandbox, "command", {"user": demo.APPROVER, "text": "approve 1 CHG-7 signed off"})
    eventually(lambda: "1 of 2 approved" in timeline_text(sandbox, demo.APPROVER2))
    call(sandbox, "command", {"user": demo.APPROVER2, "text": "approve 1 fine"})
    eventually(lambda: "is active" in timeline_text(sandbox, demo.PUBLISHER))


def group_changed(world: SlackWorld, group: str, event_id: str) -> None:
    """Slack's signed ``subteam_members_changed`` event, as the Events API sends it."""
    body = json.dumps(
        {
            "token": "legacy",
            "team_id": "T0001",
            "api_app_id": "A0001",
            "type": "event_callback",
            "event_id": event_id,
            "event_time": 1,
            "event": {
                "type": "subteam_members_changed",
                "subteam_id": group,
                "team_id": "T0001",
                "added_users": [],
                "removed_users": [],
                "event_ts": "1.0",
            },
        }
    )
    assert world.post(body, signed_headers(body, content_type="application/json")).status == 200


def test_cards_follow_the_group_when_slack_says_its_members_changed(world: SlackWorld) -> None:
    """A new member gets a card for the pending request; one who left sees theirs go."""
    register_group_app(world)
    rid = request(world)
    world.fake.set_group(GROUP, [APPROVER2, ADMIN])  # Ava leaves, Ada joins
    group_changed(world, GROUP, "Ev1")
    world.deliver()
    assert world.service.get_request(rid).notified_approvers == (APPROVER, APPROVER2, ADMIN)
    assert ids.APPROVE in texts(world.card_for(ADMIN, rid))
    assert ids.APPROVE not in texts(world.card_for(APPROVER, rid))
    world.click(ADMIN, world.card_for(ADMIN, rid), ids.APPROVE)
    world.submit_reason(ADMIN, "on call now")
    assert world.service.get_request(rid).state == "approved"
    # Slack retrying the same event changes nothing more.
    before = unchanged(world.db)
    group_changed(world, GROUP, "Ev1")
    assert unchanged(world.db) == before


def test_config_modal_shows_every_problem_beside_its_field(world: SlackWorld) -> None:
    """Two mistakes in /jit config: both are shown at once, each beside its field, and
    nothing changes."""
    register_group_app(world, approvers=(APPROVER,))
    before = world.service.get_app("crm").policy
    world.command(ADMIN, "config crm")
    modal = world.last_modal(ADMIN)
    values = {
        "mode": {"mode": picked("manual")},
        "max_duration": {"max_duration": picked("4h")},
        "approvers": {"approvers": {"type": "multi_users_select", "selected_users": [OUTSIDER]}},
        "approver_groups": {"approver_groups": {"type": "plain_text_input", "value": ""}},
        "required_approvals": {"required_approvals": picked("3")},
        "approval_timeout": {"approval_timeout": picked("1h")},
        "feed_channel": {"feed_channel": {"type": "plain_text_input", "value": "#ops"}},
    }
    refused = json.loads(world.submit(ADMIN, modal, values).body)
    assert refused["response_action"] == "errors"
    assert "3 approvals are required but only 1 approver" in refused["errors"]["required_approvals"]
    assert "is not a Slack channel ID" in refused["errors"]["feed_channel"]
    assert world.service.get_app("crm").policy == before
