"""jitaccess's deadline sweep against the usual design: one APScheduler 3.x date job per
grant in a SQLAlchemyJobStore (SQLite file), as many bots do.

    .venv/bin/python -m bench.vs_apscheduler [--quick]

The same 100,000 active grants (realistic rows, as in bench.sweep_scale) are scheduled
both ways; 10,000 of them have their end inside a 10-minute outage. We compare:

- time to schedule the 100,000 expiries. APScheduler: ``add_job(..., "date")`` per
  grant (a pickled job, one INSERT and commit each). jitaccess writes no extra row:
  the deadline is the ``next_deadline_at`` column the activate transition already
  updates; as an upper bound we time 100,000 single-row ``UPDATE … SET
  next_deadline_at`` commits, the same one-commit-per-grant shape;
- peak RSS (VmHWM) of each process;
- catching up after the outage: time from restart until every overdue grant is
  handled, and how many were expired vs skipped. APScheduler runs with its defaults
  (``misfire_grace_time`` 1 s: a job later than that is *missed*, logged and, being a
  date job, deleted, so the grant is never revoked) and with
  ``misfire_grace_time=None`` (run however late); jitaccess runs serve's
  ``DeadlineScheduler`` at its defaults.

What is simulated: the outage is not waited for. The overdue grants' deadlines are
placed in the 10 minutes before the scheduler (re)starts, so at restart the job store
and the database hold exactly what a 10-minute outage would leave. Each APScheduler
job does the same work per expiry as the sweep (``service.run_due(now, [id])``: the
log provider's revoke, the transition, its audit entry and outbox rows), so the
comparison is about scheduling, not about the work. Both SQLite files use WAL with
synchronous=NORMAL (APScheduler's engine is given the same pragmas as ours).
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench._common import (
    Report,
    copy_sqlite,
    parse_args,
    rss_mb,
    run_child,
    seed_active_grants,
    utcnow,
)

OUTAGE = timedelta(minutes=10)
_SERVICE: Any = None


def expire_grant(request_id: int) -> None:
    """The APScheduler job: expire one grant through the service, now."""
    _SERVICE.run_due(datetime.now(UTC), [request_id])


def _sqlite_engine(path: str) -> Any:
    from sqlalchemy import create_engine, event

    engine = create_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine


def _deadlines(url: str) -> list[tuple[int, datetime]]:
    from sqlalchemy import select

    from jitaccess.store.db import Database
    from jitaccess.store.models import AccessRequest

    db = Database(url)
    with db.engine.connect() as conn:
        rows = conn.execute(
            select(AccessRequest.id, AccessRequest.next_deadline_at).order_by(AccessRequest.id)
        ).all()
    db.dispose()
    return [(int(r[0]), r[1]) for r in rows]


# -- children ----------------------------------------------------------------------------
def aps_schedule_child(jobs_path: str, jit_url: str) -> dict[str, Any]:
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    deadlines = _deadlines(jit_url)
    scheduler = BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(engine=_sqlite_engine(jobs_path))},
        timezone=UTC,
    )
    scheduler.start(paused=True)  # a paused scheduler stores jobs and runs none
    before = rss_mb()
    started = time.perf_counter()
    for rid, at in deadlines:
        scheduler.add_job(
            expire_grant, "date", run_date=at, args=[rid], id=f"expire:{rid}", name="expire"
        )
    seconds = time.perf_counter() - started
    scheduler.shutdown(wait=False)
    return {"jobs": len(deadlines), "seconds": seconds, "rss_before_mb": before}


def ours_schedule_child(jit_url: str) -> dict[str, Any]:
    from sqlalchemy import update

    from jitaccess.store.db import Database
    from jitaccess.store.models import AccessRequest

    deadlines = _deadlines(jit_url)
    table = AccessRequest.__table__
    db = Database(jit_url)
    before = rss_mb()
    started = time.perf_counter()
    for rid, at in deadlines:
        with db.engine.begin() as conn:
            conn.execute(update(table).where(table.c.id == rid).values(next_deadline_at=at))
    seconds = time.perf_counter() - started
    db.dispose()
    return {"jobs": len(deadlines), "seconds": seconds, "rss_before_mb": before}


def _overdue_left(db: Any, restart: datetime) -> int:
    from sqlalchemy import func, select

    from jitaccess.store.models import AccessRequest

    with db.engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).where(
                    AccessRequest.state == "active", AccessRequest.ends_at <= restart
                )
            ).scalar_one()
        )


def aps_catchup_child(
    jobs_path: str,
    jit_url: str,
    overdue_ids: list[int],
    misfire_grace_time: float | None,
    timeout: float,
) -> dict[str, Any]:
    global _SERVICE
    from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    from bench._common import make_service

    logging.getLogger("apscheduler").setLevel(logging.ERROR)  # 10,000 "missed" warnings
    db, _SERVICE, _ = make_service(jit_url, upgrade=False, worker_id="aps")
    restart = datetime.now(UTC)
    counts = {"executed": 0, "missed": 0, "error": 0}
    lock = threading.Lock()
    done = threading.Event()

    def listener(event: Any) -> None:
        kind = {EVENT_JOB_EXECUTED: "executed", EVENT_JOB_MISSED: "missed"}.get(event.code, "error")
        with lock:
            counts[kind] += 1
            if sum(counts.values()) >= overdue:
                done.set()

    overdue = len(overdue_ids)
    scheduler = BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(engine=_sqlite_engine(jobs_path))},
        timezone=UTC,
    )
    scheduler.start(paused=True)
    if misfire_grace_time != -1:
        # A job keeps the misfire_grace_time it was added with: change the overdue ones
        # (set-up, not timed), as a bot configured that way from the start would have.
        for rid in overdue_ids:
            scheduler.modify_job(f"expire:{rid}", misfire_grace_time=misfire_grace_time)
    scheduler.add_listener(listener, EVENT_JOB_EXECUTED | EVENT_JOB_MISSED | EVENT_JOB_ERROR)
    before = rss_mb()
    started = time.perf_counter()
    scheduler.resume()
    finished = done.wait(timeout)
    seconds = time.perf_counter() - started
    scheduler.shutdown(wait=True)
    left = _overdue_left(db, restart)
    db.dispose()
    return {
        **counts,
        "finished": finished,
        "seconds": seconds,
        "still_active_past_end": left,
        "rss_before_mb": before,
    }


def ours_catchup_child(jit_url: str, overdue: int, timeout: float) -> dict[str, Any]:
    from jitaccess.app.outbox import LoggingNotifier
    from jitaccess.container import build
    from jitaccess.roles import Role
    from jitaccess.settings import Settings

    settings = Settings(_env_file=None, JITACCESS_DATABASE_URL=jit_url)  # type: ignore[call-arg]
    # The benchmark has no Slack: log and count, as it always measured. Built as a
    # worker (``serve --role worker``), so the scheduler is built with the rest.
    container = build(settings, role=Role.WORKER, notifier=LoggingNotifier())
    restart = datetime.now(UTC)
    assert _overdue_left(container.db, restart) == overdue
    scheduler = container.scheduler
    assert scheduler is not None
    before = rss_mb()
    started = time.perf_counter()
    scheduler.start()
    left = overdue
    while left and time.perf_counter() - started < timeout:
        time.sleep(0.1)
        left = _overdue_left(container.db, restart)
    seconds = time.perf_counter() - started
    scheduler.shutdown()
    container.close()
    return {
        "executed": overdue - left,
        "missed": 0,
        "error": 0,
        "finished": left == 0,
        "seconds": seconds,
        "still_active_past_end": left,
        "rss_before_mb": before,
    }


def main() -> None:
    args = parse_args(__doc__ or "")
    total, overdue = (10_000, 1_000) if args.quick else (100_000, 10_000)
    report = Report("vs_apscheduler", quick=args.quick, sizes={"grants": total, "overdue": overdue})
    with tempfile.TemporaryDirectory(prefix="bench-aps-") as tmp:
        restart = utcnow()
        step = OUTAGE / overdue
        template = Path(tmp) / "jit-template.db"
        seeded = seed_active_grants(
            f"sqlite:///{template}",
            total=total,
            due=overdue,
            now=restart,
            due_ends=lambda i: restart - OUTAGE + i * step,
        )
        report.note(f"seeded {total:,} active grants in {seeded['seconds']:.0f} s")
        jit = Path(tmp) / "jit.db"
        jobs_template = Path(tmp) / "jobs-template.db"
        jobs = Path(tmp) / "jobs.db"

        aps_sched = run_child(
            "bench.vs_apscheduler:aps_schedule_child",
            jobs_path=str(jobs_template),
            jit_url=f"sqlite:///{template}",
        )
        copy_sqlite(template, jit)
        ours_sched = run_child(
            "bench.vs_apscheduler:ours_schedule_child", jit_url=f"sqlite:///{jit}"
        )
        report.table(
            f"Scheduling {total:,} expiries",
            ["design", "seconds", "per second", "ratio (APS s / ours s)", "peak RSS MB"],
            [
                [
                    "APScheduler add_job, SQLAlchemyJobStore",
                    aps_sched["seconds"],
                    total / aps_sched["seconds"],
                    1.0,
                    aps_sched["peak_rss_mb"],
                ],
                [
                    "jitaccess: extra writes beyond the activate transition",
                    0.0,
                    "n/a",
                    "n/a",
                    "n/a",
                ],
                [
                    "jitaccess, upper bound: 1 UPDATE next_deadline_at + commit each",
                    ours_sched["seconds"],
                    total / ours_sched["seconds"],
                    aps_sched["seconds"] / ours_sched["seconds"],
                    ours_sched["peak_rss_mb"],
                ],
            ],
        )

        timeout = 240.0
        runs: dict[str, dict[str, Any]] = {}
        for label, grace in (
            ("APScheduler, defaults (misfire_grace_time=1 s)", -1),
            ("APScheduler, misfire_grace_time=None", None),
        ):
            copy_sqlite(jobs_template, jobs)
            copy_sqlite(template, jit)
            runs[label] = run_child(
                "bench.vs_apscheduler:aps_catchup_child",
                child_timeout=timeout + 60,
                jobs_path=str(jobs),
                jit_url=f"sqlite:///{jit}",
                overdue_ids=seeded["due_ids"],
                misfire_grace_time=grace,
                timeout=timeout,
            )
        copy_sqlite(template, jit)
        label = "jitaccess DeadlineScheduler, defaults"
        runs[label] = run_child(
            "bench.vs_apscheduler:ours_catchup_child",
            child_timeout=timeout + 60,
            jit_url=f"sqlite:///{jit}",
            overdue=overdue,
            timeout=timeout,
        )
        ours = runs[label]
        report.table(
            f"Catching up after a 10-minute outage ({overdue:,} overdue of {total:,})",
            [
                "design",
                "handled in s",
                "expired",
                "missed (skipped)",
                "errors",
                "still active past end",
                "peak RSS MB",
                "time vs jitaccess",
            ],
            [
                [
                    name,
                    r["seconds"],
                    r["executed"],
                    r["missed"],
                    r["error"],
                    r["still_active_past_end"],
                    r["peak_rss_mb"],
                    r["seconds"] / ours["seconds"],
                ]
                for name, r in runs.items()
            ],
        )
        report.set("schedule", {"apscheduler": aps_sched, "jitaccess_upper_bound": ours_sched})
        report.set("catchup", runs)
        default = runs["APScheduler, defaults (misfire_grace_time=1 s)"]
        report.target(
            "jitaccess catches up every overdue expiry",
            ours["executed"],
            f"= {overdue:,}",
            ours["still_active_past_end"] == 0,
        )
        report.set("apscheduler_default_missed", default["missed"])
    report.save()


if __name__ == "__main__":
    main()
