"""Slack ack latency over real HTTP: Approve clicks, reason submissions and the
one-line ``/jit request`` slash command against an in-process
``jitaccess.server.Server`` (waitress, HTTP mode, the fake Slack Web API), vs the same
load on a bare Bolt app that only acks, behind the same waitress set-up.

    .venv/bin/python -m bench.slack_ack [--quick]

500 Approve clicks, then 500 reason submissions, then 500 ``/jit request crm
Contributor 1h …`` commands (20 in flight), each a correctly signed ``POST
/slack/events`` on 127.0.0.1, after 20 + 20 + 20 unmeasured warm-up requests. The load
generator is a separate process, so its threads do not share the server's GIL.

With Bolt's default ``process_before_response=False`` the HTTP response goes out at
``ack()``; what a listener does before its ``ack()`` is in the measured time, what it
does after is not (but shares the process, its threads and its GIL). The server runs
its scheduler and outbox relay meanwhile (card updates to the fake), as ``serve``
does; a second server runs ``--role web`` (no sweep, no relay: a worker process would
run them) on its own database. The bare Bolt app has the same three listeners, each
only ``ack()``.
"""

from __future__ import annotations

import http.client
import json
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from bench._common import (
    APP,
    APPROVERS,
    PUBLISHER,
    Report,
    percentile,
    register_app,
    run_child,
    start_child,
    utcnow,
)

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
CONCURRENCY = 20
WARMUP = 20
#: One publisher per request (seeded or by command): one person's requests for a role
#: on one resource group may not overlap, and these all share a window. Seeded requests
#: take the first ``half``, command ``n`` is ``COMMANDS_FROM + n``; enough for a full run.
PEOPLE = [PUBLISHER, *(f"UPUB{i}" for i in range(2, 3 * (500 + WARMUP) + 1))]
COMMANDS_FROM = 500 + WARMUP
TARGET_RATIO = 1.5
TARGET_P99_MS = 100.0
WEB = "jitaccess serve --role web"
PHASES = ("click", "submit", "command")
PHASE_NAMES = {
    "click": "Approve click",
    "submit": "reason submission",
    "command": "/jit request command",
}


def signed(payload: dict[str, Any]) -> tuple[str, dict[str, str]]:
    return signed_form({"payload": json.dumps(payload)})


def signed_form(fields: dict[str, str]) -> tuple[str, dict[str, str]]:
    from jitaccess_sandbox.page import sign

    body = urlencode(fields)
    return body, {"Content-Type": "application/x-www-form-urlencoded", **sign(SECRET, body)}


def click(rid: int, n: int) -> tuple[str, dict[str, str]]:
    from jitaccess.slack.blocks import ids

    channel = f"D{APPROVERS[0]}"
    return signed(
        {
            "type": "block_actions",
            "team": {"id": "T0001"},
            "user": {"id": APPROVERS[0]},
            "api_app_id": "A0001",
            "trigger_id": f"{n}.1000.benchtrigger",
            "channel": {"id": channel},
            "container": {"type": "message", "channel_id": channel, "message_ts": "1.000001"},
            "actions": [
                {
                    "type": "button",
                    "action_id": ids.APPROVE,
                    "block_id": "decide",
                    "value": str(rid),
                    "action_ts": str(time.time()),
                }
            ],
        }
    )


def submission(rid: int, n: int) -> tuple[str, dict[str, str]]:
    from jitaccess.slack.blocks import ids

    meta = {"request_id": rid, "decision": "approve", "channel": f"D{APPROVERS[0]}"}
    return signed(
        {
            "type": "view_submission",
            "team": {"id": "T0001"},
            "user": {"id": APPROVERS[0]},
            "api_app_id": "A0001",
            "trigger_id": f"{n}.2000.benchtrigger",
            "view": {
                "id": f"VBENCH{n}",
                "type": "modal",
                "hash": "h",
                "callback_id": ids.DECISION_MODAL,
                "private_metadata": json.dumps(meta),
                "state": {
                    "values": {
                        "reason": {"reason": {"type": "plain_text_input", "value": f"CHG-{rid}"}}
                    }
                },
            },
        }
    )


def command(n: int, fake_url: str) -> tuple[str, dict[str, str]]:
    """The one-line request: ``/jit request crm Contributor 1h <reason>``."""
    root = fake_url.rsplit("/api/", 1)[0]
    return signed_form(
        {
            "token": "legacy",
            "team_id": "T0001",
            "api_app_id": "A0001",
            "channel_id": f"D{PEOPLE[COMMANDS_FROM + n]}",
            "user_id": PEOPLE[COMMANDS_FROM + n],
            "command": "/jit",
            "text": f"request {APP} Contributor 1h ticket OPS-{n}",
            "response_url": f"{root}/response/bench-{n}",
            "trigger_id": f"{n}.3000.benchtrigger",
        }
    )


# -- the load generator (its own process) --------------------------------------------------
def client_child(port: int, requests: list[list[Any]], concurrency: int) -> dict[str, Any]:
    """POST every body with ``concurrency`` in flight; latency per request in ms."""
    latencies: list[float] = [0.0] * len(requests)
    statuses: dict[str, int] = {}
    lock = threading.Lock()
    cursor = iter(range(len(requests)))

    def worker() -> None:
        while True:
            with lock:
                i = next(cursor, None)
            if i is None:
                return
            body, headers = requests[i]
            started = time.perf_counter()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.request("POST", "/slack/events", body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                status = str(response.status)
            except OSError as exc:
                status = type(exc).__name__
            finally:
                conn.close()
            latencies[i] = (time.perf_counter() - started) * 1e3
            with lock:
                statuses[status] = statuses.get(status, 0) + 1

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "latencies_ms": latencies,
        "statuses": statuses,
        "seconds": time.perf_counter() - started,
    }


def drive(
    port: int, clicks: list[Any], submissions: list[Any], commands: list[Any]
) -> dict[str, Any]:
    """Warm up, then clicks, submissions, commands; each phase measured separately."""
    run_child(
        "bench.slack_ack:client_child",
        port=port,
        requests=clicks[:WARMUP] + submissions[:WARMUP] + commands[:WARMUP],
        concurrency=CONCURRENCY,
    )
    out = {}
    for name, load in (
        ("click", clicks[WARMUP:]),
        ("submit", submissions[WARMUP:]),
        ("command", commands[WARMUP:]),
    ):
        out[name] = run_child(
            "bench.slack_ack:client_child", port=port, requests=load, concurrency=CONCURRENCY
        )
    return out


# -- the fake Slack Web API (its own process: Slack is not in our process either) ----------
def fake_slack_child(url_file: str, stop_file: str) -> dict[str, Any]:
    from jitaccess_sandbox.fake_slack import FakeSlack

    fake = FakeSlack()
    fake.add_user(PUBLISHER, name="pat", real_name="Pat Publisher", tz="Europe/Paris")
    for person in PEOPLE[1:]:
        fake.add_user(person, name=person.lower(), tz="Europe/Paris")
    fake.add_user(APPROVERS[0], name="ava", real_name="Ava Approver", tz="America/New_York")
    fake.add_user(APPROVERS[1], name="abe", real_name="Abe Approver", tz="UTC")
    with fake:
        Path(url_file).write_text(fake.base_url)
        while not Path(stop_file).exists():
            time.sleep(0.05)
        return {
            method: len(fake.calls_to(method))
            for method in ("views.open", "views.update", "chat.postMessage", "chat.update")
        }


class Inside:
    """What the server did during a run: service.approve calls, and the relay's
    deliveries to Slack (card updates after each approval) running alongside."""

    def __init__(self) -> None:
        self.approve: list[float] = []
        self.deliver: list[float] = []
        self.started = time.perf_counter()

    def clear(self) -> None:
        self.approve.clear()
        self.deliver.clear()
        self.started = time.perf_counter()

    def summary(self) -> dict[str, float]:
        wall = time.perf_counter() - self.started
        return {
            "approve_calls": len(self.approve),
            "approve_p50_ms": percentile(self.approve, 50) if self.approve else 0.0,
            "approve_p99_ms": percentile(self.approve, 99) if self.approve else 0.0,
            "relay_busy_share": sum(self.deliver) / wall,
            "relay_deliveries": len(self.deliver),
        }


def instrument(server: Any) -> Inside:
    inside = Inside()
    # The Slack app's notifier is the relay's too (one per process, built once); a web
    # process has no relay, but its listeners still post with that notifier.
    service, notifier = server.container.service, server.slack.notifier
    approve, deliver = service.approve, notifier.deliver

    def timed_approve(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return approve(*args, **kwargs)
        finally:
            inside.approve.append((time.perf_counter() - started) * 1e3)

    def timed_deliver(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return deliver(*args, **kwargs)
        finally:
            inside.deliver.append(time.perf_counter() - started)

    service.approve = timed_approve
    notifier.deliver = timed_deliver
    return inside


def wait_for_relay(server: Any, patience: float = 120.0) -> None:
    """Let the relay deliver what is queued, so each run starts from a quiet server."""
    deadline = time.time() + patience
    while server.container.relay.undelivered() and time.time() < deadline:
        time.sleep(0.2)


# -- the two servers -----------------------------------------------------------------------
def bare_bolt(fake_url: str) -> Any:
    from slack_bolt import App
    from slack_bolt.adapter.wsgi import SlackRequestHandler
    from slack_sdk import WebClient
    from waitress.server import create_server

    from jitaccess.settings import Settings
    from jitaccess.slack.blocks import ids
    from jitaccess.web import Router

    app = App(
        client=WebClient(token="xoxb-bench", base_url=fake_url),
        signing_secret=SECRET,
        token_verification_enabled=False,
    )

    def only_ack(ack: Any) -> None:
        ack()

    app.action(ids.APPROVE)(only_ack)
    app.view(ids.DECISION_MODAL)(only_ack)
    app.command("/jit")(only_ack)
    router = Router()
    router.mount("/slack/events", SlackRequestHandler(app))
    threads = Settings(_env_file=None).http_threads  # type: ignore[call-arg]
    server = create_server(router, host="127.0.0.1", port=0, threads=threads, ident="bare")
    threading.Thread(target=server.run, name="bare-http", daemon=True).start()
    return server


def start_server(
    settings_cls: Any, server_cls: Any, db: Path, fake_url: str, role: str
) -> tuple[Any, Any]:
    settings = settings_cls(
        _env_file=None,
        JITACCESS_DATABASE_URL=f"sqlite:///{db}",
        JITACCESS_HOST="127.0.0.1",
        JITACCESS_PORT=0,
        JITACCESS_ROLE=role,
        SLACK_BOT_TOKEN="xoxb-bench",
        SLACK_SIGNING_SECRET=SECRET,
        SLACK_API_URL=fake_url,
    )
    server = server_cls(settings)
    server.start()
    register_app(server.container.service, utcnow(), publishers=PEOPLE)
    return server, server.container.service


def pending_ids(service: Any, count: int) -> list[int]:
    now = utcnow()
    return [
        service.submit(
            APP,
            requester=PEOPLE[i],
            role="Contributor",
            duration=timedelta(hours=2),
            justification=f"ticket OPS-{i}",
            now=now,
            starts_at=now + timedelta(hours=1),
        ).id
        for i in range(count)
    ]


def settled(service: Any, half: int, patience: float = 60.0) -> dict[str, int]:
    """Once the listeners' post-ack work is done: the requests approved (one per
    submission, warm-up included) and submitted (the seeded ones, plus one per command)."""
    deadline = time.time() + patience
    while True:
        views = service.list_requests(limit=100_000)
        counts = {
            "approved": sum(1 for v in views if v.state == "approved"),
            "requests": len(views),
        }
        if (counts["approved"] >= half and counts["requests"] >= 2 * half) or (
            time.time() > deadline
        ):
            return counts
        time.sleep(0.2)


def main() -> None:
    import logging

    from jitaccess.server import Server
    from jitaccess.settings import Settings

    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "Task queue depth is N"
    logging.getLogger("apscheduler").setLevel(logging.ERROR)  # "relay_now … skipped" (busy)
    args = parse()
    n = 50 if args.quick else 500
    report = Report(
        "slack_ack",
        quick=args.quick,
        sizes={"clicks": n, "submissions": n, "commands": n, "in_flight": 20},
    )
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-slack-") as tmp:
        url_file, stop_file = Path(tmp) / "fake-url", Path(tmp) / "fake-stop"
        fake = start_child(
            "bench.slack_ack:fake_slack_child", url_file=str(url_file), stop_file=str(stop_file)
        )
        while not url_file.exists() or not url_file.read_text():
            time.sleep(0.05)
        fake_url = url_file.read_text()
        server, service = start_server(Settings, Server, Path(tmp) / "all.db", fake_url, "all")
        web, web_service = start_server(Settings, Server, Path(tmp) / "web.db", fake_url, "web")
        half = n + WARMUP
        first = pending_ids(service, half)
        second = pending_ids(web_service, half)
        clicks = [click(rid, i) for i, rid in enumerate(first)]
        submissions = [submission(rid, i) for i, rid in enumerate(first)]
        commands = [command(i, fake_url) for i in range(half)]
        clicks2 = [click(rid, i) for i, rid in enumerate(second, start=half)]
        submissions2 = [submission(rid, i) for i, rid in enumerate(second, start=half)]
        commands2 = [command(i, fake_url) for i in range(half, 2 * half)]

        inside = instrument(server)
        inside_web = instrument(web)
        bare = bare_bolt(fake_url)
        wait_for_relay(server)  # the approvers' cards are posted before any measurement
        results["bare Bolt (before)"] = drive(bare.effective_port, clicks, submissions, commands)
        inside.clear()
        results["jitaccess Server"] = drive(server.port, clicks, submissions, commands)
        results["jitaccess Server"]["inside"] = inside.summary()
        wait_for_relay(server)
        results["bare Bolt (after)"] = drive(bare.effective_port, clicks, submissions, commands)
        inside_web.clear()
        results[WEB] = drive(web.port, clicks2, submissions2, commands2)
        results[WEB]["inside"] = inside_web.summary()
        bare.close()
        # Work a listener does after its ack may still be running: wait for all of it.
        done = {
            "jitaccess Server": settled(service, half),
            WEB: settled(web_service, half),
        }
        wait_for_relay(server)
        web.stop()
        server.stop()
        stop_file.touch()
        calls = fake.wait(60)

    rows = []
    summary: dict[str, dict[str, float]] = {}
    for phase in PHASES:
        bare_lat = [
            ms
            for key in ("bare Bolt (before)", "bare Bolt (after)")
            for ms in results[key][phase]["latencies_ms"]
        ]
        bare_p99 = percentile(bare_lat, 99)
        for label, lat, statuses in (
            ("bare Bolt (2 runs pooled)", bare_lat, None),
            *(
                (key, results[key][phase]["latencies_ms"], results[key][phase]["statuses"])
                for key in ("jitaccess Server", WEB)
            ),
        ):
            p99 = percentile(lat, 99)
            summary[f"{phase}:{label}"] = {
                "p50": percentile(lat, 50),
                "p99": p99,
                "max": max(lat),
                "ratio": p99 / bare_p99,
            }
            rows.append(
                [
                    f"{PHASE_NAMES[phase]}: {label}",
                    len(lat),
                    percentile(lat, 50),
                    p99,
                    max(lat),
                    p99 / bare_p99,
                    statuses if statuses is not None else "",
                ]
            )
        for key in ("jitaccess Server", WEB):
            ratio, p99 = summary[f"{phase}:{key}"]["ratio"], summary[f"{phase}:{key}"]["p99"]
            where = "" if key == "jitaccess Server" else " (--role web)"
            report.target(
                f"{phase} p99 vs bare Bolt{where}",
                ratio,
                f"<= {TARGET_RATIO}x",
                ratio <= TARGET_RATIO,
                "x",
            )
            report.target(
                f"{phase} p99 absolute{where}",
                p99,
                f"< {TARGET_P99_MS:.0f} ms",
                p99 < TARGET_P99_MS,
                "ms",
            )
    report.table(
        f"Ack latency (ms), {n} each, {CONCURRENCY} in flight, real HTTP on 127.0.0.1",
        ["load", "requests", "p50 ms", "p99 ms", "max ms", "p99 / bare", "HTTP statuses"],
        rows,
    )
    per_run = [
        [
            key,
            phase,
            percentile(results[key][phase]["latencies_ms"], 50),
            percentile(results[key][phase]["latencies_ms"], 99),
            len(results[key][phase]["latencies_ms"]) / results[key][phase]["seconds"],
        ]
        for key in results
        for phase in PHASES
        if phase in results[key]
    ]
    report.table("Each run", ["server", "load", "p50 ms", "p99 ms", "requests/s"], per_run)
    report.table(
        "Inside the jitaccess servers during each run (whole run: all three loads)",
        [
            "run",
            "service.approve calls",
            "approve p50 ms",
            "approve p99 ms",
            "relay deliveries",
            "relay delivering, % of run",
        ],
        [
            [
                key,
                results[key]["inside"]["approve_calls"],
                results[key]["inside"]["approve_p50_ms"],
                results[key]["inside"]["approve_p99_ms"],
                results[key]["inside"]["relay_deliveries"],
                100 * results[key]["inside"]["relay_busy_share"],
            ]
            for key in ("jitaccess Server", WEB)
        ],
    )
    report.note(f"after the post-ack work settled (approved / requests): {done}")
    report.note(f"fake Slack saw {calls}")
    report.set("summary", summary)
    report.save()


def parse() -> Any:
    from bench._common import parse_args

    return parse_args(__doc__ or "")


if __name__ == "__main__":
    main()
