"""Many grants ending at once against a fake Slack that enforces Slack's rate limits
(issue 11): queued updates of a card are coalesced, calls are paced, and nothing is
lost, sent twice, or marked delivered before Slack accepted it.

Time is fake throughout: freezegun for the service, and one manual clock shared by the
fake Slack's rate limiter and the notifier's pacer (a wait advances it), so the test
measures Slack time exactly without sleeping."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from freezegun import freeze_time
from sqlalchemy import select

from conftest import APPROVER, APPROVER2, PUBLISHER, START, register, utc
from jitaccess.domain.lifecycle import RequestState
from jitaccess.slack.blocks import markup
from jitaccess.slack.blocks.ids import CANCEL, RELEASE
from jitaccess.slack.pacing import SlackPacer
from jitaccess.store.db import Database
from jitaccess.store.models import OutboxMessage
from jitaccess_sandbox.fake_slack import FakeSlack, SlackRateLimiter
from slack_harness import SlackWorld, now, texts

T0 = utc(START)
H = timedelta(hours=1)
APPROVERS = (APPROVER, APPROVER2)


class ManualClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def wait(self, seconds: float) -> bool:
        self.t += seconds
        return False  # never stopping


@pytest.fixture
def world(fake_slack: FakeSlack, db: Database) -> Iterator[SlackWorld]:
    with freeze_time(START):
        yield SlackWorld(fake_slack, db)


def limit(world: SlackWorld) -> ManualClock:
    """From now on the fake enforces Slack's limits and the relay paces itself, on a
    manual clock."""
    clock = ManualClock()
    world.fake.set_rate_limits(SlackRateLimiter(clock=clock))
    notifier = world.runtime.notifier
    notifier.pacer = SlackPacer(clock=clock, wait=clock.wait)
    return clock


def card_for(world: SlackWorld, approver: str, request_id: int) -> dict[str, Any]:
    cards = [
        m for m in world.fake.dms_to(approver) if f'"Access request #{request_id}"' in texts(m)
    ]
    assert len(cards) == 1, (approver, request_id, len(cards))
    return cards[0]


def rows(db: Database) -> list[OutboxMessage]:
    with db.transaction(readonly=True) as s:
        return list(s.execute(select(OutboxMessage).order_by(OutboxMessage.id)).scalars())


def grants_ending_together(world: SlackWorld, count: int) -> list[int]:
    """``count`` approved requests whose cards are in Slack, activated and expired
    while the relay was behind: each card has two queued updates (active, expired)."""
    # One application (resource group) per request: one person's requests for a role
    # on one resource group may not overlap, and this is one person's forty grants.
    ids = []
    for i in range(count):
        register(world.service, name=f"crm{i}")
        rid = world.service.submit(
            f"crm{i}",
            requester=PUBLISHER,
            role="Owner",
            duration=H,
            justification=f"OPS-{i}",
            starts_at=T0 + H,
            now=now(),
        ).id
        world.service.approve(rid, actor=APPROVER, reason=f"CHG-{i}", now=now())
        ids.append(rid)
    while world.deliver().delivered:
        pass
    world.service.sweep(T0 + H)  # activated; the relay is behind
    world.service.sweep(T0 + 2 * H)  # and every window ends at once
    return ids


def test_forty_grants_ending_at_once_one_update_per_card_within_the_limits(
    world: SlackWorld,
) -> None:
    fake = world.fake
    with freeze_time(T0) as frozen:
        ids = grants_ending_together(world, 40)
        approved_cards = {
            (a, rid): card_for(world, a, rid) for a in APPROVERS for rid in ids
        }  # posted, showing Approved
        requester_before = len(fake.dms_to(PUBLISHER))
        calls_before = len(fake.calls)
        clock = limit(world)
        frozen.move_to(T0 + 2 * H)
        for _ in range(5):
            world.deliver()
        elapsed = clock.t

    calls = fake.calls[calls_before:]
    accepted = [c for c in calls if c.status == 200]
    updates = Counter(
        (c.args["channel"], c.args["ts"]) for c in accepted if c.method == "chat.update"
    )
    # Every approver card: still one message, edited in place once, showing Expired.
    for (approver, rid), before in approved_cards.items():
        card = card_for(world, approver, rid)
        assert card["ts"] == before["ts"]
        assert f"*{markup.STATE_LABEL[RequestState.EXPIRED]}*" in texts(card)
        assert updates[(card["channel"], card["ts"])] == 1, (approver, rid)
    # The requester: each step once ("is active", "has expired"), the last without
    # buttons; only the card that had buttons before (Approved) was edited.
    posted = fake.dms_to(PUBLISHER)[requester_before:]
    headlines = Counter(m["text"] for m in posted)
    assert len(posted) == 2 * len(ids) and set(headlines.values()) == {1}
    assert all(CANCEL not in texts(m) and RELEASE not in texts(m) for m in posted)
    assert sum(updates.values()) == 2 * len(ids) + len(ids)
    assert not [c for c in accepted if c.method == "conversations.open"]  # cached
    # Pacing: at most one refusal per method (then it keeps to the limit), and the
    # whole backlog in Slack time within 1.1 x the minimum the limits allow (one chat.update per changed card,
    # 1.2 s apart: they dominate the requester's posts, one a second).
    refused = Counter(c.method for c in calls if c.status == 429)
    assert all(n <= 1 for n in refused.values()), refused
    minimum = sum(updates.values()) * 60 / 50
    assert elapsed <= 1.1 * minimum, (elapsed, minimum)

    # Nothing lost, nothing twice: every row settled; the superseded ones say by what,
    # and were settled in the very transaction that recorded that one's delivery.
    all_rows = rows(world.db)
    assert all(r.settled_at is not None for r in all_rows)
    by_key = {r.dedup_key: r for r in all_rows}
    unsent = [r for r in all_rows if r.delivered_at is None]
    superseded = [r for r in unsent if r.kind == "approver_card"]
    # (A reminder for access already over is skipped, never sent.)
    assert all(
        (r.last_error or "").startswith("skipped:") for r in unsent if r.kind != "approver_card"
    )
    # The Active update of every card, and (queued with Approved before the cards
    # were first posted) the Pending one.
    assert Counter(r.dedup_key.split(":")[2] for r in superseded) == {
        "active": 2 * len(ids),
        "pending": 2 * len(ids),
    }
    for old in superseded:
        newer = by_key[(old.last_error or "").removeprefix("superseded by ")]
        assert newer.dedup_key.split(":")[3:] == old.dedup_key.split(":")[3:]
        assert newer.id > old.id
        assert newer.delivered_at is not None and newer.delivered_at == old.settled_at
    assert fake.server_errors == []


def test_nothing_superseded_until_slack_accepted_the_newest(world: SlackWorld) -> None:
    fake = world.fake
    with freeze_time(T0) as frozen:
        (rid,) = grants_ending_together(world, 1)
        limit(world)
        frozen.move_to(T0 + 2 * H)
        fake.set_down(True)
        assert world.deliver().failed >= 1
        # Slack refused the newest: the older rows are not settled, nothing delivered.
        queued = [r for r in rows(world.db) if r.settled_at is None]
        assert {r.dedup_key.split(":")[2] for r in queued} == {"active", "expired"}
        assert all(r.delivered_at is None for r in queued)
        assert "Approved" in texts(card_for(world, APPROVER, rid))

        fake.set_down(False)
        fake.fail_next("chat.update", status=500)  # one card's newest update fails once
        frozen.move_to(T0 + 3 * H)
        world.deliver()
        frozen.move_to(T0 + 4 * H)
        world.deliver()
    all_rows = rows(world.db)
    assert all(r.settled_at is not None for r in all_rows)
    for approver in APPROVERS:
        old = next(
            r for r in all_rows if r.dedup_key == f"request:{rid}:active:approver_card:{approver}"
        )
        new = next(
            r for r in all_rows if r.dedup_key == f"request:{rid}:expired:approver_card:{approver}"
        )
        assert old.delivered_at is None and old.last_error == f"superseded by {new.dedup_key}"
        assert new.delivered_at is not None and old.settled_at == new.delivered_at
        assert "Expired" in texts(card_for(world, approver, rid))
    accepted_updates = [
        c
        for c in fake.calls_to("chat.update")
        if c.status == 200 and "Access request" in json.dumps(c.args)
    ]
    assert len(accepted_updates) == 2  # one per approver card, the refused one retried


def test_redelivery_after_a_crash_between_slack_and_the_settle_sends_nothing_again(
    world: SlackWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = world.fake
    with freeze_time(T0) as frozen:
        (rid,) = grants_ending_together(world, 1)
        limit(world)
        calls_before = len(fake.calls)
        frozen.move_to(T0 + 2 * H)
        settle = world.relay._settle

        def crash(*args: object, **kwargs: object) -> None:
            raise RuntimeError("the process died before recording the delivery")

        monkeypatch.setattr(world.relay, "_settle", crash)
        with pytest.raises(RuntimeError):
            world.deliver()
        monkeypatch.setattr(world.relay, "_settle", settle)
        queued = [r for r in rows(world.db) if r.settled_at is None]
        assert queued and all(r.delivered_at is None for r in queued)
        frozen.move_to(T0 + 3 * H)  # the lease lapsed: another relay takes over
        for _ in range(3):
            world.deliver()
    all_rows = rows(world.db)
    assert all(r.settled_at is not None for r in all_rows)
    # What reached Slack before the crash is not sent again; each card is edited once.
    updates = [c for c in fake.calls[calls_before:] if c.method == "chat.update"]
    cards = Counter((c.args["channel"], c.args["ts"]) for c in updates if c.status == 200)
    assert len(cards) == 3 and set(cards.values()) == {1}
    for approver in APPROVERS:
        assert "Expired" in texts(card_for(world, approver, rid))
    headlines = Counter(m["text"] for m in fake.dms_to(PUBLISHER))
    assert set(headlines.values()) == {1}
