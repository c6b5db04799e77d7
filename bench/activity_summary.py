"""What the publisher did: how fast Activity Log events are read and summarised, and
how long the sweep takes from access end to summaries queued.

    .venv/bin/python -m bench.activity_summary [--quick]

(a) The real azure-mgmt-monitor client reads one resource group's log from the fake
ARM over HTTPS (pages of 100, as Azure serves them): 10,000 events in the window,
half by the publisher; events/s for read + filter + summarise, median of 3 rounds.
(b) 20 publishers' Azure grants end at the same instant, each publisher with 50
events in the hour (so each read pages through all 1,000 of the group's events, as
Azure filters by group, not caller), the summary delay set to 0: one ``sweep(now)``
revokes them all on the fake ARM and then reads, audits and queues every summary
(requester and approvers); seconds for that sweep, and summaries/s. The audit chain
is verified afterwards.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench._common import ADMIN, APPROVERS, PUBLISHER, ROOT, Report, parse_args

sys.path.insert(0, str(ROOT / "tests"))

from fakes.fake_arm import FakeArm, FakeCredential

SUB = "11111111-2222-3333-4444-555555555555"
SCOPE = f"/subscriptions/{SUB}/resourceGroups/mrg-crm"
OID = "aaaaaaaa-0000-0000-0000-000000000001"
OTHER = "dddddddd-0000-0000-0000-000000000009"
CONFIG = {"principals": {PUBLISHER: {"object_id": OID, "type": "User"}}}
T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def read_rate(arm: FakeArm, events: int) -> tuple[float, int, int]:
    """(seconds, events read, operations summarised) for one read of the window."""
    from jitaccess.domain.activity import summarise
    from jitaccess.providers.azure_activity import AzureActivityLog

    reader = AzureActivityLog(
        FakeCredential(), base_url=arm.base_url, connection_verify=str(arm.ca_file)
    )
    started = time.perf_counter()
    mine = reader.read(SCOPE, PUBLISHER, CONFIG, T0, T0 + timedelta(hours=8))
    summary = summarise(mine, T0, T0 + timedelta(hours=8))
    seconds = time.perf_counter() - started
    reader.close()
    assert summary.operations_total == events // 2, summary.operations_total
    return seconds, len(mine), summary.operations_total


def sweep_to_summaries(arm: FakeArm, requests: int, per_request: int) -> tuple[float, int]:
    """``requests`` publishers, each granted the same hour; all end at once."""
    from sqlalchemy import func, select

    from jitaccess.app.activity_reports import ActivityPolicy, ActivityReporter
    from jitaccess.app.audit_log import verify
    from jitaccess.app.deps import build_deps
    from jitaccess.app.service import AppSpec, JitService
    from jitaccess.domain.policy import ApprovalMode, Policy
    from jitaccess.providers.azure import AzureProvider
    from jitaccess.providers.azure_activity import AzureActivityLog
    from jitaccess.providers.base import ProviderRegistry
    from jitaccess.slack.principals import SLACK_PRINCIPALS
    from jitaccess.store.db import Database
    from jitaccess.store.models import ActivityReport

    publishers = [f"UPUB{i:03d}" for i in range(requests)]
    oids = {p: f"aaaaaaaa-0000-0000-0000-{i:012d}" for i, p in enumerate(publishers)}
    # Direct assignments: the run's clock is simulated, and PIM (the fake's, as Azure's)
    # refuses an expiration already past by the real clock. Summaries do not depend on it.
    config = {
        "assignment_mode": "direct",
        "principals": {p: {"object_id": oid, "type": "User"} for p, oid in oids.items()},
    }
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{Path(tmp) / 'bench.db'}")
        db.upgrade()
        providers = ProviderRegistry()
        provider = AzureProvider(
            FakeCredential(), base_url=arm.base_url, connection_verify=str(arm.ca_file)
        )
        providers.register(provider)
        reader = AzureActivityLog(
            FakeCredential(), base_url=arm.base_url, connection_verify=str(arm.ca_file)
        )
        activity = ActivityReporter(
            db, {"azure": lambda: reader}, policy=ActivityPolicy(delay=timedelta(0))
        )
        service = JitService(
            build_deps(db, providers, activity=activity, principals=SLACK_PRINCIPALS)
        )
        service.register_app(
            AppSpec(
                name="crm",
                scope=SCOPE,
                publishers=tuple(publishers),
                admins=(ADMIN,),
                policy=Policy(mode=ApprovalMode.AUTOMATIC, approvers=APPROVERS),
                provider="azure",
                provider_config=config,
            ),
            actor="bench",
            now=T0,
        )
        for publisher in publishers:
            service.submit(
                "crm",
                requester=publisher,
                role="Contributor",
                duration=timedelta(hours=1),
                justification="bench",
                starts_at=T0,
                now=T0,
            )
        service.sweep(T0)
        for publisher in publishers:
            for j in range(per_request):
                arm.add_event(
                    SCOPE,
                    operation=f"Microsoft.Storage/storageAccounts/op{j % 7}/action",
                    resource=f"/providers/Microsoft.Storage/storageAccounts/st{j % 5}",
                    at=T0 + timedelta(minutes=1, seconds=j),
                    object_id=oids[publisher],
                )
        started = time.perf_counter()
        service.sweep(T0 + timedelta(hours=1))
        seconds = time.perf_counter() - started
        assert verify(db).problems == []
        with db.transaction(readonly=True) as session:
            posted = session.execute(
                select(func.count())
                .select_from(ActivityReport)
                .where(ActivityReport.outcome == "posted")
            ).scalar_one()
        reader.close()
        provider.close()
        db.dispose()
        return seconds, int(posted)


def main() -> None:
    args = parse_args(__doc__ or "")
    events = 1_000 if args.quick else 10_000
    requests = 5 if args.quick else 20
    report = Report(
        "activity_summary",
        quick=args.quick,
        sizes={"events": events, "requests": requests, "events_per_request": 50},
    )
    with FakeArm() as arm:
        for i in range(events):
            arm.add_event(
                SCOPE,
                operation=f"Microsoft.Compute/virtualMachines/op{i % 13}/action",
                resource=f"/providers/Microsoft.Compute/virtualMachines/vm{i % 40}",
                at=T0 + timedelta(seconds=i),
                object_id=OID if i % 2 == 0 else OTHER,
            )
        rounds = [read_rate(arm, events) for _ in range(3)]
        seconds = statistics.median(r[0] for r in rounds)
        pages = events // arm.page_size
        report.table(
            "(a) read + summarise one window from the fake ARM (pages of 100)",
            ["events in window", "pages", "publisher's", "median s", "events/s"],
            [[events, pages, rounds[0][1], round(seconds, 3), round(events / seconds)]],
        )
        arm.reset()
        sweep_seconds, posted = sweep_to_summaries(arm, requests, 50)
        if posted != requests:
            raise SystemExit(
                f"only {posted} of {requests} summaries were posted: a bug, not a rate"
            )
        report.table(
            "(b) one sweep: grants ending at once -> revoked -> summaries audited and queued",
            ["requests", "summaries posted", "sweep s", "summaries/s"],
            [[requests, posted, round(sweep_seconds, 3), round(posted / sweep_seconds, 1)]],
        )
    report.save()


if __name__ == "__main__":
    main()
