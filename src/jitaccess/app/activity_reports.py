"""What the publisher did: the activity-log summary owed when access ends.

When a request whose access was granted on a backend that keeps an activity log
(Azure) ends, the transaction that ends it records that a summary is owed
(:meth:`ActivityReporter.access_ended`), due ``delay`` later because the log lags.
The sweep then reads the log outside any transaction (:meth:`ActivityReporter.run`),
and in one transaction audits the summary with its sha256 (``activity_summary``) and
queues it for the requester and every approver. A failed read is retried with
backoff and, after ``max_attempts``, given up with an audited failure. The request id
keys the owed summary, so there is at most one per request.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy.orm import Session

from jitaccess.app import journal
from jitaccess.app.journal import SYSTEM
from jitaccess.app.outbox import OutboxKind
from jitaccess.domain import backoff as retry
from jitaccess.domain.activity import ActivityEvent, summarise
from jitaccess.domain.errors import utc_text
from jitaccess.store import activity_reports as reports
from jitaccess.store.db import Database
from jitaccess.store.models import AccessRequest, ActivityReport

log = logging.getLogger("jitaccess.activity")
#: A read never started because the process is stopping.
_UNREAD = "\0unread"


class ActivityLog(Protocol):
    """A backend's activity log: what ``principal`` (a Slack user, mapped through the
    grant's provider config) did at ``scope`` between ``start`` and ``end``."""

    def read(
        self,
        scope: str,
        principal: str,
        config: Mapping[str, Any],
        start: datetime,
        end: datetime,
    ) -> list[ActivityEvent]: ...


class CallObserver(Protocol):
    def provider_called(
        self, provider: str, operation: str, error: str | None, seconds: float
    ) -> None: ...


@dataclass(frozen=True)
class ActivityPolicy:
    #: How long after access ended the log is read (Azure's Activity Log lags minutes).
    delay: timedelta = timedelta(minutes=15)
    #: Backoff of failed reads: exponential from ``base``, capped, with jitter.
    base: timedelta = timedelta(minutes=1)
    cap: timedelta = timedelta(minutes=30)
    max_attempts: int = 6
    #: How long a sweeper may hold a claimed summary before another may take it over.
    lease: timedelta = timedelta(minutes=2)

    def backoff(self, attempts: int, rng: Callable[[], float]) -> timedelta:
        return retry.backoff(attempts, base=self.base, cap=self.cap, rng=rng)


@dataclass
class ActivityRun:
    posted: int = 0
    retrying: int = 0
    gave_up: int = 0
    #: Events read from the logs, the principal's or not (for measurements).
    events_read: int = 0


@dataclass(frozen=True)
class _Job:
    request_id: int
    provider: str
    scope: str
    principal: str
    config: dict[str, Any]
    start: datetime
    end: datetime
    lease_until: datetime


@dataclass
class ActivityReporter:
    """Owes, reads, audits and sends activity summaries; see the module docstring.

    ``logs`` maps a provider name to a factory of its activity log, made on first use
    (so nothing imports the Azure SDK until a summary is due)."""

    db: Database
    logs: Mapping[str, Callable[[], ActivityLog]]
    policy: ActivityPolicy = field(default_factory=ActivityPolicy)
    worker_id: str = "worker"
    rng: Callable[[], float] = random.random
    stopping: threading.Event = field(default_factory=threading.Event)
    #: Activity Log reads in flight at once.
    concurrency: int = 4
    _made: dict[str, ActivityLog] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- in the transaction that ends a request ------------------------------------------
    def access_ended(self, session: Session, row: AccessRequest, now: datetime) -> None:
        """Owe a summary for ``row`` if access was granted on a backend with a log."""
        provider = row.grant_provider or row.app.provider
        if row.activated_at is None or provider not in self.logs:
            return
        if session.get(ActivityReport, row.id) is not None:
            return
        session.add(
            ActivityReport(
                request_id=row.id,
                window_start=row.activated_at,
                window_end=now,
                due_at=now + self.policy.delay,
                attempts=0,
            )
        )

    # -- in the sweep --------------------------------------------------------------------
    def run(
        self, now: datetime, *, limit: int = 50, observer: CallObserver | None = None
    ) -> ActivityRun:
        """Read the logs of every summary due at ``now``, then record each outcome.
        ``observer`` hears of each read (the provider call metrics, as ``activity_log``)."""
        report = ActivityRun()
        jobs = self._claim(now, limit)
        if not jobs:
            return report
        # Reads wait on Azure (pages of 100 events each), so a few run at once; each
        # outcome is recorded as soon as its read ends.
        with ThreadPoolExecutor(
            max_workers=min(self.concurrency, len(jobs)), thread_name_prefix="activity"
        ) as pool:
            futures = [pool.submit(self._read, job, observer) for job in jobs]
            for future in as_completed(futures):
                job, events, error = future.result()
                if error is _UNREAD:
                    continue  # stopping: the claim lapses; the next sweep takes it over
                report.events_read += len(events)
                self._record(job, events, error, now, report)
        return report

    def _read(
        self, job: _Job, observer: CallObserver | None
    ) -> tuple[_Job, list[ActivityEvent], str | None]:
        if self.stopping.is_set():
            return job, [], _UNREAD
        started = time.perf_counter()
        events: list[ActivityEvent] = []
        error: str | None = None
        try:
            events = self._log(job.provider).read(
                job.scope, job.principal, job.config, job.start, job.end
            )
        except Exception as exc:  # a backend failure must never stop the sweep
            log.warning("activity log of request %s not read: %s", job.request_id, exc)
            error = str(exc) or type(exc).__name__
        if observer is not None:
            observer.provider_called(
                job.provider, "activity_log", error, time.perf_counter() - started
            )
        return job, events, error

    def _log(self, provider: str) -> ActivityLog:
        with self._lock:
            made = self._made.get(provider)
            if made is None:
                made = self._made[provider] = self.logs[provider]()
            return made

    def _claim(self, now: datetime, limit: int) -> list[_Job]:
        with self.db.transaction() as session:
            jobs = []
            for report in reports.due(session, self.db, now, limit):
                request = session.get(AccessRequest, report.request_id)
                assert request is not None
                lease_until = now + self.policy.lease
                report.due_at = lease_until
                report.claimed_by = self.worker_id
                jobs.append(
                    _Job(
                        request_id=request.id,
                        provider=request.grant_provider or request.app.provider,
                        scope=request.app.scope,
                        principal=request.requester,
                        config=dict(
                            request.grant_config
                            if request.grant_config is not None
                            else request.app.provider_config or {}
                        ),
                        start=report.window_start,
                        end=report.window_end,
                        lease_until=lease_until,
                    )
                )
            return jobs

    def _record(
        self,
        job: _Job,
        events: list[ActivityEvent],
        error: str | None,
        now: datetime,
        run: ActivityRun,
    ) -> None:
        with self.db.transaction() as session:
            report = reports.lock(session, self.db, job.request_id)
            if report.outcome is not None or report.claimed_by != self.worker_id:
                return  # our lease lapsed and another sweeper took the summary over
            request = session.get(AccessRequest, job.request_id)
            assert request is not None
            report.claimed_by = None
            if error is None:
                self._post(session, report, request, events, now)
                run.posted += 1
                return
            report.attempts += 1
            report.last_error = error
            if report.attempts >= self.policy.max_attempts:
                report.outcome, report.due_at, report.done_at = "gave_up", None, now
                journal.record_step(
                    session,
                    request,
                    "activity_summary_failed",
                    actor=SYSTEM,
                    now=now,
                    reason=f"the activity log could not be read after {report.attempts} "
                    f"attempts: {error}",
                    details={"attempts": report.attempts},
                )
                run.gave_up += 1
                return
            report.due_at = now + self.policy.backoff(report.attempts, self.rng)
            journal.record_step(
                session,
                request,
                "activity_read_failed",
                actor=SYSTEM,
                now=now,
                reason=error,
                details={"attempt": report.attempts, "retry_at": report.due_at.isoformat()},
            )
            run.retrying += 1

    def _post(
        self,
        session: Session,
        report: ActivityReport,
        request: AccessRequest,
        events: list[ActivityEvent],
        now: datetime,
    ) -> None:
        summary = summarise(events, report.window_start, report.window_end)
        digest = summary.sha256()
        report.outcome, report.due_at, report.done_at = "posted", None, now
        report.summary_sha256 = digest
        journal.record_step(
            session,
            request,
            "activity_summary",
            actor=SYSTEM,
            now=now,
            reason=f"{summary.operations_total} operations, {summary.failures_total} failed, "
            f"on {summary.resources_total} resources",
            details={"sha256": digest, "summary": summary.as_dict()},
        )
        journal.enqueue_each(
            session,
            request,
            "activity",
            OutboxKind.ACTIVITY_SUMMARY,
            dict.fromkeys([request.requester, *request.notified_approvers]),
            now,
            actor=SYSTEM,
            reason=None,
            details={"summary": summary.as_dict(), "sha256": digest},
        )


def status_line(
    db: Database, request_id: int, *, at: Callable[[datetime], str] = utc_text
) -> str | None:
    """Where the request's activity summary stands, for ``requests show`` (None: none
    owed). ``at`` writes its times (UTC text by default; the CLI passes local time)."""
    with db.transaction(readonly=True) as session:
        report = session.get(ActivityReport, request_id)
        if report is None:
            return None
        if report.outcome == "posted":
            assert report.done_at is not None and report.summary_sha256 is not None
            return (
                f"sent {at(report.done_at)}, sha256 {report.summary_sha256} "
                "(the summary is the activity_summary entry of `audit export`)"
            )
        if report.outcome == "gave_up":
            return f"given up after {report.attempts} attempts: {report.last_error}"
        assert report.due_at is not None
        due = f"due {at(report.due_at)}"
        if report.attempts:
            return f"{due} (attempt {report.attempts + 1}; last error: {report.last_error})"
        return due
