"""1 vs 2 replicas expiring 20,000 grants on PostgreSQL.

    .venv/bin/python -m bench.replicas [--quick]

Each replica is a process that builds the service like ``serve`` and calls
``service.sweep(now)`` with a fixed ``now`` until nothing is due (claims use ``FOR
UPDATE SKIP LOCKED``, so replicas take different rows). Both runs start from the same
20,000 due active grants (realistic rows as in bench.sweep_scale), copied from a
template database. Then we check that nothing was done twice: exactly one ``expire``
audit entry per request, ``revoke_calls`` = 1 on every log_grants row, and the audit
chain verifies.

The audit chain's head row is locked (``SELECT … FOR UPDATE``) by the first append of
a transaction and held until commit, so the sweep's outcome transactions of different
replicas run one at a time. We measure how long each replica waited for that lock and
held it, and repeat both runs with a prototype of the proposed fix (the audit entries
of a transaction chained at commit, so the head is held only for those INSERTs and
the COMMIT; plus the batching fixes of bench._variants).

Databases: ``jit_bench`` (the one being swept) and ``jit_bench_template``, created and
dropped here through an autocommit psycopg connection; the ``test`` database that the
test suite uses is not touched. Server: ``BENCH_PG`` (default
``postgresql://postgres@127.0.0.1:5432``).
"""

from __future__ import annotations

import os
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench._common import Report, parse_args, seed_active_grants, start_child, utcnow

SERVER = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
DB, TEMPLATE = "jit_bench", "jit_bench_template"
TARGET_SPEEDUP = 1.5
REVOKES = "SELECT sum(revoke_calls), count(*) FILTER (WHERE revoke_calls <> 1) FROM log_grants"


def admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


def recreate(name: str, template: str | None = None) -> str:
    admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    return f"{SERVER}/{name}"


# -- one replica (its own process) ---------------------------------------------------------
def replica_child(
    url: str, now: str, worker: str, ready_file: str, start_file: str, variant: str
) -> dict[str, Any]:
    from sqlalchemy import event

    from bench._common import make_service
    from bench._variants import variant as apply_variant

    db, service, _ = make_service(url, upgrade=False, worker_id=worker)
    service.next_deadline()  # connect, load mappers
    head = {"wait": 0.0, "held": 0.0, "locks": 0}

    @event.listens_for(db.engine, "before_cursor_execute")
    def _before(conn: Any, _c: Any, statement: str, *_a: Any) -> None:
        if "audit_head" in statement and "FOR UPDATE" in statement:
            conn.info["bench_t"] = time.perf_counter()

    @event.listens_for(db.engine, "after_cursor_execute")
    def _after(conn: Any, _c: Any, statement: str, *_a: Any) -> None:
        started = conn.info.pop("bench_t", None)
        if started is not None and "bench_locked_at" not in conn.info:
            now_ = time.perf_counter()
            head["wait"] += now_ - started
            head["locks"] += 1
            conn.info["bench_locked_at"] = now_

    @event.listens_for(db.engine, "commit")
    def _commit(conn: Any) -> None:
        locked = conn.info.pop("bench_locked_at", None)
        if locked is not None:
            head["held"] += time.perf_counter() - locked

    Path(ready_file).touch()
    while not Path(start_file).exists():
        time.sleep(0.01)
    cpu0 = os.times()
    started = time.time()
    with apply_variant(variant):
        report = service.sweep(datetime.fromisoformat(now))
    finished = time.time()
    cpu1 = os.times()
    db.dispose()
    return {
        "expired": report.expired,
        "started": started,
        "finished": finished,
        "cpu_s": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
        "head_wait_s": head["wait"],
        "head_held_s": head["held"],
        "head_locks": head["locks"],
    }


def postgres_cpu_s() -> float:
    """CPU seconds used so far by every postgres process, including backends that
    already exited (the postmaster's reaped-children time, cutime + cstime)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        if name.startswith("postgres"):
            fields = text[text.rindex(")") + 2 :].split()
            total += sum(int(v) for v in fields[11:15])
    return total / ticks


def system_cpu() -> tuple[int, int]:
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    return sum(values) - values[3] - values[4], sum(values)


def run(replicas: int, n: int, now: datetime, variant: str, tmp: Path) -> dict[str, Any]:
    from sqlalchemy import create_engine, text

    from jitaccess.app.audit_log import verify
    from jitaccess.store.db import Database, normalise_url

    url = recreate(DB, TEMPLATE)
    start_file = tmp / "start"
    start_file.unlink(missing_ok=True)
    children = []
    for i in range(replicas):
        ready = tmp / f"ready{i}"
        ready.unlink(missing_ok=True)
        children.append(
            (
                ready,
                start_child(
                    "bench.replicas:replica_child",
                    url=url,
                    now=now.isoformat(),
                    worker=f"replica-{i}",
                    ready_file=str(ready),
                    start_file=str(start_file),
                    variant=variant,
                ),
            )
        )
    while not all(ready.exists() for ready, _ in children):
        time.sleep(0.01)
    busy0, total0 = system_cpu()
    pg0 = postgres_cpu_s()
    start_file.touch()
    results = [child.wait(600) for _, child in children]
    busy1, total1 = system_cpu()
    pg_cpu = postgres_cpu_s() - pg0
    wall = max(r["finished"] for r in results) - min(r["started"] for r in results)
    engine = create_engine(normalise_url(url))
    with engine.connect() as conn:
        expire_entries = conn.execute(
            text("SELECT count(*) FROM audit_events WHERE action = 'expire'")
        ).scalar_one()
        doubled = conn.execute(
            text(
                "SELECT count(*) FROM (SELECT request_id FROM audit_events WHERE action = "
                "'expire' GROUP BY request_id HAVING count(*) > 1) AS twice"
            )
        ).scalar_one()
        revoke_calls, not_once = conn.execute(text(REVOKES)).one()
        still_active = conn.execute(
            text("SELECT count(*) FROM access_requests WHERE state = 'active'")
        ).scalar_one()
    engine.dispose()
    db = Database(url)
    chain = verify(db)
    db.dispose()
    return {
        "replicas": replicas,
        "variant": variant,
        "wall_s": wall,
        "rate": n / wall,
        "expired_by_replica": [r["expired"] for r in results],
        "expire_audit_entries": expire_entries,
        "requests_expired_twice": doubled,
        "revoke_calls": int(revoke_calls or 0),
        "log_grants_not_revoked_once": not_once,
        "still_active": still_active,
        "audit_chain_ok": not chain.problems,
        "audit_entries": chain.entries if hasattr(chain, "entries") else None,
        "cpu_busy_share": (busy1 - busy0) / max(1, total1 - total0),
        "cpu_s": sum(r["cpu_s"] for r in results),
        "postgres_cpu_s": pg_cpu,
        "cores_used": (sum(r["cpu_s"] for r in results) + pg_cpu) / wall,
        "head_wait_s": sum(r["head_wait_s"] for r in results),
        "head_held_s": sum(r["head_held_s"] for r in results),
        "per_replica": results,
    }


def main() -> None:
    args = parse_args(__doc__ or "")
    n = 2_000 if args.quick else 20_000
    report = Report("replicas", quick=args.quick, sizes={"grants": n})
    now = utcnow().replace(microsecond=0)
    template = recreate(TEMPLATE)
    seeded = seed_active_grants(template, total=n, due=n, now=now)
    report.note(f"seeded {n:,} due grants on PostgreSQL in {seeded['seconds']:.0f} s")
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp:
        for variant in ("as_is", "fixes_late_audit"):
            for replicas in (1, 2):
                result = run(replicas, n, now, variant, Path(tmp))
                runs[f"{variant}:{replicas}"] = result
                print(f"  {variant} x{replicas}: {result['rate']:,.0f} expiries/s")
    admin(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
    admin(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')

    rows = []
    cores = os.cpu_count() or 1
    for variant, label in (
        ("as_is", "service as it is"),
        ("fixes_late_audit", "proposed fixes (prototype)"),
    ):
        one = runs[f"{variant}:1"]
        for replicas in (1, 2):
            r = runs[f"{variant}:{replicas}"]
            rows.append(
                [
                    f"{label}, {replicas} replica{'s' if replicas > 1 else ''}",
                    r["wall_s"],
                    r["rate"],
                    r["rate"] / one["rate"],
                    "/".join(f"{e:,}" for e in r["expired_by_replica"]),
                    r["head_wait_s"],
                    r["head_held_s"] / r["wall_s"],
                    r["cpu_s"],
                    r["postgres_cpu_s"],
                    r["cores_used"],
                    cores / one["cores_used"] if replicas == 1 else "",
                ]
            )
    report.table(
        f"Expiring {n:,} grants on PostgreSQL, 1 vs 2 sweeping processes ({cores} cores)",
        [
            "run",
            "wall s",
            "expiries/s",
            "speed-up",
            "expired by each",
            "head lock wait s",
            "head held / wall",
            "python CPU s",
            "postgres CPU s",
            "cores used",
            "CPU ceiling",
        ],
        rows,
    )
    report.table(
        "Nothing done twice",
        [
            "run",
            "expire entries",
            "requests expired twice",
            "revoke_calls",
            "log_grants with revoke_calls != 1",
            "still active",
            "audit chain verifies",
        ],
        [
            [
                key,
                r["expire_audit_entries"],
                r["requests_expired_twice"],
                r["revoke_calls"],
                r["log_grants_not_revoked_once"],
                r["still_active"],
                r["audit_chain_ok"],
            ]
            for key, r in runs.items()
        ],
    )
    speedup = runs["as_is:2"]["rate"] / runs["as_is:1"]["rate"]
    report.set("runs", runs)
    report.set("speedup", speedup)
    report.target(
        "speed-up with 2 replicas", speedup, f">= {TARGET_SPEEDUP}x", speedup >= TARGET_SPEEDUP, "x"
    )
    clean = all(
        r["expire_audit_entries"] == n
        and r["requests_expired_twice"] == 0
        and r["revoke_calls"] == n
        and r["log_grants_not_revoked_once"] == 0
        and r["audit_chain_ok"]
        for r in runs.values()
    )
    report.target("transitions processed twice", 0 if clean else 1, "0", clean)
    report.save()


if __name__ == "__main__":
    main()
