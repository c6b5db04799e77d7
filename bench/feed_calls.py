"""Slack API calls per request lifecycle, with and without the channel feed (issue 12).

    .venv/bin/python -m bench.feed_calls [--quick]

Each request goes submit -> approve -> activate (sweep) -> expire (sweep) in manual
mode with two approvers, through the real relay, ``SlackNotifier`` and WebClient
against the fake Slack over HTTP (time is an argument: no clock is waited on). Two
relay rhythms: the relay drains after every step (each step is news: the usual case
under ``serve``), and the relay is behind, draining once after approve and once after
expire (coalescing folds the queued feed updates into one ``chat.update``). Counted
per request, by method; ``conversations.open`` is cached per process, so it is
amortised over the run (``users.info`` stays a column at 0: times are Slack date
tokens, nobody's zone is looked up). The counts are exact, not timed.
"""

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

FEED = "CBENCHFEED"
METHODS = ("chat.postMessage", "chat.update", "views.publish", "conversations.open", "users.info")


def run(requests: int, *, feed: bool, behind: bool) -> dict[str, Any]:
    from jitaccess.app.outbox import OutboxRelay
    from jitaccess.app.service import AppSpec
    from jitaccess.domain.policy import ApprovalMode, Policy
    from jitaccess.slack.notifier import SlackNotifier
    from jitaccess.slack.runtime import slack_client
    from jitaccess_sandbox.fake_slack import FakeSlack

    fake = FakeSlack()
    for user in (PUBLISHER, *APPROVERS):
        fake.add_user(user, name=user.lower(), tz="UTC")
    fake.add_channel(FEED, "jit-requests")
    with tempfile.TemporaryDirectory() as tmp, fake:
        db, service, _ = make_service(f"sqlite:///{Path(tmp) / 'jit.db'}")
        t0 = utcnow().replace(microsecond=0)
        service.register_app(
            AppSpec(
                name=APP,
                scope="/subscriptions/s/resourceGroups/mrg-bench",
                publishers=(PUBLISHER,),
                # One role per request: overlapping requests of one person for one role
                # and scope are refused, and a role changes no Slack call.
                roles=tuple(f"Role{i}" for i in range(requests)),
                policy=Policy(
                    mode=ApprovalMode.MANUAL,
                    approvers=APPROVERS,
                    feed_channel=FEED if feed else None,
                ),
            ),
            actor="bench",
            now=t0,
        )
        relay = OutboxRelay(db, SlackNotifier(slack_client("xoxb-bench", fake.base_url), service))
        play_requests(service, relay, requests, t0, behind=behind, remind=False)
        calls = Counter(c.method for c in fake.calls)
        in_feed = Counter(c.method for c in fake.calls if c.args.get("channel") == FEED)
        messages = len(fake.messages_in(FEED))
    return {"calls": calls, "in_feed": in_feed, "feed_messages": messages}


def main() -> None:
    args = parse_args(__doc__ or "")
    requests = 10 if args.quick else 100
    report = Report("feed_calls", quick=args.quick, sizes={"requests": requests})
    rows = []
    for behind in (False, True):
        results = {feed: run(requests, feed=feed, behind=behind) for feed in (False, True)}
        for feed, result in results.items():
            per = {m: result["calls"][m] / requests for m in METHODS}
            total = sum(result["calls"].values()) / requests
            rows.append(
                [
                    f"{'behind' if behind else 'every step'}, feed {'on' if feed else 'off'}",
                    *[per[m] for m in METHODS],
                    total,
                    result["feed_messages"],
                ]
            )
        extra = (
            sum(results[True]["calls"].values()) - sum(results[False]["calls"].values())
        ) / requests
        feed_calls = sum(results[True]["in_feed"].values()) / requests
        report.note(
            f"relay {'behind' if behind else 'draining every step'}: the feed adds "
            f"{extra:.2f} calls per request ({feed_calls:.2f} in the channel), one message "
            f"per request ({results[True]['feed_messages']} for {requests})"
        )
        report.target(
            f"one channel message per request ({'behind' if behind else 'every step'})",
            results[True]["feed_messages"] / requests,
            "= 1",
            results[True]["feed_messages"] == requests,
        )
    report.table(
        f"Slack API calls per request (manual mode, 2 approvers, {requests} requests)",
        ["relay, feed", *METHODS, "total", "feed messages"],
        rows,
    )
    report.save()


if __name__ == "__main__":
    main()
