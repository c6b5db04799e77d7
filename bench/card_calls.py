"""Slack API calls per request with one living card per person (issue 19).

    .venv/bin/python -m bench.card_calls [--quick]

Each request goes submit -> approve -> activate (sweep) -> the 15-minute reminder ->
expire (sweep) in manual mode with two approvers, through the real relay,
``SlackNotifier`` and WebClient against the fake Slack over HTTP (time is an argument:
no clock is waited on). Two relay rhythms, as in ``bench.feed_calls``: the relay drains
after every step, and the relay is behind (draining once after approve, once at the
reminder and once after expire). Counted per request: calls by method, then what the
requester's DM holds: top-level messages (cards) and thread replies (and how many of
those were broadcast). ``conversations.open`` is cached per process. ``users.info``
stays a column at 0: times are Slack date tokens now, so nobody's zone is looked up
(a revision before that asked once per person per hour). The counts are exact, not
timed.

Run the same file against another revision's ``src`` with ``PYTHONPATH`` (see
bench/README.md): a revision that posts a new card per step shows more top-level
messages and no replies."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from bench._common import (
    APP,
    APPROVERS,
    PUBLISHER,
    Report,
    make_service,
    parse_args,
    play_requests,
    utcnow,
)

METHODS = ("chat.postMessage", "chat.update", "views.publish", "conversations.open", "users.info")


def run(requests: int, *, behind: bool) -> dict[str, Any]:
    from jitaccess.app.outbox import OutboxRelay
    from jitaccess.app.service import AppSpec
    from jitaccess.domain.policy import ApprovalMode, Policy
    from jitaccess.slack.notifier import SlackNotifier
    from jitaccess.slack.runtime import slack_client
    from jitaccess_sandbox.fake_slack import FakeSlack

    fake = FakeSlack()
    for user in (PUBLISHER, *APPROVERS):
        fake.add_user(user, name=user.lower(), tz="UTC")
    with tempfile.TemporaryDirectory() as tmp, fake:
        db, service, _ = make_service(f"sqlite:///{Path(tmp) / 'jit.db'}")
        t0 = utcnow().replace(microsecond=0)
        service.register_app(
            AppSpec(
                name=APP,
                scope="/subscriptions/s/resourceGroups/mrg-bench",
                publishers=(PUBLISHER,),
                roles=tuple(f"Role{i}" for i in range(requests)),
                policy=Policy(mode=ApprovalMode.MANUAL, approvers=APPROVERS),
            ),
            actor="bench",
            now=t0,
        )
        relay = OutboxRelay(db, SlackNotifier(slack_client("xoxb-bench", fake.base_url), service))
        play_requests(service, relay, requests, t0, behind=behind, remind=True)
        calls = Counter(c.method for c in fake.calls)
        dm = fake.dms_to(PUBLISHER)
        replies = [m for m in dm if m.get("thread_ts") not in (None, m["ts"])]
        broadcast = [m for m in replies if m.get("subtype") == "thread_broadcast"]
        db.dispose()
    return {
        "calls": calls,
        "cards": len(dm) - len(replies),
        "replies": len(replies),
        "broadcast": len(broadcast),
    }


def main() -> None:
    args = parse_args(__doc__ or "")
    requests = 10 if args.quick else 100
    report = Report("card_calls", quick=args.quick, sizes={"requests": requests})
    rows = []
    for behind in (False, True):
        result = run(requests, behind=behind)
        per = {m: result["calls"][m] / requests for m in METHODS}
        total = sum(result["calls"].values()) / requests
        rows.append(
            [
                "behind" if behind else "every step",
                *[per[m] for m in METHODS],
                total,
                result["cards"] / requests,
                result["replies"] / requests,
                result["broadcast"] / requests,
            ]
        )
        report.set(f"{'behind' if behind else 'every_step'}", {**result, "requests": requests})
        report.target(
            f"one card per request in the requester's DM ({'behind' if behind else 'every step'})",
            result["cards"] / requests,
            "= 1",
            result["cards"] == requests,
        )
    report.table(
        f"Slack API calls per request (manual mode, 2 approvers, reminder, {requests} requests)",
        ["relay", *METHODS, "total", "requester cards", "thread replies", "broadcast"],
        rows,
    )
    report.save()


if __name__ == "__main__":
    main()
