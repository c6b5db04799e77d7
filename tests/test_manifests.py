"""The Slack manifests and .env.example agree with what the code really uses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from freezegun import freeze_time

from conftest import APPROVER, PUBLISHER, START, register
from jitaccess.domain.policy import ApprovalMode
from jitaccess.settings import Settings, env_example
from jitaccess.slack.blocks import ids
from jitaccess.store.db import Database
from jitaccess_sandbox.fake_slack import FakeSlack
from slack_harness import SlackWorld

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests" / "slack"
SCOPES = {
    "commands",
    "chat:write",
    "im:write",
    "users:read",  # users:read.email needs it (users.lookupByEmail)
    "users:read.email",
    "usergroups:read",
}
#: The bot scope each Web API method needs (views.* need none beyond the interaction).
METHOD_SCOPES = {
    "chat.postMessage": "chat:write",
    "chat.update": "chat:write",
    "chat.postEphemeral": "chat:write",
    "conversations.open": "im:write",
    "users.lookupByEmail": "users:read.email",
    "usergroups.users.list": "usergroups:read",
    "views.open": None,
    "views.update": None,
    "views.publish": None,
    "views.push": None,
    "auth.test": None,
}


def load(name: str) -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((MANIFESTS / name).read_text())


@pytest.mark.parametrize("name", ["manifest.yaml", "manifest.socket-mode.yaml"])
def test_manifest_asks_for_exactly_the_scopes_and_features_used(name: str) -> None:
    manifest = load(name)
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == SCOPES
    assert [c["command"] for c in manifest["features"]["slash_commands"]] == ["/jit"]
    assert manifest["settings"]["event_subscriptions"]["bot_events"] == [
        "app_home_opened",
        "subteam_members_changed",
    ]
    assert manifest["settings"]["interactivity"]["is_enabled"] is True
    assert manifest["features"]["app_home"]["home_tab_enabled"] is True
    socket = name == "manifest.socket-mode.yaml"
    assert manifest["settings"]["socket_mode_enabled"] is socket
    urls = [
        manifest["settings"]["interactivity"].get("request_url"),
        manifest["settings"]["event_subscriptions"].get("request_url"),
        manifest["features"]["slash_commands"][0].get("url"),
    ]
    if socket:
        assert urls == [None, None, None]
    else:
        assert all(u and u.endswith("/slack/events") for u in urls)


@pytest.fixture
def world(fake_slack: FakeSlack, db: Database) -> Iterator[SlackWorld]:
    with freeze_time(START):
        yield SlackWorld(fake_slack, db)


def test_every_web_api_method_the_app_calls_is_covered_by_the_manifest(world: SlackWorld) -> None:
    register(world.service, mode=ApprovalMode.MANUAL)
    world.command(PUBLISHER, "request")
    world.say(PUBLISHER, "request crm Owner 1h deploy")
    world.deliver()
    [rid] = [r.id for r in world.service.list_requests()]
    world.click(APPROVER, world.card_for(APPROVER, rid), ids.DENY)
    world.submit_reason(APPROVER, "no")
    world.deliver()
    world.home_opened(APPROVER, "Ev1")
    called = {c.method for c in world.fake.calls}
    assert called <= set(METHOD_SCOPES), called - set(METHOD_SCOPES)
    needed = {METHOD_SCOPES[m] for m in called} - {None}
    assert needed <= SCOPES
    assert {"chat.postMessage", "conversations.open", "views.open"} <= called
    # Times are Slack date tokens, shown in each reader's zone: nobody's is looked up.
    assert "users.info" not in called


def test_env_example_lists_every_setting_and_nothing_else() -> None:
    assert (ROOT / ".env.example").read_text() == env_example(), "run `make env-example`"
    listed = {
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    expected = {str(f.validation_alias) for f in Settings.model_fields.values()}
    assert listed == expected
