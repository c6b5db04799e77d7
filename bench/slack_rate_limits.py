"""Many grants ending at once against Slack's rate limits (issue 11).

N approved grants (40 and 300; ``--quick``: 4 and 30), 2 approvers each, whose cards
are in Slack; their windows open and close while the relay is behind, so each approver
card has two queued updates (Active, Expired) and the requester two status messages.
Then the fake Slack (in a thread of this process, its own HTTP server) starts enforcing
Slack's published limits on the wall clock, ``SPEED`` times faster to keep the run
short (chat.update 50 a minute per workspace -> 500; chat.postMessage one a second per
channel -> ten), and the relay drains the backlog.

Measured: the time from the windows' end (the expiry sweep) to the last accepted Slack
call that brought a card to its final state. Baseline: the minimum the limits allow for
what must change, from the number of cards and the limits in the same run: one
``chat.update`` per approver card and per requester card (its state, or its buttons),
at chat.update's interval, or the ``chat.postMessage`` calls in the requester's DM at
one per interval per channel (two per grant: one per step, active and expired; with
one card per request since issue 19 they are the thread replies, counted as the calls
Slack accepted with a ``thread_ts`` when there are any), whichever is longer. Target:
<= 1.1 x that minimum.

The fake Slack is the installed sandbox's (``jitaccess_sandbox.fake_slack``, its own
distribution, ``pip install -e sandbox``): ``PYTHONPATH`` pointing jitaccess at a snapshot
does not change it, so a revision without the rate limiter is measured against the same
limits."""

from __future__ import annotations

import inspect
import json
import tempfile
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench._common import (
    APP,
    APPROVERS,
    PUBLISHER,
    Report,
    make_service,
    parse_args,
    register_app,
    utcnow,
)

SPEED = 10.0
#: How long one revision may take to drain a backlog before it is reported unfinished.
GIVE_UP_AFTER = 180.0


def load_fake() -> Any:
    import jitaccess_sandbox.fake_slack

    return jitaccess_sandbox.fake_slack


def run(grants: int) -> dict[str, Any]:
    from jitaccess.app.outbox import OutboxRelay
    from jitaccess.slack.notifier import SlackNotifier
    from jitaccess.slack.runtime import slack_client

    fake_mod = load_fake()
    fake = fake_mod.FakeSlack()
    for user in (PUBLISHER, *APPROVERS):
        fake.add_user(user, name=user.lower(), tz="UTC")
    with tempfile.TemporaryDirectory() as tmp, fake:
        db, service, _ = make_service(f"sqlite:///{Path(tmp) / 'jit.db'}")
        t0 = utcnow().replace(microsecond=0)
        register_app(service, t0 - timedelta(days=1))
        stopping = threading.Event()
        client = slack_client("xoxb-bench", fake.base_url, stopping=stopping)
        kwargs: dict[str, Any] = {}
        if "pacer" in inspect.signature(SlackNotifier).parameters:
            from jitaccess.slack.pacing import SlackPacer

            kwargs["pacer"] = SlackPacer(speed=SPEED)
        notifier = SlackNotifier(client, service, **kwargs)
        relay = OutboxRelay(db, notifier, stopping=stopping)
        starts, ends = t0 + timedelta(hours=1), t0 + timedelta(hours=2)
        for i in range(grants):
            # Each on its own resource group: one person's requests for a role on one
            # resource group may not overlap, and these are one person's grants.
            register_app(service, t0 - timedelta(days=1), name=f"{APP}-{i}")
            rid = service.submit(
                f"{APP}-{i}",
                requester=PUBLISHER,
                role="Contributor",
                duration=timedelta(hours=1),
                justification=f"OPS-{i}",
                starts_at=starts,
                now=t0,
            ).id
            service.approve(rid, actor=APPROVERS[0], reason=f"CHG-{i}", now=t0)
        while relay.drain(t0).delivered:  # the cards are in Slack (no limits yet)
            pass
        service.sweep(starts)  # the windows open while the relay is behind ...
        limiter = fake_mod.SlackRateLimiter(speed=SPEED)
        fake.set_rate_limits(limiter)
        calls_before = len(fake.calls)
        began = time.monotonic()
        give_up = threading.Timer(GIVE_UP_AFTER, stopping.set)  # interrupts a long drain
        give_up.start()
        service.sweep(ends)  # ... and all end at once
        finished = False
        while not stopping.is_set():
            relay.drain(ends + timedelta(seconds=time.monotonic() - began))
            if relay.undelivered() == 0:
                finished = True
                break
            time.sleep(0.05)  # backoff of failed rows (old relay) is on this clock
        give_up.cancel()
        calls = fake.calls[calls_before:]
        accepted = [c for c in calls if c.status == 200]
        changes = [c for c in accepted if c.method in ("chat.update", "chat.postMessage")]
        last = max((c.at for c in changes), default=began) - began
        final = 0
        for approver in APPROVERS:
            for message in fake.dms_to(approver):
                text = json.dumps(message.get("blocks"))
                if "Access request #" in text and "Expired" in text:
                    final += 1
        dms = Counter(m["text"] for m in fake.dms_to(PUBLISHER))
        update_interval = limiter.interval("chat.update")
        post_interval = limiter.interval("chat.postMessage")
        cards_changed = len(APPROVERS) * grants + grants  # + each requester's card
        dm = fake.dm_channel_for(PUBLISHER)
        replies = sum(
            1
            for c in accepted
            if c.method == "chat.postMessage"
            and c.args.get("thread_ts")
            and c.args.get("channel") in (PUBLISHER, dm)
        )
        # Each step told once in the requester's DM: a thread reply per step (or, before
        # issue 19, a new card per step); never fewer than two per grant.
        requester_posts = max(replies, 2 * grants)
        minimum = max(cards_changed * update_interval, requester_posts * post_interval)
        db.dispose()
        return {
            "grants": grants,
            "finished": finished,
            "seconds": last if finished else float("nan"),
            "minimum": minimum,
            "ratio": last / minimum if finished else float("nan"),
            "approver_cards_final": final,
            "approver_cards": len(APPROVERS) * grants,
            "chat_update_accepted": sum(1 for c in accepted if c.method == "chat.update"),
            "chat_post_accepted": sum(1 for c in accepted if c.method == "chat.postMessage"),
            "thread_replies": replies,
            "conversations_open": sum(1 for c in calls if c.method == "conversations.open"),
            "refused_429": len(calls) - len(accepted),
            "requester_duplicates": sum(n - 1 for n in dms.values() if n > 1),
        }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__ or "", argv)
    sizes = [4, 30] if args.quick else [40, 300]
    report = Report("slack_rate_limits", quick=args.quick, sizes={"grants": sizes, "speed": SPEED})
    report.note(
        f"Slack's limits are run {SPEED:g}x faster (chat.update every {1.2 / SPEED:g} s, "
        f"chat.postMessage every {1 / SPEED:g} s per channel); the ratio to the minimum "
        "is what counts. The SDK's Retry-After jitter (up to 1 s, old relay) is not scaled."
    )
    results = [run(n) for n in sizes]
    report.table(
        "Grants ending at once: windows' end -> last card final (wall clock)",
        [
            "grants",
            "s",
            "minimum s",
            "ratio",
            "approver cards final",
            "chat.update ok",
            "chat.postMessage ok",
            "thread replies",
            "conversations.open",
            "429s",
            "requester dups",
        ],
        [
            [
                r["grants"],
                r["seconds"] if r["finished"] else f"> {GIVE_UP_AFTER:g} (unfinished)",
                r["minimum"],
                r["ratio"],
                f"{r['approver_cards_final']}/{r['approver_cards']}",
                r["chat_update_accepted"],
                r["chat_post_accepted"],
                r["thread_replies"],
                r["conversations_open"],
                r["refused_429"],
                r["requester_duplicates"],
            ]
            for r in results
        ],
    )
    for r in results:
        met = (
            r["finished"]
            and r["ratio"] <= 1.1
            and r["approver_cards_final"] == r["approver_cards"]
            and r["requester_duplicates"] == 0
        )
        report.target(
            f"{r['grants']} grants: last card final / minimum", r["ratio"], "<= 1.1", bool(met)
        )
    report.set("results", results)
    report.save()


if __name__ == "__main__":
    main()
