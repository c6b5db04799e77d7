"""Two `serve` replicas on one PostgreSQL share the work with no leader: every
transition and every notification happens once, and a click works on either."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import pytest
from sqlalchemy import func, select

from conftest import APPROVER, PUBLISHER, register
from jitaccess.domain.policy import ApprovalMode
from jitaccess.server import Server
from jitaccess.settings import Settings
from jitaccess.store.models import AuditEvent, LogGrant, OutboxMessage
from jitaccess_sandbox.fake_slack import FakeSlack
from slack_harness import SECRET, find_button, first_line, http, signed_headers, texts, wait_until

pytestmark = pytest.mark.postgres


class FastClock:
    """Wall time, four times faster: the shortest window (a minute) passes in 15
    seconds. Both replicas read the same clock, as real replicas read one NTP time, and
    keep their leases on it (``app/leases.py``): a keeper timed on the wall clock let
    the relay's 60 s lease lapse after 15 s here, and a message went out twice."""

    def __init__(self, speed: float = 4.0) -> None:
        self._epoch = datetime.now(UTC)
        self._started = time.monotonic()
        self._speed = speed

    def __call__(self) -> datetime:
        return self._epoch + timedelta(seconds=(time.monotonic() - self._started) * self._speed)


FAST_CLOCK = FastClock()


@pytest.fixture
def replicas(pg_url: str, fake_slack: FakeSlack, tmp_path: Path) -> Iterator[list[Server]]:
    servers = []
    for _ in range(2):
        settings = Settings(
            JITACCESS_DATABASE_URL=pg_url,
            JITACCESS_HOST="127.0.0.1",
            JITACCESS_PORT=0,
            SLACK_BOT_TOKEN="xoxb-test",
            SLACK_SIGNING_SECRET=SECRET,
            SLACK_API_URL=fake_slack.base_url,
            JITACCESS_SWEEP_INTERVAL_SECONDS=0.2,
            JITACCESS_RELAY_INTERVAL_SECONDS=0.2,
            JITACCESS_SWEEP_BATCH_SIZE=25,
            JITACCESS_REMIND_BEFORE_MINUTES=0,
        )
        server = Server(settings, clock=FAST_CLOCK)
        servers.append(server)
    for server in servers:
        server.start()
    yield servers
    for server in servers:
        server.stop()


def test_two_replicas_expire_300_grants_each_exactly_once(
    replicas: list[Server], fake_slack: FakeSlack
) -> None:
    service = replicas[0].container.service
    # One resource group per request: one person's requests for a role on one resource
    # group may not overlap, and this is one person's 300 grants ending together.
    apps = [f"crm{i}" for i in range(300)]
    for name in apps:
        register(service, name=name, mode=ApprovalMode.AUTOMATIC, approvers=(APPROVER,))
    now = FAST_CLOCK()
    with service.db.transaction() as s:
        assert s.execute(select(func.count()).select_from(AuditEvent)).scalar_one() >= 1
    ids = []
    for i in range(300):
        now = FAST_CLOCK()
        ids.append(
            service.submit(
                apps[i],
                requester=PUBLISHER,
                role="Owner",
                duration=timedelta(minutes=1),
                justification=f"job {i}",
                starts_at=now + timedelta(seconds=20),
                now=now,
            ).id
        )

    def all_expired() -> bool:
        return {r.state for r in service.list_requests(limit=1000)} == {"expired"}

    assert wait_until(all_expired, 90), Counter(r.state for r in service.list_requests(limit=1000))
    with service.db.transaction(readonly=True) as s:
        expires = Counter(
            s.execute(select(AuditEvent.request_id).where(AuditEvent.action == "expire")).scalars()
        )
        activations = Counter(
            s.execute(
                select(AuditEvent.request_id).where(AuditEvent.action == "activate")
            ).scalars()
        )
        grants = s.execute(select(LogGrant.grant_calls, LogGrant.revoke_calls)).all()
    assert expires == Counter(dict.fromkeys(ids, 1))  # each ended exactly once
    assert set(activations.values()) == {1} and len(activations) == len(grants)
    assert set(grants) == {(1, 1)}  # no backend call doubled
    assert len(activations) > 250  # (a window that passed entirely is never granted)

    def delivered() -> bool:
        with service.db.transaction(readonly=True) as s:
            return (
                s.execute(
                    select(func.count())
                    .select_from(OutboxMessage)
                    .where(OutboxMessage.settled_at.is_(None))
                ).scalar_one()
                == 0
            )

    assert wait_until(delivered, 60)
    # One card per request in Pat's DM, whichever replica posted or edited it, its
    # first line the final state; every step told once, as a reply in its thread
    # (auto_approved, active, expired: a request the policy approved at submission has
    # no "sent to the approvers" step), never twice.
    cards = fake_slack.cards_to(PUBLISHER)
    assert Counter(c["text"].split(" for ")[0] for c in cards) == Counter(
        {f"Your request #{i}": 1 for i in ids}
    )
    assert all("Expired" in first_line(c) for c in cards)
    card_ts = {c["ts"] for c in cards}
    replies = [m for m in fake_slack.dms_to(PUBLISHER) if m["ts"] not in card_ts]
    assert {m["thread_ts"] for m in replies} == card_ts
    headlines = Counter(m["text"] for m in replies)
    assert max(headlines.values()) == 1
    with service.db.transaction(readonly=True) as s:
        steps = s.execute(
            select(OutboxMessage.payload).where(OutboxMessage.kind == "requester_update")
        ).scalars()
        expected = sum(1 for payload in steps if payload.get("to") != "pending")
    assert len(headlines) == expected == 3 * len(ids)


def test_a_click_on_one_replica_and_the_reason_on_the_other(
    replicas: list[Server], fake_slack: FakeSlack
) -> None:
    first, second = replicas
    service = first.container.service
    register(service, approvers=(APPROVER,))
    now = FAST_CLOCK()
    rid = service.submit(
        "crm",
        requester=PUBLISHER,
        role="Owner",
        duration=timedelta(hours=1),
        justification="x",
        starts_at=now + timedelta(hours=1),
        now=now,
    ).id
    assert fake_slack.wait_for(
        lambda: any(f"Access request #{rid}" in texts(m) for m in fake_slack.dms_to(APPROVER)), 10
    )
    card = next(m for m in fake_slack.dms_to(APPROVER) if f"Access request #{rid}" in texts(m))
    button, block_id = find_button(card["blocks"], "jit_approve")
    click = {
        "type": "block_actions",
        "user": {"id": APPROVER},
        "team": {"id": "T0001"},
        "trigger_id": fake_slack.new_trigger_id(APPROVER),
        "channel": {"id": card["channel"]},
        "container": {"type": "message", "channel_id": card["channel"]},
        "actions": [
            {
                "action_id": "jit_approve",
                "block_id": block_id,
                "value": button["value"],
                "type": "button",
            }
        ],
    }
    body = urlencode({"payload": json.dumps(click)})
    assert (
        http("POST", f"http://127.0.0.1:{first.port}/slack/events", body, signed_headers(body))[0]
        == 200
    )
    assert fake_slack.wait_for(lambda: bool(fake_slack.opened_views(APPROVER)), 10)
    modal = fake_slack.opened_views(APPROVER)[-1]
    submission = {
        "type": "view_submission",
        "user": {"id": APPROVER},
        "team": {"id": "T0001"},
        "view": {
            "id": modal["id"],
            "type": "modal",
            "callback_id": modal["view"]["callback_id"],
            "private_metadata": modal["view"]["private_metadata"],
            "state": {
                "values": {
                    "reason": {"reason": {"type": "plain_text_input", "value": "on replica two"}}
                }
            },
        },
    }
    body = urlencode({"payload": json.dumps(submission)})
    assert (
        http("POST", f"http://127.0.0.1:{second.port}/slack/events", body, signed_headers(body))[0]
        == 200
    )
    # The reason is acked first and the approval written right after (ack first).
    service_two = second.container.service
    assert wait_until(lambda: service_two.get_request(rid).state == "approved", 10)
    view = service_two.get_request(rid)
    assert (view.state, view.decided_by, view.decision_reason) == (
        "approved",
        APPROVER,
        "on replica two",
    )
