"""APScheduler drives the sweep and the relay; it holds no deadline of its own.

An interval job calls ``sweep(now)`` every few seconds, and a one-off job is
re-armed for the earliest known deadline so activations and expiries happen on
time rather than up to an interval late. If the process dies, nothing is lost:
the deadlines are database columns and the next sweep finds them.

Stopping is prompt: :meth:`DeadlineScheduler.shutdown` sets the ``stopping`` event
the service, the relay and the Slack client share, so a running job stops at its
next unit of work (a row, a backend call, a message, a Retry-After wait) rather than
after its whole batch; a job still inside one call when the time is up is left behind
(it runs in a daemon thread), which is as safe as a crash: its claims lapse and are
redone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.executors.base import BaseExecutor, run_job
from apscheduler.schedulers.background import BackgroundScheduler

from jitaccess.app.audit_log import log_head
from jitaccess.app.outbox import OutboxRelay
from jitaccess.app.service import JitService
from jitaccess.app.sweep import SweepReport

log = logging.getLogger("jitaccess.scheduler")
WAKE_JOB = "wake-at-next-deadline"
#: A periodic job: every ``seconds``, under ``name``, ``job(now)`` (errors are logged).
Periodic = tuple[float, str, Callable[[datetime], object]]


def utcnow() -> datetime:
    return datetime.now(UTC)


class DaemonThreadExecutor(BaseExecutor):  # type: ignore[misc]
    """Runs each job in a daemon thread of its own (there are few: sweep, relay,
    reconcile, each at most one at a time). APScheduler's default pool runs them in
    ``concurrent.futures`` threads, which the interpreter joins at exit whatever
    timeout shutdown was given, so one job stuck in a backend or Slack call held the
    whole process; here :meth:`join` waits a bounded time and the rest is left."""

    def __init__(self) -> None:
        super().__init__()
        self._threads: set[threading.Thread] = set()
        self._guard = threading.Lock()

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        def target() -> None:
            try:
                events = run_job(job, job._jobstore_alias, run_times, self._logger.name)
            except BaseException as exc:
                self._run_job_error(job.id, exc, exc.__traceback__)
            else:
                self._run_job_success(job.id, events)
            finally:
                with self._guard:
                    self._threads.discard(threading.current_thread())

        thread = threading.Thread(target=target, name=f"job-{job.id}", daemon=True)
        with self._guard:
            self._threads.add(thread)
        thread.start()

    def join(self, timeout: float) -> list[str]:
        """Wait up to ``timeout`` seconds for running jobs; the names of those still
        running."""
        deadline = time.monotonic() + timeout
        with self._guard:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return sorted(thread.name for thread in threads if thread.is_alive())

    def shutdown(self, wait: bool = True) -> None:
        """APScheduler's hook; :meth:`DeadlineScheduler.shutdown` joins with a bound."""


class DeadlineScheduler:
    def __init__(
        self,
        service: JitService,
        relay: OutboxRelay,
        *,
        sweep_interval: float,
        relay_interval: float,
        batch_size: int = 500,
        clock: Callable[[], datetime] = utcnow,
        on_sweep: Callable[[float, SweepReport], None] | None = None,
        audit_head_interval: float = 300.0,
        stopping: threading.Event | None = None,
        jobs: Sequence[Periodic] = (),
    ) -> None:
        self.service = service
        self.relay = relay
        self.batch_size = batch_size
        self.clock = clock
        #: Set by :meth:`shutdown`; the service and the relay watch the same event.
        self.stopping = stopping if stopping is not None else threading.Event()
        self._lock = threading.Lock()
        self._executor = DaemonThreadExecutor()
        self._scheduler = BackgroundScheduler(timezone=UTC, executors={"default": self._executor})
        self._sweep_interval = sweep_interval
        self._relay_interval = relay_interval
        self.on_sweep = on_sweep
        for seconds, name, job in jobs:
            self.every(seconds, name, job)
        if audit_head_interval > 0:  # once at start, then every interval
            self.every(audit_head_interval, "audit-head", self.log_audit_head, at_start=True)

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def start(self) -> None:
        self._scheduler.add_job(
            self.sweep_now,
            "interval",
            seconds=self._sweep_interval,
            id="sweep",
            max_instances=1,
            coalesce=True,
            next_run_time=datetime.now(UTC),
        )
        self._scheduler.add_job(
            self.relay_now,
            "interval",
            seconds=self._relay_interval,
            id="relay",
            max_instances=1,
            coalesce=True,
        )
        self._scheduler.start()

    def log_audit_head(self, now: datetime | None = None) -> None:
        """Log the audit head as one JSON line, for operators to ship off this box and
        later pass to ``audit verify --expect``."""
        log_head(self.service.db, now or self.clock())

    def every(
        self,
        seconds: float,
        name: str,
        job: Callable[[datetime], object],
        *,
        at_start: bool = False,
    ) -> None:
        """Run ``job(now)`` every ``seconds`` (e.g. reconciliation), and once as soon as
        the scheduler starts with ``at_start``; errors are logged, never fatal."""

        def run() -> None:
            try:
                job(self.clock())
            except Exception:
                log.exception("%s failed; the next run retries", name)

        self._scheduler.add_job(
            run,
            "interval",
            seconds=seconds,
            id=name,
            max_instances=1,
            coalesce=True,
            # Added before start(): run as soon as the scheduler starts, however late.
            **(
                {"next_run_time": datetime.now(UTC), "misfire_grace_time": None} if at_start else {}
            ),
        )

    def shutdown(self, timeout: float = 3.0) -> list[str]:
        """Stop starting jobs, tell running ones to stop at their next unit of work and
        wait for them up to ``timeout`` seconds. Returns the jobs left running (each
        inside one backend or Slack call; a crash there is safe: claims lapse)."""
        self.stopping.set()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        left = self._executor.join(timeout)
        if left:
            log.warning(
                "stopping without waiting for %s (inside a backend or Slack call; what "
                "it claimed is redone after its lease)",
                ", ".join(left),
            )
        return left

    def sweep_now(self) -> None:
        """One sweep; runs in a scheduler thread. Errors are logged, never fatal."""
        if not self._lock.acquire(blocking=False):
            return  # a sweep is already running in this process
        try:
            started = time.perf_counter()
            report = self.service.sweep(self.clock(), batch_size=self.batch_size)
            if self.on_sweep is not None:
                self.on_sweep(time.perf_counter() - started, report)
            if report.transitions:
                log.info("sweep: %s", report)
            if self.stopping.is_set():
                return
            if report.transitions:
                if self.running:
                    # Wake the relay in its own job: delivering here would delay the
                    # next sweep behind every notification this one produced.
                    self._scheduler.modify_job("relay", next_run_time=datetime.now(UTC))
                else:
                    self.relay_now()
            self.wake_at(self.service.next_deadline())
        except Exception:
            log.exception("sweep failed; the next run retries")
        finally:
            self._lock.release()

    def relay_now(self) -> None:
        try:
            self.relay.drain(self.clock())
        except Exception:
            log.exception("outbox relay failed; the next run retries")

    def wake_at(self, when: datetime | None) -> None:
        """Arm a one-off sweep at ``when`` if it is sooner than the next interval."""
        if when is None or not self._scheduler.running:
            return
        now = self.clock()
        if when - now > timedelta(seconds=self._sweep_interval):
            return
        # APScheduler runs on the wall clock; ``self.clock`` may be ahead (the sandbox's
        # time control), so only the distance to the deadline is carried over.
        run_at = datetime.now(UTC) + max(when - now, timedelta(0))
        self._scheduler.add_job(
            self.sweep_now,
            "date",
            run_date=run_at,
            id=WAKE_JOB,
            replace_existing=True,
            misfire_grace_time=None,
        )
