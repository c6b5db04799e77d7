"""Shared plumbing for the benchmarks: arguments, results, tables, peak RSS, child
processes, a service wired like production, and bulk seeding of realistic rows."""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import importlib
import json
import os
import platform
import pstats
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(os.environ.get("BENCH_RESULTS") or ROOT / "bench" / "results")
PUBLISHER = "UPUB1"
APPROVERS = ("UAPP1", "UAPP2")
ADMIN = "UADM1"
APP = "crm"
SCOPE = "/subscriptions/s1/resourceGroups/mrg-crm"

console = Console(width=140)


# -- arguments, results, tables ---------------------------------------------------------
def parse_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="10x smaller sizes (smoke run)")
    return parser.parse_args(argv)


def utcnow() -> datetime:
    return datetime.now(UTC)


def source() -> str:
    """Which jitaccess is measured: a snapshot (PYTHONPATH, with a COMMIT file beside
    its src/) or the working tree (its git HEAD, marked dirty if src/ has edits)."""
    import jitaccess

    package = Path(jitaccess.__file__).resolve().parent
    commit_file = package.parent.parent / "COMMIT"
    if commit_file.exists():
        return f"{package} (snapshot of {commit_file.read_text().strip()})"
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "src"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return str(package)
    return f"{package} (git {head}{' + uncommitted edits' if dirty else ''})"


def cpu_busy_others(seconds: float = 1.0) -> str:
    """How busy the machine is with other processes (we sleep while sampling)."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
        idle = values[3] + values[4]
        return sum(values) - idle, sum(values)

    busy0, total0 = sample()
    time.sleep(seconds)
    busy1, total1 = sample()
    share = (busy1 - busy0) / max(1, total1 - total0)
    with open("/proc/loadavg") as load:
        loadavg = " ".join(load.read().split()[:3])
    return f"{100 * share:.0f}% of {os.cpu_count()} cores (load average {loadavg})"


def wait_for_quiet(limit: float = 25.0, patience: float = 180.0) -> str:
    """Wait (up to ``patience`` s) until other processes use under ``limit`` % of the
    machine, so a shared machine's other work skews less; return the last sample."""
    deadline = time.time() + patience
    sample = cpu_busy_others()
    while float(sample.split("%")[0]) > limit and time.time() < deadline:
        console.print(f"[yellow]machine busy ({sample}); waiting for it to calm down[/yellow]")
        time.sleep(5)
        sample = cpu_busy_others()
    return sample


def machine() -> dict[str, Any]:
    import sqlalchemy

    return {
        "busy_others": wait_for_quiet(),
        "jitaccess": source(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sqlalchemy": sqlalchemy.__version__,
        "sqlite": __import__("sqlite3").sqlite_version,
    }


class Report:
    """Tables printed with rich and the same data written to bench/results/<name>.json."""

    def __init__(self, name: str, *, quick: bool, sizes: dict[str, Any]) -> None:
        self.name = name
        self.data: dict[str, Any] = {
            "benchmark": name,
            "quick": quick,
            "sizes": sizes,
            "machine": machine(),
            "started_at": utcnow().isoformat(timespec="seconds"),
            "tables": {},
            "targets": [],
            "notes": [],
        }
        console.rule(f"[bold]{name}[/bold] ({'quick' if quick else 'full'}; {sizes})")
        console.print(f"cores (os.cpu_count()): {os.cpu_count()}")
        console.print(f"jitaccess: {self.data['machine']['jitaccess']}")
        console.print(f"machine busy with other processes: {self.data['machine']['busy_others']}")

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        table = Table(title=title, title_justify="left")
        for i, column in enumerate(columns):
            table.add_column(column, justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*[fmt(v) for v in row])
        console.print(table)
        self.data["tables"][title] = {
            "columns": list(columns),
            "rows": [[jsonable(v) for v in row] for row in rows],
        }

    def target(self, what: str, measured: float, target: str, met: bool, unit: str = "") -> None:
        self.data["targets"].append(
            {"what": what, "measured": measured, "unit": unit, "target": target, "met": met}
        )

    def note(self, text: str) -> None:
        self.data["notes"].append(text)
        console.print(f"[dim]note:[/dim] {text}")

    def set(self, key: str, value: Any) -> None:
        self.data[key] = jsonable(value)

    def save(self) -> Path:
        if self.data["targets"]:
            rows = [
                [
                    t["what"],
                    f"{fmt(t['measured'])} {t['unit']}".strip(),
                    t["target"],
                    "[green]met[/green]" if t["met"] else "[red]MISSED[/red]",
                ]
                for t in self.data["targets"]
            ]
            table = Table(title="Targets", title_justify="left")
            for column in ("target", "measured", "wanted", "verdict"):
                table.add_column(column)
            for row in rows:
                table.add_row(*row)
            console.print(table)
        self.data["finished_at"] = utcnow().isoformat(timespec="seconds")
        self.data["machine"]["busy_others_at_end"] = cpu_busy_others()
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{self.name}.json"
        path.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        console.print(f"wrote {path}")
        return path


def fmt(value: Any) -> str:
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        if abs(value) >= 0.1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, datetime | timedelta | Path):
        return str(value)
    return value


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def print_latencies(what: str, seconds: Sequence[float]) -> None:
    """Each round in ms, then median, p90 and max (the sandbox benches' one report)."""
    ms = sorted(s * 1000 for s in seconds)
    print(f"{what}, {len(ms)} rounds (sweep interval 5 s):")
    print("  " + ", ".join(f"{m:.0f}" for m in ms) + " ms")
    print(
        f"  median {percentile(ms, 50):.0f} ms, p90 {percentile(ms, 90):.0f} ms, "
        f"max {ms[-1]:.0f} ms"
    )


@contextlib.contextmanager
def running_sandbox() -> Iterator[Any]:
    """The sandbox (the real Bolt app, scheduler and relay beside the fake Slack and the
    fake ARM) on throwaway SQLite files, sweeping every 5 s: a latency well under that
    comes from a person's action waking the scheduler, not from its polling. Its
    database is ``sqlite:///{sandbox.db_path}``."""
    from jitaccess.settings import Settings
    from jitaccess_sandbox.run import Sandbox

    with tempfile.TemporaryDirectory() as tmp:
        configured = Settings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=f"sqlite:///{Path(tmp) / 'real.db'}",
            slack_bot_token=None,
            slack_app_token=None,
            slack_signing_secret=None,
            log_level="WARNING",
        )
        sandbox = Sandbox(
            db_path=Path(tmp) / "sandbox.db",
            port=0,
            configured=configured,
            sweep_interval=5.0,
            relay_interval=0.3,
        )
        sandbox.start()
        try:
            yield sandbox
        finally:
            sandbox.stop()


# -- memory and child processes ---------------------------------------------------------
def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), in MiB."""
    return _status_kb("VmHWM") / 1024


def rss_mb() -> float:
    return _status_kb("VmRSS") / 1024


def run_child(target: str, child_timeout: float = 600, **kwargs: Any) -> dict[str, Any]:
    """Run ``module:function(**kwargs)`` in a fresh interpreter (its own peak RSS) and
    return the dict it returns, with ``peak_rss_mb`` of that process added."""
    child = start_child(target, **kwargs)
    return child.wait(child_timeout)


@dataclass
class Child:
    proc: subprocess.Popen[bytes]
    out: Path
    target: str

    def wait(self, timeout: float = 600) -> dict[str, Any]:
        try:
            _, stderr = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, stderr = self.proc.communicate()
            raise RuntimeError(
                f"{self.target} timed out after {timeout}s:\n{stderr.decode()[-8000:]}"
            ) from None
        if os.environ.get("BENCH_CHILD_STDERR"):  # debugging: show what the child logged
            sys.stderr.write(stderr.decode())
        if self.proc.returncode != 0 or not self.out.exists():
            raise RuntimeError(
                f"{self.target} failed ({self.proc.returncode}):\n{stderr.decode()[-4000:]}"
            )
        result: dict[str, Any] = json.loads(self.out.read_text())
        self.out.unlink()
        return result


def start_child(target: str, **kwargs: Any) -> Child:
    fd, in_path = tempfile.mkstemp(prefix="bench-in-", suffix=".json")
    os.close(fd)
    Path(in_path).write_text(json.dumps(kwargs, default=str))
    out_path = Path(in_path.replace("bench-in-", "bench-out-"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench._common", target, in_path, str(out_path)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return Child(proc, out_path, target)


def _child_main(target: str, in_path: str, out_path: str) -> None:
    if os.environ.get("BENCH_CHILD_STACKS_AFTER"):  # debugging a stuck child
        import faulthandler

        faulthandler.dump_traceback_later(float(os.environ["BENCH_CHILD_STACKS_AFTER"]))
    module_name, func_name = target.split(":")
    kwargs = json.loads(Path(in_path).read_text())
    Path(in_path).unlink()
    func = getattr(importlib.import_module(module_name), func_name)
    result = func(**kwargs)
    result["peak_rss_mb"] = peak_rss_mb()
    Path(out_path).write_text(json.dumps(result, default=str))


# -- profiling ---------------------------------------------------------------------------
#: label -> (path fragment, function name): inclusive time of these, from cProfile.
PROFILE_SPOTS: dict[str, tuple[str, str]] = {
    "lifecycle.move (python-statemachine per transition)": ("domain/lifecycle.py", "move"),
    "  StateMachine.__init__ (new machine per move/submit)": ("statemachine/", "__init__"),
    "audit.append (head SELECT + hash + row)": ("store/audit.py", "append"),
    "  chain_hash (canonical JSON + SHA-256)": ("domain/audit_chain.py", "chain_hash"),
    "_enqueue (outbox rows)": ("jitaccess/app/", "_enqueue"),
    "_lock (row re-read per outcome)": ("jitaccess/app/", "_lock"),
    "_due_rows (due-row SELECTs)": ("jitaccess/app/", "_due_rows"),
    "_call_provider (log provider txn per row)": ("jitaccess/app/", "_call_provider"),
    "RequestView.of": ("jitaccess/app/views.py", "of"),
    "get_request (read txn after submit/approve)": ("jitaccess/app/", "get_request"),
    "Session.flush (ORM unit of work)": ("sqlalchemy/orm/session.py", "flush"),
    "Session.commit (incl. its flush)": ("sqlalchemy/orm/session.py", "commit"),
    "Session.execute (ORM SELECTs)": ("sqlalchemy/orm/session.py", "execute"),
    "sqlite3 Cursor.execute/executemany": ("~", "<method 'execute"),
    "psycopg execute": ("psycopg/cursor.py", "execute"),
    "logging (Logger.info/_log)": ("logging/__init__.py", "info"),
}


@contextlib.contextmanager
def profiled(path: Path | None = None) -> Iterator[cProfile.Profile]:
    profile = cProfile.Profile()
    profile.enable()
    try:
        yield profile
    finally:
        profile.disable()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            profile.dump_stats(str(path))


def breakdown(profile: cProfile.Profile, total: float | None = None) -> dict[str, Any]:
    """Inclusive seconds in each PROFILE_SPOTS function, and the top functions by own time."""
    stats = pstats.Stats(profile)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    wall = total or max((v[3] for v in raw.values()), default=0.0)
    spots: dict[str, float] = {}
    for label, (fragment, name) in PROFILE_SPOTS.items():
        seconds = 0.0
        for (filename, _line, func), (_cc, _nc, _tt, ct, _callers) in raw.items():
            if fragment == "~":
                if (filename == "~" and func.startswith(name) and "sqlite3" in func) or (
                    filename == "~" and "sqlite3" in func and "executemany" in func
                ):
                    seconds += ct
                continue
            if fragment in filename and func == name:
                seconds += ct
        if seconds:
            spots[label] = seconds
    own = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:15]
    top = [
        {
            "function": f"{Path(k[0]).name}:{k[1]}({k[2]})" if k[0] != "~" else k[2],
            "own_s": v[2],
            "inclusive_s": v[3],
            "calls": v[1],
        }
        for k, v in own
    ]
    return {"profiled_wall_s": wall, "spots": spots, "top_own_time": top}


def print_breakdown(report: Report, title: str, data: dict[str, Any], per: int) -> None:
    wall = data["profiled_wall_s"]
    report.table(
        title,
        ["where (inclusive; nested rows overlap)", "s", "% of profiled", "µs per item"],
        [
            [label, seconds, 100 * seconds / wall, 1e6 * seconds / per]
            for label, seconds in data["spots"].items()
        ],
    )
    report.table(
        title + ": top functions by own time",
        ["function", "own s", "inclusive s", "calls"],
        [[t["function"], t["own_s"], t["inclusive_s"], t["calls"]] for t in data["top_own_time"]],
    )


# -- the service, wired like production ---------------------------------------------------
def make_service(url: str, *, upgrade: bool = True, **kwargs: Any) -> Any:
    """(db, service, log provider) on ``url`` with the log provider, as ``build()`` wires it."""
    from jitaccess.app.deps import build_deps
    from jitaccess.app.service import JitService
    from jitaccess.providers.base import ProviderRegistry
    from jitaccess.providers.log import LogProvider
    from jitaccess.slack.principals import SLACK_PRINCIPALS
    from jitaccess.store.db import Database

    db = Database(url)
    if upgrade:
        db.upgrade()
    providers = ProviderRegistry()
    provider = LogProvider(db)
    providers.register(provider)
    service = JitService(build_deps(db, providers, principals=SLACK_PRINCIPALS, **kwargs))
    return db, service, provider


def register_app(
    service: Any,
    now: datetime,
    *,
    mode: str = "manual",
    name: str = APP,
    publishers: Sequence[str] = (PUBLISHER,),
) -> None:
    """The bench application (or another one, on its own resource group: one person's
    requests for a role on one resource group may not overlap)."""
    from jitaccess.app.service import AppSpec
    from jitaccess.domain.policy import ApprovalMode, Policy

    service.register_app(
        AppSpec(
            name=name,
            scope=SCOPE if name == APP else f"{SCOPE}-{name}",
            publishers=tuple(publishers),
            roles=("Contributor", "Owner"),
            admins=(ADMIN,),
            policy=Policy(
                mode=ApprovalMode(mode), max_duration=timedelta(hours=8), approvers=APPROVERS
            ),
        ),
        actor="bench",
        now=now,
    )


# -- bulk seeding of active grants ----------------------------------------------------------
def seed_active_grants(
    url: str,
    *,
    total: int,
    due: int,
    now: datetime,
    due_ends: Callable[[int], datetime] | None = None,
    outbox_per_request: int = 9,
    seed: int = 7,
) -> dict[str, Any]:
    """A migrated database holding ``total`` active grants, ``due`` of them with
    ``ends_at <= now`` (or ``due_ends(i)``), as if each had gone submit -> approve ->
    activate through the service: its request row, log_grants row, three hash-chained
    audit entries and delivered outbox rows. Inserted with Core executemany for speed."""
    from sqlalchemy import insert, select

    from jitaccess.domain.audit_chain import AuditEntry, chain_hash
    from jitaccess.store.models import (
        AccessRequest,
        Application,
        AuditEvent,
        AuditHead,
        LogGrant,
        OutboxMessage,
    )

    started = time.perf_counter()
    rng = random.Random(seed)
    db, service, _ = make_service(url)
    register_app(service, now - timedelta(days=1))
    with db.engine.begin() as conn:
        app_id = conn.execute(select(Application.id).where(Application.name == APP)).scalar_one()
        head = conn.execute(select(AuditHead.seq, AuditHead.hash)).one()
    seq, prev = int(head.seq), str(head.hash)
    due_ids = set(rng.sample(range(1, total + 1), due))
    due_rank = {rid: i for i, rid in enumerate(sorted(due_ids))}
    chunk = 5000
    requests: list[dict[str, Any]] = []
    grants: list[dict[str, Any]] = []
    audits: list[dict[str, Any]] = []
    outbox: list[dict[str, Any]] = []

    def flush(force: bool = False) -> None:
        if not force and len(requests) < chunk:
            return
        with db.engine.begin() as conn:
            for table, rows in (
                (AccessRequest, requests),
                (LogGrant, grants),
                (AuditEvent, audits),
                (OutboxMessage, outbox),
            ):
                if rows:
                    conn.execute(insert(table), rows)
                    rows.clear()

    for rid in range(1, total + 1):
        if rid in due_ids:
            ends = due_ends(due_rank[rid]) if due_ends else now - timedelta(seconds=1)
        else:
            ends = now + timedelta(seconds=rng.randint(600, 8 * 3600))
        starts = ends - timedelta(hours=2)
        created = starts - timedelta(minutes=10)
        decided = created + timedelta(minutes=2)
        just = f"ticket OPS-{rid}: rotate credentials"
        requests.append(
            {
                "id": rid,
                "app_id": app_id,
                "requester": PUBLISHER,
                "role": "Contributor",
                "justification": just,
                "starts_at": starts,
                "ends_at": ends,
                "approval_deadline_at": min(created + timedelta(hours=24), ends),
                "state": "active",
                "approval_mode": "manual",
                "notified_approvers": list(APPROVERS),
                "created_at": created,
                "decided_by": APPROVERS[0],
                "decision_reason": f"CHG-{rid}",
                "decided_at": decided,
                "activated_at": starts,
                "next_deadline_at": ends,
                "attempts": 0,
                "revoke_alerts_sent": 0,
                "version": 4,
            }
        )
        grants.append(
            {
                "request_id": rid,
                "app": APP,
                "scope": SCOPE,
                "principal": PUBLISHER,
                "role": "Contributor",
                "granted_at": starts,
                "grant_calls": 1,
                "revoke_calls": 0,
            }
        )
        details = {
            "role": "Contributor",
            "requester": PUBLISHER,
            "starts_at": starts.isoformat(),
            "ends_at": ends.isoformat(),
        }
        for at, actor, action, before, after, reason in (
            (created, PUBLISHER, "submit", None, "pending", just),
            (decided, APPROVERS[0], "approve", "pending", "approved", f"CHG-{rid}"),
            (starts, "system", "activate", "approved", "active", "the window opened"),
        ):
            seq += 1
            entry = AuditEntry(seq, at, actor, action, APP, rid, before, after, reason, details)
            digest = chain_hash(prev, entry)
            audits.append(
                {
                    "seq": seq,
                    "at": at,
                    "actor": actor,
                    "action": action,
                    "app": APP,
                    "request_id": rid,
                    "from_state": before,
                    "to_state": after,
                    "reason": reason,
                    "details": details,
                    "prev_hash": prev,
                    "hash": digest,
                }
            )
            prev = digest
        recipients = [(PUBLISHER, "requester_update"), *((a, "approver_card") for a in APPROVERS)]
        steps = ("pending", "approved", "active")
        for n in range(min(outbox_per_request, len(steps) * len(recipients))):
            step = steps[n // len(recipients)]
            recipient, kind = recipients[n % len(recipients)]
            outbox.append(
                {
                    "dedup_key": f"request:{rid}:{step}:{kind}:{recipient}",
                    "kind": kind,
                    "recipient": recipient,
                    "request_id": rid,
                    "payload": {"event": step, "to": step, "actor": PUBLISHER, "reason": None},
                    "created_at": created,
                    "available_at": created,
                    "attempts": 1,
                    "delivered_at": created + timedelta(seconds=1),
                    "settled_at": created + timedelta(seconds=1),
                }
            )
        flush()
    flush(force=True)
    with db.engine.begin() as conn:
        conn.execute(AuditHead.__table__.update().values(seq=seq, hash=prev))
        if db.is_postgres:
            conn.exec_driver_sql(
                f"SELECT setval(pg_get_serial_sequence('access_requests', 'id'), {total}, true)"
            )
            conn.exec_driver_sql("ANALYZE")
        else:
            conn.exec_driver_sql("ANALYZE")
    db.dispose()
    return {
        "seconds": time.perf_counter() - started,
        "audit_entries": seq,
        "due_ids": sorted(due_ids),
    }


def copy_sqlite(src: Path, dst: Path) -> None:
    """Copy a (checkpointed) SQLite database file."""
    import shutil
    import sqlite3

    with contextlib.closing(sqlite3.connect(src)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for suffix in ("", "-wal", "-shm"):
        Path(str(dst) + suffix).unlink(missing_ok=True)
    shutil.copyfile(src, dst)


if __name__ == "__main__":
    _child_main(*sys.argv[1:4])


def play_requests(
    service: Any, relay: Any, requests: int, t0: datetime, *, behind: bool, remind: bool
) -> None:
    """The Slack-call benches' story (``bench.feed_calls``, ``bench.card_calls``): each of
    ``requests`` requests by PUBLISHER for ``Role{i}`` on APP (manual mode) is submitted,
    approved by the first approver, activated (sweep), reminded 15 minutes before the end
    when ``remind``, and expired (sweep). The relay drains after every step, or, when
    ``behind``, once after each approval, at the reminder and after the expiry."""
    starts, ends = t0 + timedelta(hours=1), t0 + timedelta(hours=2)

    def drain(now: datetime) -> None:
        while relay.drain(now).delivered:
            pass

    for i in range(requests):
        rid = service.submit(
            APP,
            requester=PUBLISHER,
            role=f"Role{i}",
            duration=timedelta(hours=1),
            justification=f"OPS-{i}",
            starts_at=starts,
            now=t0,
        ).id
        if not behind:
            drain(t0)
        service.approve(rid, actor=APPROVERS[0], reason=f"CHG-{i}", now=t0)
        drain(t0)
    service.sweep(starts)
    if not behind:
        drain(starts)
    if remind:
        reminder = ends - timedelta(minutes=15)
        service.sweep(reminder)
        drain(reminder)
    service.sweep(ends)
    drain(ends)
