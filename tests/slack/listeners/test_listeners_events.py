"""The Events API listeners alone (``slack/listeners/events.py``), called directly with a
real WebClient on the fake Slack."""

from __future__ import annotations

from datetime import UTC, datetime

from conftest import APPROVER, register
from jitaccess.slack.listeners.events import EventListeners
from jitaccess.store.db import Database
from jitaccess_sandbox.fake_slack import FakeSlack
from slack_harness import listener_parts


def now() -> datetime:
    return datetime.now(UTC)


def test_the_app_home_is_published_once_per_event(fake_slack: FakeSlack, db: Database) -> None:
    service, client, notifier = listener_parts(fake_slack, db)
    register(service, now=now())
    listeners = EventListeners(service, notifier, now)
    event = {"type": "app_home_opened", "user": APPROVER, "tab": "home"}
    listeners.on_home_opened(event=event, body={"event_id": "Ev1"}, client=client)
    assert fake_slack.current_home(APPROVER) is not None
    assert len(fake_slack.calls_to("views.publish")) == 1
    # Slack retried the same event: nothing is published again.
    listeners.on_home_opened(event=event, body={"event_id": "Ev1"}, client=client)
    assert len(fake_slack.calls_to("views.publish")) == 1


def test_the_messages_tab_publishes_nothing(fake_slack: FakeSlack, db: Database) -> None:
    service, client, notifier = listener_parts(fake_slack, db)
    listeners = EventListeners(service, notifier, now)
    event = {"type": "app_home_opened", "user": APPROVER, "tab": "messages"}
    listeners.on_home_opened(event=event, body={"event_id": "Ev2"}, client=client)
    assert fake_slack.calls_to("views.publish") == []


def test_a_group_change_without_a_group_changes_nothing(
    fake_slack: FakeSlack, db: Database
) -> None:
    service, _, notifier = listener_parts(fake_slack, db)
    listeners = EventListeners(service, notifier, now)
    listeners.on_group_members_changed(event={}, body={"event_id": "Ev3"})
    assert fake_slack.calls == []
