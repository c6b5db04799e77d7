"""The sweep at scale: 100,000 active grants, 10,000 of them due.

    .venv/bin/python -m bench.sweep_scale [--quick]

(a) expiries/second of ``service.sweep(now)`` on SQLite, against a raw Core
    ``UPDATE … SET state='expired' WHERE id IN (…)`` in batches of 500;
(b) lag from deadline to expired under serve's real scheduler at default settings
    (``DeadlineScheduler`` from ``Container.scheduler``: sweep every 5 s, a one-off
    sweep at the next deadline, batches of 500, the outbox relay, the real clock), with
    the due deadlines spread over 20 s (500/s), with twice as many over the same 20 s
    (1,000/s: the due ones and as many not yet due, their deadlines moved), and with
    all of the due ones at once;
(c) peak RSS (VmHWM) of the sweeping process, each measurement in its own process.

The rows are realistic: ``db.upgrade()``, an application registered through the
service, then per grant its request row, log_grants row, three hash-chained audit
entries (submit, approve, activate) and nine delivered outbox rows, bulk-inserted
with Core. "Expired" in (b) is observed from outside: a poller in this process reads
new ``expire`` audit entries every 50 ms and stamps the wall time it first sees each
(the row's ``ended_at`` is the sweep's ``now`` argument, taken when the sweep started,
so it understates the lag; both are reported).
"""

from __future__ import annotations

import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench._common import (
    RESULTS,
    Report,
    breakdown,
    copy_sqlite,
    parse_args,
    percentile,
    print_breakdown,
    profiled,
    rss_mb,
    run_child,
    seed_active_grants,
    start_child,
    utcnow,
)

TARGET_RATE = 5000.0
TARGET_P99_LAG = 1.0
TARGET_RSS_MB = 250.0


# -- children (each in its own process) ------------------------------------------------
def sweep_child(url: str, now: str, variant: str = "as_is", profile: str = "") -> dict[str, Any]:
    from bench._common import make_service
    from bench._variants import variant as apply_variant

    at = datetime.fromisoformat(now)
    db, service, _ = make_service(url, upgrade=False, worker_id="bench")
    service.next_deadline()  # connect and load the mappers before measuring
    before = rss_mb()
    with apply_variant(variant):
        started = time.perf_counter()
        if profile:
            with profiled(Path(profile)) as prof:
                report = service.sweep(at, max_batches=4)
            seconds = time.perf_counter() - started
            db.dispose()
            return {
                "expired": report.expired,
                "seconds": seconds,
                "profile": breakdown(prof, seconds),
            }
        report = service.sweep(at)
        seconds = time.perf_counter() - started
    db.dispose()
    return {"expired": report.expired, "seconds": seconds, "rss_before_mb": before}


def raw_sweep_child(url: str, now: str) -> dict[str, Any]:
    from sqlalchemy import select, update

    from jitaccess.store.db import Database
    from jitaccess.store.models import AccessRequest

    at = datetime.fromisoformat(now)
    table = AccessRequest.__table__
    db = Database(url)
    before = rss_mb()
    expired = 0
    started = time.perf_counter()
    while True:
        with db.engine.begin() as conn:
            ids = (
                conn.execute(
                    select(table.c.id)
                    .where(table.c.state == "active", table.c.next_deadline_at <= at)
                    .order_by(table.c.next_deadline_at)
                    .limit(500)
                )
                .scalars()
                .all()
            )
            if not ids:
                break
            conn.execute(
                update(table)
                .where(table.c.id.in_(ids), table.c.state == "active")
                .values(
                    state="expired",
                    ended_at=at,
                    ended_by="system",
                    end_reason="the window ended and access was revoked",
                    next_deadline_at=None,
                    version=table.c.version + 1,
                )
            )
        expired += len(ids)
    seconds = time.perf_counter() - started
    db.dispose()
    return {"expired": expired, "seconds": seconds, "rss_before_mb": before}


def scheduler_child(url: str, stop_file: str, variant: str = "as_is") -> dict[str, Any]:
    """serve's scheduler at default settings, on the real clock, until told to stop.

    ``relay_apart``: the sweep asks the relay job to run now instead of draining the
    outbox itself in the sweep thread (the P5 prototype; P5 landed, so this is what
    serve does now and main() no longer runs it). ``relay_apart_fixes``: that, and the
    service fixes of bench._variants."""
    import contextlib

    from bench._variants import variant as apply_variant
    from jitaccess.app.outbox import LoggingNotifier
    from jitaccess.container import build
    from jitaccess.roles import Role
    from jitaccess.settings import Settings

    settings = Settings(_env_file=None, JITACCESS_DATABASE_URL=url)  # type: ignore[call-arg]
    # The benchmark has no Slack: log and count, as it always measured. Built as a
    # worker (``serve --role worker``), so the scheduler is built with the rest.
    container = build(settings, role=Role.WORKER, notifier=LoggingNotifier())
    service, relay = container.service, container.relay
    sweeps: list[tuple[float, float, int]] = []
    drains: list[tuple[float, float, int]] = []
    sweep, drain = service.sweep, relay.drain

    def timed_sweep(now: datetime, **kw: Any) -> Any:
        started = time.time()
        report = sweep(now, **kw)
        sweeps.append((started, time.time() - started, report.transitions))
        return report

    def timed_drain(now: datetime, **kw: Any) -> Any:
        started = time.time()
        report = drain(now, **kw)
        drains.append((started, time.time() - started, report.delivered))
        return report

    service.sweep = timed_sweep
    relay.drain = timed_drain
    scheduler = container.scheduler
    assert scheduler is not None
    with contextlib.ExitStack() as stack:
        if variant == "relay_apart_fixes":
            stack.enter_context(apply_variant("fixes"))
        scheduler.start()
        if variant.startswith("relay_apart"):
            # The jobs hold the original bound methods; sweep_now's own call to
            # self.relay_now() now only wakes the relay job (its own thread).
            def wake_relay() -> None:
                scheduler._scheduler.modify_job("relay", next_run_time=datetime.now(UTC))

            scheduler.relay_now = wake_relay  # type: ignore[method-assign]
        before = rss_mb()
        stop = Path(stop_file)
        while not stop.exists():
            time.sleep(0.05)
        scheduler.shutdown()
    container.close()
    return {
        "settings": {
            "sweep_interval_seconds": settings.sweep_interval_seconds,
            "relay_interval_seconds": settings.relay_interval_seconds,
            "sweep_batch_size": settings.sweep_batch_size,
        },
        "sweeps": sweeps,
        "drains": drains,
        "rss_before_mb": before,
    }


# -- the lag measurement -----------------------------------------------------------------
def measure_lag(
    template: Path,
    work: Path,
    due_ids: list[int],
    *,
    lead: float,
    spread: float,
    variant: str = "as_is",
) -> dict[str, Any]:
    """Set the due rows' deadlines to now+lead .. now+lead+spread (real clock), start the
    scheduler child, and stamp when each is first seen expired."""
    from sqlalchemy import bindparam, create_engine, text, update

    from jitaccess.store.models import AccessRequest

    copy_sqlite(template, work)
    url = f"sqlite:///{work}"
    engine = create_engine(url)
    table = AccessRequest.__table__
    t0 = datetime.now(UTC)
    step = spread / max(1, len(due_ids) - 1) if spread else 0.0
    deadlines = {
        rid: t0 + timedelta(seconds=lead + i * step) for i, rid in enumerate(sorted(due_ids))
    }
    with engine.begin() as conn:
        conn.execute(
            update(table)
            .where(table.c.id == bindparam("rid"))
            .values(ends_at=bindparam("at"), next_deadline_at=bindparam("at")),
            [{"rid": rid, "at": at} for rid, at in deadlines.items()],
        )
    stop_file = work.with_suffix(".stop")
    stop_file.unlink(missing_ok=True)
    child = start_child(
        "bench.sweep_scale:scheduler_child", url=url, stop_file=str(stop_file), variant=variant
    )
    seen: dict[int, float] = {}
    last_seq = 0
    with engine.connect() as conn:
        last_seq = conn.execute(text("SELECT max(seq) FROM audit_events")).scalar() or 0
    deadline = time.time() + lead + spread + float(os.environ.get("BENCH_LAG_PATIENCE", "90"))
    while len(seen) < len(due_ids) and time.time() < deadline:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT seq, request_id FROM audit_events "
                    "WHERE seq > :last AND action = 'expire' ORDER BY seq"
                ),
                {"last": last_seq},
            ).all()
        stamp = time.time()
        for seq, rid in rows:
            seen.setdefault(rid, stamp)
            last_seq = seq
        if not rows:
            time.sleep(0.05)
    stop_file.touch()
    result = child.wait(180)
    stop_file.unlink(missing_ok=True)
    with engine.connect() as conn:
        ended = dict(
            conn.execute(
                text("SELECT id, ended_at FROM access_requests WHERE state = 'expired'")
            ).all()
        )
    engine.dispose()
    for suffix in ("", "-wal", "-shm"):
        Path(str(work) + suffix).unlink(missing_ok=True)
    lags = [seen[rid] - deadlines[rid].timestamp() for rid in due_ids if rid in seen]
    logical = []
    for rid in due_ids:
        if rid in ended and ended[rid] is not None:
            value = ended[rid]
            value = datetime.fromisoformat(value) if isinstance(value, str) else value
            logical.append((value.replace(tzinfo=UTC) - deadlines[rid]).total_seconds())
    sweeps = result["sweeps"]
    drains = result["drains"]
    return {
        "expired": len(seen),
        "due": len(due_ids),
        "not_expired_by_end": len(due_ids) - len(ended),
        "p50": percentile(lags, 50) if lags else float("nan"),
        "p99": percentile(lags, 99) if lags else float("nan"),
        "max": max(lags) if lags else float("nan"),
        "logical_p99": percentile(logical, 99) if logical else float("nan"),
        "all_done_after_last_deadline": max(lags) if lags else float("nan"),
        "sweeps": len([s for s in sweeps if s[2]]),
        "sweep_seconds": sum(s[1] for s in sweeps),
        "drain_seconds": sum(d[1] for d in drains),
        "delivered": sum(d[2] for d in drains),
        "peak_rss_mb": result["peak_rss_mb"],
        "rss_before_mb": result["rss_before_mb"],
        "settings": result["settings"],
    }


def main() -> None:
    args = parse_args(__doc__ or "")
    total, due = (10_000, 1_000) if args.quick else (100_000, 10_000)
    spread = 20.0
    report = Report("sweep_scale", quick=args.quick, sizes={"grants": total, "due": due})
    now = utcnow().replace(microsecond=0)
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        template = Path(tmp) / "template.db"
        seeded = seed_active_grants(f"sqlite:///{template}", total=total, due=due, now=now)
        report.note(
            f"seeded {total:,} active grants ({due:,} due), {seeded['audit_entries']:,} audit "
            f"entries, {9 * total:,} outbox rows in {seeded['seconds']:.0f} s"
        )
        work = Path(tmp) / "work.db"
        at = now.isoformat()

        def sweep_once(target: str, **kw: Any) -> dict[str, Any]:
            copy_sqlite(template, work)
            return run_child(target, url=f"sqlite:///{work}", now=at, **kw)

        service = sweep_once("bench.sweep_scale:sweep_child")
        raw = sweep_once("bench.sweep_scale:raw_sweep_child")
        fixed = sweep_once("bench.sweep_scale:sweep_child", variant="fixes")
        for result in (service, raw, fixed):
            assert result["expired"] == due, result
        rate = due / service["seconds"]
        raw_rate = due / raw["seconds"]
        fixed_rate = due / fixed["seconds"]
        report.table(
            f"(a) Expiring {due:,} due of {total:,} active grants (SQLite WAL, batches of 500)",
            ["sweeper", "seconds", "expiries/s", "ratio vs raw", "peak RSS MB", "RSS before MB"],
            [
                [
                    "service.sweep(now)",
                    service["seconds"],
                    rate,
                    rate / raw_rate,
                    service["peak_rss_mb"],
                    service["rss_before_mb"],
                ],
                [
                    "raw Core UPDATE … WHERE id IN (…)",
                    raw["seconds"],
                    raw_rate,
                    1.0,
                    raw["peak_rss_mb"],
                    raw["rss_before_mb"],
                ],
                [
                    "service + proposed fixes (prototype)",
                    fixed["seconds"],
                    fixed_rate,
                    fixed_rate / raw_rate,
                    fixed["peak_rss_mb"],
                    fixed["rss_before_mb"],
                ],
            ],
        )
        report.set("expiries_per_s", rate)
        report.set("raw_expiries_per_s", raw_rate)
        report.set("fixed_expiries_per_s", fixed_rate)
        report.target(
            "(a) expiries/s of service.sweep", rate, f">= {TARGET_RATE:,.0f}", rate >= TARGET_RATE
        )

        prof_path = RESULTS / "sweep_scale.prof"
        profiled_run = sweep_once("bench.sweep_scale:sweep_child", profile=str(prof_path))
        print_breakdown(
            report,
            f"cProfile of service.sweep, {profiled_run['expired']:,} expiries",
            profiled_run["profile"],
            profiled_run["expired"],
        )
        report.set("profile", profiled_run["profile"])

        due_ids = seeded["due_ids"]
        # Twice the arrival rate: as many again of the not-yet-due grants get deadlines
        # in the same 20 s (measure_lag rewrites the deadlines of the ids it is given).
        taken = set(due_ids)
        doubled_ids = due_ids + [r for r in range(1, total + 1) if r not in taken][:due]
        lag_rows = []
        lag_results = {}
        runs = {
            "spread": (f"{due:,} deadlines spread over {spread:.0f} s", due_ids, spread),
            "doubled": (
                f"{2 * due:,} deadlines spread over {spread:.0f} s (2× the arrival rate)",
                doubled_ids,
                spread,
            ),
            "instant": (f"{due:,} deadlines at the same instant", due_ids, 0.0),
        }
        for key, (label, ids, window) in runs.items():
            lag = measure_lag(template, work, ids, lead=5.0, spread=window)
            lag_results[key] = {"label": label, **lag}
            lag_rows.append(
                [
                    label,
                    f"{lag['expired']:,}/{lag['due']:,}",
                    lag["p50"],
                    lag["p99"],
                    lag["max"],
                    lag["logical_p99"],
                    lag["sweeps"],
                    lag["sweep_seconds"],
                    lag["drain_seconds"],
                    lag["peak_rss_mb"],
                ]
            )
        settings = next(iter(lag_results.values()))["settings"]
        report.table(
            "(b) Lag from deadline to expired (s) under serve's scheduler, real clock "
            f"(defaults: {settings})",
            [
                "deadlines",
                "expired",
                "p50",
                "p99",
                "max",
                "p99 of ended_at",
                "sweeps",
                "sweeping s",
                "relay s",
                "peak RSS MB",
            ],
            lag_rows,
        )
        report.set("lag", lag_results)
        for key, what in (
            ("spread", f"(b) p99 lag, {due:,} deadlines over {spread:.0f} s"),
            ("doubled", f"(b) p99 lag, {2 * due:,} deadlines over {spread:.0f} s (2× rate)"),
        ):
            lag = lag_results[key]
            report.target(
                what,
                lag["p99"],
                f"<= {TARGET_P99_LAG} s",
                lag["p99"] <= TARGET_P99_LAG and lag["expired"] == lag["due"],
                "s",
            )
        peak = max(service["peak_rss_mb"], *(v["peak_rss_mb"] for v in lag_results.values()))
        report.target(
            "(c) peak RSS of the sweeping process",
            peak,
            f"<= {TARGET_RSS_MB:.0f} MB",
            peak <= TARGET_RSS_MB,
            "MB",
        )
    report.save()


if __name__ == "__main__":
    main()
