"""Lifecycle throughput: requests/second through submit -> approve -> activate (sweep)
-> expire (sweep) on SQLite (WAL) via JitService, against raw SQLAlchemy Core doing
the same transitions with the same commits per request.

    .venv/bin/python -m bench.lifecycle [--quick]

The baseline does the service's work with none of its machinery (issue 11: "the
same rows with the same commits"). Per transition it writes what the service writes:
the request row's update, one audit entry hash-chained with ``chain_hash`` (the
``audit_head`` row read once per transaction and updated), one outbox row for the
requester and one per notified approver (and the activation's ``ending_soon``
reminder), and for activate/expire the log provider's ``log_grants`` rows. It commits
as the service does: per request one write transaction to insert the row and one to
approve it (the service returns the view it built, with no read-back since 3ce6559+);
per sweep batch of 500 one claim transaction, one log-provider transaction and one
outcome transaction. Both are asserted every round: the commits counted with engine
events are equal phase by phase, and both databases end with the same rows (the same
audit head hash, request, outbox and log_grants rows). What the baseline leaves out is
the ORM, python-statemachine, logging, the policy checks and the service's extra
statements (the log provider's SELECT).
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


def people(n: int) -> list[str]:
    """One publisher per request: one person's requests for a role on one resource group
    may not overlap, and every request here has the same window."""
    return [PUBLISHER, *(f"UPUB{i}" for i in range(2, n + 1))]


def run_service(url: str, n: int, now: datetime, *, check: bool = False) -> dict[str, Any]:
    db, service, _ = make_service(url, worker_id="bench")
    requesters = people(n)
    register_app(service, now - timedelta(minutes=1), publishers=requesters)
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
            requester=requesters[i],
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
    written = fingerprint(db) if check else None
    db.dispose()
    return {"times": times, "commits": commits, "fingerprint": written}


def run_raw(url: str, n: int, now: datetime, *, check: bool = False) -> dict[str, Any]:
    """Raw Core writing, per transition, the rows the service writes: the request row,
    one hash-chained audit entry (head read once per transaction, entries chained with
    ``chain_hash``, head updated), the outbox rows (requester + each notified approver,
    and the activation's ``ending_soon`` reminder) and the log provider's log_grants
    rows, in the same transactions. ``fingerprint`` checks the rows are identical."""
    from jitaccess.domain.audit_chain import AuditEntry, chain_hash
    from jitaccess.store.models import (
        AccessRequest,
        Application,
        Approval,
        AuditEvent,
        AuditHead,
        LogGrant,
        OutboxMessage,
    )

    db, service, _ = make_service(url, worker_id="bench")
    requesters = people(n)
    register_app(service, now - timedelta(minutes=1), publishers=requesters)
    requests, grants = AccessRequest.__table__, LogGrant.__table__
    approvals = Approval.__table__
    events, heads, outbox = AuditEvent.__table__, AuditHead.__table__, OutboxMessage.__table__
    with db.engine.begin() as conn:
        app = conn.execute(select(Application.id, Application.provider)).one()
    policy = service.get_app(APP).policy
    remind_before, lease = service.sweeper.remind_before, service.sweeper.retry.lease
    starts = now + timedelta(hours=1)
    ends = starts + timedelta(hours=2)
    approval_deadline = min(now + policy.approval_timeout, ends)
    counts = count_transactions(db.engine)
    times: dict[str, float] = {}
    commits: dict[str, dict[str, int]] = {}

    def phase(name: str, started: float) -> float:
        times[name] = time.perf_counter() - started
        commits[name] = dict(counts)
        counts.clear()
        return time.perf_counter()

    def notify(
        conn: Any, moves: list[tuple[Any, str, str | None, str, str, str | None]], at: datetime
    ) -> None:
        """Per (row, action, from, to, actor, reason): one audit entry chained from the
        head (read and written once per transaction) and one outbox row per recipient."""
        seq, prev = conn.execute(select(heads.c.seq, heads.c.hash).where(heads.c.id == 1)).one()
        entries, messages = [], []
        for row, action, before, after, actor, reason in moves:
            details = {
                "role": row.role,
                "requester": row.requester,
                "starts_at": row.starts_at.isoformat(),
                "ends_at": row.ends_at.isoformat(),
            }
            if action == "activate":
                details["attempts"] = row.attempts + 1
            seq += 1
            entry = AuditEntry(seq, at, actor, action, APP, row.id, before, after, reason, details)
            digest = chain_hash(prev, entry)
            entries.append(
                {
                    "seq": seq,
                    "at": at,
                    "actor": actor,
                    "action": action,
                    "app": APP,
                    "request_id": row.id,
                    "from_state": before,
                    "to_state": after,
                    "reason": reason,
                    "details": details,
                    "prev_hash": prev,
                    "hash": digest,
                }
            )
            prev = digest
            payload = {
                "event": action,
                "from": before,
                "to": after,
                "actor": actor,
                "reason": reason,
            }
            recipients = [(row.requester, "requester_update")]
            recipients += [(a, "approver_card") for a in row.notified_approvers]
            for recipient, kind in recipients:
                messages.append(message(row.id, after, kind, recipient, payload, at, at))
            if action == "activate" and remind_before and row.ends_at - remind_before > at:
                # The reminder: an outbox row that becomes due before the end.
                payload = {"event": None, "from": None, "to": after, "actor": "system"}
                payload["reason"] = None
                payload["ends_at"] = row.ends_at.isoformat()
                due = row.ends_at - remind_before
                step = "ending_soon"
                messages.append(message(row.id, step, step, row.requester, payload, at, due))
        conn.execute(insert(events), entries)
        conn.execute(insert(outbox), messages)
        conn.execute(update(heads).where(heads.c.id == 1).values(seq=seq, hash=prev))

    def message(
        rid: int,
        step: str,
        kind: str,
        to: str,
        payload: dict[str, Any],
        at: datetime,
        due: datetime,
    ) -> dict[str, Any]:
        return {
            "dedup_key": f"request:{rid}:{step}:{kind}:{to}",
            "kind": kind,
            "recipient": to,
            "request_id": rid,
            "payload": payload,
            "created_at": at,
            "available_at": due,
            "attempts": 0,
        }

    class New:  # the columns notify() reads, for a row just inserted
        def __init__(self, rid: int, justification: str, requester: str) -> None:
            self.id, self.justification = rid, justification
            self.role, self.requester, self.attempts = "Contributor", requester, 0
            self.starts_at, self.ends_at, self.notified_approvers = starts, ends, list(APPROVERS)

    t = time.perf_counter()
    ids = []
    for i in range(n):
        justification = f"ticket OPS-{i}: rotate credentials"
        with db.engine.begin() as conn:
            # The overlap rule's read: this person's open requests for the role here.
            conn.execute(
                select(requests.c.id, requests.c.starts_at, requests.c.ends_at).where(
                    requests.c.requester == requesters[i],
                    requests.c.role == "Contributor",
                    requests.c.state.not_in(["expired", "denied", "cancelled", "revoked"]),
                )
            ).all()
            rid = conn.execute(
                insert(requests).values(
                    app_id=app.id,
                    requester=requesters[i],
                    role="Contributor",
                    justification=justification,
                    starts_at=starts,
                    ends_at=ends,
                    approval_deadline_at=approval_deadline,
                    state="pending",
                    approval_mode="manual",
                    notified_approvers=list(APPROVERS),
                    created_at=now,
                    next_deadline_at=approval_deadline,
                    attempts=0,
                    revoke_alerts_sent=0,
                    version=1,
                )
            ).inserted_primary_key[0]
            notify(
                conn,
                [
                    (
                        New(rid, justification, requesters[i]),
                        "submit",
                        None,
                        "pending",
                        requesters[i],
                        justification,
                    )
                ],
                now,
            )
        ids.append(rid)
    t = phase("submit", t)
    for rid in ids:
        reason = f"CHG-{rid}"
        with db.engine.begin() as conn:
            row = conn.execute(select(requests).where(requests.c.id == rid)).one()
            done = conn.execute(
                update(requests)
                .where(requests.c.id == rid, requests.c.version == row.version)
                .values(
                    state="approved",
                    decided_by=APPROVERS[0],
                    decided_at=now,
                    decision_reason=reason,
                    next_deadline_at=starts,
                    version=row.version + 1,
                )
            )
            assert done.rowcount == 1
            # Every approval is recorded (the quorum counts them), as the service does.
            conn.execute(
                insert(approvals).values(
                    request_id=rid, approver=APPROVERS[0], reason=reason, at=now
                )
            )
            notify(conn, [(row, "approve", "pending", "approved", APPROVERS[0], reason)], now)
    t = phase("approve", t)

    def sweep(at: datetime, before: str, after: str, values: dict[str, Any]) -> int:
        event = "activate" if after == "active" else "expire"
        reason = (
            "the window opened and access was granted"
            if event == "activate"
            else "the window ended and access was revoked"
        )
        claim: dict[str, Any] = {"next_deadline_at": at + lease, "claimed_by": "bench"}
        if event == "activate":  # intent before effect, as the service's claim records
            claim.update(grant_started_at=at, grant_provider=app.provider, grant_config={})
        else:  # the expiry's claim marks the request as ending, as the service's does
            claim.update(
                end_requested="expire",
                end_requested_by="system",
                end_requested_at=at,
                end_requested_reason="the window ended",
            )
        moved = 0
        while True:
            with db.engine.begin() as conn:  # claim a batch
                rows = conn.execute(
                    select(requests)
                    .where(requests.c.state == before, requests.c.next_deadline_at <= at)
                    .order_by(requests.c.next_deadline_at)
                    .limit(BATCH)
                ).all()
                if not rows:
                    return moved
                conn.execute(
                    update(requests)
                    .where(requests.c.id == bindparam("rid"), requests.c.version == bindparam("v"))
                    .values(version=requests.c.version + 1, **claim),
                    [{"rid": r.id, "v": r.version} for r in rows],
                )
            with db.engine.begin() as conn:  # the log provider: one transaction per batch
                if event == "activate":
                    conn.execute(
                        insert(grants),
                        [
                            {
                                "request_id": r.id,
                                "standing": False,
                                "app": APP,
                                "scope": SCOPE,
                                "principal": r.requester,
                                "role": r.role,
                                "granted_at": at,
                                "grant_calls": 1,
                                "revoke_calls": 0,
                            }
                            for r in rows
                        ],
                    )
                else:
                    conn.execute(
                        update(grants)
                        .where(
                            grants.c.request_id == bindparam("rid"), grants.c.standing.is_(False)
                        )
                        .values(revoked_at=at, revoke_calls=grants.c.revoke_calls + 1),
                        [{"rid": r.id} for r in rows],
                    )
            with db.engine.begin() as conn:  # record the outcomes, version-checked
                done = conn.execute(
                    update(requests)
                    .where(
                        requests.c.id == bindparam("rid"),
                        requests.c.version == bindparam("v"),
                        requests.c.state == before,
                    )
                    .values(
                        state=after,
                        claimed_by=None,
                        last_attempt_at=at,
                        attempts=0,
                        version=requests.c.version + 1,
                        **values,
                    ),
                    [{"rid": r.id, "v": r.version + 1} for r in rows],
                )
                assert done.rowcount == len(rows)
                notify(conn, [(r, event, before, after, "system", reason) for r in rows], at)
            moved += len(rows)

    activated = sweep(
        starts,
        "approved",
        "active",
        {"activated_at": starts, "last_error": None, "next_deadline_at": ends},
    )
    t = phase("activate", t)
    expired = sweep(
        ends,
        "active",
        "expired",
        {
            "ended_at": ends,
            "ended_by": "system",
            "end_reason": "the window ended and access was revoked",
            "next_deadline_at": None,
            "revoke_failing_since": None,
            "revoke_alerts_sent": 0,
        },
    )
    phase("expire", t)
    assert activated == n and expired == n, (activated, expired)
    written = fingerprint(db) if check else None
    db.dispose()
    return {"times": times, "commits": commits, "fingerprint": written}


def fingerprint(db: Any) -> dict[str, Any]:
    """What a run left in the database, to check that the raw baseline wrote the same
    rows as the service: the audit chain's head (its hash covers every entry's
    content), and every request, outbox and log_grants row (outbox ids aside)."""
    from jitaccess.store.models import (
        AccessRequest,
        Approval,
        AuditHead,
        LogGrant,
        OutboxMessage,
    )

    def rows(table: Any, *, skip: tuple[str, ...] = ()) -> list[tuple[Any, ...]]:
        columns = [c for c in table.c if c.name not in skip]
        # Rows whose key is a surrogate id (skipped: the two runs number them apart) are
        # compared in the order of everything else they hold.
        order = [c for c in table.primary_key.columns if c.name not in skip] or columns
        with db.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(select(*columns).order_by(*order))]

    outbox = OutboxMessage.__table__
    return {
        "audit_head": rows(AuditHead.__table__),
        "access_requests": rows(AccessRequest.__table__),
        "outbox": sorted(rows(outbox, skip=("id",)), key=lambda r: r[0]),
        "log_grants": rows(LogGrant.__table__),
        "approvals": rows(Approval.__table__, skip=("id",)),
    }


def check_same_rows(service: dict[str, Any], raw: dict[str, Any]) -> None:
    """Fail, naming the first difference, unless both runs left the same rows."""
    for table, rows in service.items():
        other = raw[table]
        assert len(rows) == len(other), (table, len(rows), len(other))
        for mine, theirs in zip(rows, other, strict=True):
            assert mine == theirs, (table, mine, theirs)


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
                result = fn(url, n, now, check=True)
                total = sum(result["times"].values())
                results[kind].append(result)
                print(f"  round {r + 1} {kind}: {n / total:,.0f} requests/s")
            # Equal work: the same commits per phase, and the same rows written.
            service_run, raw_run = results["service"][r], results["raw"][r]
            assert service_run["commits"] == raw_run["commits"], (
                service_run["commits"],
                raw_run["commits"],
            )
            check_same_rows(service_run.pop("fingerprint"), raw_run.pop("fingerprint"))

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
            "Commits per request (engine events, round 1; asserted equal in every round)",
            ["phase", "service write", "raw write", "service read", "raw read"],
            commit_rows,
        )
        # What each piece of machinery costs, in real time: switch it off (ablation),
        # and what the proposed fixes would buy (bench/_variants.py). Interleaved
        # rounds, median: on a shared machine one run per variant was not enough (a
        # burst of other work once made two ablations look slower than the service).
        vn = max(100, n // 3)
        variant_ms: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for r in range(rounds):
            for name in VARIANTS:
                url = f"sqlite:///{Path(tmp) / f'variant-{name}{r}.db'}"
                with variant(name):
                    result = run_service(url, vn, now)
                variant_ms[name].append(sum(result["times"].values()) / vn * 1e3)
        variant_rows = []
        base_ms = statistics.median(variant_ms["as_is"])
        for name, label in VARIANTS.items():
            ms = statistics.median(variant_ms[name])
            variant_rows.append([label, 1e3 / ms, ms, base_ms - ms, 1e3 / ms / rate("raw")])
        report.table(
            f"Where the time goes: the service with one piece switched off "
            f"({vn} requests, median of {rounds} interleaved rounds)",
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
