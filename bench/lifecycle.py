"""Lifecycle throughput: requests/second through submit -> approve -> activate (sweep)
-> expire (sweep) on SQLite (WAL) via JitService, against raw SQLAlchemy Core doing
the same transitions with the same commits per request.

    .venv/bin/python -m bench.lifecycle [--quick]

The baseline mirrors the service's transaction shape exactly (the commit counts are
measured on both sides and printed): per request one write transaction to insert the
row, one to approve it, and a read transaction after each (the service returns a fresh
view); per sweep batch of 500 one claim transaction, one provider transaction per row
(the log provider's write, here a Core INSERT/UPDATE of log_grants) and one outcome
transaction. What the baseline leaves out is exactly the service's own machinery: the
ORM, python-statemachine, the audit hash chain, the outbox rows, logging and the
policy checks.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import timeit
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, bindparam, event, insert, select, update

from bench._common import (
    APP,
    APPROVERS,
    PUBLISHER,
    RESULTS,
    SCOPE,
    Report,
    breakdown,
    make_service,
    parse_args,
    print_breakdown,
    profiled,
    register_app,
    utcnow,
)
from bench._variants import VARIANTS, variant

TARGET_RATIO = 0.5
BATCH = 500
PHASES = ("submit", "approve", "activate", "expire")


def count_transactions(engine: Engine) -> Counter[str]:
    """Count committed transactions by kind (write = BEGIN IMMEDIATE, read = DEFERRED)."""
    counts: Counter[str] = Counter()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.info["bench_kind"] = "read" if mode == "DEFERRED" else "write"

    @event.listens_for(engine, "commit")
    def _commit(conn: Any) -> None:
        counts[conn.info.get("bench_kind", "write")] += 1

    return counts


def run_service(url: str, n: int, now: datetime) -> dict[str, Any]:
    db, service, _ = make_service(url, worker_id="bench")
    register_app(service, now - timedelta(minutes=1))
    starts = now + timedelta(hours=1)
    ends = starts + timedelta(hours=2)
    counts = count_transactions(db.engine)
    times: dict[str, float] = {}
    commits: dict[str, dict[str, int]] = {}

    def phase(name: str, started: float) -> float:
        times[name] = time.perf_counter() - started
        commits[name] = dict(counts)
        counts.clear()
        return time.perf_counter()

    t = time.perf_counter()
    ids = [
        service.submit(
            APP,
            requester=PUBLISHER,
            role="Contributor",
            duration=timedelta(hours=2),
            justification=f"ticket OPS-{i}: rotate credentials",
            now=now,
            starts_at=starts,
        ).id
        for i in range(n)
    ]
    t = phase("submit", t)
    for rid in ids:
        service.approve(rid, actor=APPROVERS[0], reason=f"CHG-{rid}", now=now)
    t = phase("approve", t)
    activated = service.sweep(starts, batch_size=BATCH).activated
    t = phase("activate", t)
    expired = service.sweep(ends, batch_size=BATCH).expired
    phase("expire", t)
    assert activated == n and expired == n, (activated, expired)
    db.dispose()
    return {"times": times, "commits": commits}


def run_raw(url: str, n: int, now: datetime) -> dict[str, Any]:
    from jitaccess.store.models import AccessRequest, Application, LogGrant

    db, service, _ = make_service(url, worker_id="bench")
    register_app(service, now - timedelta(minutes=1))
    requests, grants = AccessRequest.__table__, LogGrant.__table__
    with db.engine.begin() as conn:
        app_id = conn.execute(select(Application.id)).scalar_one()
    reader = db.engine.execution_options(sqlite_begin="DEFERRED")
    starts = now + timedelta(hours=1)
    ends = starts + timedelta(hours=2)
    counts = count_transactions(db.engine)
    times: dict[str, float] = {}
    commits: dict[str, dict[str, int]] = {}

    def phase(name: str, started: float) -> float:
        times[name] = time.perf_counter() - started
        commits[name] = dict(counts)
        counts.clear()
        return time.perf_counter()

    def read_back(rid: int) -> None:
        with reader.begin() as conn:
            conn.execute(select(requests).where(requests.c.id == rid)).one()

    t = time.perf_counter()
    ids = []
    for i in range(n):
        with db.engine.begin() as conn:
            rid = conn.execute(
                insert(requests).values(
                    app_id=app_id,
                    requester=PUBLISHER,
                    role="Contributor",
                    justification=f"ticket OPS-{i}: rotate credentials",
                    starts_at=starts,
                    ends_at=ends,
                    approval_deadline_at=starts,
                    state="pending",
                    approval_mode="manual",
                    notified_approvers=list(APPROVERS),
                    created_at=now,
                    next_deadline_at=starts,
                    attempts=0,
                    revoke_alerts_sent=0,
                    version=1,
                )
            ).inserted_primary_key[0]
        read_back(rid)
        ids.append(rid)
    t = phase("submit", t)
    for rid in ids:
        with db.engine.begin() as conn:
            done = conn.execute(
                update(requests)
                .where(requests.c.id == rid, requests.c.state == "pending")
                .values(
                    state="approved",
                    decided_by=APPROVERS[0],
                    decided_at=now,
                    decision_reason=f"CHG-{rid}",
                    next_deadline_at=starts,
                    version=requests.c.version + 1,
                )
            )
            assert done.rowcount == 1
        read_back(rid)
    t = phase("approve", t)

    def sweep(at: datetime, before: str, after: str, values: dict[str, Any]) -> int:
        moved = 0
        while True:
            with db.engine.begin() as conn:  # claim a batch
                rows = conn.execute(
                    select(requests.c.id, requests.c.version)
                    .where(requests.c.state == before, requests.c.next_deadline_at <= at)
                    .order_by(requests.c.next_deadline_at)
                    .limit(BATCH)
                ).all()
                if not rows:
                    return moved
                conn.execute(
                    update(requests)
                    .where(requests.c.id.in_([r.id for r in rows]))
                    .values(
                        next_deadline_at=at + timedelta(seconds=60),
                        claimed_by="bench",
                        version=requests.c.version + 1,
                    )
                )
            for row in rows:  # the provider call, one transaction per row
                with db.engine.begin() as conn:
                    if after == "active":
                        conn.execute(
                            insert(grants).values(
                                request_id=row.id,
                                app=APP,
                                scope=SCOPE,
                                principal=PUBLISHER,
                                role="Contributor",
                                granted_at=at,
                                grant_calls=1,
                                revoke_calls=0,
                            )
                        )
                    else:
                        conn.execute(
                            update(grants)
                            .where(grants.c.request_id == row.id)
                            .values(revoked_at=at, revoke_calls=grants.c.revoke_calls + 1)
                        )
            with db.engine.begin() as conn:  # record the outcomes, version-checked
                done = conn.execute(
                    update(requests)
                    .where(
                        requests.c.id == bindparam("rid"),
                        requests.c.version == bindparam("v"),
                        requests.c.state == before,
                    )
                    .values(state=after, claimed_by=None, version=requests.c.version + 1, **values),
                    [{"rid": r.id, "v": r.version + 1} for r in rows],
                )
                assert done.rowcount == len(rows)
            moved += len(rows)

    activated = sweep(
        starts, "approved", "active", {"activated_at": starts, "next_deadline_at": ends}
    )
    t = phase("activate", t)
    expired = sweep(
        ends,
        "active",
        "expired",
        {"ended_at": ends, "ended_by": "system", "end_reason": "expired", "next_deadline_at": None},
    )
    phase("expire", t)
    assert activated == n and expired == n, (activated, expired)
    db.dispose()
    return {"times": times, "commits": commits}


def micro() -> list[list[Any]]:
    """Per-call cost of the service's building blocks, in isolation."""
    from jitaccess.domain.audit_chain import AuditEntry, chain_hash
    from jitaccess.domain.lifecycle import RequestLifecycle, move

    class Row:
        state = "approved"

    def one_move() -> None:
        row = Row()
        row.state = "approved"
        move(row, "activate")

    now = utcnow()
    entry = AuditEntry(
        1,
        now,
        "system",
        "expire",
        APP,
        1,
        "active",
        "expired",
        "the window ended",
        {"role": "Contributor", "requester": PUBLISHER, "starts_at": "x", "ends_at": "y"},
    )
    rows = []
    for label, fn in (
        (
            "RequestLifecycle(model=row) (machine instantiation)",
            lambda: RequestLifecycle(model=Row()),
        ),
        ("lifecycle.move(row, event) (instantiate + send)", one_move),
        ("chain_hash (canonical JSON + SHA-256)", lambda: chain_hash("0" * 64, entry)),
    ):
        number = 2000
        best = min(timeit.repeat(fn, number=number, repeat=3)) / number
        rows.append([label, best * 1e6])
    return rows


def main() -> None:
    args = parse_args(__doc__ or "")
    n = 300 if args.quick else 3000
    rounds = 3
    report = Report("lifecycle", quick=args.quick, sizes={"requests": n, "rounds": rounds})
    now = utcnow().replace(microsecond=0)
    results: dict[str, list[dict[str, Any]]] = {"service": [], "raw": []}
    with tempfile.TemporaryDirectory(prefix="bench-lifecycle-") as tmp:
        for r in range(rounds):
            for kind, fn in (("service", run_service), ("raw", run_raw)):
                url = f"sqlite:///{Path(tmp) / f'{kind}{r}.db'}"
                result = fn(url, n, now)
                total = sum(result["times"].values())
                results[kind].append(result)
                print(f"  round {r + 1} {kind}: {n / total:,.0f} requests/s")

        def rate(kind: str, phase: str | None = None) -> float:
            per_round = [
                n / (res["times"][phase] if phase else sum(res["times"].values()))
                for res in results[kind]
            ]
            return statistics.median(per_round)

        rows = []
        for phase in (*PHASES, None):
            service_rate, raw_rate = rate("service", phase), rate("raw", phase)
            rows.append(
                [
                    phase or "whole lifecycle (requests/s)",
                    service_rate,
                    raw_rate,
                    service_rate / raw_rate,
                    1e3 / service_rate,
                    1e3 / raw_rate,
                ]
            )
        report.table(
            f"Lifecycle throughput, {n} requests, median of {rounds} rounds (SQLite WAL)",
            ["phase", "service /s", "raw Core /s", "ratio", "service ms/req", "raw ms/req"],
            rows,
        )
        commit_rows = []
        for phase in PHASES:
            s, r = results["service"][0]["commits"][phase], results["raw"][0]["commits"][phase]
            commit_rows.append(
                [
                    phase,
                    s.get("write", 0) / n,
                    r.get("write", 0) / n,
                    s.get("read", 0) / n,
                    r.get("read", 0) / n,
                ]
            )
        report.table(
            "Commits per request (measured with engine events, round 1)",
            ["phase", "service write", "raw write", "service read", "raw read"],
            commit_rows,
        )
        # What each piece of machinery costs, in real time: switch it off (ablation),
        # and what the proposed fixes would buy (bench/_variants.py).
        variant_rows = []
        base_ms = 0.0
        for name, label in VARIANTS.items():
            url = f"sqlite:///{Path(tmp) / f'variant-{name}.db'}"
            with variant(name):
                result = run_service(url, n, now)
            ms = sum(result["times"].values()) / n * 1e3
            base_ms = base_ms or ms
            variant_rows.append([label, 1e3 / ms, ms, base_ms - ms, 1e3 / ms / rate("raw")])
        report.table(
            "Where the time goes: the service with one piece switched off (1 round each)",
            ["variant", "requests/s", "ms/req", "ms/req saved", "ratio vs raw"],
            variant_rows,
        )
        ratio = rate("service") / rate("raw")
        report.set("service_requests_per_s", rate("service"))
        report.set("raw_requests_per_s", rate("raw"))
        report.set("ratio", ratio)
        report.target(
            "lifecycle throughput vs raw Core", ratio, f">= {TARGET_RATIO}", ratio >= TARGET_RATIO
        )

        # Where the service's time goes: one more service run under cProfile.
        pn = max(100, n // 3)
        url = f"sqlite:///{Path(tmp) / 'profiled.db'}"
        prof_path = RESULTS / "lifecycle.prof"
        with profiled(prof_path) as profile:
            started = time.perf_counter()
            run_service(url, pn, now)
            wall = time.perf_counter() - started
        data = breakdown(profile, wall)
        report.set("profile", data)
        print_breakdown(report, f"cProfile of the service, {pn} requests", data, pn)
        report.note(f"full profile: {prof_path} (snakeviz)")
    report.table("Building blocks, best of 3 (µs per call)", ["call", "µs"], micro())
    report.save()


if __name__ == "__main__":
    main()
