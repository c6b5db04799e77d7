"""ARM calls per grant, extend and revoke: Azure scheduled (PIM) mode vs direct mode.

    .venv/bin/python -m bench.azure_calls [--quick]

The real ``AzureProvider`` (azure-mgmt-authorization) against the fake ARM over HTTPS
(``jitaccess_sandbox.fake_arm``) with the SDK's retries off; each HTTP request the fake
receives is one ARM call. For each mode, over N grants: grant, the same grant retried
(a crash between grant and commit), extend by an hour, revoke early, and the revoke at
the end after Azure already ended the assignment (scheduled) or as the only removal
(direct); then a tenant without PIM: the first grant (it finds out and falls back) and
the next ones (remembered). In scheduled mode a retried grant, an extend and a revoke
first read who owns the live assignment (two calls). Counts are deterministic; the wall
time per call is the local fake's, shown only to compare the two modes on the same
machine.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench._common import Report, parse_args

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fakes.fake_arm import FakeArm, FakeCredential
from jitaccess.providers.azure import AzureProvider
from jitaccess.providers.base import GrantSpec

SUB = "11111111-2222-3333-4444-555555555555"
SCOPE = f"/subscriptions/{SUB}/resourceGroups/mrg-bench"
NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
H = timedelta(hours=1)


def specs(n: int, mode: str, first: int = 0) -> list[GrantSpec]:
    return [
        GrantSpec(
            request_id=first + i,
            app="bench",
            scope=SCOPE,
            principal=f"U{i}",
            role="Contributor",
            starts_at=NOW,
            ends_at=NOW + 2 * H,
            config={
                "principals": {f"U{i}": {"object_id": f"aaaaaaaa-0000-0000-0000-{i:012d}"}},
                "assignment_mode": mode,
            },
        )
        for i in range(n)
    ]


def step(arm: FakeArm, calls: list[Any]) -> tuple[float, float]:
    """Run ``calls``; (ARM calls per item, milliseconds per item)."""
    before = arm.arm_calls()
    started = time.perf_counter()
    for call in calls:
        call()
    seconds = time.perf_counter() - started
    return (arm.arm_calls() - before) / len(calls), 1000 * seconds / len(calls)


def measure(
    arm: FakeArm, provider: AzureProvider, mode: str, n: int
) -> dict[str, tuple[float, float]]:
    arm.reset()
    arm.clock = lambda: NOW
    grants = specs(n, mode)
    early, late = grants[: n // 2], grants[n // 2 :]
    out = {
        "grant": step(arm, [lambda s=s: provider.grant(s, NOW) for s in grants]),
        "grant, retried": step(arm, [lambda s=s: provider.grant(s, NOW) for s in grants]),
    }
    arm.clock = lambda: NOW + H
    longer = [replace(s, ends_at=NOW + 3 * H) for s in late]
    out["extend"] = step(arm, [lambda s=s: provider.extend(s, NOW + H) for s in longer])
    out["revoke early"] = step(arm, [lambda s=s: provider.revoke(s, NOW + H) for s in early])
    arm.clock = lambda: NOW + 3 * H
    out["revoke at the end"] = step(
        arm, [lambda s=s: provider.revoke(s, NOW + 3 * H) for s in longer]
    )
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__ or "", argv)
    logging.disable(logging.WARNING)  # the fallback's per-grant notices
    n = 20 if args.quick else 200
    report = Report("azure_calls", quick=args.quick, sizes={"grants": n})
    with FakeArm() as arm:
        provider = AzureProvider(
            FakeCredential(),
            base_url=arm.base_url,
            connection_verify=str(arm.ca_file),
            timeout=5,
            retry_total=0,
        )
        scheduled = measure(arm, provider, "scheduled", n)
        direct = measure(arm, provider, "direct", n)
        report.table(
            "ARM calls (and local ms) per operation",
            ["operation", "scheduled calls", "direct calls", "scheduled ms", "direct ms"],
            [
                [op, scheduled[op][0], direct[op][0], scheduled[op][1], direct[op][1]]
                for op in scheduled
            ],
        )
        arm.reset()
        arm.pim_available = False
        grants = specs(n, "scheduled", first=10_000)
        first = step(arm, [lambda: provider.grant(grants[0], NOW)])
        rest = step(arm, [lambda s=s: provider.grant(s, NOW) for s in grants[1:]])
        report.table(
            "Tenant without PIM (scheduled mode)",
            ["grant", "ARM calls", "ms"],
            [["first (finds out, falls back)", *first], ["next ones (remembered)", *rest]],
        )
        provider.close()
    report.target(
        "ARM calls per scheduled grant",
        scheduled["grant"][0],
        "1 (as direct)",
        scheduled["grant"][0] == 1,
    )
    # An extend or revoke first reads who owns the live PIM assignment (the scope's
    # schedules, then the one request behind it): PIM addresses an assignment by
    # principal, role and scope, and another request's must never be moved or removed.
    report.target(
        "ARM calls per scheduled extend (2 ownership reads + AdminExtend)",
        scheduled["extend"][0],
        "3",
        scheduled["extend"][0] == 3,
    )
    report.save()


if __name__ == "__main__":
    main()
