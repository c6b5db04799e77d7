"""The button listeners alone (``slack/listeners/actions.py``), called directly with a
recording ``ack`` and a real WebClient on the fake Slack."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from conftest import APPROVER, PUBLISHER, register
from jitaccess.slack.blocks import ids
from jitaccess.slack.listeners.actions import ActionListeners
from jitaccess.store.db import Database
from jitaccess_sandbox.fake_slack import FakeSlack
from slack_harness import Recorder, listener_parts


def now() -> datetime:
    return datetime.now(UTC)


def click(fake: FakeSlack, user: str, value: str, action_id: str) -> dict[str, Any]:
    return {
        "user": {"id": user},
        "trigger_id": fake.new_trigger_id(user),
        "channel": {"id": fake.dm_channel_for(user)},
        "actions": [{"action_id": action_id, "block_id": "b", "value": value}],
    }


def pending(fake: FakeSlack, db: Database) -> tuple[Any, ...]:
    service, client, notifier = listener_parts(fake, db)
    register(service, now=now())
    view = service.submit(
        "crm",
        requester=PUBLISHER,
        role="Contributor",
        duration=timedelta(hours=2),
        justification="deploy hotfix",
        now=now(),
    )
    return ActionListeners(service, notifier, now), service, client, view.id


def test_cancel_is_acked_and_withdraws_the_request(fake_slack: FakeSlack, db: Database) -> None:
    listeners, service, client, rid = pending(fake_slack, db)
    ack = Recorder()
    on_cancel = listeners._own_request_button("cancel")
    on_cancel(ack=ack, body=click(fake_slack, PUBLISHER, str(rid), ids.CANCEL), client=client)
    assert ack.calls == [{}]
    assert service.get_request(rid).state == "cancelled"


def test_someone_elses_cancel_is_refused_in_an_ephemeral(
    fake_slack: FakeSlack, db: Database
) -> None:
    listeners, service, client, rid = pending(fake_slack, db)
    ack = Recorder()
    on_cancel = listeners._own_request_button("cancel")
    on_cancel(ack=ack, body=click(fake_slack, APPROVER, str(rid), ids.CANCEL), client=client)
    assert ack.calls == [{}]
    assert service.get_request(rid).state == "pending"
    assert len(fake_slack.ephemerals_to(APPROVER)) == 1


def test_approve_opens_the_reason_form(fake_slack: FakeSlack, db: Database) -> None:
    listeners, service, client, rid = pending(fake_slack, db)
    ack = Recorder()
    on_approve = listeners._decision_button("approve")
    on_approve(ack=ack, body=click(fake_slack, APPROVER, str(rid), ids.APPROVE), client=client)
    assert ack.calls == [{}]
    [modal] = fake_slack.opened_views(APPROVER)
    assert modal["view"]["callback_id"] == ids.DECISION_MODAL
    assert service.get_request(rid).state == "pending"  # nothing decided before the reason


def test_a_click_without_a_request_id_is_acked_and_ignored(
    fake_slack: FakeSlack, db: Database
) -> None:
    listeners, service, client, rid = pending(fake_slack, db)
    ack = Recorder()
    on_approve = listeners._decision_button("approve")
    on_approve(ack=ack, body=click(fake_slack, APPROVER, "x1", ids.APPROVE), client=client)
    assert ack.calls == [{}]
    assert fake_slack.opened_views(APPROVER) == []
    assert service.get_request(rid).state == "pending"
