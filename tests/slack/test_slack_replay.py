"""The replay guard: signatures of handled Slack requests live in the database, shared by
every replica and kept past Slack's five-minute window, then pruned; Events API ids
likewise, kept a day."""

from __future__ import annotations

from datetime import timedelta

from freezegun import freeze_time
from sqlalchemy import func, select

from conftest import APPROVER, register
from jitaccess.app.slack_messages import SlackMessages
from jitaccess.slack.replay import EVENT_KEEP, KEEP, ReplayGuard
from jitaccess.store.db import Database
from jitaccess.store.models import SlackEvent, SlackSignature
from jitaccess_sandbox.fake_slack import FakeSlack
from slack_harness import SlackWorld

SIGNATURE = "v0=" + "a" * 64


def stored(db: Database, table: type[SlackSignature | SlackEvent] = SlackSignature) -> int:
    with db.transaction(readonly=True) as session:
        return int(session.execute(select(func.count()).select_from(table)).scalar_one())


def test_a_signature_is_first_seen_once_across_replicas(db: Database) -> None:
    """Two replicas sharing the database agree that a second delivery is a replay."""
    one, two = ReplayGuard(SlackMessages(db)), ReplayGuard(SlackMessages(Database(db.url)))
    assert one.first_time(SIGNATURE)
    assert not two.first_time(SIGNATURE)
    assert not one.first_time(SIGNATURE)
    assert two.first_time("v0=" + "b" * 64)


def test_signatures_are_kept_past_the_window_then_pruned(db: Database) -> None:
    """A signature is remembered for the whole replay window and forgotten after it."""
    guard = ReplayGuard(SlackMessages(db))
    with freeze_time("2026-11-27 10:00:00") as frozen:
        assert guard.first_time(SIGNATURE)
        frozen.tick(KEEP - timedelta(seconds=1))
        assert not guard.first_time(SIGNATURE)
        frozen.tick(timedelta(seconds=2))
        assert guard.first_time("v0=" + "c" * 64)  # prunes the first one
        assert stored(db) == 1
        assert guard.first_time(SIGNATURE)  # long past Slack's five-minute window


def test_the_guard_works_on_postgresql(pg_url: str) -> None:
    """On PostgreSQL (several replicas) the first delivery wins and the replay is seen."""
    db = Database(pg_url)
    try:
        db.upgrade()
        one, two = ReplayGuard(SlackMessages(db)), ReplayGuard(SlackMessages(Database(pg_url)))
        assert one.first_time(SIGNATURE)
        assert not two.first_time(SIGNATURE)
        two.messages.db.dispose()
    finally:
        db.dispose()


def test_event_ids_are_kept_a_day_then_pruned(fake_slack: FakeSlack, db: Database) -> None:
    """A retried App Home event within a day publishes nothing; older event ids are pruned."""
    with freeze_time("2026-11-27 10:00:00") as frozen:
        world = SlackWorld(fake_slack, db)
        register(world.service)
        for n in range(3):
            assert world.home_opened(APPROVER, f"Ev{n}").status == 200
        assert len(fake_slack.calls_to("views.publish")) == 3
        frozen.tick(EVENT_KEEP - timedelta(seconds=1))
        retry = {"x-slack-retry-num": "3", "x-slack-retry-reason": "http_timeout"}
        assert world.home_opened(APPROVER, "Ev0", **retry).status == 200
        assert len(fake_slack.calls_to("views.publish")) == 3  # the retry did nothing
        assert stored(db, SlackEvent) == 3
        frozen.tick(timedelta(seconds=2))
        assert world.home_opened(APPROVER, "Ev9").status == 200
        assert len(fake_slack.calls_to("views.publish")) == 4
        assert stored(db, SlackEvent) == 1  # the day-old ids went with that insert
