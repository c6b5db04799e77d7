"""Backend-bound expiries: 1,000 grants ending at the same instant, a webhook backend
that answers in 200 ms.

    .venv/bin/python -m bench.backend_bound [--quick]

The receiver is a threaded HTTP server in its own process on 127.0.0.1 that sleeps
``LATENCY`` before each 200 and counts every (action, request) it is sent. The sweeping
process is wired like ``serve`` (the real webhook provider, signed POSTs over HTTP).

Measured, SQLite file database:

1. **one sweeper**: ``service.sweep(end)`` revokes all N grants (after a sweep at the
   start granted them, also timed); the target is 1.25 times the ideal N * latency /
   concurrency (32 by default);
2. **serial baseline, same run**: the same with ``JITACCESS_PROVIDER_CONCURRENCY=1``
   on a slice of the grants, extrapolated to N: what HEAD before the concurrent sweep
   did (one call at a time);
3. **two sweeping processes** revoking N grants at once: how many revokes the backend
   received per request (the target is exactly one each: no lease lapsed mid-call).
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections import Counter
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench._common import Report, parse_args, start_child, utcnow

LATENCY = 0.2
CONCURRENCY = 32
TARGET_RATIO = 1.25
SERIAL_SLICE = 40
SECRET = "bench-secret"


# -- the backend (its own process) ---------------------------------------------------------
def receiver_child(port_file: str, stop_file: str, latency: float) -> dict[str, Any]:
    """Serve until ``stop_file`` exists; return every call received."""
    calls: Counter[str] = Counter()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            event = json.loads(body)
            time.sleep(latency)
            with lock:
                calls[f"{event['action']}:{event['request_id']}"] += 1
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    class Server(ThreadingHTTPServer):
        request_queue_size = 256  # the listen backlog: 32+ connections arrive at once

    server = Server(("127.0.0.1", 0), Handler)
    Path(port_file).write_text(str(server.server_address[1]))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    while not Path(stop_file).exists():
        time.sleep(0.05)
    server.shutdown()
    return {"calls": dict(calls)}


class Backend:
    def __init__(self, workdir: Path) -> None:
        self.port_file = workdir / "port"
        self.stop_file = workdir / "stop"
        self.child = start_child(
            "bench.backend_bound:receiver_child",
            port_file=str(self.port_file),
            stop_file=str(self.stop_file),
            latency=LATENCY,
        )
        while not self.port_file.exists():
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port_file.read_text()}/jit"

    def stop(self) -> Counter[str]:
        self.stop_file.write_text("")
        return Counter(self.child.wait(120)["calls"])


# -- the sweeping side ----------------------------------------------------------------------
def _service(url: str, concurrency: int, worker: str) -> Any:
    from jitaccess.app.deps import build_deps
    from jitaccess.app.service import JitService
    from jitaccess.providers.base import ProviderRegistry
    from jitaccess.providers.webhook import WebhookProvider
    from jitaccess.slack.principals import SLACK_PRINCIPALS
    from jitaccess.store.db import Database

    db = Database(url)
    providers = ProviderRegistry()
    providers.register(WebhookProvider())
    return JitService(
        build_deps(
            db,
            providers,
            worker_id=worker,
            inline=False,
            provider_concurrency=concurrency,
            principals=SLACK_PRINCIPALS,
        )
    )


def seed(url: str, hook: str, count: int) -> dict[str, str]:
    """``count`` auto-approved requests with the same window; returns its start and end."""
    from jitaccess.app.service import AppSpec
    from jitaccess.domain.policy import ApprovalMode, Policy
    from jitaccess.store.db import Database

    Database(url).upgrade()
    service = _service(url, CONCURRENCY, "seed")
    now = utcnow().replace(microsecond=0)
    start, end = now + timedelta(minutes=5), now + timedelta(minutes=65)
    # One person's requests for a role on one resource group may not overlap: each of
    # these same-window grants is another publisher's.
    people = [f"UPUB{i}" for i in range(1, count + 1)]
    service.register_app(
        AppSpec(
            name="crm",
            scope="/subscriptions/s1/resourceGroups/mrg-crm",
            publishers=tuple(people),
            roles=("Contributor",),
            policy=Policy(mode=ApprovalMode.AUTOMATIC, max_duration=timedelta(hours=8)),
            provider="webhook",
            provider_config={"url": hook, "secret": SECRET},
        ),
        actor="bench",
        now=now,
    )
    for i, who in enumerate(people):
        service.submit(
            "crm",
            requester=who,
            role="Contributor",
            duration=end - start,
            justification=f"job {i}",
            starts_at=start,
            now=now,
        )
    return {"start": start.isoformat(), "end": end.isoformat()}


def sweep_child(url: str, at: str, concurrency: int, worker: str, limit: int = 0) -> dict[str, Any]:
    """Sweep at ``at`` until nothing is due (or ``limit`` transitions); time it."""
    from datetime import datetime

    service = _service(url, concurrency, worker)
    now = datetime.fromisoformat(at)
    service.next_deadline()  # connect and load the mappers before timing
    started = time.perf_counter()
    done = 0
    while True:
        report = service.sweep(now, batch_size=limit or 500, max_batches=1 if limit else None)
        done += report.transitions
        if limit or report.transitions == 0:
            break
    return {"seconds": time.perf_counter() - started, "transitions": done}


def sweeper(url: str, at: str, worker: str, concurrency: int = CONCURRENCY) -> Any:
    """A sweeping process (``sweep_child``) at ``at``; ``.wait()`` returns its timing."""
    return start_child(
        "bench.backend_bound:sweep_child",
        url=url,
        at=at,
        concurrency=concurrency,
        worker=worker,
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__ or "", argv)
    count = 100 if args.quick else 1000
    report = Report(
        "backend_bound",
        quick=args.quick,
        sizes={"grants": count, "latency_s": LATENCY, "concurrency": CONCURRENCY},
    )
    ideal = count * LATENCY / CONCURRENCY
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        backend = Backend(work)
        try:
            # 1. one sweeper, concurrent calls
            url = f"sqlite:///{work / 'one.db'}"
            window = seed(url, backend.url, count)
            grant = sweeper(url, window["start"], "one").wait(900)
            revoke = sweeper(url, window["end"], "one").wait(900)
            rows.append(
                ["grants at the start (one sweeper)", grant["transitions"], grant["seconds"]]
            )
            rows.append(
                ["revokes at the end (one sweeper)", revoke["transitions"], revoke["seconds"]]
            )

            # 2. serial baseline on a slice, same backend, same run
            serial_url = f"sqlite:///{work / 'serial.db'}"
            serial_window = seed(serial_url, backend.url, SERIAL_SLICE)
            sweeper(serial_url, serial_window["start"], "serial").wait(900)
            serial = sweeper(serial_url, serial_window["end"], "serial", concurrency=1).wait(900)
            serial_full = serial["seconds"] / max(1, serial["transitions"]) * count
            rows.append(
                [
                    f"serial revokes, {SERIAL_SLICE} measured, ×{count // SERIAL_SLICE}",
                    count,
                    serial_full,
                ]
            )

            # 3. two sweeping processes at once
            pair_url = f"sqlite:///{work / 'pair.db'}"
            pair_window = seed(pair_url, backend.url, count)
            sweeper(pair_url, pair_window["start"], "pair-seed").wait(900)
            children = [sweeper(pair_url, pair_window["end"], f"replica-{i}") for i in range(2)]
            pair = [child.wait(900) for child in children]
            rows.append(
                [
                    "revokes at the end (two sweepers)",
                    sum(p["transitions"] for p in pair),
                    max(p["seconds"] for p in pair),
                ]
            )
        finally:
            calls = backend.stop()
    report.table(
        f"{count} grants, webhook answering in {LATENCY * 1000:.0f} ms",
        ["what", "transitions", "seconds"],
        rows,
    )
    revoke_seconds = rows[1][2]
    report.table(
        "against the ideal",
        ["what", "seconds", "× ideal"],
        [
            [f"ideal: {count} × {LATENCY} s ÷ {CONCURRENCY}", ideal, 1.0],
            ["one sweeper, concurrent", revoke_seconds, revoke_seconds / ideal],
            ["serial (baseline)", serial_full, serial_full / ideal],
        ],
    )
    pair_revokes = Counter({key: n for key, n in calls.items() if key.startswith("revoke:")})
    # The pair database's request ids are 1..count, as are the others': count per DB
    # is not separable by id, so compare totals: every revoke sent once per database.
    expected_revokes = count + SERIAL_SLICE + count
    duplicates = sum(pair_revokes.values()) - expected_revokes
    report.note(
        f"revokes received by the backend in all: {sum(pair_revokes.values())}, expected "
        f"{expected_revokes} (one per grant across the three databases)"
    )
    report.target(
        "1,000 revokes vs ideal (one sweeper)" if count == 1000 else f"{count} revokes vs ideal",
        revoke_seconds / ideal,
        f"≤ {TARGET_RATIO} × ideal",
        revoke_seconds / ideal <= TARGET_RATIO,
        "× ideal",
    )
    report.target("duplicate backend calls with two sweepers", duplicates, "0", duplicates == 0)
    report.set("serial_per_call_s", serial["seconds"] / max(1, serial["transitions"]))
    report.save()


if __name__ == "__main__":
    main()
