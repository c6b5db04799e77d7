"""What the publisher did: the Azure Activity Log summary when access ends, read with
the real azure-mgmt-monitor client from the fake ARM over HTTPS, posted through the
real Bolt app and WebClient to the fake Slack, under frozen time."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time
from sqlalchemy import select

from conftest import ADMIN, APPROVER, APPROVER2, PUBLISHER, START, Cli, flat, utc
from fakes.fake_arm import FakeArm, FakeCredential
from jitaccess.app.activity_reports import ActivityPolicy, ActivityReporter, status_line
from jitaccess.app.audit_log import verify
from jitaccess.app.outbox import Notification, OutboxKind
from jitaccess.app.service import AppSpec
from jitaccess.container import build
from jitaccess.domain.activity import ActivityEvent, canonical_json, summarise
from jitaccess.domain.policy import ApprovalMode, Policy
from jitaccess.providers.azure import AzureProvider
from jitaccess.providers.azure_activity import AzureActivityLog, activity_filter
from jitaccess.settings import Settings
from jitaccess.store.db import Database
from jitaccess.store.models import ActivityReport, AuditEvent, OutboxMessage
from jitaccess_sandbox.fake_slack import FakeSlack
from slack_harness import SlackWorld, texts

SUB = "11111111-2222-3333-4444-555555555555"
SCOPE = f"/subscriptions/{SUB}/resourceGroups/mrg-crm"
OTHER_SCOPE = f"/subscriptions/{SUB}/resourceGroups/mrg-elsewhere"
OID = "aaaaaaaa-0000-0000-0000-000000000001"
SOMEONE_ELSE = "dddddddd-0000-0000-0000-000000000009"
CONFIG = {"principals": {PUBLISHER: {"object_id": OID, "type": "User"}}}
T0 = utc(START)
M = timedelta(minutes=1)
DELAY = timedelta(minutes=15)
STORAGE = "/providers/Microsoft.Storage/storageAccounts/stcrm"
VM = "/providers/Microsoft.Compute/virtualMachines/vm-crm-1"


@pytest.fixture(scope="module")
def arm_server() -> Iterator[FakeArm]:
    with FakeArm() as server:
        yield server


@pytest.fixture
def arm(arm_server: FakeArm) -> FakeArm:
    arm_server.reset()
    arm_server.page_size = 100
    return arm_server


@pytest.fixture
def activity_log(arm: FakeArm) -> Iterator[AzureActivityLog]:
    reader = AzureActivityLog(
        FakeCredential(),
        base_url=arm.base_url,
        connection_verify=str(arm.ca_file),
        timeout=5,
        retry_total=0,
    )
    yield reader
    reader.close()


def make_world(
    fake: FakeSlack, db: Database, arm: FakeArm, reader: AzureActivityLog, **policy: Any
) -> SlackWorld:
    world = SlackWorld(fake, db)
    provider = AzureProvider(
        FakeCredential(),
        base_url=arm.base_url,
        connection_verify=str(arm.ca_file),
        timeout=5,
        retry_total=0,
    )
    world.service.providers.register(provider)
    world.service.sweeper.activity = ActivityReporter(
        db,
        {"azure": lambda: reader},
        policy=ActivityPolicy(delay=DELAY, **policy),
        rng=lambda: 1.0,  # backoff takes its full value: tests know when to tick
    )
    return world


@pytest.fixture
def world(
    fake_slack: FakeSlack, db: Database, arm: FakeArm, activity_log: AzureActivityLog
) -> Iterator[SlackWorld]:
    with freeze_time(START):
        yield make_world(fake_slack, db, arm, activity_log, max_attempts=3)


def register(world: SlackWorld, *, provider: str = "azure") -> None:
    world.service.register_app(
        AppSpec(
            name="crm",
            scope=SCOPE,
            publishers=(PUBLISHER,),
            roles=("Contributor", "Owner"),
            admins=(ADMIN,),
            policy=Policy(mode=ApprovalMode.MANUAL, approvers=(APPROVER, APPROVER2)),
            provider=provider,
            provider_config=CONFIG if provider == "azure" else {},
        ),
        actor="test",
        now=T0,
    )


def granted_request(world: SlackWorld) -> int:
    """Pat asks for Contributor now, Ava approves, the sweep grants it at T0."""
    assert "It is waiting for approval" in world.say(PUBLISHER, "request crm Contributor 2h INC-7")
    [request] = world.service.list_requests(requester=PUBLISHER)[:1]
    world.say(APPROVER, f"approve {request.id} CHG-77 storage keys")
    world.tick()
    assert world.service.get_request(request.id).state == "active"
    return request.id


def summaries_to(world: SlackWorld, user: str) -> list[dict[str, Any]]:
    return [m for m in world.fake.dms_to(user) if "did on crm (request #" in m.get("text", "")]


def audit_actions(world: SlackWorld, request_id: int) -> list[AuditEvent]:
    with world.db.transaction(readonly=True) as session:
        rows = session.execute(
            select(AuditEvent).where(AuditEvent.request_id == request_id).order_by(AuditEvent.seq)
        )
        return list(rows.scalars())


def publisher_did(arm: FakeArm) -> None:
    """Pat's work during the window, someone else's, and Pat's outside the window."""
    arm.add_event(
        SCOPE,
        operation="Microsoft.Storage/storageAccounts/listKeys/action",
        resource=STORAGE,
        at=T0 + 5 * M,
        object_id=OID,
        status="Started",
        operation_id="op-keys-1",
    )
    arm.add_event(
        SCOPE,
        operation="Microsoft.Storage/storageAccounts/listKeys/action",
        resource=STORAGE,
        at=T0 + 6 * M,
        object_id=OID,
        operation_id="op-keys-1",
    )
    arm.add_event(
        SCOPE,
        operation="Microsoft.Storage/storageAccounts/listKeys/action",
        resource=STORAGE,
        at=T0 + 20 * M,
        object_id=OID,
    )
    arm.add_event(
        SCOPE,
        operation="Microsoft.Compute/virtualMachines/restart/action",
        resource=VM,
        at=T0 + 30 * M,
        object_id=OID,
    )
    arm.add_event(
        SCOPE,
        operation="Microsoft.Compute/virtualMachines/delete",
        resource=VM,
        at=T0 + 40 * M,
        object_id=OID,
        status="Failed",
    )
    # Not Pat: the customer's own admin, in the same group and window.
    arm.add_event(
        SCOPE,
        operation="Microsoft.Resources/deployments/write",
        at=T0 + 10 * M,
        object_id=SOMEONE_ELSE,
    )
    # Pat, but before access was granted, after it ended, or in another group.
    arm.add_event(
        SCOPE,
        operation="Microsoft.Storage/storageAccounts/write",
        resource=STORAGE,
        at=T0 - 5 * M,
        object_id=OID,
    )
    arm.add_event(
        SCOPE,
        operation="Microsoft.Storage/storageAccounts/write",
        resource=STORAGE,
        at=T0 + 70 * M,
        object_id=OID,
    )
    arm.add_event(
        OTHER_SCOPE,
        operation="Microsoft.Storage/storageAccounts/write",
        resource=STORAGE,
        at=T0 + 7 * M,
        object_id=OID,
    )


# -- end to end --------------------------------------------------------------------------


def test_after_the_delay_requester_and_approvers_get_what_the_publisher_did(
    world: SlackWorld, arm: FakeArm, cli: Cli, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Release, wait for the log to catch up: everyone concerned reads the same summary."""
    arm.page_size = 2  # the SDK's pager follows nextLink across pages
    register(world)
    rid = granted_request(world)
    publisher_did(arm)
    with freeze_time(T0 + 60 * M):
        world.say(PUBLISHER, f"release {rid}")
        world.tick()
        assert world.service.get_request(rid).state == "revoked"
    with freeze_time(T0 + 60 * M + DELAY - M):
        world.tick()
        assert summaries_to(world, PUBLISHER) == []  # the log lags: not yet
        assert arm.activity_filters == []
    with freeze_time(T0 + 60 * M + DELAY):
        world.tick()

    for person in (PUBLISHER, APPROVER, APPROVER2):
        [summary] = summaries_to(world, person)
        shown = texts(summary)
        assert "4 operations, 1 failed, on 2 resources" in shown, shown
        assert "`Microsoft.Storage/storageAccounts/listKeys/action` × 2" in shown
        assert "`Microsoft.Compute/virtualMachines/restart/action` × 1" in shown
        assert "`storageAccounts/stcrm`" in shown and "`virtualMachines/vm-crm-1`" in shown
        assert "*Failures* (1)" in shown and "`Microsoft.Compute/virtualMachines/delete`" in shown
        for not_pat in ("deployments/write", "storageAccounts/write"):
            assert not_pat not in shown
    assert summaries_to(world, ADMIN) == []
    # One query, for the managed resource group and exactly the window, paged.
    [flt] = arm.activity_filters
    assert "resourceGroupName eq 'mrg-crm'" in flt
    assert "eventTimestamp ge '2026-11-27T10:00:00.000000Z'" in flt
    assert "eventTimestamp le '2026-11-27T11:00:00.000000Z'" in flt
    pages = [p for m, p in arm.requests if m == "GET" and "eventtypes/management/values" in p]
    assert len(pages) > 2
    # Only the properties the summary needs travel ($select), on every page.
    assert all("select=" in page and "claims" in page for page in pages)

    # Audited once, with the summary and its hash; the chain still verifies.
    [entry] = [e for e in audit_actions(world, rid) if e.action == "activity_summary"]
    digest = hashlib.sha256(canonical_json(entry.details["summary"]).encode()).hexdigest()
    assert entry.details["sha256"] == digest
    assert entry.details["summary"]["operations_total"] == 4
    assert digest[:12] in texts(summaries_to(world, APPROVER)[0])
    assert verify(world.db).problems == []
    monkeypatch.setenv("JITACCESS_DATABASE_URL", sqlite_url)
    assert "Head:" in cli("audit", "verify").stdout
    exported = [json.loads(line) for line in cli("audit", "export").stdout.splitlines()]
    [line] = [e for e in exported if e["action"] == "activity_summary"]
    assert line["details"]["sha256"] == digest and line["request_id"] == rid
    assert f"sha256 {digest}" in flat(cli("requests", "show", rid).stdout)

    # A redelivery (the relay crashed after Slack accepted it) posts nothing new.
    with world.db.transaction(readonly=True) as session:
        sent = session.execute(
            select(OutboxMessage).where(
                OutboxMessage.kind == OutboxKind.ACTIVITY_SUMMARY.value,
                OutboxMessage.recipient == APPROVER,
            )
        ).scalar_one()
        again = Notification(
            sent.id, sent.dedup_key, sent.kind, sent.recipient, sent.request_id, sent.payload, 1
        )
    world.runtime.notifier.deliver(again, T0 + 2 * 60 * M)
    assert len(summaries_to(world, APPROVER)) == 1

    # At most once: later sweeps read nothing and post nothing more.
    with freeze_time(T0 + 5 * 60 * M):
        world.tick()
    assert len(arm.activity_filters) == 1
    assert len(summaries_to(world, PUBLISHER)) == 1


def test_a_window_that_expires_gets_a_summary_even_when_nothing_was_done(
    world: SlackWorld, arm: FakeArm
) -> None:
    """An expired grant with no activity says so, rather than staying silent."""
    register(world)
    rid = granted_request(world)
    with freeze_time(T0 + 2 * 60 * M):
        world.tick()
        assert world.service.get_request(rid).state == "expired"
    with freeze_time(T0 + 2 * 60 * M + DELAY):
        world.tick()
    [summary] = summaries_to(world, APPROVER)
    assert "0 operations, 0 failed, on 0 resources" in texts(summary)
    assert "No operations by them" in texts(summary)


def test_an_arm_error_is_retried_with_backoff_then_the_summary_is_posted(
    world: SlackWorld, arm: FakeArm
) -> None:
    """A 503 from the Activity Log is audited, retried after the backoff, then posted."""
    register(world)
    rid = granted_request(world)
    publisher_did(arm)
    with freeze_time(T0 + 60 * M):
        world.say(APPROVER, f"revoke {rid} done with the incident")
        world.tick()
    arm.fail_next(503, "ServiceUnavailable", "try later", method="GET")
    with freeze_time(T0 + 60 * M + DELAY):
        world.tick()
        assert summaries_to(world, PUBLISHER) == []
        [failed] = [e for e in audit_actions(world, rid) if e.action == "activity_read_failed"]
        assert "503" in (failed.reason or "") and failed.details["attempt"] == 1
        assert status_line(world.db, rid) == (
            "due 2026-11-27 11:16 UTC (attempt 2; last error: " + (failed.reason or "") + ")"
        )
    with freeze_time(T0 + 60 * M + DELAY + M):  # base backoff 1 minute
        world.tick()
    assert len(summaries_to(world, PUBLISHER)) == 1
    assert "4 operations" in texts(summaries_to(world, APPROVER2)[0])


def test_after_the_last_attempt_the_failure_is_audited_and_nothing_is_posted(
    world: SlackWorld, arm: FakeArm
) -> None:
    """A log jitaccess may not read is given up after N attempts, saying what to fix."""
    register(world)
    rid = granted_request(world)
    with freeze_time(T0 + 60 * M):
        world.say(PUBLISHER, f"release {rid}")
        world.tick()
    arm.fail_next(403, "AuthorizationFailed", "no read", method="GET", times=10)
    at = T0 + 60 * M + DELAY
    for _ in range(3):
        with freeze_time(at):
            world.tick()
        at += timedelta(hours=1)
    actions = [e.action for e in audit_actions(world, rid)]
    assert actions.count("activity_read_failed") == 2
    [gave_up] = [e for e in audit_actions(world, rid) if e.action == "activity_summary_failed"]
    assert "after 3 attempts" in (gave_up.reason or "")
    assert "Reader or Monitoring Reader" in (gave_up.reason or "")
    assert (status_line(world.db, rid) or "").startswith("given up after 3 attempts: ")
    assert summaries_to(world, PUBLISHER) == [] and summaries_to(world, APPROVER) == []
    with freeze_time(at + timedelta(days=1)):
        world.tick()
    assert [e.action for e in audit_actions(world, rid)] == actions  # nothing more


def test_an_app_not_on_azure_gets_no_summary(world: SlackWorld, arm: FakeArm) -> None:
    """The log provider has no activity log: access ends as before, with nothing owed."""
    register(world, provider="log")
    rid = granted_request(world)
    with freeze_time(T0 + 60 * M):
        world.say(PUBLISHER, f"release {rid}")
        world.tick()
    with freeze_time(T0 + 3 * 60 * M):
        world.tick()
    assert world.service.get_request(rid).state == "revoked"
    assert summaries_to(world, PUBLISHER) == []
    assert arm.activity_filters == [] and status_line(world.db, rid) is None
    with world.db.transaction(readonly=True) as session:
        assert session.execute(select(ActivityReport)).first() is None
        kinds = session.execute(select(OutboxMessage.kind)).scalars().all()
        assert OutboxKind.ACTIVITY_SUMMARY.value not in kinds


def test_a_request_cancelled_before_access_gets_no_summary(world: SlackWorld, arm: FakeArm) -> None:
    """Nothing was granted, so there is nothing the publisher could have done."""
    register(world)
    world.say(PUBLISHER, "request crm Contributor 2h INC-7")
    [request] = world.service.list_requests(requester=PUBLISHER)[:1]
    world.say(PUBLISHER, f"cancel {request.id}")
    with freeze_time(T0 + 3 * 60 * M):
        world.tick()
    assert world.service.get_request(request.id).state == "cancelled"
    assert summaries_to(world, APPROVER) == [] and arm.activity_filters == []


# -- the summary itself (pure) --------------------------------------------------------


def event(minute: int, operation: str, status: str = "Succeeded", **kw: Any) -> ActivityEvent:
    return ActivityEvent(
        at=T0 + minute * M,
        operation=operation,
        resource_id=kw.pop("resource", SCOPE + STORAGE),
        status=status,
        **kw,
    )


def test_summary_counts_each_operation_once_with_its_final_status() -> None:
    """Started then Failed is one failed operation, not two operations."""
    summary = summarise(
        [
            event(1, "vm/delete", "Started", operation_id="x"),
            event(2, "vm/delete", "Failed", operation_id="x"),
            event(3, "keys/list"),
        ],
        T0,
        T0 + 60 * M,
    )
    assert summary.operations_total == 2
    assert summary.failures_total == 1 and summary.failures[0].operation == "vm/delete"


def test_a_long_window_is_truncated_but_every_total_stays_true() -> None:
    """Hundreds of operations: the lists are capped, the totals are not."""
    events = [
        event(
            i % 50,
            f"op/{i % 30}",
            "Failed" if i % 7 == 0 else "Succeeded",
            resource=f"{SCOPE}/providers/P/things/t{i}",
        )
        for i in range(300)
    ]
    summary = summarise(events, T0, T0 + 60 * M)
    assert summary.operations_total == 300
    assert len(summary.operations) == 10 and summary.resources_total == 300
    assert len(summary.resources) == 10 and len(summary.failures) == 5
    assert summary.failures_total == len([i for i in range(300) if i % 7 == 0])


def test_the_hash_is_stable_whatever_order_the_log_returned() -> None:
    """The audited sha256 depends on what happened, not on how Azure paged it."""
    events = [event(i, f"op/{i % 3}") for i in range(10)]
    one = summarise(events, T0, T0 + 60 * M)
    two = summarise(list(reversed(events)), T0, T0 + 60 * M)
    assert one.sha256() == two.sha256()
    assert json.loads(one.canonical_json())["operations_total"] == 10


def test_reading_the_log_for_a_window_of_no_interest_is_an_empty_list(
    activity_log: AzureActivityLog, arm: FakeArm
) -> None:
    """A principal that did nothing in the group gets no events, only others did."""
    arm.add_event(SCOPE, operation="x/write", at=T0 + M, object_id=SOMEONE_ELSE)
    events = activity_log.read(SCOPE, PUBLISHER, CONFIG, T0, T0 + 60 * M)
    assert events == []
    # The principal matched by caller (a service principal's object id) counts too.
    arm.add_event(SCOPE, operation="x/write", at=T0 + 2 * M, object_id=None, caller=OID)
    [only] = activity_log.read(SCOPE, PUBLISHER, CONFIG, T0, T0 + 60 * M)
    assert only.operation == "x/write" and only.at == T0 + 2 * M


# -- replicas and wiring ---------------------------------------------------------------


def test_two_sweepers_on_postgresql_post_each_summary_once(
    pg_url: str, fake_slack: FakeSlack, arm: FakeArm, activity_log: AzureActivityLog
) -> None:
    """Two replicas sweeping at the same instant: one reads the log, one summary is sent."""
    db = Database(pg_url)
    db.upgrade()
    try:
        with freeze_time(START):
            world = make_world(fake_slack, db, arm, activity_log)
            register(world)
            rid = granted_request(world)
        publisher_did(arm)
        with freeze_time(T0 + 60 * M):
            world.say(PUBLISHER, f"release {rid}")
            world.tick()
        first = world.service.sweeper.activity
        assert first is not None
        second = ActivityReporter(
            db, {"azure": lambda: activity_log}, policy=first.policy, worker_id="replica-2"
        )
        with freeze_time(T0 + 60 * M + DELAY):
            due = T0 + 60 * M + DELAY
            with ThreadPoolExecutor(max_workers=2) as pool:
                runs = list(pool.map(lambda reporter: reporter.run(due), [first, second]))
            world.deliver()
        assert sum(run.posted for run in runs) == 1
        assert len(arm.activity_filters) == 1
        for person in (PUBLISHER, APPROVER, APPROVER2):
            assert len(summaries_to(world, person)) == 1
        actions = [e.action for e in audit_actions(world, rid)]
        assert actions.count("activity_summary") == 1
        assert verify(db).problems == []
    finally:
        db.dispose()


def test_serve_and_the_cli_summarise_azure_apps_unless_turned_off(tmp_path: Path) -> None:
    """The composition root gives the sweep an Azure activity log; 0 attempts turns it off."""
    url = f"sqlite:///{tmp_path / 'j.db'}"
    on = build(Settings(_env_file=None, JITACCESS_DATABASE_URL=url))  # type: ignore[call-arg]
    off = build(
        Settings(
            _env_file=None,  # type: ignore[call-arg]
            JITACCESS_DATABASE_URL=url,
            JITACCESS_ACTIVITY_SUMMARY_DELAY_MINUTES=5,
            JITACCESS_ACTIVITY_SUMMARY_MAX_ATTEMPTS=0,
        )
    )
    try:
        reporter = on.service.sweeper.activity
        assert reporter is not None and set(reporter.logs) == {"azure"}
        assert reporter.policy.delay == DELAY
        disabled = off.service.sweeper.activity
        assert disabled is not None and dict(disabled.logs) == {}
        assert disabled.policy.delay == timedelta(minutes=5)
    finally:
        on.close()
        off.close()


def test_a_scope_below_a_resource_group_is_read_by_its_group_and_kept_to_the_scope(
    activity_log: AzureActivityLog, arm: FakeArm
) -> None:
    """An application scoped to one resource counts only what was done to that resource."""
    storage = SCOPE + STORAGE
    arm.add_event(SCOPE, operation="s/write", resource=STORAGE, at=T0 + M, object_id=OID)
    arm.add_event(SCOPE, operation="vm/write", resource=VM, at=T0 + M, object_id=OID)
    [only] = activity_log.read(storage, PUBLISHER, CONFIG, T0, T0 + 60 * M)
    assert only.operation == "s/write"
    assert activity_filter(storage, T0, T0 + M).endswith("resourceGroupName eq 'mrg-crm'")
    whole = f"/subscriptions/{SUB}"
    assert activity_filter(whole, T0, T0 + M).endswith("le '2026-11-27T10:01:00.000000Z'")
