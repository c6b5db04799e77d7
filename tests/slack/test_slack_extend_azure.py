"""Extending an Azure scheduled grant end to end: Slack (real Bolt and WebClient against
the fake Slack), the service and sweep, and the real azure-mgmt-authorization client
against the fake ARM over HTTPS, in frozen time."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from freezegun import freeze_time

from conftest import APPROVER, APPROVER2, PUBLISHER, START, utc
from fakes.fake_arm import FakeArm, FakeCredential
from jitaccess.app.service import AppSpec
from jitaccess.domain.policy import ApprovalMode, Policy
from jitaccess.providers.azure import AzureProvider
from jitaccess.slack.blocks import ids
from jitaccess.store.db import Database
from jitaccess_sandbox.fake_slack import FakeSlack
from slack_harness import SlackWorld, now, texts

T0 = utc(START)
H = timedelta(hours=1)
M = timedelta(minutes=1)
SCOPE = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/mrg-az-app"
OBJECT_ID = "aaaaaaaa-0000-0000-0000-000000000001"


@pytest.fixture(scope="module")
def arm_server() -> Iterator[FakeArm]:
    with FakeArm() as arm:
        yield arm


@pytest.fixture
def arm(arm_server: FakeArm) -> FakeArm:
    arm_server.reset()
    arm_server.clock = now  # Azure's expiry follows the frozen time
    return arm_server


@pytest.fixture
def world(fake_slack: FakeSlack, db: Database, arm: FakeArm) -> Iterator[SlackWorld]:
    with freeze_time(START):
        world = SlackWorld(fake_slack, db)
        world.service.providers.register(
            AzureProvider(FakeCredential(), base_url=arm.base_url, connection_verify=arm.ca_file)
        )
        world.service.register_app(
            AppSpec(
                name="az-app",
                scope=SCOPE,
                publishers=(PUBLISHER,),
                roles=("Contributor",),
                policy=Policy(
                    mode=ApprovalMode.MANUAL,
                    max_duration=timedelta(hours=8),
                    approvers=(APPROVER, APPROVER2),
                ),
                provider="azure",
                provider_config={
                    "principals": {PUBLISHER: {"object_id": OBJECT_ID, "type": "User"}},
                    "assignment_mode": "scheduled",
                },
            ),
            actor="test",
            now=now(),
        )
        yield world


def extension_card(world: SlackWorld, approver: str, rid: int) -> dict[str, Any]:
    [card] = [
        m
        for m in world.fake.dms_to(approver)
        if f"Extension of request #{rid}" in json.dumps(m.get("blocks"))
    ]
    return card


def test_extending_an_azure_scheduled_grant_moves_azures_end_without_a_revoke(
    world: SlackWorld, arm: FakeArm
) -> None:
    """Approved in Slack, the extension moves the PIM assignment's end; nothing is removed."""
    assert "submitted" in world.say(PUBLISHER, "request az-app Contributor 2h deploy")
    world.say(APPROVER, "approve 1 CHG-1")
    world.tick()
    assert world.service.get_request(1).state == "active"
    [granted] = arm.at(SCOPE)
    assert (granted.principal_id, granted.ends_at) == (OBJECT_ID, T0 + 2 * H)

    with freeze_time(T0 + H):
        assert "sent to the approvers" in world.say(PUBLISHER, "extend 1 1h tests still running")
        world.deliver()
        card = extension_card(world, APPROVER, 1)
        world.click(APPROVER, card, ids.APPROVE_EXTENSION)
        assert world.submit_reason(APPROVER, "CHG-9 covers it").status == 200
        world.tick()  # the sweep makes the AdminExtend call
        [extended] = arm.at(SCOPE)
        assert (extended.name, extended.ends_at) == (granted.name, T0 + 3 * H)
        assert world.service.get_request(1).ends_at == T0 + 3 * H
        assert "was extended" in texts(world.fake.dms_to(PUBLISHER)[-1])

    kinds = sorted(r["properties"]["requestType"] for r in arm.schedule_requests.values())
    assert kinds == ["AdminAssign", "AdminExtend"]  # no AdminRemove in between
    assert not [m for m, _ in arm.requests if m == "DELETE"]

    with freeze_time(T0 + 2 * H + M):  # the old end passed: still held, in Azure too
        world.tick()
        assert world.service.get_request(1).state == "active"
        assert [a.name for a in arm.at(SCOPE)] == [granted.name]
    with freeze_time(T0 + 3 * H):  # the new end: Azure removes it and jitaccess ends it
        assert arm.at(SCOPE) == []
        world.tick()
        assert world.service.get_request(1).state == "expired"
