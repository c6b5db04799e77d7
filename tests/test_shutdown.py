"""Shutdown is prompt whatever the load (issue 10).

``jitaccess serve`` and ``jitaccess serve --sandbox`` run as real processes, made busy
the way production gets busy: thousands of due expiries (the sweep works through them
batch after batch and the relay has their notifications to send), or a Slack that
answers every call with 429 and a long ``Retry-After``. Then SIGTERM (or Ctrl-C's
SIGINT): the process must exit with status 0 within ``STOP_BOUND`` seconds, say it
stopped, and leave the database consistent (no claim held, no half transition).

Before the fix these processes took 70-80 s (the sweep finished its 10,000 expiries,
then the relay its drain) or over a minute (each message slept out its Retry-After,
twice).
``STOP_BOUND`` is generous for a busy machine: the process aims at about 3 s.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from conftest import APPROVER, APPROVER2, PUBLISHER, make_service, register
from jitaccess.app.audit_log import verify
from jitaccess.store.db import Database
from jitaccess.store.models import AccessRequest, Application, AuditEvent, OutboxMessage
from jitaccess_sandbox.fake_slack import FakeSlack

#: Seconds from the signal to the exit. Today's code stops in about 1 s; before the fix
#: it was 70 s and more. 10 s leaves room for a loaded machine without hiding a wait.
STOP_BOUND = 10.0
#: Due expiries seeded: at ~300-1,000 a second the sweep is busy for well over
#: STOP_BOUND, whatever the machine.
DUE = 20_000
SIGNALS = [pytest.param(signal.SIGTERM, id="SIGTERM"), pytest.param(signal.SIGINT, id="SIGINT")]


def seed_due_expiries(url: str, count: int, now: datetime) -> None:
    """``count`` active grants of app ``crm`` whose window ended a second ago (rows
    inserted in bulk; the sweep's work is real: revoke, transition, audit, outbox)."""
    db = Database(url)
    db.upgrade()
    service, _ = make_service(db)
    register(service, "crm", now=now - timedelta(days=1))
    with db.engine.begin() as conn:
        app_id = conn.execute(select(Application.id).where(Application.name == "crm")).scalar_one()
        ends = now - timedelta(seconds=1)
        rows = [
            {
                "id": rid,
                "app_id": app_id,
                "requester": PUBLISHER,
                "role": "Contributor",
                "justification": f"OPS-{rid}",
                "starts_at": ends - timedelta(hours=1),
                "ends_at": ends,
                "approval_deadline_at": ends,
                "state": "active",
                "approval_mode": "manual",
                "notified_approvers": [APPROVER, APPROVER2],
                "created_at": ends - timedelta(hours=2),
                "decided_by": APPROVER,
                "decision_reason": "ok",
                "decided_at": ends - timedelta(hours=2),
                "activated_at": ends - timedelta(hours=1),
                "next_deadline_at": ends,
                "attempts": 0,
                "revoke_alerts_sent": 0,
                "version": 4,
            }
            for rid in range(1, count + 1)
        ]
        conn.execute(insert(AccessRequest), rows)
    db.dispose()


class Process:
    """A ``jitaccess`` process whose output (stdout and stderr) is collected."""

    def __init__(self, args: list[str], *, cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jitaccess.cli", *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        assert self.proc.stdout is not None
        stdout = self.proc.stdout
        self._reader = threading.Thread(
            target=lambda: self.lines.extend(iter(stdout.readline, "")), daemon=True
        )
        self._reader.start()

    def output(self) -> str:
        return "".join(self.lines[-60:])

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert self.proc.poll() is None, f"exited while waiting for {what}:\n{self.output()}"
            assert time.monotonic() < deadline, f"no {what} in {timeout}s:\n{self.output()}"
            time.sleep(0.05)

    def stop(self, signum: int) -> tuple[int, float]:
        """Send ``signum``; (exit status, seconds to exit). Fails after STOP_BOUND."""
        sent = time.monotonic()
        self.proc.send_signal(signum)
        try:
            code = self.proc.wait(timeout=STOP_BOUND)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"still running {STOP_BOUND}s after signal {signum}:\n{self.output()}")
        self._reader.join(timeout=5)
        return code, time.monotonic() - sent

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def base_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLACK_", "JITACCESS_")) and k not in ("MAKEFLAGS", "MFLAGS")
    }
    env.update(JITACCESS_LOG_LEVEL="INFO", JITACCESS_HOST="127.0.0.1", JITACCESS_PORT="0")
    env.update(extra)
    return env


def assert_consistent(url: str, now: datetime) -> int:
    """What a stop mid-sweep leaves: every request active or expired, one ``expire``
    audit entry per expired request, no claim held, no message held back by a lease,
    and the audit chain verifies. Returns how many expired."""
    db = Database(url)
    try:
        with db.engine.connect() as conn:
            states = dict(
                conn.execute(
                    select(AccessRequest.state, func.count()).group_by(AccessRequest.state)
                ).all()
            )
            claimed = conn.execute(
                select(func.count()).where(AccessRequest.claimed_by.is_not(None))
            ).scalar_one()
            expire_events = conn.execute(
                select(func.count()).where(AuditEvent.action == "expire")
            ).scalar_one()
        assert set(states) <= {"active", "expired"}, states
        assert claimed == 0, "a claim whose call was never made must be given back"
        assert expire_events == states.get("expired", 0)
        with db.transaction(readonly=True) as session:
            held_back = session.execute(
                select(func.count()).where(
                    OutboxMessage.settled_at.is_(None),
                    OutboxMessage.attempts == 0,
                    OutboxMessage.available_at > datetime.now(UTC) + timedelta(seconds=5),
                )
            ).scalar_one()
        assert held_back == 0, "messages never tried must not wait out a lease"
        # The seeded rows were inserted without their history; what the sweep wrote
        # must chain without a flaw.
        problems = verify(db).problems
        seeded = ("its history was deleted", "whose entries are missing")
        assert [p for p in problems if not any(s in p for s in seeded)] == []
        return int(states.get("expired", 0))
    finally:
        db.dispose()


@pytest.mark.parametrize("signum", SIGNALS)
def test_sandbox_stops_within_seconds_while_the_sweep_is_busy(tmp_path: Path, signum: int) -> None:
    """``serve --sandbox`` with 20,000 due expiries: stopped mid-sweep, promptly."""
    now = datetime.now(UTC)
    url = f"sqlite:///{tmp_path / 'jitaccess-sandbox.db'}"
    seed_due_expiries(url, DUE, now)
    proc = Process(["serve", "--sandbox"], cwd=tmp_path, env=base_env())
    try:
        proc.wait_for(
            lambda: any("active -> expired" in line for line in proc.lines), 120, "expiry"
        )
        code, took = proc.stop(signum)
    finally:
        proc.kill()
    assert code == 0, proc.output()
    assert "jitaccess sandbox stopped in" in proc.output(), proc.output()
    expired = assert_consistent(url, now)
    assert 0 < expired < DUE, "the signal came while the sweep was busy"
    print(f"stopped {took:.1f}s after signal {signum}, {expired} of {DUE} expired")


@pytest.mark.parametrize("signum", SIGNALS)
def test_serve_stops_within_seconds_while_slack_asks_to_retry_later(
    tmp_path: Path, fake_slack: FakeSlack, signum: int
) -> None:
    """``serve`` whose Slack answers every call 429 ``Retry-After: 60``: the sweep has
    done its (few) expiries and the relay is inside a Retry-After wait."""
    now = datetime.now(UTC)
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    seed_due_expiries(url, 50, now)
    fake_slack.fail_next(None, times=1_000_000, status=429, retry_after=60)
    env = base_env(
        JITACCESS_DATABASE_URL=url,
        SLACK_BOT_TOKEN="xoxb-shutdown",
        SLACK_SIGNING_SECRET="shutdown-secret",
        SLACK_API_URL=fake_slack.base_url,
        JITACCESS_SWEEP_INTERVAL_SECONDS="1",
        JITACCESS_RELAY_INTERVAL_SECONDS="0.2",
    )
    proc = Process(["serve"], cwd=tmp_path, env=env)
    try:
        proc.wait_for(lambda: any("sweep: " in line for line in proc.lines), 120, "sweep")
        # Answered 429: the relay's Slack client is now waiting out the Retry-After.
        proc.wait_for(lambda: bool(fake_slack.calls), 120, "call to Slack")
        time.sleep(0.5)
        code, took = proc.stop(signum)
    finally:
        proc.kill()
    assert code == 0, proc.output()
    assert "jitaccess serve stopped in" in proc.output(), proc.output()
    assert assert_consistent(url, now) == 50
    print(f"stopped {took:.1f}s after signal {signum}")


def test_a_second_signal_exits_at_once(tmp_path: Path) -> None:
    """When stopping itself is too slow for someone, Ctrl-C again ends it (130)."""
    script = (
        "import threading, time\n"
        "from jitaccess.server import stop_on_signals\n"
        "stop = threading.Event()\n"
        "with stop_on_signals(stop, 'a slow stop'):\n"
        "    print('ready', flush=True)\n"
        "    stop.wait()\n"
        "    print('stopping', flush=True)\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGINT)
        assert proc.stdout.readline() == "stopping\n"
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=STOP_BOUND)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 128 + signal.SIGINT
    assert proc.stderr is not None
    assert "exits now" in proc.stderr.read()


def test_a_sweep_told_to_stop_records_its_calls_and_gives_back_the_rest(tmp_path: Path) -> None:
    """Stopping mid-batch: the backend calls made are recorded, the claims whose call
    was never made are given back, so the next sweep does them at once (no lease)."""
    now = datetime.now(UTC)
    url = f"sqlite:///{tmp_path / 'stop.db'}"
    seed_due_expiries(url, 10, now)
    db = Database(url)
    service, provider = make_service(db)

    class OneCallAtATime:
        """The log backend without its batch calls: one revoke per row, in order."""

        name = "log"
        max_concurrency = 1

        def grant(self, spec: Any, at: datetime) -> None:
            provider.grant(spec, at)

        def revoke(self, spec: Any, at: datetime) -> None:
            provider.revoke(spec, at)
            if spec.request_id == 3:
                service.stopping.set()  # as SIGTERM does, during the third call

    service.providers.register(OneCallAtATime())
    assert service.sweep(now, batch_size=10).expired == 3
    with db.transaction(readonly=True) as session:
        rows = list(session.execute(select(AccessRequest).order_by(AccessRequest.id)).scalars())
        assert [r.state for r in rows] == ["expired"] * 3 + ["active"] * 7
        assert all(r.claimed_by is None and r.next_deadline_at == r.ends_at for r in rows[3:])
    assert assert_consistent(url, now) == 3
    service.stopping.clear()
    assert service.sweep(now, batch_size=10).expired == 7  # same `now`: no lease to wait
    db.dispose()
