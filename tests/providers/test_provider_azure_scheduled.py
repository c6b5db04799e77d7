"""Azure scheduled mode: grants through PIM role assignment schedule requests, so Azure
itself ends them. The real azure-mgmt-authorization client against the fake ARM over
HTTPS; the fake's clock decides when Azure removes an assignment."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from conftest import ADMIN, APPROVER, PUBLISHER, make_service
from fakes.fake_arm import FakeArm, FakeCredential
from jitaccess.app.reconcile import reconcile
from jitaccess.app.service import AppSpec, JitService, RetryPolicy
from jitaccess.domain.policy import ApprovalMode, Policy
from jitaccess.providers.azure import (
    ASSIGNMENT_NAMESPACE,
    PIM_FALLBACK_TTL,
    AzureProvider,
    assignment_name,
    schedule_request_name,
)
from jitaccess.providers.base import GrantSpec, ProviderError
from jitaccess.store.db import Database
from jitaccess.store.models import AuditEvent

SUB = "11111111-2222-3333-4444-555555555555"
SCOPE = f"/subscriptions/{SUB}/resourceGroups/mrg-contoso-app"
USER_OID = "aaaaaaaa-0000-0000-0000-000000000001"
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
H = timedelta(hours=1)
M = timedelta(minutes=1)
CONFIG: dict[str, Any] = {"principals": {"UPUB1": {"object_id": USER_OID, "type": "User"}}}
SCHEDULE_REQUESTS = "/providers/Microsoft.Authorization/roleAssignmentScheduleRequests/"


def spec(
    request_id: int = 42,
    *,
    role: str = "Contributor",
    config: dict[str, Any] | None = None,
    **kw: Any,
) -> GrantSpec:
    return GrantSpec(
        request_id=request_id,
        app="contoso-app",
        scope=SCOPE,
        principal="UPUB1",
        role=role,
        starts_at=NOW,
        ends_at=NOW + 2 * H,
        config=CONFIG if config is None else config,
        **kw,
    )


def pim_calls(arm: FakeArm) -> list[tuple[str, str]]:
    return [(m, p) for m, p in arm.requests if "roleAssignmentSchedule" in p]


@pytest.fixture(scope="module")
def arm_server() -> Iterator[FakeArm]:
    with FakeArm() as arm:
        yield arm


@pytest.fixture
def arm(arm_server: FakeArm) -> FakeArm:
    arm_server.reset()
    arm_server.clock = lambda: NOW
    return arm_server


def at(arm: FakeArm, when: datetime) -> None:
    """Move the fake Azure's clock (what PIM's expiry runs on)."""
    arm.clock = lambda: when


@pytest.fixture
def provider(arm: FakeArm) -> Iterator[AzureProvider]:
    p = AzureProvider(
        FakeCredential(),
        base_url=arm.base_url,
        connection_verify=str(arm.ca_file),
        timeout=5,
        retry_total=0,
    )
    yield p
    p.close()


# -- grant -----------------------------------------------------------------------------


def test_scheduled_grant_is_an_admin_assign_that_carries_the_end(
    provider: AzureProvider, arm: FakeArm
) -> None:
    """The grant is a PIM AdminAssign whose assignment ends at the request's end."""
    provider.grant(spec(), NOW)

    [assignment] = arm.at(SCOPE)
    assert (assignment.principal_id, assignment.ends_at) == (USER_OID, NOW + 2 * H)
    assert assignment.role_definition_id.endswith(CONTRIBUTOR)
    name = schedule_request_name(spec(), "AdminAssign")
    assert name == str(
        uuid.uuid5(
            ASSIGNMENT_NAMESPACE,
            f"jitaccess:request:42:AdminAssign:{NOW + 2 * H:%Y-%m-%dT%H:%M:%S+00:00}",
        )
    )
    props = arm.schedule_requests[name]["properties"]
    assert props["requestType"] == "AdminAssign"
    assert props["scheduleInfo"]["expiration"]["type"] == "AfterDateTime"
    assert props["justification"].startswith("jitaccess request 42: Contributor")
    assert pim_calls(arm) == [("PUT", f"{SCOPE}{SCHEDULE_REQUESTS}{name}?api-version=2020-10-01")]


def test_azure_removes_it_at_the_end_without_jitaccess(
    provider: AzureProvider, arm: FakeArm
) -> None:
    """With jitaccess down after the grant, the access still ends at ends_at."""
    provider.grant(spec(), NOW)
    calls = arm.arm_calls()
    at(arm, NOW + 2 * H - timedelta(seconds=1))
    assert len(arm.at(SCOPE)) == 1
    at(arm, NOW + 2 * H)
    assert arm.at(SCOPE) == []
    assert arm.arm_calls() == calls  # nobody asked: Azure did it


def test_granting_twice_is_one_assignment(provider: AzureProvider, arm: FakeArm) -> None:
    """A grant retried after a crash finds the assignment there and succeeds."""
    provider.grant(spec(), NOW)
    provider.grant(spec(), NOW)  # Azure answers RoleAssignmentExists
    assert len(arm.at(SCOPE)) == 1
    assert list(arm.schedule_requests) == [schedule_request_name(spec(), "AdminAssign")]


def test_standing_access_stays_a_plain_assignment(provider: AzureProvider, arm: FakeArm) -> None:
    """Standing access has no end, so it is never a schedule that Azure would end."""
    provider.grant(spec(7, standing=True), NOW)
    [assignment] = arm.at(SCOPE)
    assert (assignment.name, assignment.ends_at) == (assignment_name(7, standing=True), None)
    assert pim_calls(arm) == []


def test_bad_assignment_mode_says_what_to_change(provider: AzureProvider, arm: FakeArm) -> None:
    """A misspelt mode is refused with the two values to choose from; nothing is sent."""
    with pytest.raises(ProviderError, match="use scheduled .* or direct"):
        provider.grant(spec(config={**CONFIG, "assignment_mode": "pim"}), NOW)
    assert arm.requests == []


def test_403_names_the_pim_permission_and_the_role_to_give(
    provider: AzureProvider, arm: FakeArm
) -> None:
    """Without the right to send schedule requests, the error says what to assign."""
    arm.fail_next(403, "AuthorizationFailed", "no roleAssignmentScheduleRequests/write")
    with pytest.raises(ProviderError) as err:
        provider.grant(spec(), NOW)
    text = str(err.value)
    assert "Microsoft.Authorization/roleAssignmentScheduleRequests/write" in text
    assert "User Access Administrator" in text and "assignment_mode: direct" in text
    assert arm.at(SCOPE) == []


# -- revoke ------------------------------------------------------------------------------


def test_early_revoke_sends_admin_remove(provider: AzureProvider, arm: FakeArm) -> None:
    """Ending early ("I'm done", a revoke) removes the scheduled assignment at once."""
    provider.grant(spec(), NOW)
    at(arm, NOW + 30 * timedelta(minutes=1))
    provider.revoke(spec(), NOW + 30 * timedelta(minutes=1))
    assert arm.at(SCOPE) == []
    removal = arm.schedule_requests[schedule_request_name(spec(), "AdminRemove")]
    assert removal["properties"]["requestType"] == "AdminRemove"
    provider.revoke(spec(), NOW + H)  # again: nothing left to remove, still a success
    assert arm.at(SCOPE) == []


def test_revoke_within_five_minutes_is_retried_not_lost(
    provider: AzureProvider, arm: FakeArm
) -> None:
    """PIM refuses a removal in the first 5 minutes; the error says it will be retried."""
    provider.grant(spec(), NOW)
    at(arm, NOW + timedelta(minutes=1))
    with pytest.raises(ProviderError, match="within 5 minutes.*retrying"):
        provider.revoke(spec(), NOW + timedelta(minutes=1))
    assert len(arm.at(SCOPE)) == 1
    at(arm, NOW + timedelta(minutes=5))
    provider.revoke(spec(), NOW + timedelta(minutes=5))
    assert arm.at(SCOPE) == []


def test_revoke_of_what_azure_already_ended_succeeds(provider: AzureProvider, arm: FakeArm) -> None:
    """jitaccess's own revoke at the end finds Azure was first, and counts it revoked."""
    provider.grant(spec(), NOW)
    at(arm, NOW + 2 * H)
    provider.revoke(spec(), NOW + 2 * H)
    assert arm.at(SCOPE) == []


# -- extend -------------------------------------------------------------------------------


def test_extend_moves_azures_end_on_the_same_assignment(
    provider: AzureProvider, arm: FakeArm
) -> None:
    """An extension moves the end in Azure without a gap: same assignment, later end."""
    provider.grant(spec(), NOW)
    [before] = arm.at(SCOPE)
    longer = replace(spec(), ends_at=NOW + 3 * H)
    at(arm, NOW + H)
    provider.extend(longer, NOW + H)
    provider.extend(longer, NOW + H)  # retried: the same request, the same end
    [after] = arm.at(SCOPE)
    assert (after.name, after.ends_at) == (before.name, NOW + 3 * H)
    extension = arm.schedule_requests[schedule_request_name(longer, "AdminExtend")]
    assert extension["properties"]["requestType"] == "AdminExtend"
    at(arm, NOW + 2 * H)  # the old end: still held
    assert len(arm.at(SCOPE)) == 1
    at(arm, NOW + 3 * H)  # the new end: Azure removes it
    assert arm.at(SCOPE) == []


def test_extend_after_azure_ended_it_assigns_again(provider: AzureProvider, arm: FakeArm) -> None:
    """If Azure ended it before the extension arrived, the extension restores access."""
    provider.grant(spec(), NOW)
    at(arm, NOW + 2 * H)
    longer = replace(spec(), ends_at=NOW + 3 * H)
    provider.extend(longer, NOW + 2 * H)
    [assignment] = arm.at(SCOPE)
    assert assignment.ends_at == NOW + 3 * H


def test_extend_of_a_plain_assignment_sends_nothing(provider: AzureProvider, arm: FakeArm) -> None:
    """In direct mode Azure holds no end, so an extension is jitaccess's alone."""
    direct = {**CONFIG, "assignment_mode": "direct"}
    provider.grant(spec(config=direct), NOW)
    calls = arm.arm_calls()
    provider.extend(replace(spec(config=direct), ends_at=NOW + 3 * H), NOW + H)
    assert arm.arm_calls() == calls


# -- a tenant without PIM ------------------------------------------------------------------


def test_without_pim_it_falls_back_to_a_plain_assignment_and_says_so(
    provider: AzureProvider, arm: FakeArm
) -> None:
    """No Entra ID P2: the grant still happens, and people are told who enforces the end."""
    arm.pim_available = False
    provider.grant(spec(42), NOW)
    [assignment] = arm.at(SCOPE)
    assert (assignment.name, assignment.ends_at) == (assignment_name(42), None)
    notice = provider.take_notice(spec(42))
    assert notice is not None
    assert "AadPremiumLicenseRequired" in notice
    assert "enforced by jitaccess only" in notice
    assert "Entra ID P2" in notice and "assignment_mode: direct" in notice
    assert provider.take_notice(spec(42)) is None  # told once

    # The subscription is remembered: the next grants go straight to plain assignments.
    tried = len(pim_calls(arm))
    provider.grant(spec(43, role="Owner"), NOW + timedelta(minutes=1))
    assert len(pim_calls(arm)) == tried
    # A revoke still asks PIM first (a grant made there before must be removed there),
    # then removes the plain assignment.
    provider.revoke(spec(42), NOW + timedelta(minutes=2))
    assert [a.name for a in arm.at(SCOPE)] == [assignment_name(43)]
    assert provider.take_notice(spec(43, role="Owner")) is not None

    # After a while PIM is tried again (a licence may have been bought).
    tried = len(pim_calls(arm))
    arm.pim_available = True
    provider.grant(spec(44), NOW + timedelta(minutes=2) + PIM_FALLBACK_TTL)
    assert len(pim_calls(arm)) == tried + 1
    assert any(a.ends_at == NOW + 2 * H for a in arm.at(SCOPE))
    assert provider.take_notice(spec(44)) is None


def test_a_pim_grant_is_removed_from_pim_even_while_the_tenant_is_remembered_without_it(
    provider: AzureProvider, arm: FakeArm
) -> None:
    """A grant made through PIM, then a "no PIM" answer: its revoke still goes to PIM."""
    provider.grant(spec(41), NOW)
    arm.pim_available = False
    provider.grant(spec(42, role="Owner"), NOW + timedelta(minutes=6))  # falls back
    arm.pim_available = True  # PIM answers again, within the remembered hour
    at(arm, NOW + timedelta(minutes=7))
    provider.revoke(spec(41), NOW + timedelta(minutes=7))
    assert [a.name for a in arm.at(SCOPE)] == [assignment_name(42)]


def test_revoke_finds_a_fallback_assignment_once_pim_is_back(
    provider: AzureProvider, arm: FakeArm
) -> None:
    """A grant made during a fallback is still revoked after PIM is back."""
    arm.pim_available = False
    provider.grant(spec(), NOW)
    arm.pim_available = True
    provider.revoke(spec(), NOW + PIM_FALLBACK_TTL)
    assert arm.at(SCOPE) == []


# -- through the service: sweep, audit, reconcile -------------------------------------------


@pytest.fixture
def service(db: Database, arm: FakeArm, provider: AzureProvider) -> JitService:
    svc, _ = make_service(
        db, retry=RetryPolicy(base=timedelta(seconds=10), cap=timedelta(minutes=5))
    )
    svc.providers.register(provider)
    svc.register_app(
        AppSpec(
            name="crm",
            scope=SCOPE,
            publishers=(PUBLISHER,),
            roles=("Contributor", "Owner"),
            admins=(ADMIN,),
            policy=Policy(mode=ApprovalMode.AUTOMATIC, approvers=(APPROVER,)),
            provider="azure",
            provider_config={"principals": {PUBLISHER: {"object_id": USER_OID, "type": "User"}}},
        ),
        actor="test",
        now=NOW,
    )
    return svc


def submit(service: JitService) -> int:
    return service.submit(
        "crm",
        requester=PUBLISHER,
        role="Contributor",
        duration=2 * H,
        justification="patch",
        starts_at=NOW,
        now=NOW,
    ).id


def test_access_ends_on_time_while_jitaccess_is_down_then_expires_cleanly(
    service: JitService, arm: FakeArm
) -> None:
    """Granted by the sweep; no sweep runs after; Azure ends it; the late sweep expires it."""
    rid = submit(service)
    service.sweep(NOW)
    assert service.get_request(rid).state == "active"
    [assignment] = arm.at(SCOPE)
    assert assignment.ends_at == NOW + 2 * H
    at(arm, NOW + 2 * H)  # jitaccess is down: no sweep at the end
    assert arm.at(SCOPE) == []
    at(arm, NOW + 3 * H)
    service.sweep(NOW + 3 * H)  # back up an hour later
    view = service.get_request(rid)
    assert (view.state, view.last_error) == ("expired", None)


def test_fallback_notice_is_audited_with_the_activation(service: JitService, arm: FakeArm) -> None:
    """Where the tenant lacks PIM the audit log says the end is jitaccess's to enforce."""
    arm.pim_available = False
    rid = submit(service)
    service.sweep(NOW)
    assert service.get_request(rid).state == "active"
    with service.db.transaction(readonly=True) as s:
        [activation] = s.execute(
            select(AuditEvent).where(AuditEvent.request_id == rid, AuditEvent.to_state == "active")
        ).scalars()
        notice = activation.details["backend_notice"]
    assert "enforced by jitaccess only" in notice


def test_reconcile_sees_scheduled_assignments(service: JitService, arm: FakeArm) -> None:
    """Reconciliation finds PIM-made assignments as the request's grant, and their loss."""
    rid = submit(service)
    service.sweep(NOW)
    provider = service.providers.get("azure")
    assert isinstance(provider, AzureProvider)
    [held] = provider.list_grants(SCOPE, {})
    assert (held.request_id, held.principal_id) == (rid, USER_OID)
    assert reconcile(service, NOW + H, db=service.db, providers=service.providers) == []
    arm.assignments.clear()  # someone removed it by hand in the portal
    [finding] = reconcile(service, NOW + H, db=service.db, providers=service.providers)
    assert (finding.kind, finding.request_id) == ("missing", rid)


# -- one PIM assignment per principal, role and scope ------------------------------------


def test_reconcile_fix_removes_a_scheduled_orphan_whose_request_is_gone(
    service: JitService, arm: FakeArm, provider: AzureProvider
) -> None:
    """An orphan with no request row (a restored database) is removed by PIM too."""
    provider.grant(spec(999), NOW)
    at(arm, NOW + H)
    [finding] = reconcile(service, NOW + H, db=service.db, providers=service.providers, fix=True)
    assert finding.kind == "orphan" and finding.error is None, finding
    assert arm.at(SCOPE) == []


def test_a_request_never_relies_on_or_removes_anothers_pim_assignment(
    provider: AzureProvider, arm: FakeArm
) -> None:
    """Two Slack users on one principal: the second waits for the first's assignment to
    go, its revoke leaves the first's in place, and then it is granted its own."""
    config = {"default_principal": {"object_id": USER_OID, "type": "Group"}}
    first = spec(1, config=config)
    second = replace(spec(2, config=config), principal="UOTHER")
    provider.grant(first, NOW)
    with pytest.raises(ProviderError, match="through request 1's assignment"):
        provider.grant(second, NOW)
    at(arm, NOW + 10 * M)
    provider.revoke(second, NOW + 10 * M)  # the second never held one: nothing removed
    assert len(arm.at(SCOPE)) == 1
    provider.extend(replace(second, ends_at=second.ends_at + H), NOW + 10 * M)
    [held] = arm.at(SCOPE)
    assert held.ends_at == first.ends_at  # another request's end is never moved
    provider.revoke(first, NOW + 10 * M)
    assert arm.at(SCOPE) == []
    provider.grant(second, NOW + 10 * M)
    assert len(arm.at(SCOPE)) == 1


def test_a_late_revoke_of_the_first_of_back_to_back_requests_spares_the_second(
    service: JitService, arm: FakeArm
) -> None:
    """The first window's revoke fails and is retried after the second was granted:
    the retry leaves the second request's PIM assignment alone."""
    service.sweeper.provider_concurrency = 1
    first = service.submit(
        "crm",
        requester=PUBLISHER,
        role="Contributor",
        duration=2 * H,
        justification="first",
        starts_at=NOW,
        now=NOW,
    ).id
    service.sweep(NOW)
    second = service.submit(
        "crm",
        requester=PUBLISHER,
        role="Contributor",
        duration=2 * H,
        justification="second",
        starts_at=NOW + 2 * H,
        now=NOW + H,
    ).id
    end = NOW + 2 * H
    at(arm, end)
    arm.fail_next(503, "ServiceUnavailable", method="PUT")  # the first's AdminRemove
    service.sweep(end)
    assert service.get_request(second).state == "active"
    at(arm, end + 6 * M)
    service.sweep(end + 6 * M)  # the first's revoke, retried
    assert service.get_request(first).state == "expired"
    assert service.get_request(second).state == "active"
    assert len(arm.at(SCOPE)) == 1, "the second request's access was removed"
