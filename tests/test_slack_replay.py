"""The replay guard: signatures of handled Slack requests live in the database, shared by
every replica and kept past Slack's five-minute window, then pruned."""

from __future__ import annotations

from datetime import timedelta

from freezegun import freeze_time
from sqlalchemy import func, select

from jitaccess.slack.replay import KEEP, ReplayGuard
from jitaccess.store.db import Database
from jitaccess.store.models import SlackSignature

SIGNATURE = "v0=" + "a" * 64


def stored(db: Database) -> int:
    with db.transaction(readonly=True) as session:
        return int(session.execute(select(func.count()).select_from(SlackSignature)).scalar_one())


def test_a_signature_is_first_seen_once_across_replicas(db: Database) -> None:
    """Two replicas sharing the database agree that a second delivery is a replay."""
    one, two = ReplayGuard(db), ReplayGuard(Database(db.url))
    assert one.first_time(SIGNATURE)
    assert not two.first_time(SIGNATURE)
    assert not one.first_time(SIGNATURE)
    assert two.first_time("v0=" + "b" * 64)


def test_signatures_are_kept_past_the_window_then_pruned(db: Database) -> None:
    """A signature is remembered for the whole replay window and forgotten after it."""
    guard = ReplayGuard(db)
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
        one, two = ReplayGuard(db), ReplayGuard(Database(pg_url))
        assert one.first_time(SIGNATURE)
        assert not two.first_time(SIGNATURE)
        two.db.dispose()
    finally:
        db.dispose()
