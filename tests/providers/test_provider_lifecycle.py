"""Real backends through the whole lifecycle: the Azure provider against the fake
ARM server, the webhook provider through the CLI, failure policy and reconciliation."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from freezegun import freeze_time
from sqlalchemy import select
from typer.testing import CliRunner

from conftest import ADMIN, APPROVER, PUBLISHER, START, make_service, utc
from fakes.fake_arm import FakeArm, FakeCredential
from fakes.webhook_receiver import WebhookReceiver
from jitaccess.app.reconcile import reconcile
from jitaccess.app.service import AppSpec, JitService, RetryPolicy
from jitaccess.cli import app as cli_app
from jitaccess.domain.policy import ApprovalMode, Policy
from jitaccess.providers.azure import AzureProvider, assignment_name
from jitaccess.providers.registry import build_registry
from jitaccess.settings import Settings
from jitaccess.slack.blocks import cards
from jitaccess.store.db import Database
from jitaccess.store.models import AuditEvent, OutboxMessage

T0 = utc(START)
H = timedelta(hours=1)
SCOPE = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/mrg-crm"
OID = "11111111-2222-3333-4444-555555555555"
#: Plain role assignments (names, DELETEs); scheduled mode: test_provider_azure_scheduled.py
CONFIG = {
    "principals": {PUBLISHER: {"object_id": OID, "type": "User"}},
    "assignment_mode": "direct",
}


@pytest.fixture(scope="module")
def arm_server() -> Iterator[FakeArm]:
    with FakeArm() as server:
        yield server


@pytest.fixture
def arm(arm_server: FakeArm) -> FakeArm:
    arm_server.reset()
    return arm_server


@pytest.fixture
def azure(db: Database, arm: FakeArm) -> Iterator[JitService]:
    service, _ = make_service(
        db, retry=RetryPolicy(base=timedelta(seconds=10), cap=timedelta(minutes=5))
    )
    provider = AzureProvider(
        FakeCredential(),
        base_url=arm.base_url,
        connection_verify=str(arm.ca_file),
        timeout=5,
        retry_total=0,
    )
    service.providers.register(provider)
    service.register_app(
        AppSpec(
            name="crm",
            scope=SCOPE,
            publishers=(PUBLISHER,),
            roles=("Contributor", "Owner"),
            admins=(ADMIN,),
            policy=Policy(mode=ApprovalMode.AUTOMATIC, approvers=(APPROVER,)),
            provider="azure",
            provider_config=CONFIG,
        ),
        actor="test",
        now=T0,
    )
    yield service
    provider.close()


def submit(
    service: JitService, start: datetime, hours: float = 2, role: str = "Contributor"
) -> int:
    return service.submit(
        "crm",
        requester=PUBLISHER,
        role=role,
        duration=timedelta(hours=hours),
        justification="patch",
        starts_at=start,
        now=T0,
    ).id


def kinds_to(service: JitService, request_id: int, to: str) -> set[tuple[str, str | None]]:
    with service.db.transaction(readonly=True) as s:
        rows = s.execute(select(OutboxMessage).where(OutboxMessage.request_id == request_id))
        return {(m.kind, m.recipient) for m in rows.scalars() if m.payload.get("to") == to}


def test_azure_grant_holds_exactly_one_assignment_while_active_and_none_after(
    azure: JitService, arm: FakeArm
) -> None:
    with freeze_time(T0) as clock:
        rid = submit(azure, T0 + H)
        assert arm.at(SCOPE) == []
        clock.move_to(T0 + H)
        azure.sweep(datetime.now(UTC))
        [assignment] = arm.at(SCOPE)
        assert (assignment.name, assignment.principal_id) == (assignment_name(rid), OID)
        assert assignment.role_definition_id.endswith("b24988ac-6180-42a0-ab88-20f7382dd24c")
        azure.sweep(datetime.now(UTC))  # nothing new: still one
        assert len(arm.at(SCOPE)) == 1
        clock.move_to(T0 + 3 * H)
        azure.sweep(datetime.now(UTC))
        assert arm.at(SCOPE) == []
        assert azure.get_request(rid).state == "expired"


def test_grant_after_a_crash_finds_its_own_assignment(azure: JitService, arm: FakeArm) -> None:
    rid = submit(azure, T0 + H)
    provider = azure.providers.get("azure")
    provider.grant(azure.grant_spec(rid), T0 + H)  # granted, then the process died
    azure.sweep(T0 + H)  # the retry after restart
    assert azure.get_request(rid).state == "active"
    assert [a.name for a in arm.at(SCOPE)] == [assignment_name(rid)]


def test_grant_refused_five_times_fails_visibly_and_tells_everyone(
    azure: JitService,
    arm: FakeArm,
    db: Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    arm.fail_next(
        403, "AuthorizationFailed", "The client does not have authorization", method="PUT", times=10
    )
    rid = submit(azure, T0 + H)
    at = T0 + H
    for _ in range(6):
        azure.sweep(at)
        at += timedelta(minutes=10)
    view = azure.get_request(rid)
    assert view.state == "failed"
    assert "roleAssignments/write" in (view.last_error or "")
    assert kinds_to(azure, rid, "failed") == {
        ("requester_update", PUBLISHER),
        ("approver_card", APPROVER),
    }
    # Visible to a person in the CLI ...
    monkeypatch.setenv("JITACCESS_DATABASE_URL", db.url)
    monkeypatch.chdir(tmp_path)
    shown = CliRunner().invoke(cli_app, ["requests", "show", str(rid)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0
    assert "Backend attempts" in shown.stdout and "roleAssignments/write" in shown.stdout
    # ... and on the Slack card.
    _text, card = cards.approver_card(view)
    assert "roleAssignments/write" in json.dumps(card)


def test_revoke_failing_for_an_hour_stays_active_alerts_and_expires_once_it_works(
    azure: JitService, arm: FakeArm
) -> None:
    rid = submit(azure, T0, hours=1)
    azure.sweep(T0)
    arm.fail_next(500, "InternalServerError", method="DELETE", times=1000)
    at = T0 + H
    while at <= T0 + 2 * H + timedelta(minutes=10):
        azure.sweep(at)
        view = azure.get_request(rid)
        assert view.state == "active", "never marked expired while Azure may still hold it"
        assert view.revoke_failing_since == T0 + H
        at += timedelta(minutes=1)
    assert len(arm.at(SCOPE)) == 1
    alerts = kinds_to(azure, rid, "active")
    assert ("revoke_failing", APPROVER) in alerts and ("revoke_failing", ADMIN) in alerts
    with azure.db.transaction(readonly=True) as s:
        sent = (
            s.execute(
                select(OutboxMessage.available_at).where(
                    OutboxMessage.kind == "revoke_failing", OutboxMessage.recipient == ADMIN
                )
            )
            .scalars()
            .all()
        )
    # at once, then after 15 minutes, then after an hour (each at the first retry past
    # the mark; retries are at most 5 minutes apart): less and less often
    offsets = [t - (T0 + H) for t in sorted(sent)]
    assert len(offsets) == 3 and offsets[0] == timedelta(0)
    assert timedelta(minutes=15) <= offsets[1] < timedelta(minutes=20)
    assert timedelta(hours=1) <= offsets[2] < timedelta(minutes=65)
    arm.reset()  # Azure recovers (the assignment is already gone there)
    azure.sweep(T0 + 2 * H + timedelta(minutes=20))
    view = azure.get_request(rid)
    assert (view.state, view.revoke_failing_since) == ("expired", None)


def test_reconcile_finds_and_fixes_orphans_and_missing_grants(
    azure: JitService, arm: FakeArm
) -> None:
    active = submit(azure, T0)
    azure.sweep(T0)
    ended = submit(azure, T0, hours=1, role="Owner")  # overlapping: another role
    azure.sweep(T0)
    azure.sweep(T0 + H)
    assert azure.get_request(ended).state == "expired"
    # Behind our back: a restored backup re-creates the ended grant; someone deletes the live one.
    arm.add(
        SCOPE,
        assignment_name(ended),
        arm.at(SCOPE)[0].role_definition_id,
        OID,
        description=f"jitaccess request {ended}: restored",
    )
    arm.assignments.pop(assignment_name(active).lower())
    arm.add(SCOPE, "9a9a9a9a-0000-0000-0000-000000000000", "x", OID, description="by hand")

    findings = reconcile(azure, T0 + H, db=azure.db, providers=azure.providers)
    assert {(f.kind, f.request_id, f.fixed) for f in findings} == {
        ("orphan", ended, False),
        ("missing", active, False),
    }
    fixed = reconcile(azure, T0 + H, db=azure.db, providers=azure.providers, fix=True)
    assert all(f.fixed for f in fixed)
    names = {a.name for a in arm.at(SCOPE)}
    assert names == {assignment_name(active), "9a9a9a9a-0000-0000-0000-000000000000"}
    assert reconcile(azure, T0 + H, db=azure.db, providers=azure.providers) == []
    with azure.db.transaction(readonly=True) as s:
        audited = (
            s.execute(select(AuditEvent.action).where(AuditEvent.action.like("reconcile_%")))
            .scalars()
            .all()
        )
    assert sorted(audited) == ["reconcile_missing"] * 2 + ["reconcile_orphan"] * 2


def test_webhook_provider_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "whsec-test-0123456789"
    monkeypatch.setenv("JITACCESS_DATABASE_URL", f"sqlite:///{tmp_path}/j.db")
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    with WebhookReceiver(secret) as receiver, freeze_time(T0):
        # the receiver checks timestamps against our frozen clock
        receiver.clock = lambda: T0.timestamp()
        config = json.dumps({"url": receiver.url, "secret": secret, "timeout_seconds": 2})
        registered = runner.invoke(
            cli_app,
            [
                "apps",
                "register",
                "ops",
                "--scope",
                SCOPE,
                "--publisher",
                PUBLISHER,
                "--provider",
                "webhook",
                "--provider-config",
                config,
            ],
        )
        assert registered.exit_code == 0, registered.output
        submitted = runner.invoke(
            cli_app,
            [
                "requests",
                "submit",
                "ops",
                "--as",
                PUBLISHER,
                "--role",
                "Contributor",
                "--duration",
                "1h",
                "--reason",
                "deploy",
                "--json",
            ],
        )
        assert json.loads(submitted.stdout)["state"] == "active"
        released = runner.invoke(cli_app, ["requests", "release", "1", "--as", PUBLISHER])
        assert released.exit_code == 0 and "revoked" in released.stdout
    standing = [c.body for c in receiver.calls if c.body["standing"]]
    jit = [c.body for c in receiver.calls if not c.body["standing"]]
    # registration granted the publisher standing Reader; the request came and went
    assert [(b["action"], b["role"], b["principal"]) for b in standing] == [
        ("grant", "Reader", PUBLISHER)
    ]
    assert [(b["action"], b["role"]) for b in jit] == [
        ("grant", "Contributor"),
        ("revoke", "Contributor"),
    ]
    assert receiver.rejected == []


def test_unknown_provider_is_refused_with_the_known_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JITACCESS_DATABASE_URL", f"sqlite:///{tmp_path}/j.db")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        cli_app,
        [
            "apps",
            "register",
            "x",
            "--scope",
            SCOPE,
            "--publisher",
            PUBLISHER,
            "--provider",
            "vault",
        ],
    )
    assert result.exit_code == 1
    assert "no access provider named 'vault'" in result.stderr
    assert "azure" in result.stderr and "webhook" in result.stderr


def test_third_party_provider_plugs_in_through_an_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db: Database
) -> None:
    package = tmp_path / "jit_vault_plugin.py"
    package.write_text(
        textwrap.dedent("""
        class VaultProvider:
            name = "vault"
            def __init__(self, settings):
                self.settings = settings
                self.calls = []
            def grant(self, spec, now):
                self.calls.append(("grant", spec.request_id))
            def revoke(self, spec, now):
                self.calls.append(("revoke", spec.request_id))
    """)
    )
    dist = tmp_path / "jit_vault_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: jit-vault-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[jitaccess.providers]\nvault = jit_vault_plugin:VaultProvider\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = build_registry(Settings(), db)
    assert {"log", "azure", "webhook", "vault"} <= set(registry.names())
    monkeypatch.delitem(sys.modules, "jit_vault_plugin", raising=False)
