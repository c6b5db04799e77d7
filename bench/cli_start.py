"""How long the ``jitaccess`` command takes to start and answer: ``--help`` and the
read commands, each a fresh process, on a SQLite file with a few applications and
requests.

    .venv/bin/python -m bench.cli_start [--quick]

Timed: ``jitaccess --help``, ``jitaccess apps list``, ``jitaccess requests list`` and
``jitaccess requests show ID``, run the way operators run them (the ``jitaccess``
console script beside this Python, else ``python -m jitaccess.cli``), stdout to
/dev/null, in an empty directory (no stray ``.env``). The baselines, measured in the
same run: ``python -c pass`` (the interpreter's own start) and ``python -c "import
sqlalchemy"`` (the floor of any command that reads the database). Commands run in
interleaved rounds after two unmeasured ones, so a change in the machine's load
shifts every command alike; each run's wall time and CPU time (user + system, from
``os.wait4``) are recorded. The medians are compared with the targets of
issue 11: ``--help`` ≤ 0.2 s, a read command ≤ 0.35 s.

Last, one ``apps list`` runs under ``-X importtime`` and the imports' own time is
summed per top-level package: where a start still goes.

To measure an older revision, run this against a snapshot (bench/README.md): the
commands inherit ``PYTHONPATH``, and the database is seeded through the measured
revision's own service (its migrations made the schema).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench._common import (
    ADMIN,
    APPROVERS,
    PUBLISHER,
    Report,
    make_service,
    parse_args,
    percentile,
    utcnow,
)

TARGETS = {"--help": 0.2, "apps list": 0.35, "requests list": 0.35, "requests show": 0.35}
APPS = ("crm", "erp", "hr", "billing", "search")
REQUESTS_PER_APP = 6


def jitaccess_command() -> list[str]:
    script = Path(sys.executable).with_name("jitaccess")
    return [str(script)] if script.exists() else [sys.executable, "-m", "jitaccess.cli"]


def seed(url: str) -> int:
    """A few applications (automatic and manual policies) and requests in several
    states; returns the id of a request to show."""
    from jitaccess.app.service import AppSpec
    from jitaccess.domain.policy import ApprovalMode, Policy

    db, service, _ = make_service(url)
    now = utcnow()
    shown = 0
    for i, name in enumerate(APPS):
        manual = i % 2 == 1
        service.register_app(
            AppSpec(
                name=name,
                scope=f"/subscriptions/s1/resourceGroups/mrg-{name}",
                publishers=(PUBLISHER,),
                roles=("Contributor", "Owner"),
                admins=(ADMIN,),
                policy=Policy(
                    mode=ApprovalMode.MANUAL if manual else ApprovalMode.AUTOMATIC,
                    max_duration=timedelta(hours=8),
                    approvers=APPROVERS,
                ),
            ),
            actor="bench",
            now=now,
        )
        for n in range(REQUESTS_PER_APP):
            view = service.submit(
                name,
                requester=PUBLISHER,
                role="Contributor",
                duration=timedelta(hours=2),
                justification=f"ticket {name}-{n}: look at the failing nightly job",
                # back to back: one person's windows for a role may not overlap
                starts_at=now + timedelta(hours=2 * n),
                now=now,
            )
            if manual and n % 3 == 1:
                service.approve(view.id, actor=APPROVERS[0], reason="ok, ticket seen", now=now)
            elif manual and n % 3 == 2:
                service.deny(view.id, actor=APPROVERS[1], reason="not this week", now=now)
            shown = view.id
    service.sweep(now + timedelta(minutes=1))  # the first ones become active
    db.dispose()
    return shown


def run_once(argv: list[str], env: dict[str, str], cwd: str) -> dict[str, float]:
    """One fresh process: wall seconds and CPU seconds of that child. (Not its peak
    RSS: Linux carries the parent's into a forked child's ``ru_maxrss``.)"""
    import time

    with tempfile.TemporaryFile() as stderr:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            stderr.seek(0)
            raise RuntimeError(f"{argv} exited {proc.returncode}:\n{stderr.read().decode()}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime}


def import_breakdown(env: dict[str, str], cwd: str) -> list[list[Any]]:
    """Own import time per top-level package (``jitaccess`` per module) of one
    ``apps list``."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "jitaccess.cli", "apps", "list"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    own: Counter[str] = Counter()
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _cumulative, name = line[len("import time:") :].split("|")
        name = name.strip()
        key = name if name.startswith("jitaccess") else name.split(".")[0]
        own[key] += int(self_us)
    total = sum(own.values())
    rows: list[list[Any]] = [
        [name, us / 1000, 100 * us / total] for name, us in own.most_common(15)
    ]
    rest = total - sum(us for _, us in own.most_common(15))
    rows.append([f"everything else ({len(own) - 15} packages)", rest / 1000, 100 * rest / total])
    rows.append(["total (inflated by -X importtime itself)", total / 1000, 100.0])
    return rows


def main() -> None:
    args = parse_args(__doc__ or "")
    rounds = 5 if args.quick else 31
    report = Report(
        "cli_start",
        quick=args.quick,
        sizes={"rounds": rounds, "apps": len(APPS), "requests": len(APPS) * REQUESTS_PER_APP},
    )
    jit = jitaccess_command()
    report.note(f"jitaccess runs as: {' '.join(jit)}")
    with tempfile.TemporaryDirectory(prefix="bench-cli-start-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'jitaccess.db'}"
        shown = seed(url)
        # This shell's own jitaccess, Slack or Azure settings stay out of the measurement.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("JITACCESS_", "SLACK_", "AZURE_"))
        }
        env.update(JITACCESS_DATABASE_URL=url, COLUMNS="120")
        commands: dict[str, list[str]] = {
            'python -c "pass"': [sys.executable, "-c", "pass"],
            'python -c "import sqlalchemy"': [sys.executable, "-c", "import sqlalchemy"],
            "--help": [*jit, "--help"],
            "apps list": [*jit, "apps", "list"],
            "requests list": [*jit, "requests", "list"],
            "requests show": [*jit, "requests", "show", str(shown)],
        }
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in commands}
        for round_ in range(rounds + 2):
            for name, argv in commands.items():
                result = run_once(argv, env, tmp)
                if round_ >= 2:  # two warm-up rounds: page cache, .pyc files
                    runs[name].append(result)
        breakdown = import_breakdown(env, tmp)

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    interpreter = median('python -c "pass"', "wall_s")
    floor = median('python -c "import sqlalchemy"', "wall_s")
    rows = []
    for name in commands:
        walls = [r["wall_s"] for r in runs[name]]
        target = TARGETS.get(name)
        rows.append(
            [
                name if name.startswith("python") else f"jitaccess {name}",
                1000 * statistics.median(walls),
                1000 * min(walls),
                1000 * percentile(walls, 90),
                1000 * median(name, "cpu_s"),
                statistics.median(walls) / interpreter,
                statistics.median(walls) / floor,
                "" if target is None else f"≤ {1000 * target:.0f}",
            ]
        )
        if target is not None:
            report.target(
                f"jitaccess {name} (median wall)",
                1000 * statistics.median(walls),
                f"≤ {1000 * target:.0f} ms",
                statistics.median(walls) <= target,
                "ms",
            )
    report.table(
        f"Start and answer, fresh process each, {rounds} interleaved rounds "
        f"({len(APPS)} applications, {len(APPS) * REQUESTS_PER_APP} requests, SQLite)",
        [
            "command",
            "median ms",
            "min ms",
            "p90 ms",
            "CPU median ms",
            "× pass",
            "× import sqlalchemy",
            "target ms",
        ],
        rows,
    )
    report.table(
        "Where `apps list` still spends its imports (own time per package, one run)",
        ["package", "ms", "%"],
        breakdown,
    )
    report.set("runs", runs)
    report.save()


if __name__ == "__main__":
    main()
