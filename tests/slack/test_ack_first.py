"""Ack first (issue 11): over real HTTP, with Bolt's ``process_before_response=False``
as under ``serve``, a listener answers Slack before its write happens; a modal's
validation errors still come back inline in the ack; and a refusal only the write can
discover reaches the user as an ephemeral message.

The write is held back by a service subclass in the wiring (a gate the test opens),
not by mocking anything of Slack's: the real Bolt app, its WebClient and the fake Slack
Web API, signed requests over HTTP through ``slack_gate``."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from waitress import wasyncore
from waitress.server import create_server

from conftest import APPROVER, APPROVER2, PUBLISHER, register
from jitaccess.app.deps import build_deps
from jitaccess.app.service import JitService, RetryPolicy
from jitaccess.app.views import RequestView
from jitaccess.domain.errors import Conflict
from jitaccess.providers.base import ProviderRegistry
from jitaccess.providers.log import LogProvider
from jitaccess.slack.blocks import ids
from jitaccess.slack.principals import SLACK_PRINCIPALS
from jitaccess.slack.runtime import SlackRuntime, build_slack, slack_client
from jitaccess.store.db import Database
from jitaccess_sandbox.fake_slack import FakeSlack
from slack_harness import SECRET, TEAM, now, signed_headers


class GatedService(JitService):
    """Holds the writes named in ``held`` until the test opens the gate."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.held: set[str] = set()
        self.entered: dict[str, threading.Event] = {}
        self.gate = threading.Event()

    def _wait(self, name: str) -> None:
        if name in self.held:
            self.entered.setdefault(name, threading.Event()).set()
            assert self.gate.wait(10), f"the test never opened the gate for {name}"

    def approve(self, request_id: int, **kwargs: Any) -> RequestView:
        self._wait("approve")
        return super().approve(request_id, **kwargs)

    def submit(self, app_name: str, **kwargs: Any) -> RequestView:
        self._wait("submit")
        return super().submit(app_name, **kwargs)

    def hold(self, name: str) -> threading.Event:
        self.held.add(name)
        return self.entered.setdefault(name, threading.Event())


class HttpWorld:
    def __init__(self, fake: FakeSlack, service: GatedService) -> None:
        self.fake = fake
        self.service = service
        self.runtime: SlackRuntime = build_slack(
            service, slack_client("xoxb-test", fake.base_url), signing_secret=SECRET, clock=now
        )
        self.http = create_server(self.runtime.http_endpoint(), host="127.0.0.1", port=0, threads=4)
        self.loop = threading.Thread(target=self.http.run, daemon=True)
        self.loop.start()

    def close(self) -> None:
        self.service.gate.set()
        self.runtime.close(5)
        # Close waitress from its own loop thread, as Server.stop does (closing its
        # sockets from here races the loop's select(): "Bad file descriptor").
        self.http.task_dispatcher.shutdown(timeout=5)
        self.http.trigger.pull_trigger(lambda: wasyncore.close_all(self.http._map))
        self.loop.join(5)

    def post(self, fields: dict[str, str]) -> tuple[int, dict[str, Any]]:
        body = urlencode(fields)
        conn = http.client.HTTPConnection("127.0.0.1", self.http.effective_port, timeout=10)
        try:
            conn.request("POST", "/slack/events", body=body, headers=signed_headers(body))
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        return response.status, json.loads(raw) if raw else {}

    def submit_reason(self, user: str, request_id: int, reason: str) -> tuple[int, dict[str, Any]]:
        meta = {
            "request_id": request_id,
            "decision": "approve",
            "channel": self.fake.dm_channel_for(user),
        }
        payload = {
            "type": "view_submission",
            "team": {"id": TEAM},
            "user": {"id": user},
            "api_app_id": "A0001",
            "trigger_id": self.fake.new_trigger_id(user),
            "view": {
                "id": "VREASON",
                "type": "modal",
                "hash": "h",
                "callback_id": ids.DECISION_MODAL,
                "private_metadata": json.dumps(meta),
                "state": {
                    "values": {"reason": {"reason": {"type": "plain_text_input", "value": reason}}}
                },
            },
        }
        return self.post({"payload": json.dumps(payload)})

    def command(self, user: str, text: str, key: str) -> tuple[int, dict[str, Any]]:
        return self.post(
            {
                "team_id": TEAM,
                "api_app_id": "A0001",
                "channel_id": "C0GENERAL",
                "user_id": user,
                "command": "/jit",
                "text": text,
                "response_url": self.fake.response_url(key),
                "trigger_id": self.fake.new_trigger_id(user),
            }
        )


def eventually(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


@pytest.fixture
def world(fake_slack: FakeSlack, db: Database) -> Iterator[HttpWorld]:
    providers = ProviderRegistry()
    providers.register(LogProvider(db))
    service = GatedService(
        build_deps(
            db,
            providers,
            retry=RetryPolicy(base=timedelta(seconds=10), cap=timedelta(minutes=5)),
            inline=False,  # as under serve
            principals=SLACK_PRINCIPALS,
        )
    )
    register(service)
    instance = HttpWorld(fake_slack, service)
    yield instance
    instance.close()


def pending(world: HttpWorld) -> int:
    return world.service.submit(
        "crm",
        requester=PUBLISHER,
        role="Contributor",
        duration=timedelta(hours=1),
        justification="deploy",
        now=now(),
        starts_at=now() + timedelta(hours=1),
    ).id


def test_reason_submission_is_acked_before_the_approval_is_written(world: HttpWorld) -> None:
    request_id = pending(world)
    entered = world.service.hold("approve")
    status, body = world.submit_reason(APPROVER, request_id, "CHG-1")
    # The modal closed (an empty 200) while the approval was still held back.
    assert (status, body) == (200, {})
    assert entered.wait(5)
    assert world.service.get_request(request_id).state == "pending"
    world.service.gate.set()
    eventually(lambda: world.service.get_request(request_id).state == "approved")
    assert world.fake.ephemerals_to(APPROVER) == []


def test_a_blank_reason_or_a_decided_request_is_answered_in_the_ack(world: HttpWorld) -> None:
    request_id = pending(world)
    entered = world.service.hold("approve")
    status, body = world.submit_reason(APPROVER, request_id, "   ")
    assert status == 200 and body["response_action"] == "errors"
    assert "reason is required" in body["errors"]["reason"]
    # A request already decided: the read before the ack says so, in the modal.
    world.service.deny(request_id, actor=APPROVER2, reason="no", now=now())
    status, body = world.submit_reason(APPROVER, request_id, "CHG-1")
    assert body["response_action"] == "update"
    assert "denied" in json.dumps(body["view"])
    time.sleep(0.2)
    assert not entered.is_set()  # no write was even attempted


def test_a_refusal_found_after_the_ack_reaches_the_user_as_an_ephemeral(
    world: HttpWorld,
) -> None:
    request_id = pending(world)
    entered = world.service.hold("approve")
    assert world.submit_reason(APPROVER, request_id, "CHG-1") == (200, {})
    assert entered.wait(5)
    # Meanwhile the other approver denies: the held approval will lose.
    world.service.deny(request_id, actor=APPROVER2, reason="not now", now=now())
    world.service.gate.set()
    eventually(lambda: world.fake.ephemerals_to(APPROVER))
    said = world.fake.ephemerals_to(APPROVER)[0]["text"]
    assert "denied" in said, said
    assert world.service.get_request(request_id).state == "denied"
    with pytest.raises(Conflict):  # (what the listener got and reported)
        world.service.approve(request_id, actor=APPROVER, reason="x", now=now())


def test_slash_request_is_acked_before_it_is_submitted(world: HttpWorld) -> None:
    entered = world.service.hold("submit")
    status, _ = world.command(PUBLISHER, "request crm Contributor 1h deploy hotfix", "one-liner")
    assert status == 200
    assert entered.wait(5)
    assert world.service.list_requests() == []
    assert world.fake.responses.get("one-liner", []) == []
    world.service.gate.set()
    eventually(lambda: world.fake.responses.get("one-liner"))
    assert "submitted" in world.fake.responses["one-liner"][0]["text"]
    assert len(world.service.list_requests()) == 1


def request_form(user: str, values: dict[str, Any]) -> dict[str, str]:
    payload = {
        "type": "view_submission",
        "team": {"id": TEAM},
        "user": {"id": user},
        "api_app_id": "A0001",
        "view": {
            "id": "VREQ",
            "type": "modal",
            "hash": "h",
            "callback_id": ids.REQUEST_MODAL,
            "private_metadata": "{}",
            "state": {"values": values},
        },
    }
    return {"payload": json.dumps(payload)}


def form_values(role: str, duration: str) -> dict[str, Any]:
    def pick(value: str) -> dict[str, Any]:
        return {"type": "static_select", "selected_option": {"value": value}}

    return {
        "app": {ids.APP_PICKED: pick("crm")},
        "role": {"role": pick(role)},
        "duration": {"duration": pick(duration)},
        "justification": {"justification": {"type": "plain_text_input", "value": "deploy"}},
    }


def test_request_modal_errors_stay_inline_and_a_good_one_is_written_after_the_ack(
    world: HttpWorld,
) -> None:
    entered = world.service.hold("submit")
    status, body = world.post(request_form(PUBLISHER, form_values("Janitor", "1h")))
    assert status == 200 and body["response_action"] == "errors"
    assert "not an eligible role" in body["errors"]["role"]
    status, body = world.post(request_form(PUBLISHER, form_values("Contributor", "24h")))
    assert "maximum" in body["errors"]["duration"]
    assert not entered.is_set()  # the validation wrote nothing

    assert world.post(request_form(PUBLISHER, form_values("Contributor", "1h"))) == (200, {})
    assert entered.wait(5)
    assert world.service.list_requests() == []
    world.service.gate.set()
    eventually(lambda: len(world.service.list_requests()) == 1)
