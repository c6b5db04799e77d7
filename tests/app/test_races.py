"""The race harness: every person's action against every sweep step it can meet.

Issue 16, item 1: whatever two actions race, the request's state, its audit log and the
backend agree, and the loser is told why. The harness is deterministic: no sleeps. The
backend is the real webhook provider talking to a local receiver whose ``hook`` holds a
call at a chosen point, so the action runs at an exact place in the sweep:

- ``before``: the action commits before the sweep looks at the request;
- ``claimed``: the sweep's claim has committed (intent recorded, row leased) and its
  backend call has reached the backend, which has not acted yet;
- ``applied``: the backend has acted (granted or revoked) and not answered yet, so the
  sweep has not recorded the outcome;
- ``after``: the sweep has recorded its outcome.

The sweep steps are the three that race a person: the claim for a grant (the window
opens), the claim for a revoke (the window ends) and the approval time-out (which makes
no backend call, so it has only ``before`` and ``after``). The actions are those a
person can take on one request: extend, approve an extension, release, revoke, cancel,
approve, and a break-glass review (always accepted, ordered after the claim).

Each action is taken with ``now`` one second before the sweep's deadline, as a Slack
click acknowledged just before the deadline and written after it would be. After each
pair the harness lets the sweep finish what is due, then checks the agreement; then it
runs the clock past every end and checks that everything ended with nothing held.
Both databases: SQLite (BEGIN IMMEDIATE) and PostgreSQL (row locks, SKIP LOCKED).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from freezegun import freeze_time
from sqlalchemy import select

from conftest import APPROVER, PUBLISHER, START, make_service, utc
from conftest import register as register_app
from fakes.webhook_receiver import WebhookReceiver
from jitaccess.app.audit_log import verify
from jitaccess.app.service import JitService
from jitaccess.domain.errors import JitError
from jitaccess.domain.lifecycle import FINAL_STATES, RequestState
from jitaccess.domain.policy import ApprovalMode, Policy
from jitaccess.providers.webhook import WebhookProvider
from jitaccess.store.db import Database
from jitaccess.store.models import AccessRequest, AuditEvent

T0 = utc(START)
H = timedelta(hours=1)
M = timedelta(minutes=1)
SECRET = "race-secret"
#: How long a step may take before the harness calls it stuck (never reached on a pass).
STUCK = 30.0

ACTIONS = (
    "extend",
    "approve_extension",
    "release",
    "revoke",
    "cancel",
    "approve",
    "breakglass_review",
    "breakglass_take",
)
PHASES = {
    "grant": ("before", "claimed", "applied", "after"),
    "revoke": ("before", "claimed", "applied", "after"),
    # A time-out calls no backend: the action is before or after its one transaction.
    "timeout": ("before", "after"),
}
#: Actions whose loser must be told the access is ending, when the expiry claimed first.
REFUSED_WHILE_ENDING = {"extend", "approve_extension", "release", "revoke", "breakglass_take"}

#: Who wins each race: the request's state once the sweep is done at the deadline, and
#: whether the action was done or refused (with a message). Read down a column: an
#: action committed before the claim wins and the expiry does not happen; one that
#: arrives after it is refused; a review is always accepted.
WINNERS = """
extend             grant   before   active     done
extend             grant   claimed  active     done
extend             grant   applied  active     done
extend             grant   after    active     done
extend             revoke  before   active     done
extend             revoke  claimed  expired    refused
extend             revoke  applied  expired    refused
extend             revoke  after    expired    refused
extend             timeout before   timed_out  refused
extend             timeout after    timed_out  refused
approve_extension  grant   before   active     done
approve_extension  grant   claimed  active     done
approve_extension  grant   applied  active     done
approve_extension  grant   after    active     done
approve_extension  revoke  before   active     done
approve_extension  revoke  claimed  expired    refused
approve_extension  revoke  applied  expired    refused
approve_extension  revoke  after    expired    refused
approve_extension  timeout before   active     done
approve_extension  timeout after    active     refused
release            grant   before   active     refused
release            grant   claimed  active     refused
release            grant   applied  active     refused
release            grant   after    revoked    done
release            revoke  before   revoked    done
release            revoke  claimed  expired    refused
release            revoke  applied  expired    refused
release            revoke  after    expired    refused
release            timeout before   timed_out  refused
release            timeout after    timed_out  refused
revoke             grant   before   cancelled  done
revoke             grant   claimed  cancelled  done
revoke             grant   applied  cancelled  done
revoke             grant   after    revoked    done
revoke             revoke  before   revoked    done
revoke             revoke  claimed  expired    refused
revoke             revoke  applied  expired    refused
revoke             revoke  after    expired    refused
revoke             timeout before   timed_out  refused
revoke             timeout after    timed_out  refused
cancel             grant   before   cancelled  done
cancel             grant   claimed  cancelled  done
cancel             grant   applied  cancelled  done
cancel             grant   after    active     refused
cancel             revoke  before   expired    refused
cancel             revoke  claimed  expired    refused
cancel             revoke  applied  expired    refused
cancel             revoke  after    expired    refused
cancel             timeout before   cancelled  done
cancel             timeout after    timed_out  refused
approve            grant   before   active     refused
approve            grant   claimed  active     refused
approve            grant   applied  active     refused
approve            grant   after    active     refused
approve            revoke  before   expired    refused
approve            revoke  claimed  expired    refused
approve            revoke  applied  expired    refused
approve            revoke  after    expired    refused
approve            timeout before   approved   done
approve            timeout after    timed_out  refused
breakglass_review  grant   before   active     done
breakglass_review  grant   claimed  active     done
breakglass_review  grant   applied  active     done
breakglass_review  grant   after    active     done
breakglass_review  revoke  before   expired    done
breakglass_review  revoke  claimed  expired    done
breakglass_review  revoke  applied  expired    done
breakglass_review  revoke  after    expired    done
breakglass_take    grant   before   active     refused
breakglass_take    grant   claimed  active     refused
breakglass_take    grant   applied  active     refused
breakglass_take    grant   after    active     refused
breakglass_take    revoke  before   expired    refused
breakglass_take    revoke  claimed  expired    refused
breakglass_take    revoke  applied  expired    refused
breakglass_take    revoke  after    expired    done
breakglass_take    timeout before   timed_out  done
breakglass_take    timeout after    timed_out  done
"""


def expected(action: str, phase: str, point: str) -> tuple[str, str]:
    for line in WINNERS.strip().splitlines():
        a, ph, pt, state, outcome = line.split()
        if (a, ph, pt) == (action, phase, point):
            return state, outcome
    raise AssertionError(f"no expected outcome for {action} vs {phase} at {point}")


CASES = [
    pytest.param(action, phase, point, id=f"{action}-vs-{phase}-{point}")
    for action in ACTIONS
    for phase, points in PHASES.items()
    for point in points
    # Break-glass access is never pending: it has no approval to time out.
    if not (action == "breakglass_review" and phase == "timeout")
]


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class World:
    service: JitService
    rx: WebhookReceiver
    #: The frozen clock: moved to each sweep's ``now``, so signed webhook calls are fresh.
    clock: Any = None

    def sweep(self, at: datetime) -> int:
        """One sweep at ``at``; how many transitions it made."""
        self.clock.move_to(at)
        return self.service.sweep(at).transitions

    def due(self, at: datetime) -> bool:
        with self.service.db.transaction(readonly=True) as session:
            first = session.execute(
                select(AccessRequest.id).where(AccessRequest.next_deadline_at <= at).limit(1)
            ).first()
        return first is not None


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> Iterator[Database]:
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    db = Database(url)
    db.upgrade()
    yield db
    db.dispose()


@pytest.fixture
def world(database: Database) -> Iterator[World]:
    with WebhookReceiver(SECRET, clock=lambda: now().timestamp()) as rx:
        # inline=False, as under serve: a person's action never calls the backend itself,
        # so every backend call below is the harness's sweep.
        service, _ = make_service(database, inline=False)
        service.providers.register(WebhookProvider())
        yield World(service, rx)


def register(world: World, mode: ApprovalMode) -> None:
    register_app(
        world.service,
        policy=Policy(
            mode=mode, approvers=(APPROVER,), breakglass=(PUBLISHER,), approval_timeout=H
        ),
        provider="webhook",
        provider_config={"url": world.rx.url, "secret": SECRET},
        now=T0,
    )


def drain(world: World, at: datetime) -> None:
    """Let the sweep finish everything due at ``at`` (an outcome dropped because the row
    changed makes the row due again at once, so a few rounds may be needed)."""
    for _ in range(6):
        world.sweep(at)
        if not world.due(at):
            return
    raise AssertionError(f"the sweep still had work due at {at} after six rounds")


# -- setting the stage: a request at the sweep step the action will race ------------------
def stage(world: World, action: str, phase: str) -> tuple[int, datetime]:
    """Make the request the action needs, in the state the sweep step acts on; return its
    id and the moment that step is due."""
    service = world.service
    # Extensions are decided by the policy at once in automatic mode; a time-out needs a
    # pending request, so manual mode.
    automatic = action == "extend" and phase != "timeout"
    mode = ApprovalMode.AUTOMATIC if automatic else ApprovalMode.MANUAL
    register(world, mode)
    if action == "breakglass_review":
        rid = service.breakglass.take(
            "crm",
            actor=PUBLISHER,
            role="Contributor",
            duration=H,
            incident_ref="INC-1",
            reason="the database is down",
            now=T0,
        ).id
        if phase == "grant":
            return rid, T0
        drain(world, T0)
        return rid, T0 + H
    # A pending request times out an hour after it was asked, an hour before its start.
    starts = T0 + (2 * H if phase == "timeout" else H)
    rid = service.submit(
        "crm",
        requester=PUBLISHER,
        role="Contributor",
        duration=2 * H,
        justification="rotate the keys",
        starts_at=starts,
        now=T0,
    ).id
    if phase == "timeout" and action != "approve_extension":
        return rid, service.get_request(rid).approval_deadline_at
    if mode is ApprovalMode.MANUAL:
        service.approve(rid, actor=APPROVER, reason="CHG-1", now=T0)
    if phase == "grant":
        if action == "approve_extension":
            # Asked half an hour before the start: it is still waiting when the grant is made.
            asked = T0 + 30 * M
            service.extensions.extend(rid, actor=PUBLISHER, added=H, reason="more", now=asked)
        return rid, starts
    drain(world, starts)
    assert service.get_request(rid).state == RequestState.ACTIVE
    end = starts + 2 * H
    if phase == "timeout":
        # The extension's own time-out: no approver decided within the approval timeout.
        asked = starts + 10 * M
        view = service.extensions.extend(
            rid, actor=PUBLISHER, added=H, reason="more", now=asked
        ).request
        assert view.extension_deadline_at == asked + H
        return rid, view.extension_deadline_at
    if action == "approve_extension":
        asked = end - 10 * M
        service.extensions.extend(rid, actor=PUBLISHER, added=H, reason="more", now=asked)
    return rid, end


# -- the action ------------------------------------------------------------------------
def act(world: World, action: str, rid: int, at: datetime) -> str | None:
    """Take ``action`` on the request; None if it was done, else the refusal."""
    service = world.service
    calls: dict[str, Callable[[], object]] = {
        "extend": lambda: service.extensions.extend(
            rid, actor=PUBLISHER, added=30 * M, reason="the deploy is slow", now=at
        ),
        "approve_extension": lambda: service.extensions.approve(
            rid, actor=APPROVER, reason="CHG-2", now=at
        ),
        "release": lambda: service.release(rid, actor=PUBLISHER, now=at),
        "revoke": lambda: service.revoke(rid, actor=APPROVER, reason="enough", now=at),
        "cancel": lambda: service.cancel(rid, actor=PUBLISHER, now=at),
        "approve": lambda: service.approve(rid, actor=APPROVER, reason="CHG-3", now=at),
        "breakglass_take": lambda: service.breakglass.take(
            "crm",
            actor=PUBLISHER,
            role="Contributor",
            duration=H,
            incident_ref="INC-2",
            reason="the database is down again",
            now=at,
        ),
        "breakglass_review": lambda: service.breakglass.review(
            rid, actor=APPROVER, reason="seen, it was needed", now=at
        ),
    }
    try:
        calls[action]()
    except JitError as exc:
        return str(exc)
    return None


class Gate:
    """Holds the receiver's handling of one backend call at one point, until released."""

    def __init__(self, rx: WebhookReceiver, rid: int, call: str, point: str) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()
        self._passed = False

        def hook(at: str, body: dict[str, Any]) -> None:
            if self._passed or at != point:
                return
            if body.get("request_id") != rid or body.get("action") != call:
                return
            self._passed = True
            self.reached.set()
            assert self.release.wait(STUCK), "the harness never released the backend"

        rx.hook = hook


def run_pair(world: World, action: str, phase: str, point: str) -> tuple[int, datetime, str | None]:
    rid, due = stage(world, action, phase)
    at = due - timedelta(seconds=1)
    service = world.service
    if point == "before":
        outcome = act(world, action, rid, at)
        world.sweep(due)
    elif point == "after":
        world.sweep(due)
        outcome = act(world, action, rid, at)
    else:
        call = "grant" if phase == "grant" else "revoke"
        gate = Gate(world.rx, rid, call, "received" if point == "claimed" else "held")
        failures: list[BaseException] = []

        world.clock.move_to(due)

        def sweep() -> None:
            try:
                service.sweep(due)
            except BaseException as exc:  # reported by the main thread
                failures.append(exc)

        sweeper = threading.Thread(target=sweep, name="race-sweep")
        sweeper.start()
        try:
            assert gate.reached.wait(STUCK), f"the sweep never made its {phase} call"
            outcome = act(world, action, rid, at)
        finally:
            gate.release.set()
            sweeper.join(STUCK)
        assert not sweeper.is_alive(), "the sweep is stuck"
        assert not failures, failures
    world.rx.hook = None
    drain(world, due)
    return rid, due, outcome


# -- what must agree -------------------------------------------------------------------
def audit_of(service: JitService, rid: int) -> list[AuditEvent]:
    with service.db.transaction(readonly=True) as session:
        rows = list(
            session.execute(
                select(AuditEvent).where(AuditEvent.request_id == rid).order_by(AuditEvent.seq)
            ).scalars()
        )
        for row in rows:
            session.expunge(row)
        return rows


def check_agreement(world: World, rid: int) -> None:
    """State, audit and backend tell the same story about the request."""
    service, rx = world.service, world.rx
    view = service.get_request(rid)
    events = audit_of(service, rid)
    # The audit's transitions are one unbroken path ending in the row's state.
    state = None
    for event in events:
        if event.from_state is None and event.to_state is None:
            continue
        assert event.from_state == state or event.from_state == event.to_state == state, (
            f"audit jumps from {state} to {event.from_state}->{event.to_state} ({event.action})"
        )
        state = event.to_state
    assert state == view.state, f"audit ends in {state}, the request is {view.state}"
    # The backend holds the grant exactly while the request is active, with its end.
    held = rx.held_ends_at(rid)
    if view.state == RequestState.ACTIVE and view.end_requested is None:
        assert held == view.ends_at.isoformat(), (
            f"the backend holds {held}, the request ends {view.ends_at.isoformat()}"
        )
    else:
        assert held is None, (
            f"the backend still holds a grant of a {view.status_line(now())} request"
        )
    # The backend heard one grant at most, and nothing after its revoke.
    actions = rx.actions(rid)
    assert actions.count("grant") <= 1, f"the backend was granted twice: {actions}"
    if "revoke" in actions:
        assert actions[actions.index("revoke") + 1 :] == [], f"calls after the revoke: {actions}"
    # Every end the audit says the backend heard, it heard, and the other way round.
    extended = [e for e in events if e.action == "extend"]
    if extended:
        assert extended[-1].details["new_ends_at"] == view.ends_at.isoformat()
    told = sum(1 for e in events if e.action == "backend_extended")
    assert told == actions.count("extend"), (actions, [e.action for e in events])
    granted = any(e.action == "activate" for e in events)
    assert ("grant" in actions) == (granted or "revoke" in actions), actions
    assert rx.rejected == []
    assert verify(service.db).problems == []


def check_all(world: World) -> None:
    """Every request agrees (a break-glass taken in the race is a request of its own)."""
    with world.service.db.transaction(readonly=True) as session:
        ids = list(session.execute(select(AccessRequest.id)).scalars())
    for rid in ids:
        check_agreement(world, rid)


@pytest.mark.parametrize(("action", "phase", "point"), CASES)
def test_state_audit_and_backend_agree_after_every_race(
    world: World, action: str, phase: str, point: str
) -> None:
    with freeze_time(START) as clock:
        world.clock = clock
        rid, due, refusal = run_pair(world, action, phase, point)
        clock.move_to(due)
        check_all(world)
        state, outcome = expected(action, phase, point)
        assert (world.service.get_request(rid).state, "done" if refusal is None else "refused") == (
            state,
            outcome,
        ), refusal
        if action == "breakglass_review":
            assert refusal is None, f"a break-glass review must always be accepted: {refusal}"
        if phase == "revoke" and point in ("claimed", "applied") and action in REFUSED_WHILE_ENDING:
            assert refusal is not None and "ending" in refusal, refusal
            assert world.service.get_request(rid).state == RequestState.EXPIRED
        if phase == "revoke" and point == "before" and action in ("extend", "approve_extension"):
            assert refusal is None, refusal
            view = world.service.get_request(rid)
            assert view.state == RequestState.ACTIVE and view.ends_at > due
        # Past every end: everything ended, nothing held.
        later = due + 12 * H
        drain(world, later)
        view = world.service.get_request(rid)
        assert view.state in FINAL_STATES, view.state
        check_all(world)


@pytest.mark.parametrize("point", ["claimed", "applied"])
def test_an_extension_during_the_grant_call_gets_one_grant_then_the_new_end(
    world: World, point: str
) -> None:
    """Issue 16, item 5: the README promises one backend call per row. An extension made
    while the first grant call is in flight keeps that grant's outcome; the backend then
    hears the new end once (before, the sweep dropped the outcome and granted again)."""
    with freeze_time(START) as clock:
        world.clock = clock
        rid, due, refusal = run_pair(world, "extend", "grant", point)
        assert refusal is None
        view = world.service.get_request(rid)
        assert view.state == RequestState.ACTIVE and view.ends_at == due + 2 * H + 30 * M
        assert world.rx.actions(rid) == ["grant", "extend"]
        assert world.rx.held_ends_at(rid) == view.ends_at.isoformat()
