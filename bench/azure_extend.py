"""Azure extension: from the approver's decision to the new end on (fake) Azure.

    .venv/bin/python -m bench.azure_extend [--quick]

Runs the sandbox (the real Bolt app, scheduler and relay beside the fake Slack and the
fake ARM, on SQLite) with a 5-second sweep interval, so an end that moves sooner moved
because the decision woke the scheduler, not because of its polling. Each round, on the
sandbox page: Pat requests ``tailspin-azure`` for 1h, Ava approves, it becomes active
(a PIM ``AdminAssign`` through the real azure-mgmt-authorization client), Pat asks for
30 more minutes and Ava opens the extension card's Approve and gives a reason. The
clock starts when that reason is submitted (a correctly signed ``view_submission`` to
Bolt) and stops when the fake ARM's assignment carries the new end (the
``AdminExtend`` landed). Then the sandbox's time moves past the end so Azure removes
the assignment before the next round. Printed, not asserted: a number, not a target.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from bench._common import parse_args, print_latencies, running_sandbox
from jitaccess.slack.blocks import ids
from jitaccess_sandbox import demo
from jitaccess_sandbox.run import Sandbox

T = TypeVar("T")


def call(sandbox: Sandbox, path: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{sandbox.url}/{path}",
        json.dumps(data).encode() if data is not None else None,
        {"Content-Type": "application/json"},
        method="POST" if data is not None else "GET",
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        body: dict[str, Any] = json.loads(response.read())
    if body.get("ok") is False:
        raise SystemExit(f"{path}: {body}")
    return body


def wait(what: str, predicate: Callable[[], T | None], timeout: float = 30.0) -> T:
    deadline = time.perf_counter() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.perf_counter() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.002)


def timeline(sandbox: Sandbox, user: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = call(sandbox, f"state?user={user}")["timeline"]
    return items


def held_end(sandbox: Sandbox) -> datetime | None:
    assert sandbox.arm is not None
    held = sandbox.arm.snapshot()["assignments"]
    return datetime.fromisoformat(held[0]["ends_at"]) if held else None


def one_round(sandbox: Sandbox, rid: int) -> float:
    pat, ava = demo.PUBLISHER, demo.APPROVER
    call(sandbox, "command", {"user": pat, "text": "request tailspin-azure Contributor 1h b"})
    wait("the request", lambda: any(f"#{rid}" in i["html"] for i in timeline(sandbox, ava)))
    call(sandbox, "command", {"user": ava, "text": f"approve {rid} CHG-1"})
    first = wait("the PIM assignment", lambda: held_end(sandbox))
    call(sandbox, "command", {"user": pat, "text": f"extend {rid} 30m more"})

    def card() -> dict[str, Any] | None:
        return next(
            (
                i
                for i in timeline(sandbox, ava)
                if f"Extension of request #{rid}" in i["html"]
                and ids.APPROVE_EXTENSION in i["html"]
            ),
            None,
        )

    found = wait("the extension card", card)
    block = re.search(
        rf'data-block-id="([^"]+)" data-action-id="{ids.APPROVE_EXTENSION}"', found["html"]
    )
    assert block is not None
    call(
        sandbox,
        "click",
        {
            "user": ava,
            "source": "message",
            "channel": found["channel"],
            "ts": found["ts"],
            "block_id": block.group(1),
            "action_id": ids.APPROVE_EXTENSION,
            "value": str(rid),
        },
    )

    def decision_modal() -> dict[str, Any] | None:
        modal = call(sandbox, f"state?user={ava}")["modal"]
        if modal and modal["callback_id"] == ids.DECISION_MODAL:
            return dict(modal)
        return None

    modal = wait("the decision modal", decision_modal)
    started = time.perf_counter()
    call(sandbox, "submit", {"user": ava, "view_id": modal["id"], "values": {"reason": "ok"}})
    wait("the new end on Azure", lambda: (end := held_end(sandbox)) is not None and end > first)
    elapsed = time.perf_counter() - started
    call(sandbox, "time", {"user": pat, "minutes": 120})  # past the end: Azure removes it
    wait("Azure to end it", lambda: held_end(sandbox) is None)
    wait(
        "expired",
        lambda: any(
            f"#{rid}" in i["html"] and "expired" in i["html"] for i in timeline(sandbox, pat)
        ),
    )
    return elapsed


def main() -> None:
    args = parse_args(__doc__ or "")
    rounds = 3 if args.quick else 20
    with running_sandbox() as sandbox:
        seconds = [one_round(sandbox, rid) for rid in range(1, rounds + 1)]
    print_latencies("extension approved (reason submitted) → new end on the fake ARM", seconds)


if __name__ == "__main__":
    main()
