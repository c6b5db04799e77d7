"""The ``/jit`` listener alone (``slack/listeners/commands.py``): called directly with a
recording ``ack``/``respond`` and a real WebClient on the fake Slack."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from conftest import PUBLISHER, register
from jitaccess.slack.commands import HELP
from jitaccess.slack.listeners.commands import CommandListeners
from jitaccess.store.db import Database
from jitaccess_sandbox.fake_slack import FakeSlack
from slack_harness import Recorder, listener_parts


def now() -> datetime:
    return datetime.now(UTC)


def run(fake: FakeSlack, db: Database, text: str, user: str = PUBLISHER) -> tuple[Any, ...]:
    service, client, notifier = listener_parts(fake, db)
    register(service, now=now())
    listeners = CommandListeners(service, notifier, now)
    ack, respond = Recorder(), Recorder()
    command = {"user_id": user, "text": text, "trigger_id": fake.new_trigger_id(user)}
    listeners.on_command(ack=ack, command=command, respond=respond, client=client)
    return service, ack, respond


def test_help_is_acked_empty_then_answered(fake_slack: FakeSlack, db: Database) -> None:
    _, ack, respond = run(fake_slack, db, "help")
    assert ack.calls == [{}]
    assert respond.calls == [{"text": HELP, "blocks": None}]


def test_a_one_line_request_is_recorded_and_confirmed(fake_slack: FakeSlack, db: Database) -> None:
    service, ack, respond = run(fake_slack, db, "request crm Contributor 2h deploy hotfix")
    assert ack.calls == [{}]
    [mine] = service.list_requests(requester=PUBLISHER)
    assert (mine.app, mine.role, mine.state) == ("crm", "Contributor", "pending")
    [reply] = respond.calls
    assert reply["text"].startswith(f"Request #{mine.id} submitted: Contributor on crm")


def test_a_usage_error_is_said_and_nothing_is_recorded(fake_slack: FakeSlack, db: Database) -> None:
    service, ack, respond = run(fake_slack, db, "request crm")
    assert ack.calls == [{}]
    [reply] = respond.calls
    assert "request" in reply["text"] and "blocks" not in reply
    assert service.list_requests(requester=PUBLISHER) == []


def test_a_refusal_is_the_reply(fake_slack: FakeSlack, db: Database) -> None:
    _, ack, respond = run(fake_slack, db, "cancel 99")
    assert ack.calls == [{}]
    [reply] = respond.calls
    assert "99" in reply["text"]


def test_request_without_arguments_opens_the_form(fake_slack: FakeSlack, db: Database) -> None:
    _, ack, respond = run(fake_slack, db, "request")
    assert ack.calls == [{}] and respond.calls == []
    [modal] = fake_slack.opened_views(PUBLISHER)
    assert modal["view"]["title"]["text"] == "Request access"
