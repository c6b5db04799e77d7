"""No grant left behind: a process SIGKILLed between the backend's grant and recording it.

The invariant: from the moment a backend grant call starts, the request is not final
until a revoke for it has succeeded. The sweeper here is a real process
(``sweep_worker.py``) whose backend (``RecordingProvider``) SIGKILLs it right after the
grant took effect: the backend holds the grant, the database never heard of it. What
follows (a cancel, the end of the window, a storm of kills with cancels and releases in
between, on SQLite and on PostgreSQL with two sweepers at once) must end every request
with the backend's last word for it being a revoke.
"""

from __future__ import annotations

import random
import signal
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fault_support import RecordingProvider, pg_url_or_skip, read_calls, start_sweeper
from sqlalchemy import select

from conftest import START, crowd, make_service, register, utc
from jitaccess.app.audit_log import verify
from jitaccess.app.service import JitService, RetryPolicy
from jitaccess.domain.errors import Conflict, RuleViolation
from jitaccess.domain.lifecycle import FINAL_STATES
from jitaccess.domain.policy import ApprovalMode
from jitaccess.store.db import Database
from jitaccess.store.models import AccessRequest, AuditEvent

T0 = utc(START)
START_AT = T0 + timedelta(hours=1)
END_AT = START_AT + timedelta(hours=1)
LEASE = RetryPolicy().lease


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'intent.db'}"
        return
    yield pg_url_or_skip()


def setup(url: str, log: Path, count: int) -> tuple[Database, JitService, list[int]]:
    db = Database(url)
    db.upgrade()
    service, _ = make_service(db)
    service.providers.register(RecordingProvider(log))
    # One person's requests for a role may not overlap: each is another publisher's.
    people = crowd(count)
    register(
        service, mode=ApprovalMode.AUTOMATIC, approvers=(), provider="recording", publishers=people
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
        for i in range(count)
    ]
    return db, service, ids


def killed_after_grants(url: str, log: Path, now: datetime, out: Path, grants: int) -> None:
    """A sweeper at ``now`` that dies by SIGKILL right after its ``grants``-th grant."""
    proc = start_sweeper(url, log, now, out, batch=100, die_after=grants)
    assert proc.wait(timeout=60) == -signal.SIGKILL, out.read_text()[-2000:]


def sweep_to_completion(url: str, log: Path, now: datetime, out: Path) -> None:
    proc = start_sweeper(url, log, now, out, batch=100)
    try:
        assert proc.wait(timeout=120) == 0, out.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()


def last_call(log: Path) -> dict[int, str]:
    """What the backend did last for each request: 'grant' means it still holds it."""
    last: dict[int, str] = {}
    for call in read_calls(log):
        last[call.request_id] = call.action
    return last


def rows(db: Database) -> dict[int, AccessRequest]:
    with db.transaction(readonly=True) as s:
        return {r.id: r for r in s.execute(select(AccessRequest)).unique().scalars()}


def test_cancel_after_a_crash_mid_grant_revokes_before_cancelling(url: str, tmp_path: Path) -> None:
    """A requester's cancel of a request whose grant landed unrecorded revokes it first."""
    log, out = tmp_path / "calls.log", tmp_path / "out.log"
    db, service, ids = setup(url, log, 5)
    try:
        killed_after_grants(url, log, START_AT, out, grants=5)
        assert last_call(log) == dict.fromkeys(ids, "grant")  # the backend holds all five
        before = rows(db)
        assert {r.state for r in before.values()} == {"auto_approved"}
        assert all(r.grant_started_at == START_AT for r in before.values())  # intent recorded

        cancelled_at = START_AT + timedelta(seconds=10)
        for rid in ids:
            requester = service.get_request(rid).requester
            view = service.cancel(rid, actor=requester, now=cancelled_at)
            # The dead sweeper's lease still stands: the cancel waits for the revoke.
            assert view.state == "auto_approved" and view.end_requested == "cancel"

        sweep_to_completion(url, log, START_AT + LEASE + timedelta(seconds=1), out)
        assert last_call(log) == dict.fromkeys(ids, "revoke")
        after = rows(db)
        assert {
            (r.state, r.ended_by == r.requester, r.next_deadline_at) for r in after.values()
        } == {("cancelled", True, None)}
        assert verify(db).problems == []
    finally:
        db.dispose()


def test_window_ending_after_a_crash_mid_grant_revokes_before_expiring(
    url: str, tmp_path: Path
) -> None:
    """A grant made but never recorded is revoked when the window ends, not just expired."""
    log, out = tmp_path / "calls.log", tmp_path / "out.log"
    db, _service, ids = setup(url, log, 30)
    try:
        killed_after_grants(url, log, START_AT, out, grants=17)  # mid-batch
        assert sum(1 for a in last_call(log).values() if a == "grant") == 17

        # Nobody sweeps again until every window has ended.
        sweep_to_completion(url, log, END_AT + timedelta(seconds=1), out)
        # All 30 were claimed (intent recorded) before the first call: the 17 granted
        # and the 13 never called are all revoked; for those the backend confirms it
        # held nothing. None ends on a grant.
        assert last_call(log) == dict.fromkeys(ids, "revoke")
        after = rows(db)
        assert {r.state for r in after.values()} == {"expired"}
        with db.transaction(readonly=True) as s:
            reasons = set(
                s.execute(select(AuditEvent.reason).where(AuditEvent.action == "expire"))
                .scalars()
                .all()
            )
        assert reasons == {"the window ended before the grant was recorded; it was revoked"}
    finally:
        db.dispose()


def test_a_crash_mid_extension_never_revokes_early_and_never_leaves_the_grant(
    url: str, tmp_path: Path
) -> None:
    """A sweeper SIGKILLed right after the backend heard an extension, before recording
    it: past the old end nothing is revoked and the lost extend is sent again; at the
    new end every grant is revoked."""
    log, out = tmp_path / "calls.log", tmp_path / "out.log"
    db, service, ids = setup(url, log, 3)
    try:
        sweep_to_completion(url, log, START_AT, out)
        asked = START_AT + timedelta(minutes=10)
        slack_side, _ = make_service(db, inline=False)  # as under serve: the sweep calls
        for rid in ids:
            requester = service.get_request(rid).requester
            view = slack_side.extensions.extend(
                rid, actor=requester, added=timedelta(hours=1), reason="runs long", now=asked
            ).request
            assert view.ends_at == END_AT + timedelta(hours=1)
        proc = start_sweeper(url, log, asked, out, batch=100, die_after=2)
        assert proc.wait(timeout=60) == -signal.SIGKILL, out.read_text()[-2000:]
        assert sorted(c.request_id for c in read_calls(log) if c.action == "extend") == ids[:2]

        # Past the old end, with the dead sweeper's leases lapsed: nothing is revoked,
        # and the backends that missed the new end (or whose hearing was never
        # recorded) are told again.
        sweep_to_completion(url, log, END_AT + timedelta(seconds=1), out)
        assert "revoke" not in last_call(log).values()
        assert last_call(log) == dict.fromkeys(ids, "extend")
        assert {r.state for r in rows(db).values()} == {"active"}
        assert all(r.backend_ends_at == r.ends_at for r in rows(db).values())

        sweep_to_completion(url, log, END_AT + timedelta(hours=1, seconds=1), out)
        assert last_call(log) == dict.fromkeys(ids, "revoke")
        assert {r.state for r in rows(db).values()} == {"expired"}
        assert verify(db).problems == []
    finally:
        db.dispose()


def test_a_crash_mid_expiry_keeps_the_request_ending_and_revokes_every_grant(
    url: str, tmp_path: Path
) -> None:
    """A sweeper SIGKILLed right after the backend revoked 2 of 5 grants at the window's
    end, before recording it: the claim already said the access is ending, so an
    extension or release that arrives now is refused (the dead sweeper's backend calls
    may have landed), and the next sweeper revokes every grant and expires them all."""
    log, out = tmp_path / "calls.log", tmp_path / "out.log"
    db, service, ids = setup(url, log, 5)
    try:
        sweep_to_completion(url, log, START_AT, out)
        assert last_call(log) == dict.fromkeys(ids, "grant")
        proc = start_sweeper(url, log, END_AT, out, batch=100, die_after=2)
        assert proc.wait(timeout=60) == -signal.SIGKILL, out.read_text()[-2000:]
        assert sum(1 for a in last_call(log).values() if a == "revoke") == 2
        after_crash = rows(db)
        assert {(r.state, r.end_requested) for r in after_crash.values()} == {("active", "expire")}

        slack_side, _ = make_service(db, inline=False)  # as under serve
        late = END_AT - timedelta(seconds=1)  # clicked just before the end
        for rid in ids:
            requester = service.get_request(rid).requester
            with pytest.raises(RuleViolation, match="is ending"):
                slack_side.extensions.extend(
                    rid, actor=requester, added=timedelta(minutes=30), reason="more", now=late
                )
            with pytest.raises(Conflict, match="already ending"):
                slack_side.release(rid, actor=requester, now=late)

        sweep_to_completion(url, log, END_AT + LEASE + timedelta(seconds=1), out)
        assert last_call(log) == dict.fromkeys(ids, "revoke")
        assert "extend" not in {c.action for c in read_calls(log)}
        after = rows(db)
        assert {(r.state, r.ends_at) for r in after.values()} == {("expired", END_AT)}
        assert verify(db).problems == []
    finally:
        db.dispose()


STORM_REQUESTS = 120
STORM_ROUNDS = 10
STEP = LEASE + timedelta(seconds=1)  # each round, the last round's leases have lapsed


def test_kill_storm_leaves_no_grant_behind(url: str, tmp_path: Path) -> None:
    """Two sweepers SIGKILLed mid-grant every round, cancels and releases in between:
    at the end the backend holds no grant of any request that is not active."""
    log, out = tmp_path / "calls.log", tmp_path / "out.log"
    rng = random.Random(20261130)
    db = Database(url)
    try:
        db.upgrade()
        service, _ = make_service(db)
        service.providers.register(RecordingProvider(log))
        people = crowd(STORM_REQUESTS)  # one person's requests for a role may not overlap
        register(
            service,
            mode=ApprovalMode.AUTOMATIC,
            approvers=(),
            provider="recording",
            publishers=people,
        )
        ids = []
        for i in range(STORM_REQUESTS):
            starts = START_AT + STEP * (i % 6)
            ids.append(
                service.submit(
                    "crm",
                    requester=people[i],
                    role="Contributor",
                    duration=STEP * 3,
                    justification=f"storm {i}",
                    starts_at=starts,
                    now=T0,
                ).id
            )
        for round_ in range(STORM_ROUNDS):
            now = START_AT + STEP * round_
            procs = [
                start_sweeper(url, log, now, out, batch=25, die_after=rng.randint(1, 40))
                for _ in range(2)
            ]
            # The requester acts while the sweepers grant, revoke and die.
            for rid in rng.sample(ids, 6):
                try:
                    view = service.get_request(rid)
                    if view.state == "active":
                        service.release(rid, actor=view.requester, now=now)
                    else:
                        service.cancel(rid, actor=view.requester, now=now)
                except (Conflict, RuleViolation):
                    pass  # already ended, or already being ended
            for proc in procs:
                try:
                    proc.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    raise
            # Whatever the kills left, a request that is over and owes nothing holds
            # nothing on the backend.
            last = last_call(log)
            for rid, row in rows(db).items():
                if row.state in FINAL_STATES and row.next_deadline_at is None:
                    assert last.get(rid, "revoke") == "revoke", (round_, rid, row.state)

        sweep_to_completion(url, log, START_AT + STEP * (STORM_ROUNDS + 10), out)
        final = rows(db)
        assert all(r.state in FINAL_STATES for r in final.values())
        assert all(r.next_deadline_at is None for r in final.values())
        last = last_call(log)
        held = {rid: final[rid].state for rid, action in last.items() if action == "grant"}
        assert held == {}, f"grants left behind: {held}"
        by_state: dict[str, int] = defaultdict(int)
        for r in final.values():
            by_state[r.state] += 1
        assert by_state["expired"] + by_state["cancelled"] + by_state["revoked"] == len(ids)
        assert by_state["cancelled"] + by_state["revoked"] > 0  # the storm did act
        assert verify(db).problems == []
    finally:
        db.dispose()
