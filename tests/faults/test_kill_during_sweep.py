"""``kill -9`` a sweeping process in the middle of a sweep of 1,000 due requests, restart.

The evidence is the backend's own call log (``RecordingProvider``: one fsync-ed line per
completed grant or revoke, written by the process that made the call) and the audit log.

What is guaranteed, and asserted here:

* **none lost**: every request is granted, and every request is revoked, by some process;
  none ends without a revoke in the backend's log, and all end ``expired``;
* **none recorded twice**: exactly one ``activate`` and one ``expire`` audit event per
  request, one "expired" notification per request, and the audit chain verifies;
* **a repeat only where a call was in flight**: the sweep claims a batch (a lease on each
  row), commits, calls the backend for the batch, then records the outcomes in one
  transaction. A process killed between its call and that record leaves the outcome
  unrecorded, so after the lease lapses the next sweep repeats the call. Grant and revoke
  are idempotent (the provider contract), so that repeat is harmless; it is the price of
  never missing one. Hence each request has one or two backend calls per action, two
  exactly for the requests the killed process had called but not yet recorded (part of
  one batch), the first by the killed process and the second by its successor. So "none
  revoked twice" means: none *recorded* as revoked twice, and none left unrevoked.

Each phase (the windows opening: 1,000 grants; closing: 1,000 revokes) runs a sweeping
process, SIGKILLs it mid-batch (its backend hangs at a chosen call, so the kill lands in
the same place on every run, however loaded the machine), then runs a second process to
completion. It sweeps at the kill's ``now`` plus 61 s: the lease is 60 s, and time is an
argument, so nothing waits for it on the wall clock. SQLite (a file) always; PostgreSQL
too when JITACCESS_TEST_DATABASE_URL is set (in a database of this suite's own).
"""

from __future__ import annotations

import signal
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fault_support import (
    Call,
    RecordingProvider,
    count_calls,
    pg_url_or_skip,
    read_calls,
    start_sweeper,
    wait_until,
)
from sqlalchemy import func, select

from conftest import START, crowd, make_service, register, utc
from jitaccess.app.audit_log import verify
from jitaccess.app.service import RetryPolicy
from jitaccess.domain.policy import ApprovalMode
from jitaccess.store.db import Database
from jitaccess.store.models import AccessRequest, AuditEvent, OutboxMessage

N = 1000
BATCH = 100
#: The backend's round trip (none needed: the hang below places the kill).
ROUND_TRIP = 0.0
#: Where the kill lands, per phase: the backend hangs on the call after this many (as a
#: real one can), and the test kills the process while it hangs. 350 grants: three
#: batches recorded, 50 calls of the fourth made but not recorded. 730 revokes: seven
#: recorded, 30 of the eighth made but not recorded.
KILL_AT = {"grant": 350, "revoke": 730}
T0 = utc(START)
START_AT = T0 + timedelta(hours=1)
END_AT = START_AT + timedelta(hours=1)
LEASE = RetryPolicy().lease


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'kill.db'}"
        return
    pg = pg_url_or_skip()
    yield pg


def sweeper(
    url: str, log: Path, now: datetime, out: Path, hang_after: int = 0
) -> subprocess.Popen[bytes]:
    return start_sweeper(url, log, now, out, batch=BATCH, delay=ROUND_TRIP, hang_after=hang_after)


def states(db: Database) -> dict[int, str]:
    with db.transaction(readonly=True) as s:
        return dict(s.execute(select(AccessRequest.id, AccessRequest.state)).all())


def kill_mid_sweep(url: str, log: Path, now: datetime, action: str, out: Path) -> tuple[int, int]:
    """Start a sweeper at ``now``; SIGKILL it once it has made KILL_AT[action] calls (it
    is then hanging on the next). Returns (its pid, how many calls it had logged)."""
    before = count_calls(log, action)
    proc = sweeper(url, log, now, out, hang_after=KILL_AT[action])
    try:
        landed = wait_until(
            lambda: count_calls(log, action) - before >= KILL_AT[action] or proc.poll() is not None,
            timeout=60,
            interval=0.001,
        )
        assert landed, "the sweeper made no progress in 60 s"
        assert proc.poll() is None, f"the sweeper ended before the kill:\n{out.read_text()}"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    return proc.pid, count_calls(log, action) - before


def sweep_to_completion(url: str, log: Path, now: datetime, out: Path) -> int:
    proc = sweeper(url, log, now, out)
    try:
        code = proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert code == 0, out.read_text()[-3000:]
    return proc.pid


def check_phase(
    calls: list[Call],
    action: str,
    ids: list[int],
    killed: int,
    successor: int,
    recorded_at_kill: set[int],
) -> None:
    """One or two ``action`` calls per request; two only for what the killed process
    called but had not recorded, in the order killed, then successor."""
    by_request: dict[int, list[int]] = defaultdict(list)
    for call in calls:
        if call.action == action:
            by_request[call.request_id].append(call.pid)
    assert set(by_request) == set(ids), "a request was never called, or an unknown one was"
    assert {pid for pids in by_request.values() for pid in pids} <= {killed, successor}
    in_flight = {r for r, pids in by_request.items() if killed in pids} - recorded_at_kill
    for request_id in ids:
        pids = by_request[request_id]
        if request_id in in_flight:
            assert pids == [killed, successor], (action, request_id, pids)
        else:
            assert len(pids) == 1, (action, request_id, pids)
    # Only the part of the batch already called when the kill landed is repeated.
    assert len(in_flight) == KILL_AT[action] % BATCH, (action, len(in_flight))
    assert len(recorded_at_kill) == KILL_AT[action] - KILL_AT[action] % BATCH


def test_kill_9_mid_sweep_then_restart_loses_and_doubles_nothing(url: str, tmp_path: Path) -> None:
    log, out = tmp_path / "backend-calls.log", tmp_path / "sweepers.out"
    db = Database(url)
    try:
        db.upgrade()
        service, _ = make_service(db)
        service.providers.register(RecordingProvider(log))
        people = crowd(N)  # one person's requests for a role may not overlap
        register(
            service,
            mode=ApprovalMode.AUTOMATIC,
            approvers=(),
            provider="recording",
            publishers=people,
        )
        ids = [
            service.submit(
                "crm",
                requester=people[i],
                role="Contributor",
                duration=END_AT - START_AT,
                justification=f"maintenance {i}",
                starts_at=START_AT,
                now=T0,
            ).id
            for i in range(N)
        ]
        assert set(states(db).values()) == {"auto_approved"}

        # 1. The windows open: a sweeper granting 1,000 is killed mid-batch.
        killed_grant, logged = kill_mid_sweep(url, log, START_AT, "grant", out)
        assert logged == KILL_AT["grant"]
        at_kill = states(db)
        activated_at_kill = {r for r, s in at_kill.items() if s == "active"}
        assert set(at_kill.values()) == {"auto_approved", "active"}  # nothing half-done
        successor_grant = sweep_to_completion(
            url, log, START_AT + LEASE + timedelta(seconds=1), out
        )
        assert set(states(db).values()) == {"active"}

        # 2. The windows close: a sweeper revoking 1,000 is killed mid-batch.
        killed_revoke, logged = kill_mid_sweep(url, log, END_AT, "revoke", out)
        assert logged == KILL_AT["revoke"]
        at_kill = states(db)
        expired_at_kill = {r for r, s in at_kill.items() if s == "expired"}
        assert set(at_kill.values()) == {"active", "expired"}  # nothing half-done
        successor_revoke = sweep_to_completion(url, log, END_AT + LEASE + timedelta(seconds=1), out)

        # The backend's evidence.
        calls = read_calls(log)
        check_phase(calls, "grant", ids, killed_grant, successor_grant, activated_at_kill)
        check_phase(calls, "revoke", ids, killed_revoke, successor_revoke, expired_at_kill)
        last_grant = {c.request_id: i for i, c in enumerate(calls) if c.action == "grant"}
        first_revoke: dict[int, int] = {}
        for i, c in enumerate(calls):
            if c.action == "revoke":
                first_revoke.setdefault(c.request_id, i)
        assert all(first_revoke[r] > last_grant[r] for r in ids)  # none still held

        # The database's record: every request expired, each transition exactly once.
        with db.transaction(readonly=True) as s:
            rows = s.execute(select(AccessRequest)).scalars().all()
            assert {(r.state, r.claimed_by, r.next_deadline_at) for r in rows} == {
                ("expired", None, None)
            }
            events = s.execute(
                select(AuditEvent.request_id, AuditEvent.action, func.count())
                .where(AuditEvent.request_id.is_not(None))
                .group_by(AuditEvent.request_id, AuditEvent.action)
            ).all()
            expired_notes = s.execute(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.dedup_key.like("request:%:expired:requester_update:%"))
            ).scalar_one()
        counts = {(r, a): n for r, a, n in events}
        for request_id in ids:
            for action in ("submit", "auto_approve", "activate", "expire"):
                assert counts.get((request_id, action)) == 1, (request_id, action)
        assert {a for _, a in counts} == {"submit", "auto_approve", "activate", "expire"}
        assert expired_notes == N
        result = verify(db)
        assert result.problems == []
        assert result.entries == 1 + 4 * N  # app_registered + four per request
    finally:
        db.dispose()
