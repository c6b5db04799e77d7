"""The deadline sweep: the only place that calls the access backends for requests.

``sweep(now)`` does what is due at ``now``, in batches, overdue expiries first. Backend
calls never run inside a transaction: the sweep *claims* due rows by pushing their
deadline ahead by a lease (recording, before a first grant call, that a grant may
exist and on which backend), commits, calls the backends (each provider with its own
bounded concurrency, in batches where a provider takes them, leases kept alive while
calls are in flight), then records each outcome after checking that nobody changed the
row meanwhile. A crash in between leaves the lease to lapse and the next sweep repeats
the (idempotent) call: nothing is lost or doubled, and a grant that may exist is always
revoked before its request ends.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.orm import Session

from jitaccess.app import journal
from jitaccess.app.extensions import time_out_extension
from jitaccess.app.journal import LAPSED, SYSTEM, TIMED_OUT
from jitaccess.app.leases import LeaseKeeper, running_from
from jitaccess.app.outbox import OutboxKind
from jitaccess.app.quorum import alert_recipients
from jitaccess.domain import policy as rules
from jitaccess.domain.backoff import backoff
from jitaccess.domain.deadlines import (
    backend_behind,
    mark_expiring,
    natural_deadline,
    set_next_deadline,
)
from jitaccess.domain.lifecycle import APPROVED_STATES, FINAL_STATES, Event, RequestState
from jitaccess.providers.base import (
    BatchProvider,
    ExpiryAwareProvider,
    GrantNotices,
    GrantSpec,
    ProviderError,
    ProviderRegistry,
)
from jitaccess.store.db import Database
from jitaccess.store.models import AccessRequest
from jitaccess.store.rows import Rows

if TYPE_CHECKING:
    from jitaccess.app.activity_reports import ActivityReporter

log = logging.getLogger("jitaccess.service")

#: How many batches ``run_due`` may run for a person's action (a grant that gives up
#: and its revoke, a cancel met mid-grant and its revoke).
_RUN_DUE_ROUNDS = 4
#: A backend call that was never started (the process is stopping).
_UNMADE = "\0unmade"


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for provider calls: exponential, capped, with jitter."""

    base: timedelta = timedelta(seconds=5)
    cap: timedelta = timedelta(minutes=5)
    max_grant_attempts: int = 5
    #: How long a sweeper may hold a claimed row before another may take it over.
    lease: timedelta = timedelta(seconds=60)

    def delay(self, attempts: int, rng: Callable[[], float]) -> timedelta:
        return backoff(attempts, base=self.base, cap=self.cap, rng=rng)


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
    call: str  # "grant" | "revoke" | "extend" (tell the backend the new end)
    #: The lifecycle event recorded once the call succeeded (None: a revoke owed by a
    #: request that has already ended, which changes no state).
    event: Event | None
    provider: str
    spec: GrantSpec
    #: The row's deadline before the claim, to put back if the call is never made.
    due_at: datetime | None = None


class SweepObserver(Protocol):
    """What the sweep reports for metrics: each backend call."""

    def provider_called(
        self, provider: str, operation: str, error: str | None, seconds: float
    ) -> None: ...


class _NoObserver:
    def provider_called(
        self, provider: str, operation: str, error: str | None, seconds: float
    ) -> None:
        return None


class Sweeper:
    """Does what is due: time-outs, grants, revokes, owed revokes."""

    def __init__(
        self,
        db: Database,
        providers: ProviderRegistry,
        *,
        retry: RetryPolicy | None = None,
        worker_id: str = "worker",
        rng: Callable[[], float] = random.random,
        remind_before: timedelta | None = timedelta(minutes=15),
        stopping: threading.Event | None = None,
        provider_concurrency: int = 32,
        observer: SweepObserver | None = None,
        activity: ActivityReporter | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.db = db
        self.rows = Rows(db)
        #: The clock every worker compares claims with, read to keep leases alive while
        #: a sweep runs (None: the ``now`` a sweep was given, plus the wall time since).
        self.clock = clock
        self.providers = providers
        self.retry = retry or RetryPolicy()
        self.worker_id = worker_id
        self._rng = rng
        #: How long before the end the requester is reminded (None: never).
        self.remind_before = remind_before
        #: Set when the process is stopping: the sweep stops at its next unit of work
        #: (a row, a backend call), records what it did and gives back what it claimed.
        self.stopping = stopping if stopping is not None else threading.Event()
        #: Calls in flight at once per provider, unless the provider declares its own.
        self.provider_concurrency = provider_concurrency
        self.observer: SweepObserver = observer or _NoObserver()
        #: Backend notices about grants just made, by request id, until audited.
        self._grant_notices: dict[int, str] = {}
        #: Activity-log summaries owed when access ends, read once due (None: none).
        self.activity = activity

    def sweep(
        self, now: datetime, *, batch_size: int = 500, max_batches: int | None = None
    ) -> SweepReport:
        """Do every transition that is due at ``now``: overdue expiries first, then
        time-outs, then activations, each oldest deadline first."""
        report = SweepReport()
        batches = 0
        clock = self.clock or running_from(now)
        while (max_batches is None or batches < max_batches) and not self.stopping.is_set():
            batch = self._sweep_batch(now, batch_size, ids=None, clock=clock)
            if batch is None:
                break
            report.add(batch)
            batches += 1
        if self.activity is not None and not self.stopping.is_set():
            # Its own claims and transactions, after the requests' transitions.
            self.activity.run(now, observer=self.observer)
        return report

    def run_due(self, now: datetime, ids: Iterable[int]) -> SweepReport:
        """Sweep just these requests (used right after a person's action), until
        nothing among them is due: a grant that gave up, or a grant that met a cancel,
        is followed at once by the revoke it owes."""
        wanted = list(ids)
        report = SweepReport()
        clock = self.clock or running_from(now)
        for _ in range(_RUN_DUE_ROUNDS):
            batch = self._sweep_batch(now, 100, ids=wanted, clock=clock, wait_for_locks=True)
            if batch is None:
                break
            report.add(batch)
        return report

    def _sweep_batch(
        self,
        now: datetime,
        limit: int,
        ids: list[int] | None,
        *,
        clock: Callable[[], datetime],
        wait_for_locks: bool = False,
    ) -> SweepReport | None:
        report = SweepReport()
        with self.db.transaction() as session:
            rows = self.rows.due(session, now, limit, ids, wait_for_locks=wait_for_locks)
            if not rows:
                return None
            claimed: list[tuple[AccessRequest, str, Event | None, datetime | None]] = []
            for row in rows:
                if self.stopping.is_set():
                    break  # the rows not reached yet stay due, untouched
                if row.extension_deadline_at is not None and row.extension_deadline_at <= now:
                    # No approver decided on the extension: the window stays as it was.
                    time_out_extension(session, row, now)
                due = self._due_action(row, now)
                if due is None:
                    row.next_deadline_at = self._natural_deadline(row)
                    continue
                kind, event = due
                if kind == "time_out":
                    journal.end_by_system(session, row, Event.TIME_OUT, TIMED_OUT, now)
                    report.timed_out += 1
                    report.lags.append((now - row.approval_deadline_at).total_seconds())
                elif kind == "lapse":
                    # No grant call was ever started: nothing to take back.
                    journal.end_by_system(session, row, Event.EXPIRE, LAPSED, now)
                    report.lapsed += 1
                    report.lags.append((now - row.ends_at).total_seconds())
                else:
                    # Claim: push the deadline ahead by a lease; others skip the row
                    # until we record the outcome or the lease lapses.
                    due_at = row.next_deadline_at
                    row.next_deadline_at = now + self.retry.lease
                    row.claimed_by = self.worker_id
                    if kind == "revoke" and event == Event.EXPIRE and not row.end_requested:
                        # The expiry is under way from this commit on: an extension,
                        # a release or a revoke that arrives later is refused ("the
                        # access is ending") instead of racing the revoke in flight.
                        mark_expiring(row, now, SYSTEM)
                    if kind == "grant" and row.grant_started_at is None:
                        # Intent before effect: from this commit on, a revoke is owed.
                        row.grant_started_at = now
                        row.grant_provider = row.app.provider
                        row.grant_config = provider_config_of(row)
                        if self._expiry_aware(row.grant_provider):
                            # The end this grant call tells the backend; an extension
                            # made later is owed to it as an ``extend`` call.
                            row.backend_ends_at = row.ends_at
                    claimed.append((row, kind, event, due_at))
            session.flush()  # one flush for the whole batch; it bumps each row's version
            work = [
                _Work(
                    row.id,
                    row.version,
                    kind,
                    event,
                    grant_provider_of(row),
                    grant_spec_of(row),
                    due_at,
                )
                for row, kind, event, due_at in claimed
            ]
        self._call_and_record(work, now, report, clock)
        return report

    def _call_and_record(
        self,
        work: list[_Work],
        now: datetime,
        report: SweepReport,
        clock: Callable[[], datetime],
    ) -> None:
        """Call the backends for the claimed rows, each provider with its own bounded
        concurrency (a slow backend delays its own calls, never the others'), and record
        outcomes as they come in (at least every quarter lease of backend time), while a
        keeper renews the leases of the rows whose outcome is not recorded yet."""
        if not work:
            return
        record_every = self.retry.lease.total_seconds() / 4
        keeper = LeaseKeeper(
            self.renew_leases,
            [item.request_id for item in work],
            self.retry.lease,
            clock,
            claimed_at=now,
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
                batched: list[Callable[[], list[tuple[_Work, str | None]]]] = [
                    functools.partial(self._call_batch, name, call, batch, now)
                    # In the order the batch first needs them: overdue expiries first.
                    for call in dict.fromkeys(item.call for item in items)
                    if call != "extend" and (batch := [item for item in items if item.call == call])
                ]
                tasks[name] = batched + [
                    functools.partial(self._call_one, item, now)
                    for item in items
                    if item.call == "extend"
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

    def _expiry_aware(self, provider: str) -> bool:
        try:
            return isinstance(self.providers.get(provider), ExpiryAwareProvider)
        except ProviderError:
            return False

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
        """How many calls to ``provider`` may be in flight at once: the service-wide
        limit (JITACCESS_PROVIDER_CONCURRENCY), or the provider's own ``max_concurrency``
        when it declares a smaller one. Both are limits: the smaller wins."""
        try:
            declared = getattr(self.providers.get(provider), "max_concurrency", None)
        except ProviderError:
            declared = None
        limit = self.provider_concurrency
        if declared:
            limit = min(limit, int(declared))
        return max(1, limit)

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
            current = self.rows.lock_many(session, ids)
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
        """Push the leases this worker holds on ``ids`` out to ``until``."""
        with self.db.transaction() as session:
            self.rows.renew_leases(session, ids, self.worker_id, until)

    @staticmethod
    def _due_action(row: AccessRequest, now: datetime) -> tuple[str, Event | None] | None:
        """What is due for ``row`` at ``now``: (kind, lifecycle event on success).

        Once a grant call was started (``grant_started_at``), every way out goes through
        a revoke: a cancel, a grant that gave up, a window that ended before the grant was
        recorded. A request that ended anyway (a grant that outlived its lease) owes one.
        """
        state = row.state
        if state == RequestState.ACTIVE:
            if row.end_requested:
                return "revoke", Event(row.end_requested)
            if row.ends_at <= now:
                return "revoke", Event.EXPIRE
            # The window was extended: the backend still holds the old end.
            return ("extend", None) if backend_behind(row) else None
        if state == RequestState.PENDING:
            return ("time_out", Event.TIME_OUT) if row.approval_deadline_at <= now else None
        if state in APPROVED_STATES:
            if row.end_requested:
                return "revoke", Event(row.end_requested)
            if row.ends_at <= now:
                return ("revoke", Event.EXPIRE) if row.grant_started_at else ("lapse", Event.EXPIRE)
            return ("grant", Event.ACTIVATE) if row.starts_at <= now else None
        if row.grant_started_at is not None:
            return "revoke", None  # a compensating revoke
        return None

    @staticmethod
    def _natural_deadline(row: AccessRequest) -> datetime | None:
        return natural_deadline(row)

    def _call_provider(self, item: _Work, now: datetime) -> str | None:
        """Run the backend call; return None on success or the error people will see."""
        started = time.perf_counter()
        error: str | None = None
        try:
            provider = self.providers.get(item.provider)
            if item.call == "grant":
                provider.grant(item.spec, now)
                if isinstance(provider, GrantNotices):
                    notice = provider.take_notice(item.spec)
                    if notice is not None:
                        self._grant_notices[item.request_id] = notice
            elif item.call == "extend":
                if isinstance(provider, ExpiryAwareProvider):
                    provider.extend(item.spec, now)
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

    def _record_outcome(
        self,
        session: Session,
        row: AccessRequest,
        item: _Work,
        error: str | None,
        now: datetime,
        report: SweepReport,
    ) -> None:
        if row.version != item.version and not self._grant_still_stands(row, item):
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
        elif item.call == "extend":
            self._record_backend_extend(session, row, item, error, now)
        elif item.event is None:
            self._record_owed_revoke(session, row, error, now)
        else:
            self._record_revoke(session, row, item.event, error, now, report)

    def _grant_still_stands(self, row: AccessRequest, item: _Work) -> bool:
        """Does a grant's outcome still apply although the row changed during the call?
        It does when the row is still ours, still approved and nobody asked it to end:
        the change was an extension (a new end, told to the backend next) or a review.
        Recording it keeps the promise of one grant call per row; dropping it would
        make the row due again and call ``grant`` a second time."""
        return (
            item.call == "grant"
            and row.claimed_by == self.worker_id
            and row.state in APPROVED_STATES
            and row.end_requested is None
        )

    def _record_grant(
        self,
        session: Session,
        row: AccessRequest,
        error: str | None,
        now: datetime,
        report: SweepReport,
    ) -> None:
        if error is None:
            journal.transition(
                session,
                row,
                Event.ACTIVATE,
                actor=SYSTEM,
                now=now,
                reason="the window opened and access was granted",
                details={"attempts": row.attempts + 1, **self._notice_for(row.id)},
            )
            row.activated_at = now
            row.attempts = 0
            row.last_error = None
            # The end, or at once when the window was extended while the grant was made.
            set_next_deadline(row, now)
            if self.remind_before is not None and row.ends_at - self.remind_before > now:
                # A reminder is a deadline too: an outbox row that becomes due later.
                journal.enqueue(
                    session,
                    row,
                    "ending_soon",
                    OutboxKind.ENDING_SOON,
                    row.requester,
                    now,
                    actor=SYSTEM,
                    reason=None,
                    available_at=row.ends_at - self.remind_before,
                    details={"ends_at": row.ends_at.isoformat()},
                )
            report.activated += 1
            report.lags.append((now - row.starts_at).total_seconds())
            return
        row.attempts += 1
        row.last_error = error
        if row.attempts >= self.retry.max_grant_attempts:
            # Give up granting; a failed call may still have granted, so the request
            # fails only after a revoke succeeded (the next batch makes it).
            journal.audit_attempt(session, row, "grant_failed", error, now)
            row.end_requested = Event.FAIL
            row.end_requested_by = SYSTEM
            row.end_requested_at = now
            row.end_requested_reason = f"grant failed after {row.attempts} attempts: {error}"
            row.attempts = 0
            row.next_deadline_at = now
            return
        self._retry_later(session, row, "grant_failed", error, now)
        report.retrying += 1

    def _notice_for(self, request_id: int) -> dict[str, str]:
        """The backend's notice about this grant (see ``GrantNotices``), for the audit."""
        notice = self._grant_notices.pop(request_id, None)
        return {} if notice is None else {"backend_notice": notice}

    def _record_backend_extend(
        self, session: Session, row: AccessRequest, item: _Work, error: str | None, now: datetime
    ) -> None:
        """The backend heard (or not) of an extended end. A failure is retried with
        backoff, never past the end itself (the expiry revokes then anyway)."""
        if error is None:
            journal.record_step(
                session,
                row,
                "backend_extended",
                actor=SYSTEM,
                now=now,
                reason=f"the backend now ends the grant at {item.spec.ends_at.isoformat()}",
            )
            row.backend_ends_at = item.spec.ends_at
            row.attempts = 0
            row.last_error = None
            set_next_deadline(row, now)
            return
        row.attempts += 1
        row.last_error = error
        self._retry_later(session, row, "extend_failed", error, now)
        if row.next_deadline_at is not None and row.next_deadline_at > row.ends_at:
            row.next_deadline_at = row.ends_at

    def _retry_later(
        self, session: Session, row: AccessRequest, action: str, error: str, now: datetime
    ) -> None:
        """Back off before the next attempt, and record the failure in the audit log."""
        row.next_deadline_at = now + self.retry.delay(row.attempts, self._rng)
        journal.audit_attempt(session, row, action, error, now)

    def _record_revoke(
        self,
        session: Session,
        row: AccessRequest,
        event: Event,
        error: str | None,
        now: datetime,
        report: SweepReport,
    ) -> None:
        if error is not None:
            self._revoke_failed(session, row, error, now)
            report.retrying += 1
            return
        if event == Event.EXPIRE:
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
            if event == Event.FAIL:
                report.failed += 1
            elif event == Event.CANCEL:
                report.cancelled += 1
            else:
                report.revoked += 1
            if row.end_requested_at is not None:
                report.lags.append((now - row.end_requested_at).total_seconds())
        journal.transition(session, row, event, actor=actor, now=now, reason=reason)
        if self.activity is not None:
            self.activity.access_ended(session, row, now)
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
        journal.record_step(
            session,
            row,
            "owed_revoke",
            actor=SYSTEM,
            now=now,
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
            for recipient in alert_recipients(row):
                journal.enqueue(
                    session,
                    row,
                    f"revoke_failing:{row.revoke_failing_since.isoformat()}:"
                    f"{row.revoke_alerts_sent}",
                    OutboxKind.REVOKE_FAILING,
                    recipient,
                    now,
                    actor=SYSTEM,
                    reason=error,
                )
            row.revoke_alerts_sent += 1


def grant_spec_of(row: AccessRequest) -> GrantSpec:
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
        config=dict(config if config is not None else provider_config_of(row)),
    )


def provider_config_of(row: AccessRequest) -> dict[str, Any]:
    """The application's provider config for this request's grant; a native request
    adds its jitRequests resource id (the witness reads it, ``providers/native.py``)."""
    config = dict(row.app.provider_config or {})
    if row.native_request_id:
        config["native_request_id"] = row.native_request_id
    return config


def grant_provider_of(row: AccessRequest) -> str:
    """The provider that may hold the grant (the application's, before any call)."""
    return row.grant_provider or row.app.provider
