"""The modal-submission listeners alone (``slack/listeners/views.py``), called directly
with a recording ``ack`` and a real WebClient on the fake Slack."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from conftest import APPROVER, PUBLISHER, register
from jitaccess.slack.listeners.views import ViewListeners
from jitaccess.store.db import Database
from jitaccess_sandbox.fake_slack import FakeSlack
from slack_harness import Recorder, listener_parts


def now() -> datetime:
    return datetime.now(UTC)


def reason_form(request_id: int, decision: str, reason: str) -> dict[str, Any]:
    return {
        "private_metadata": json.dumps({"request_id": request_id, "decision": decision}),
        "state": {"values": {"reason": {"reason": {"type": "plain_text_input", "value": reason}}}},
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
    return ViewListeners(service, notifier, now), service, client, view.id


def test_an_approval_with_a_reason_is_acked_and_recorded(
    fake_slack: FakeSlack, db: Database
) -> None:
    listeners, service, client, rid = pending(fake_slack, db)
    ack = Recorder()
    listeners.on_decision_submitted(
        ack=ack,
        body={"user": {"id": APPROVER}},
        view=reason_form(rid, "approve", "CHG-7 covers it"),
        client=client,
    )
    assert ack.calls == [{}]
    assert service.get_request(rid).state != "pending"


def test_an_empty_reason_stays_beside_its_field(fake_slack: FakeSlack, db: Database) -> None:
    listeners, service, client, rid = pending(fake_slack, db)
    ack = Recorder()
    listeners.on_decision_submitted(
        ack=ack, body={"user": {"id": APPROVER}}, view=reason_form(rid, "deny", ""), client=client
    )
    [answer] = ack.calls
    assert answer["response_action"] == "errors" and set(answer["errors"]) == {"reason"}
    assert service.get_request(rid).state == "pending"


def test_someone_not_an_approver_gets_the_refusal_in_the_form(
    fake_slack: FakeSlack, db: Database
) -> None:
    listeners, service, client, rid = pending(fake_slack, db)
    ack = Recorder()
    listeners.on_decision_submitted(
        ack=ack,
        body={"user": {"id": PUBLISHER}},
        view=reason_form(rid, "approve", "looks fine"),
        client=client,
    )
    [answer] = ack.calls
    assert answer["response_action"] == "update"
    assert answer["view"]["title"]["text"] == "Nothing changed"
    assert service.get_request(rid).state == "pending"


def test_a_forged_request_form_is_out_of_date(fake_slack: FakeSlack, db: Database) -> None:
    listeners, service, client, _ = pending(fake_slack, db)
    ack = Recorder()
    listeners.on_request_submitted(
        ack=ack, body={"user": {"id": PUBLISHER}}, view={"state": {}}, client=client
    )
    [answer] = ack.calls
    assert answer["response_action"] == "errors"
    assert "out of date" in answer["errors"]["justification"]
    assert len(service.list_requests(requester=PUBLISHER)) == 1
