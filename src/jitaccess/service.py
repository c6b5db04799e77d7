"""Use cases. Each public method is one use case in one transaction.

Times are arguments (``now``); nothing here reads a clock. Provider calls
(grant, revoke) never run inside a transaction: the sweep first *claims* due
rows by pushing their deadline ahead by a lease, commits, calls the backend,
then records the outcome in a second transaction after checking that nobody
changed the row meanwhile. A crash between the two leaves the lease to lapse,
and the next sweep repeats the (idempotent) call: nothing is lost or doubled.
"""

from __future__ import annotations

import functools
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, selectinload

from jitaccess.domain import policy as rules
from jitaccess.domain.errors import Conflict, Mention, NotFound, Part, RuleViolation
from jitaccess.domain.lifecycle import (
    APPROVED_STATES,
    FINAL_STATES,
    RequestLifecycle,
    RequestState,
    move,
)
from jitaccess.domain.policy import ApprovalMode, Policy
from jitaccess.leases import LeaseKeeper
from jitaccess.providers.base import BatchProvider, GrantSpec, ProviderError, ProviderRegistry
from jitaccess.store import audit, staged
from jitaccess.store.db import Database
from jitaccess.store.models import AccessRequest, Application, OutboxMessage
from jitaccess.views import AppView, RequestView

log = logging.getLogger("jitaccess.service")

SYSTEM = "system"
#: Request ids are 32-bit integers in the database; larger numbers name nothing.
MAX_ID = 2**31
POLICY_ACTOR = "policy:automatic"
#: How many batches ``run_due`` may run for a person's action (a grant that gives up
#: and its revoke, a cancel met mid-grant and its revoke).
_RUN_DUE_ROUNDS = 4
#: A backend call that was never started (the process is stopping).
_UNMADE = "\0unmade"
#: A batch's rows load their applications with one more query, not joined into every
#: row: joined, each row re-decoded its application's JSON columns.
_APPS_ONCE = selectinload(AccessRequest.app)
_APP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for provider calls: exponential, capped, with jitter."""

    base: timedelta = timedelta(seconds=5)
    cap: timedelta = timedelta(minutes=5)
    max_grant_attempts: int = 5
    #: How long a sweeper may hold a claimed row before another may take it over.
    lease: timedelta = timedelta(seconds=60)

    def delay(self, attempts: int, rng: Callable[[], float]) -> timedelta:
        raw: timedelta = min(self.cap, self.base * float(2 ** max(attempts - 1, 0)))
        return raw * (0.5 + rng() * 0.5)


class ServiceObserver(Protocol):
    """What the service reports for metrics; the default reports nowhere."""

    def transitions_committed(self, moves: list[tuple[str | None, str]]) -> None: ...

    def provider_called(
        self, provider: str, operation: str, error: str | None, seconds: float
    ) -> None: ...


class NullObserver:
    def transitions_committed(self, moves: list[tuple[str | None, str]]) -> None:
        return None

    def provider_called(
        self, provider: str, operation: str, error: str | None, seconds: float
    ) -> None:
        return None


@dataclass(frozen=True)
class AppSpec:
    """A managed application as registered (CLI flags or ``apps apply`` YAML)."""

    name: str
    scope: str
    publishers: tuple[str, ...]
    roles: tuple[str, ...] = rules.DEFAULT_ROLES
    admins: tuple[str, ...] = ()
    jit_enabled: bool = True
    policy: Policy = field(default_factory=Policy)
    provider: str = "log"
    provider_config: dict[str, Any] = field(default_factory=dict)


@dataclass
class SweepReport:
    activated: int = 0
    expired: int = 0
    revoked: int = 0
    timed_out: int = 0
    failed: int = 0
    lapsed: int = 0
    cancelled: int = 0
    retrying: int = 0
    #: Seconds between each transition's deadline and when it happened.
    lags: list[float] = field(default_factory=list)

    @property
    def transitions(self) -> int:
        return (
            self.activated
            + self.expired
            + self.revoked
            + self.timed_out
            + self.failed
            + self.lapsed
            + self.cancelled
        )

    def add(self, other: SweepReport) -> None:
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(frozen=True)
class _Work:
    """A claimed row and the provider call it needs."""

    request_id: int
    version: int
    call: str  # "grant" | "revoke"
    #: The lifecycle event recorded once the call succeeded (None: a revoke owed by a
    #: request that has already ended, which changes no state).
    event: str | None
    provider: str
    spec: GrantSpec
    #: The row's deadline before the claim, to put back if the call is never made.
    due_at: datetime | None = None


@dataclass
class ApplyResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def _timed_out(request_id: int, deadline: datetime) -> str:
    return (
        f"Request {request_id} timed out at {deadline:%Y-%m-%d %H:%M} UTC before anyone "
        "decided; it is now timed_out: the requester must submit a new request"
    )


class JitService:
    def __init__(
        self,
        db: Database,
        providers: ProviderRegistry,
        *,
        retry: RetryPolicy | None = None,
        worker_id: str = "worker",
        on_deadline: Callable[[datetime], None] | None = None,
        rng: Callable[[], float] = random.random,
        remind_before: timedelta | None = timedelta(minutes=15),
        inline: bool = True,
        stopping: threading.Event | None = None,
        provider_concurrency: int = 32,
    ) -> None:
        self.db = db
        self.providers = providers
        self.retry = retry or RetryPolicy()
        self.worker_id = worker_id
        self.on_deadline = on_deadline
        self._rng = rng
        #: How long before the end the requester is reminded (None: never).
        self.remind_before = remind_before
        #: True: a person's action that makes work due (approve with start now,
        #: revoke, release) calls the backend before returning (the CLI). False:
        #: it only wakes the scheduler, so a Slack click never waits on a backend.
        self.inline = inline
        self.observer: ServiceObserver = NullObserver()
        #: Set when the process is stopping: the sweep stops at its next unit of work
        #: (a row, a backend call), records what it did and gives back what it claimed.
        self.stopping = stopping if stopping is not None else threading.Event()
        #: Calls in flight at once per provider, unless the provider declares its own.
        self.provider_concurrency = provider_concurrency
        db.on_commit(self._committed)

    # -- applications ---------------------------------------------------------------
    def register_app(self, spec: AppSpec, *, actor: str, now: datetime) -> AppView:
        spec = self._validated(spec)
        with self.db.transaction() as session:
            gone = self._find_app(session, spec.name, removed=True)
            if gone is not None and gone.removed_at is not None:
                raise RuleViolation(
                    f"{spec.name} was removed on {gone.removed_at:%Y-%m-%d}; its history stays "
                    "under that name: register the new application under another name"
                )
            if self._find_app(session, spec.name) is not None:
                raise RuleViolation(
                    f"{spec.name} is already registered: change its policy with "
                    "`apps policy` or its definition with `apps apply`"
                )
            row = self._create_app(session, spec, actor=actor, now=now)
            return AppView.of(row)

    def apply_apps(self, specs: Sequence[AppSpec], *, actor: str, now: datetime) -> ApplyResult:
        """Create or update every application, all or nothing."""
        validated = [self._validated(spec) for spec in specs]
        names = [spec.name for spec in validated]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise RuleViolation(f"{', '.join(duplicates)} defined more than once: keep one")
        result = ApplyResult()
        with self.db.transaction() as session:
            apps = [self._find_app(session, name) for name in names]
            open_rows = self._open_requests(session, [a.id for a in apps if a is not None])
            for spec in validated:
                row = self._find_app(session, spec.name)
                if row is None:
                    self._create_app(session, spec, actor=actor, now=now)
                    result.created.append(spec.name)
                    continue
                if row.jit_enabled != spec.jit_enabled:
                    state = "enabled" if row.jit_enabled else "disabled"
                    raise RuleViolation(
                        f"{spec.name} was registered with JIT {state}; JIT cannot be "
                        f"{'disabled' if row.jit_enabled else 'enabled'} after registration: "
                        f"set jit_enabled: {str(row.jit_enabled).lower()} (nothing was applied)"
                    )
                if row.scope != spec.scope:
                    raise RuleViolation(
                        f"{spec.name}'s scope is fixed at registration ({row.scope}): register "
                        "a new application for another scope (nothing was applied)"
                    )
                before = AppView.of(row).to_json()
                old_approvers = tuple(row.approvers)
                self._write_app(row, spec, now)
                after = AppView.of(row).to_json()
                if before == after:
                    result.unchanged.append(spec.name)
                    continue
                session.flush()
                entry = audit.append(
                    session,
                    at=now,
                    actor=actor,
                    action="app_updated",
                    app=spec.name,
                    details={"before": before, "after": after},
                )
                self._approvers_changed(
                    session,
                    row,
                    old_approvers,
                    open_rows.get(row.id, []),
                    change=entry.seq,
                    actor=actor,
                    now=now,
                )
                result.updated.append(spec.name)
        return result

    def set_policy(
        self,
        app_name: str,
        *,
        actor: str,
        now: datetime,
        mode: ApprovalMode | None = None,
        max_duration: timedelta | None = None,
        approvers: Sequence[str] | None = None,
        approval_timeout: timedelta | None = None,
    ) -> AppView:
        """Change an application's policy. Mode, maximum duration and timeout apply to
        requests submitted afterwards; the approver list applies at once, also to
        pending requests (added approvers get their cards, removed ones are told)."""
        with self.db.transaction() as session:
            row = self._app(session, app_name)
            view = AppView.of(row)
            rules.check_admin(view.rules(), actor)
            if not row.jit_enabled:
                raise RuleViolation(rules.disabled_message(row.name))
            old = view.policy
            # Lock the open requests before the audit head, in the order decisions take
            # them (request, then head), so a concurrent approval cannot deadlock with us.
            open_rows = self._open_requests(session, [row.id]) if approvers is not None else {}
            new = Policy(
                mode=mode or old.mode,
                max_duration=old.max_duration if max_duration is None else max_duration,
                approvers=tuple(approvers) if approvers is not None else old.approvers,
                approval_timeout=(
                    old.approval_timeout if approval_timeout is None else approval_timeout
                ),
            ).validated()
            self._write_policy(row, new, now)
            after = AppView.of(row)
            entry = audit.append(
                session,
                at=now,
                actor=actor,
                action="policy_changed",
                app=row.name,
                details={"before": view.to_json()["policy"], "after": after.to_json()["policy"]},
            )
            self._approvers_changed(
                session,
                row,
                old.approvers,
                open_rows.get(row.id, []),
                change=entry.seq,
                actor=actor,
                now=now,
            )
            return after

    def _open_requests(
        self, session: Session, app_ids: list[int]
    ) -> dict[int, list[AccessRequest]]:
        """The applications' requests not yet final, locked (PostgreSQL) in id order."""
        if not app_ids:
            return {}
        query = (
            select(AccessRequest)
            .where(
                AccessRequest.app_id.in_(app_ids),
                AccessRequest.state.not_in([s.value for s in FINAL_STATES]),
            )
            .order_by(AccessRequest.id)
        )
        if self.db.is_postgres:
            query = query.with_for_update(of=AccessRequest)
        found: dict[int, list[AccessRequest]] = {}
        for request in session.execute(query).unique().scalars():
            found.setdefault(request.app_id, []).append(request)
        return found

    def _approvers_changed(
        self,
        session: Session,
        app: Application,
        old: Sequence[str],
        open_rows: Sequence[AccessRequest],
        *,
        change: int,
        actor: str,
        now: datetime,
    ) -> None:
        """Tell the people an approver-list change concerns, in its own transaction.

        Every approver is notified of every request: one added while requests are
        pending gets their cards (and is listed in ``notified_approvers``). One removed
        sees each open request's card say they no longer decide; the card is rendered
        from the current policy, so it loses its buttons. ``change`` (the audit entry's
        seq) keeps each change's outbox keys unique, also when an approver comes back.
        """
        new = tuple(app.approvers)
        added = [a for a in new if a not in old]
        removed = [a for a in old if a not in new]
        if not added and not removed:
            return
        for row in open_rows:
            # Only pending rows are changed: an approved or active row may be claimed by
            # the sweep, and bumping its version would make the sweep drop its outcome.
            # Approvers added to those see them on their App Home, with Revoke.
            recipients = removed if row.state != RequestState.PENDING else [*added, *removed]
            if row.state == RequestState.PENDING:
                missing = [a for a in added if a not in row.notified_approvers]
                if missing:
                    row.notified_approvers = [*row.notified_approvers, *missing]
            for approver in recipients:
                if approver in removed and approver not in row.notified_approvers:
                    continue  # never had a card for this request
                self._enqueue(
                    session,
                    row,
                    f"approvers:{change}",
                    "approver_card",
                    approver,
                    now,
                    actor=actor,
                    reason=None,
                    event="approver_added" if approver in added else "approver_removed",
                    before=row.state,
                )

    def get_app(self, name: str, *, include_removed: bool = False) -> AppView:
        with self.db.transaction(readonly=True) as session:
            return AppView.of(self._app(session, name, include_removed=include_removed))

    def list_apps(self) -> list[AppView]:
        with self.db.transaction(readonly=True) as session:
            rows = session.execute(
                select(Application)
                .where(Application.removed_at.is_(None))
                .order_by(Application.name)
            ).scalars()
            return [AppView.of(row) for row in rows]

    # -- requests -------------------------------------------------------------------
    def submit(
        self,
        app_name: str,
        *,
        requester: str,
        role: str,
        duration: timedelta,
        justification: str,
        now: datetime,
        starts_at: datetime | None = None,
    ) -> RequestView:
        with self.db.transaction() as session:
            app = self._app(session, app_name)
            view = AppView.of(app)
            role, window, justification = rules.check_submission(
                view.rules(), requester, role, duration, starts_at, justification, now
            )
            row = AccessRequest(
                app=app,
                requester=requester,
                role=role,
                justification=justification,
                starts_at=window.starts_at,
                ends_at=window.ends_at,
                approval_deadline_at=rules.approval_deadline(
                    now, view.policy.approval_timeout, window
                ),
                approval_mode=view.policy.mode.value,
                notified_approvers=list(view.policy.approvers),
                created_at=now,
                attempts=0,
                state=None,
            )
            # A new row has no state; binding the machine gives it the initial one.
            RequestLifecycle(model=row)
            session.add(row)
            session.flush()
            self._record(
                session, row, "submit", None, actor=requester, now=now, reason=justification
            )
            if view.policy.mode is ApprovalMode.AUTOMATIC:
                self._transition(
                    session,
                    row,
                    "auto_approve",
                    actor=POLICY_ACTOR,
                    now=now,
                    reason="approved automatically by policy",
                )
                row.decided_by = POLICY_ACTOR
                row.decided_at = now
                row.decision_reason = "approved automatically by policy"
                row.next_deadline_at = row.starts_at
            else:
                row.next_deadline_at = row.approval_deadline_at
            result = RequestView.of(row)
        self._after_change(result, now)
        return self.get_request(result.id)

    def approve(self, request_id: int, *, actor: str, reason: str, now: datetime) -> RequestView:
        return self._decide(request_id, actor=actor, reason=reason, now=now, approve=True)

    def deny(self, request_id: int, *, actor: str, reason: str, now: datetime) -> RequestView:
        return self._decide(request_id, actor=actor, reason=reason, now=now, approve=False)

    def cancel(
        self, request_id: int, *, actor: str, now: datetime, reason: str | None = None
    ) -> RequestView:
        """The requester withdraws a request that has not started (pending or approved)."""
        with self.db.transaction() as session:
            row = self._lock(session, request_id)
            if actor != row.requester:
                raise RuleViolation(
                    "Only the requester (",
                    Mention(row.requester),
                    f") may cancel request {row.id}; approvers can deny or revoke it instead",
                )
            if row.state == RequestState.ACTIVE:
                raise RuleViolation(
                    f"Request {row.id} is already active: use release to end your access now"
                )
            if row.state in FINAL_STATES:
                raise Conflict(*self._already(row))
            owed = self._end_before_start(
                session,
                row,
                "cancel",
                actor=actor,
                now=now,
                reason=reason or "cancelled by the requester",
            )
            result = RequestView.of(row)
        return self._end_now(request_id, now) if owed else result

    def close_for_removal(
        self, request_id: int, *, actor: str, reason: str, now: datetime
    ) -> RequestView:
        """Cancel a request that has not started because its application is being
        removed (the consumer admin acts, not the requester)."""
        with self.db.transaction() as session:
            row = self._lock(session, request_id)
            if row.state != RequestState.PENDING and row.state not in APPROVED_STATES:
                raise Conflict(*self._already(row))
            owed = self._end_before_start(
                session, row, "cancel", actor=actor, now=now, reason=reason
            )
            result = RequestView.of(row)
        return self._end_now(request_id, now) if owed else result

    def revoke(self, request_id: int, *, actor: str, reason: str, now: datetime) -> RequestView:
        """An approver or consumer admin ends a grant early (or stops an approved one)."""
        with self.db.transaction() as session:
            row = self._lock(session, request_id)
            rules.check_revoker(AppView.of(row.app).rules(), actor)
            reason = rules.check_reason(reason, "revoke")
            if row.state in APPROVED_STATES:
                owed = self._end_before_start(
                    session, row, "cancel", actor=actor, now=now, reason=reason
                )
                result = RequestView.of(row)
            else:
                self._request_end(row, "revoke", actor=actor, reason=reason, now=now)
                owed = True
        return self._end_now(request_id, now) if owed else result

    def release(self, request_id: int, *, actor: str, now: datetime) -> RequestView:
        """The requester is done early ("I'm done")."""
        with self.db.transaction() as session:
            row = self._lock(session, request_id)
            if actor != row.requester:
                raise RuleViolation(
                    "Only the requester (",
                    Mention(row.requester),
                    f") may release request {row.id}; approvers and admins can revoke it",
                )
            self._request_end(
                row, "release", actor=actor, reason="released early by the requester", now=now
            )
        return self._end_now(request_id, now)

    def get_request(self, request_id: int) -> RequestView:
        with self.db.transaction(readonly=True) as session:
            return RequestView.of(self._get(session, request_id))

    def list_requests(
        self,
        *,
        app: str | None = None,
        state: str | None = None,
        requester: str | None = None,
        limit: int = 200,
    ) -> list[RequestView]:
        if state is not None and state not in {s.value for s in RequestState}:
            raise RuleViolation(
                f"'{state}' is not a state: use one of " + ", ".join(s.value for s in RequestState)
            )
        with self.db.transaction(readonly=True) as session:
            query = select(AccessRequest).order_by(AccessRequest.id.desc()).limit(limit)
            if app is not None:
                query = query.where(AccessRequest.app_id == self._app(session, app).id)
            if state is not None:
                query = query.where(AccessRequest.state == state)
            if requester is not None:
                query = query.where(AccessRequest.requester == requester)
            return [RequestView.of(row) for row in session.execute(query).scalars()]

    def pending_for(self, approver: str, *, app: str | None = None) -> list[RequestView]:
        """Requests waiting on ``approver``, across every application (or one)."""
        with self.db.transaction(readonly=True) as session:
            query = (
                select(AccessRequest)
                .where(AccessRequest.state == RequestState.PENDING.value)
                .order_by(AccessRequest.created_at)
            )
            if app is not None:
                query = query.where(AccessRequest.app_id == self._app(session, app).id)
            return [
                RequestView.of(row)
                for row in session.execute(query).scalars()
                if approver in row.app.approvers and approver != row.requester
            ]

    def decision_refusal(self, request_id: int, actor: str, verb: str) -> RuleViolation | None:
        """Why ``actor`` cannot ``verb`` the request now, or None if they can.

        A read-only pre-check for buttons; the decision itself checks again."""
        with self.db.transaction(readonly=True) as session:
            row = self._get(session, request_id)
            try:
                if verb == "revoke":
                    rules.check_revoker(AppView.of(row.app).rules(), actor)
                    if row.state in FINAL_STATES:
                        return Conflict(*self._already(row))
                    return None
                if row.state != RequestState.PENDING:
                    return Conflict(*self._already(row))
                rules.check_decider(row.app.approvers, row.requester, actor, verb)
            except RuleViolation as exc:
                return exc
            return None

    def overseen_active(self, user: str) -> list[RequestView]:
        """Active grants in applications where ``user`` is an approver or admin."""
        with self.db.transaction(readonly=True) as session:
            query = (
                select(AccessRequest)
                .where(AccessRequest.state == RequestState.ACTIVE.value)
                .order_by(AccessRequest.ends_at)
            )
            return [
                RequestView.of(row)
                for row in session.execute(query).scalars()
                if user in row.app.approvers or user in row.app.admins
            ]

    def apps_for_publisher(self, user: str) -> list[AppView]:
        """JIT-enabled applications ``user`` may request access to."""
        return [a for a in self.list_apps() if a.jit_enabled and user in a.publishers]

    def check_can_read(self, app_name: str, user: str) -> AppView:
        """Publishers, approvers and consumer admins may read an application's requests."""
        app = self.get_app(app_name, include_removed=True)
        if user not in (*app.publishers, *app.policy.approvers, *app.admins):
            raise RuleViolation(
                f"Only {app.name}'s publishers, approvers and consumer admins may see its "
                "requests, and you are none of these"
            )
        return app

    def history(self, app_name: str, *, limit: int = 200, offset: int = 0) -> list[RequestView]:
        with self.db.transaction(readonly=True) as session:
            app = self._app(session, app_name, include_removed=True)
            query = (
                select(AccessRequest)
                .where(AccessRequest.app_id == app.id)
                .order_by(AccessRequest.created_at.desc(), AccessRequest.id.desc())
                .offset(offset)
                .limit(limit)
            )
            return [RequestView.of(row) for row in session.execute(query).scalars()]

    def next_deadline(self) -> datetime | None:
        with self.db.transaction(readonly=True) as session:
            value: datetime | None = session.execute(
                select(func.min(AccessRequest.next_deadline_at))
            ).scalar()
            return value

    # -- deadlines ------------------------------------------------------------------
    def sweep(
        self, now: datetime, *, batch_size: int = 500, max_batches: int | None = None
    ) -> SweepReport:
        """Do every transition that is due at ``now``: overdue expiries first, then
        time-outs, then activations, each oldest deadline first."""
        report = SweepReport()
        batches = 0
        while (max_batches is None or batches < max_batches) and not self.stopping.is_set():
            batch = self._sweep_batch(now, batch_size, ids=None)
            if batch is None:
                break
            report.add(batch)
            batches += 1
        return report

    def run_due(self, now: datetime, ids: Iterable[int]) -> SweepReport:
        """Sweep just these requests (used right after a person's action), until
        nothing among them is due: a grant that gave up, or a grant that met a cancel,
        is followed at once by the revoke it owes."""
        wanted = list(ids)
        report = SweepReport()
        for _ in range(_RUN_DUE_ROUNDS):
            batch = self._sweep_batch(now, 100, ids=wanted, wait_for_locks=True)
            if batch is None:
                break
            report.add(batch)
        return report

    def _sweep_batch(
        self, now: datetime, limit: int, ids: list[int] | None, *, wait_for_locks: bool = False
    ) -> SweepReport | None:
        report = SweepReport()
        with self.db.transaction() as session:
            rows = self._due_rows(session, now, limit, ids, wait_for_locks=wait_for_locks)
            if not rows:
                return None
            claimed: list[tuple[AccessRequest, str, str | None, datetime | None]] = []
            for row in rows:
                if self.stopping.is_set():
                    break  # the rows not reached yet stay due, untouched
                due = self._due_action(row, now)
                if due is None:
                    row.next_deadline_at = self._natural_deadline(row)
                    continue
                kind, event = due
                if kind == "time_out":
                    self._transition(
                        session,
                        row,
                        "time_out",
                        actor=SYSTEM,
                        now=now,
                        reason="no approver decided in time",
                    )
                    row.ended_at = now
                    row.next_deadline_at = None
                    report.timed_out += 1
                    report.lags.append((now - row.approval_deadline_at).total_seconds())
                elif kind == "lapse":
                    # No grant call was ever started: nothing to take back.
                    self._transition(
                        session,
                        row,
                        "expire",
                        actor=SYSTEM,
                        now=now,
                        reason="the window ended before access could be granted",
                    )
                    row.ended_at = now
                    row.next_deadline_at = None
                    report.lapsed += 1
                    report.lags.append((now - row.ends_at).total_seconds())
                else:
                    # Claim: push the deadline ahead by a lease; others skip the row
                    # until we record the outcome or the lease lapses.
                    due_at = row.next_deadline_at
                    row.next_deadline_at = now + self.retry.lease
                    row.claimed_by = self.worker_id
                    if kind == "grant" and row.grant_started_at is None:
                        # Intent before effect: from this commit on, a revoke is owed.
                        row.grant_started_at = now
                        row.grant_provider = row.app.provider
                        row.grant_config = dict(row.app.provider_config or {})
                    claimed.append((row, kind, event, due_at))
            session.flush()  # one flush for the whole batch; it bumps each row's version
            work = [
                _Work(
                    row.id,
                    row.version,
                    kind,
                    event,
                    self._grant_provider(row),
                    self._spec(row),
                    due_at,
                )
                for row, kind, event, due_at in claimed
            ]
        self._call_and_record(work, now, report)
        return report

    def _call_and_record(self, work: list[_Work], now: datetime, report: SweepReport) -> None:
        """Call the backends for the claimed rows, each provider with its own bounded
        concurrency (a slow backend delays its own calls, never the others'), and record
        outcomes as they come in (at least every quarter lease of backend time), while a
        keeper renews the leases of the rows whose outcome is not recorded yet."""
        if not work:
            return
        record_every = self.retry.lease.total_seconds() / 4
        keeper = LeaseKeeper(
            lambda ids, elapsed: self.renew_leases(ids, now + elapsed + self.retry.lease),
            [item.request_id for item in work],
            self.retry.lease,
        )
        outcomes: list[tuple[_Work, str | None]] = []
        unmade: list[_Work] = []
        with keeper:
            chunk_started = time.monotonic()
            for item, error in self._backend_calls(work, now):
                if error is _UNMADE:
                    unmade.append(item)  # stopping: the claim is given back below
                    continue
                outcomes.append((item, error))
                if time.monotonic() - chunk_started >= record_every:
                    self._record_outcomes(outcomes, now, report)
                    keeper.done(item.request_id for item, _ in outcomes)
                    outcomes, chunk_started = [], time.monotonic()
            if outcomes or unmade:
                self._record_outcomes(outcomes, now, report, unmade=unmade)

    def _backend_calls(
        self, work: list[_Work], now: datetime
    ) -> Iterator[tuple[_Work, str | None]]:
        """Yield (item, error or None) as backend calls end; ``_UNMADE`` for a call never
        started because the process is stopping. One thread pool per provider, as wide
        as its concurrency limit; a provider that takes batches (``BatchProvider``) gets
        one call per kind instead of one per row; when every provider is limited to one
        call at a time (the log provider on SQLite) the calls are made here, in order."""
        groups: dict[str, list[_Work]] = {}
        for item in work:
            groups.setdefault(item.provider, []).append(item)
        tasks: dict[str, list[Callable[[], list[tuple[_Work, str | None]]]]] = {}
        for name, items in groups.items():
            if self._takes_batches(name):
                tasks[name] = [
                    functools.partial(self._call_batch, name, call, batch, now)
                    # In the order the batch first needs them: overdue expiries first.
                    for call in dict.fromkeys(item.call for item in items)
                    if (batch := [item for item in items if item.call == call])
                ]
            else:
                tasks[name] = [functools.partial(self._call_one, item, now) for item in items]
        limits = {name: self.concurrency_of(name) for name in tasks}
        if all(limit == 1 for limit in limits.values()):
            for group in tasks.values():
                for task in group:
                    yield from task()
            return
        pools = {
            name: ThreadPoolExecutor(
                max_workers=min(limits[name], len(group)), thread_name_prefix=name
            )
            for name, group in tasks.items()
        }
        try:
            futures = [pools[name].submit(task) for name, group in tasks.items() for task in group]
            for future in as_completed(futures):
                yield from future.result()
        finally:
            for pool in pools.values():
                pool.shutdown(wait=True, cancel_futures=True)

    def _takes_batches(self, provider: str) -> bool:
        try:
            return isinstance(self.providers.get(provider), BatchProvider)
        except ProviderError:
            return False

    def _call_one(self, item: _Work, now: datetime) -> list[tuple[_Work, str | None]]:
        return [(item, self._call_unless_stopping(item, now))]

    def _call_batch(
        self, name: str, call: str, items: list[_Work], now: datetime
    ) -> list[tuple[_Work, str | None]]:
        """One batch call for ``items`` (all grants or all revokes on one provider)."""
        if self.stopping.is_set():
            return [(item, _UNMADE) for item in items]
        started = time.perf_counter()
        errors: list[str | None]
        try:
            provider = self.providers.get(name)
            assert isinstance(provider, BatchProvider)
            specs = [item.spec for item in items]
            if call == "grant":
                errors = list(provider.grant_many(specs, now))
            else:
                errors = list(provider.revoke_many(specs, now))
            if len(errors) != len(items):
                raise ProviderError(f"{name} answered {len(errors)} results for {len(items)}")
        except Exception as exc:  # a backend failure must never stop the sweep
            log.warning("provider %s %s of %d failed: %s", name, call, len(items), exc)
            errors = [str(exc) or type(exc).__name__] * len(items)
        each = (time.perf_counter() - started) / len(items)
        for error in errors:
            self.observer.provider_called(name, call, error, each)
        return list(zip(items, errors, strict=True))

    def concurrency_of(self, provider: str) -> int:
        """How many calls to ``provider`` may be in flight at once: the provider's own
        ``max_concurrency`` if it declares one, else the service-wide limit."""
        try:
            declared = getattr(self.providers.get(provider), "max_concurrency", None)
        except ProviderError:
            declared = None
        return max(1, int(declared or self.provider_concurrency))

    def _call_unless_stopping(self, item: _Work, now: datetime) -> str | None:
        if self.stopping.is_set():
            return _UNMADE
        return self._call_provider(item, now)

    def _record_outcomes(
        self,
        outcomes: list[tuple[_Work, str | None]],
        now: datetime,
        report: SweepReport,
        *,
        unmade: Sequence[_Work] = (),
    ) -> None:
        ids = [item.request_id for item, _ in outcomes] + [item.request_id for item in unmade]
        with self.db.transaction() as session:
            current = self._lock_many(session, ids)
            with session.no_autoflush:
                for item in unmade:
                    self._unclaim(current[item.request_id], item)
                for item, error in outcomes:
                    self._record_outcome(
                        session, current[item.request_id], item, error, now, report
                    )

    def _unclaim(self, row: AccessRequest, item: _Work) -> None:
        """Give back a claim whose backend call was never made (the process is stopping),
        so the next sweep, here or in another replica, does it without waiting for the
        lease to lapse. A row someone changed meanwhile is theirs. (A grant intent
        recorded by the claim stays: a revoke of what was never granted is harmless.)"""
        if row.version == item.version and row.claimed_by == self.worker_id:
            row.claimed_by = None
            row.next_deadline_at = item.due_at

    def renew_leases(self, ids: Sequence[int], until: datetime) -> None:
        """Push the leases this worker holds on ``ids`` out to ``until``. A Core UPDATE
        leaves each row's version alone, so the outcome's version check still holds."""
        with self.db.transaction() as session:
            session.execute(
                update(AccessRequest)
                .where(
                    AccessRequest.id.in_(ids),
                    AccessRequest.claimed_by == self.worker_id,
                    AccessRequest.next_deadline_at.is_not(None),
                    AccessRequest.next_deadline_at < until,
                )
                .values(next_deadline_at=until)
                .execution_options(synchronize_session=False)
            )

    def _due_rows(
        self,
        session: Session,
        now: datetime,
        limit: int,
        ids: list[int] | None,
        *,
        wait_for_locks: bool = False,
    ) -> list[AccessRequest]:
        rows: list[AccessRequest] = []
        # Overdue expiries first; revokes owed by ended requests last.
        for state in (
            RequestState.ACTIVE,
            RequestState.PENDING,
            RequestState.APPROVED,
            RequestState.AUTO_APPROVED,
            *sorted(FINAL_STATES),
        ):
            if len(rows) >= limit:
                break
            query = (
                select(AccessRequest)
                .where(AccessRequest.state == state.value, AccessRequest.next_deadline_at <= now)
                .order_by(AccessRequest.next_deadline_at)
                .limit(limit - len(rows))
                .options(_APPS_ONCE)
            )
            if ids is not None:
                query = query.where(AccessRequest.id.in_(ids))
            if self.db.is_postgres:
                # A person's action waits for a racing sweeper's lock (it is short) so
                # what it made due happens now; the sweep skips locked rows.
                query = query.with_for_update(skip_locked=not wait_for_locks, of=AccessRequest)
            rows.extend(session.execute(query).unique().scalars())
        return rows

    @staticmethod
    def _due_action(row: AccessRequest, now: datetime) -> tuple[str, str | None] | None:
        """What is due for ``row`` at ``now``: (kind, lifecycle event on success).

        Once a grant call was started (``grant_started_at``), every way out goes through
        a revoke: a cancel, a grant that gave up, a window that ended before the grant was
        recorded. A request that ended anyway (a grant that outlived its lease) owes one.
        """
        state = row.state
        if state == RequestState.ACTIVE:
            if row.end_requested:
                return "revoke", row.end_requested
            return ("revoke", "expire") if row.ends_at <= now else None
        if state == RequestState.PENDING:
            return ("time_out", "time_out") if row.approval_deadline_at <= now else None
        if state in APPROVED_STATES:
            if row.end_requested:
                return "revoke", row.end_requested
            if row.ends_at <= now:
                return ("revoke", "expire") if row.grant_started_at else ("lapse", "expire")
            return ("grant", "activate") if row.starts_at <= now else None
        if row.grant_started_at is not None:
            return "revoke", None  # a compensating revoke
        return None

    @staticmethod
    def _natural_deadline(row: AccessRequest) -> datetime | None:
        if row.state == RequestState.ACTIVE:
            return row.ends_at
        if row.state == RequestState.PENDING:
            return row.approval_deadline_at
        if row.state in APPROVED_STATES:
            return row.starts_at
        return None

    def _call_provider(self, item: _Work, now: datetime) -> str | None:
        """Run the backend call; return None on success or the error people will see."""
        started = time.perf_counter()
        error: str | None = None
        try:
            provider = self.providers.get(item.provider)
            if item.call == "grant":
                provider.grant(item.spec, now)
            else:
                provider.revoke(item.spec, now)
        except Exception as exc:  # a backend failure must never stop the sweep
            log.warning(
                "provider %s %s failed for request %s: %s",
                item.provider,
                item.call,
                item.request_id,
                exc,
            )
            error = str(exc) or type(exc).__name__
        self.observer.provider_called(
            item.provider, item.call, error, time.perf_counter() - started
        )
        return error

    def _committed(self, session: Session) -> None:
        """After a commit: report the transitions it made (never before, so a
        rolled-back transition is never counted)."""
        moves = session.info.pop("jit_transitions", None)
        if moves:
            self.observer.transitions_committed(moves)

    def _record_outcome(
        self,
        session: Session,
        row: AccessRequest,
        item: _Work,
        error: str | None,
        now: datetime,
        report: SweepReport,
    ) -> None:
        if row.version != item.version:
            # Someone acted while we called the backend (e.g. the requester cancelled
            # while we granted): our outcome is stale, and what they asked for is due.
            if row.state in FINAL_STATES and item.call == "grant":
                # Our lease lapsed mid-call and another sweeper ended the request;
                # our grant may have landed after its revoke: one more is owed.
                log.warning("request %s ended during its grant; a revoke is owed", row.id)
                row.claimed_by = None
                row.next_deadline_at = now
            elif row.claimed_by == self.worker_id and row.state not in FINAL_STATES:
                row.claimed_by = None
                row.next_deadline_at = now
            return
        row.claimed_by = None
        row.last_attempt_at = now
        if item.call == "grant":
            self._record_grant(session, row, error, now, report)
        elif item.event is None:
            self._record_owed_revoke(session, row, error, now)
        else:
            self._record_revoke(session, row, item.event, error, now, report)

    def _record_grant(
        self,
        session: Session,
        row: AccessRequest,
        error: str | None,
        now: datetime,
        report: SweepReport,
    ) -> None:
        if error is None:
            self._transition(
                session,
                row,
                "activate",
                actor=SYSTEM,
                now=now,
                reason="the window opened and access was granted",
                details={"attempts": row.attempts + 1},
            )
            row.activated_at = now
            row.attempts = 0
            row.last_error = None
            row.next_deadline_at = row.ends_at
            if self.remind_before is not None and row.ends_at - self.remind_before > now:
                # A reminder is a deadline too: an outbox row that becomes due later.
                self._enqueue(
                    session,
                    row,
                    "ending_soon",
                    "ending_soon",
                    row.requester,
                    now,
                    actor=SYSTEM,
                    reason=None,
                    available_at=row.ends_at - self.remind_before,
                )
            report.activated += 1
            report.lags.append((now - row.starts_at).total_seconds())
            return
        row.attempts += 1
        row.last_error = error
        if row.attempts >= self.retry.max_grant_attempts:
            # Give up granting; a failed call may still have granted, so the request
            # fails only after a revoke succeeded (the next batch makes it).
            self._audit_attempt(session, row, "grant_failed", error, now)
            row.end_requested = "fail"
            row.end_requested_by = SYSTEM
            row.end_requested_at = now
            row.end_requested_reason = f"grant failed after {row.attempts} attempts: {error}"
            row.attempts = 0
            row.next_deadline_at = now
            return
        self._retry_later(session, row, "grant_failed", error, now)
        report.retrying += 1

    def _retry_later(
        self, session: Session, row: AccessRequest, action: str, error: str, now: datetime
    ) -> None:
        """Back off before the next attempt, and record the failure in the audit log."""
        row.next_deadline_at = now + self.retry.delay(row.attempts, self._rng)
        self._audit_attempt(session, row, action, error, now)

    @staticmethod
    def _audit_attempt(
        session: Session, row: AccessRequest, action: str, error: str, now: datetime
    ) -> None:
        details: dict[str, Any] = {"attempt": row.attempts}
        if row.next_deadline_at is not None and row.next_deadline_at > now:
            details["retry_at"] = row.next_deadline_at.isoformat()
        audit.append(
            session,
            at=now,
            actor=SYSTEM,
            action=action,
            app=row.app.name,
            request_id=row.id,
            from_state=row.state,
            to_state=row.state,
            reason=error,
            details=details,
        )

    def _record_revoke(
        self,
        session: Session,
        row: AccessRequest,
        event: str,
        error: str | None,
        now: datetime,
        report: SweepReport,
    ) -> None:
        if error is not None:
            self._revoke_failed(session, row, error, now)
            report.retrying += 1
            return
        if event == "expire":
            actor = SYSTEM
            if row.state == RequestState.ACTIVE:
                reason = "the window ended and access was revoked"
                report.expired += 1
            else:
                reason = "the window ended before the grant was recorded; it was revoked"
                report.lapsed += 1
            report.lags.append((now - row.ends_at).total_seconds())
        else:
            actor = row.end_requested_by or SYSTEM
            reason = row.end_requested_reason or event
            if event == "fail":
                report.failed += 1
            elif event == "cancel":
                report.cancelled += 1
            else:
                report.revoked += 1
            if row.end_requested_at is not None:
                report.lags.append((now - row.end_requested_at).total_seconds())
        self._transition(session, row, event, actor=actor, now=now, reason=reason)
        row.ended_at = now
        row.ended_by = actor
        row.end_reason = reason
        row.next_deadline_at = None
        row.revoke_failing_since = None
        row.revoke_alerts_sent = 0
        row.attempts = 0

    def _record_owed_revoke(
        self, session: Session, row: AccessRequest, error: str | None, now: datetime
    ) -> None:
        """The outcome of a revoke owed by a request that had already ended."""
        if error is not None:
            self._revoke_failed(session, row, error, now)
            return
        audit.append(
            session,
            at=now,
            actor=SYSTEM,
            action="owed_revoke",
            app=row.app.name,
            request_id=row.id,
            from_state=row.state,
            to_state=row.state,
            reason="a grant that landed after the request ended was revoked",
        )
        row.next_deadline_at = None
        row.revoke_failing_since = None
        row.revoke_alerts_sent = 0
        row.attempts = 0
        row.last_error = None

    def _revoke_failed(
        self, session: Session, row: AccessRequest, error: str, now: datetime
    ) -> None:
        """A revoke is retried without limit; approvers and admins are alerted at once,
        then less and less often."""
        row.attempts += 1
        row.last_error = error
        if row.revoke_failing_since is None:
            row.revoke_failing_since = now
            row.revoke_alerts_sent = 0
        self._retry_later(session, row, "revoke_failed", error, now)
        if rules.revoke_alert_due(row.revoke_failing_since, now, row.revoke_alerts_sent):
            for recipient in dict.fromkeys([*row.app.approvers, *row.app.admins]):
                self._enqueue(
                    session,
                    row,
                    f"revoke_failing:{row.revoke_failing_since.isoformat()}:"
                    f"{row.revoke_alerts_sent}",
                    "revoke_failing",
                    recipient,
                    now,
                    actor=SYSTEM,
                    reason=error,
                )
            row.revoke_alerts_sent += 1

    # -- helpers --------------------------------------------------------------------
    def _decide(
        self, request_id: int, *, actor: str, reason: str, now: datetime, approve: bool
    ) -> RequestView:
        verb = "approve" if approve else "deny"
        timed_out = False
        with self.db.transaction() as session:
            row = self._lock(session, request_id)
            if row.state != RequestState.PENDING:
                raise Conflict(*self._already(row))
            rules.check_decider(row.app.approvers, row.requester, actor, verb)
            reason = rules.check_reason(reason, verb)
            if row.approval_deadline_at <= now:
                self._transition(
                    session,
                    row,
                    "time_out",
                    actor=SYSTEM,
                    now=now,
                    reason="no approver decided in time",
                )
                row.ended_at = now
                row.next_deadline_at = None
                timed_out = True
            else:
                self._transition(session, row, verb, actor=actor, now=now, reason=reason)
                row.decided_by = actor
                row.decided_at = now
                row.decision_reason = reason
                if approve:
                    row.next_deadline_at = row.starts_at
                else:
                    row.ended_at = now
                    row.next_deadline_at = None
            result = RequestView.of(row)
        if timed_out:
            raise Conflict(_timed_out(request_id, result.approval_deadline_at))
        self._after_change(result, now)
        return self.get_request(request_id)

    def _after_change(self, view: RequestView, now: datetime) -> None:
        """Act at once on what is already due (start now), and wake the scheduler."""
        if self.inline and view.state in APPROVED_STATES and view.starts_at <= now:
            self.run_due(now, [view.id])
        elif self.on_deadline is not None and view.state not in FINAL_STATES:
            self.on_deadline(
                view.starts_at if view.state in APPROVED_STATES else view.approval_deadline_at
            )

    def _request_end(
        self, row: AccessRequest, kind: str, *, actor: str, reason: str, now: datetime
    ) -> None:
        if row.state == RequestState.PENDING:
            raise RuleViolation(
                f"Request {row.id} is pending, not active: approvers can deny it, and the "
                "requester can cancel it"
            )
        if row.state in APPROVED_STATES:
            raise RuleViolation(f"Request {row.id} is {row.state}, not active: cancel it instead")
        if row.state in FINAL_STATES:
            raise Conflict(*self._already(row))
        self._ask_sweep_to_end(row, kind, actor=actor, reason=reason, now=now)

    def _ask_sweep_to_end(
        self, row: AccessRequest, event: str, *, actor: str, reason: str, now: datetime
    ) -> None:
        """Record that the request must end with ``event`` once its grant is revoked;
        the sweep revokes, then makes the transition."""
        if row.end_requested:
            raise Conflict(
                f"Request {row.id} is already being ended ({row.end_requested} by ",
                Mention(row.end_requested_by or ""),
                f" at {row.end_requested_at:%Y-%m-%d %H:%M} UTC)"
                + (f"; the backend keeps failing: {row.last_error}" if row.last_error else ""),
            )
        row.end_requested = event
        row.end_requested_by = actor
        row.end_requested_at = now
        row.end_requested_reason = reason
        row.attempts = 0
        if row.claimed_by is None or row.next_deadline_at is None or row.next_deadline_at <= now:
            row.next_deadline_at = now
        # else: a sweeper holds the row with a call in flight (maybe the grant itself).
        # Its lease stands, so no one revokes before that call returns; when it records
        # its outcome it sees this change and makes the revoke due at once.

    def _end_now(self, request_id: int, now: datetime) -> RequestView:
        if self.inline:
            self.run_due(now, [request_id])
        elif self.on_deadline is not None:
            self.on_deadline(now)
        return self.get_request(request_id)

    def _end_before_start(
        self,
        session: Session,
        row: AccessRequest,
        event: str,
        *,
        actor: str,
        now: datetime,
        reason: str,
    ) -> bool:
        """End a pending or approved request. Returns True when it cannot end yet:
        a grant call was started for it (maybe in flight, maybe landed before a crash),
        so the backend may hold access and the sweep must revoke it first."""
        if row.grant_started_at is None:
            self._end_without_grant(session, row, event, actor=actor, now=now, reason=reason)
            return False
        self._ask_sweep_to_end(row, event, actor=actor, reason=reason, now=now)
        return True

    def _end_without_grant(
        self,
        session: Session,
        row: AccessRequest,
        event: str,
        *,
        actor: str,
        now: datetime,
        reason: str,
    ) -> None:
        """End a request for which no grant call was ever started."""
        self._transition(session, row, event, actor=actor, now=now, reason=reason)
        row.ended_at = now
        row.ended_by = actor
        row.end_reason = reason
        row.next_deadline_at = None

    def _transition(
        self,
        session: Session,
        row: AccessRequest,
        event: str,
        *,
        actor: str,
        now: datetime,
        reason: str | None,
        details: dict[str, Any] | None = None,
    ) -> None:
        before, _after = move(row, event)
        self._record(
            session, row, event, before, actor=actor, now=now, reason=reason, details=details
        )

    def _record(
        self,
        session: Session,
        row: AccessRequest,
        event: str,
        before: str | None,
        *,
        actor: str,
        now: datetime,
        reason: str | None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Audit the transition and queue who must hear of it, in the same transaction."""
        after = row.state
        session.info.setdefault("jit_transitions", []).append((before, after))
        audit.append(
            session,
            at=now,
            actor=actor,
            action=event,
            app=row.app.name,
            request_id=row.id,
            from_state=before,
            to_state=after,
            reason=reason,
            details={
                "role": row.role,
                "requester": row.requester,
                "starts_at": row.starts_at.isoformat(),
                "ends_at": row.ends_at.isoformat(),
                **(details or {}),
            },
        )
        log.info(
            "request %s %s -> %s by %s",
            row.id,
            before,
            after,
            actor,
            extra={
                "request_id": row.id,
                "from_state": before,
                "to_state": after,
                "actor": actor,
                "event": event,
            },
        )
        self._enqueue(
            session,
            row,
            after,
            "requester_update",
            row.requester,
            now,
            actor=actor,
            reason=reason,
            event=event,
            before=before,
        )
        for approver in row.notified_approvers:
            self._enqueue(
                session,
                row,
                after,
                "approver_card",
                approver,
                now,
                actor=actor,
                reason=reason,
                event=event,
                before=before,
            )

    @staticmethod
    def _enqueue(
        session: Session,
        row: AccessRequest,
        step: str,
        kind: str,
        recipient: str,
        now: datetime,
        *,
        actor: str,
        reason: str | None,
        event: str | None = None,
        before: str | None = None,
        available_at: datetime | None = None,
    ) -> None:
        staged.stage(
            session,
            OutboxMessage,
            {
                "dedup_key": f"request:{row.id}:{step}:{kind}:{recipient}",
                "kind": kind,
                "recipient": recipient,
                "request_id": row.id,
                "payload": {
                    "event": event,
                    "from": before,
                    "to": row.state,
                    "actor": actor,
                    "reason": reason,
                },
                "created_at": now,
                "available_at": available_at or now,
                "attempts": 0,
            },
        )

    @staticmethod
    def _already(row: AccessRequest) -> tuple[Part, ...]:
        """Who got there first, as message parts (the people in it are mentions)."""
        state = row.state
        if state in (RequestState.APPROVED, RequestState.DENIED, RequestState.AUTO_APPROVED):
            who: Part = (
                "policy (automatic mode)"
                if state == RequestState.AUTO_APPROVED
                else Mention(row.decided_by or "")
            )
            verb = "approved" if state != RequestState.DENIED else "denied"
            text = ""
            if row.decided_at is not None:
                text += f" at {row.decided_at:%Y-%m-%d %H:%M} UTC"
            if row.decision_reason and state != RequestState.AUTO_APPROVED:
                text += f": {row.decision_reason}"
            return (f"Request {row.id} was already {verb} by ", who, text)
        if state == RequestState.ACTIVE:
            return (
                f"Request {row.id} was already approved by ",
                Mention(row.decided_by or ""),
                f" and is active until {row.ends_at:%Y-%m-%d %H:%M} UTC",
            )
        if state == RequestState.TIMED_OUT:
            return (
                f"Request {row.id} is already timed_out: it timed out at "
                f"{row.approval_deadline_at:%Y-%m-%d %H:%M} UTC before anyone decided; "
                "the requester must submit a new request",
            )
        if row.ended_by:
            return (f"Request {row.id} is already {state} by ", Mention(row.ended_by))
        return (f"Request {row.id} is already {state}",)

    def grant_spec(self, request_id: int) -> GrantSpec:
        """What the backend is asked to grant or revoke for this request."""
        with self.db.transaction(readonly=True) as session:
            return self._spec(self._get(session, request_id))

    @staticmethod
    def _spec(row: AccessRequest) -> GrantSpec:
        """The grant as the backend knows it: once a grant call started, with the
        provider config of that call, so its revoke finds the same grant."""
        config = row.grant_config if row.grant_started_at is not None else None
        return GrantSpec(
            request_id=row.id,
            app=row.app.name,
            scope=row.app.scope,
            principal=row.requester,
            role=row.role,
            starts_at=row.starts_at,
            ends_at=row.ends_at,
            config=dict(config if config is not None else row.app.provider_config or {}),
        )

    @staticmethod
    def _grant_provider(row: AccessRequest) -> str:
        """The provider that may hold the grant (the application's, before any call)."""
        return row.grant_provider or row.app.provider

    def _validated(self, spec: AppSpec) -> AppSpec:
        rules.check_definition(
            "The application",
            name=spec.name,
            scope=spec.scope,
            roles=spec.roles,
            provider=spec.provider,
            provider_config=spec.provider_config,
        )
        name = spec.name.strip()
        if not _APP_NAME.match(name):
            raise RuleViolation(
                f"'{spec.name}' is not a valid application name: use letters, digits, "
                "'.', '_' or '-' (at most 100 characters)"
            )
        scope = spec.scope.strip()
        if not scope:
            raise RuleViolation("A scope is required: the managed resource group's ID")
        publishers = rules.check_user_ids(spec.publishers, "Publisher")
        if not publishers:
            raise RuleViolation(f"{name} needs at least one publisher (--publisher U…)")
        roles = tuple(dict.fromkeys(r.strip() for r in spec.roles if r.strip()))
        if not roles:
            raise RuleViolation(f"{name} needs at least one eligible role (--role Contributor)")
        admins = rules.check_user_ids(spec.admins, "Admin")
        try:
            self.providers.get(spec.provider)
        except ProviderError as exc:
            raise RuleViolation(f"{name}: {exc}", field="provider") from None
        policy = spec.policy.validated() if spec.jit_enabled else spec.policy
        return replace(
            spec,
            name=name,
            scope=scope,
            publishers=publishers,
            roles=roles,
            admins=admins,
            policy=policy,
        )

    def _create_app(
        self, session: Session, spec: AppSpec, *, actor: str, now: datetime
    ) -> Application:
        row = Application(
            name=spec.name, jit_enabled=spec.jit_enabled, scope=spec.scope, created_at=now
        )
        self._write_app(row, spec, now)
        session.add(row)
        session.flush()
        audit.append(
            session,
            at=now,
            actor=actor,
            action="app_registered",
            app=spec.name,
            details=AppView.of(row).to_json(),
        )
        return row

    def _write_app(self, row: Application, spec: AppSpec, now: datetime) -> None:
        row.publishers = list(spec.publishers)
        row.eligible_roles = list(spec.roles)
        row.admins = list(spec.admins)
        row.provider = spec.provider
        row.provider_config = dict(spec.provider_config)
        self._write_policy(row, spec.policy, now)

    @staticmethod
    def _write_policy(row: Application, policy: Policy, now: datetime) -> None:
        row.approval_mode = policy.mode.value
        row.max_duration_s = int(policy.max_duration.total_seconds())
        row.approvers = list(policy.approvers)
        row.approval_timeout_s = int(policy.approval_timeout.total_seconds())
        row.updated_at = now

    @staticmethod
    def _find_app(session: Session, name: str, *, removed: bool = False) -> Application | None:
        query = select(Application).where(Application.name == name.strip())
        if not removed:
            query = query.where(Application.removed_at.is_(None))
        return session.execute(query).scalar_one_or_none()

    def _app(self, session: Session, name: str, *, include_removed: bool = False) -> Application:
        row = self._find_app(session, name, removed=include_removed)
        if row is None:
            raise NotFound(f"No application named '{name}': see `jitaccess apps list`")
        return row

    @staticmethod
    def _get(session: Session, request_id: int) -> AccessRequest:
        if not 0 < request_id < MAX_ID:
            raise NotFound(f"No request {request_id}")
        row = session.get(AccessRequest, request_id)
        if row is None:
            raise NotFound(f"No request {request_id}")
        return row

    def _lock_many(self, session: Session, ids: list[int]) -> dict[int, AccessRequest]:
        """Re-read (and on PostgreSQL lock) a batch of rows in one query, in id order."""
        query = (
            select(AccessRequest)
            .where(AccessRequest.id.in_(ids))
            .order_by(AccessRequest.id)
            .options(_APPS_ONCE)
        )
        if self.db.is_postgres:
            query = query.with_for_update(of=AccessRequest)
        return {row.id: row for row in session.execute(query).unique().scalars()}

    def _lock(self, session: Session, request_id: int) -> AccessRequest:
        if not 0 < request_id < MAX_ID:
            raise NotFound(f"No request {request_id}")
        query = select(AccessRequest).where(AccessRequest.id == request_id)
        if self.db.is_postgres:
            query = query.with_for_update(of=AccessRequest)
        row = session.execute(query).unique().scalar_one_or_none()
        if row is None:
            raise NotFound(f"No request {request_id}")
        return row
