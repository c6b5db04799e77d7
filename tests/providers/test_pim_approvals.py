"""PimApprovals (PIM for Azure resources, as the approver) through the real SDK, over
HTTPS, against the fake ARM: finding a jitRequest's approval stage and deciding it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fakes.fake_arm import FakeArm, FakeCredential
from fakes.fake_managed_apps import user_token, verify_user_token
from jitaccess.domain.native import (
    ExternalLookupFailed,
    JitRequestState,
    NativeRequest,
    PendingApprovalStage,
    RoleAuthorization,
    SignInLapsed,
)
from jitaccess.providers.managed_apps import ManagedApps
from jitaccess.providers.pim_approvals import NOT_AN_APPROVER, PimApprovals

SUB = "11111111-2222-3333-4444-555555555555"
RG = "rg-consumer"
MRG = f"/subscriptions/{SUB}/resourceGroups/mrg-contoso"
PUBLISHER = "aaaaaaaa-0000-4000-8000-000000000001"
AVA = "bbbbbbbb-0000-4000-8000-000000000002"
GROUP = "cccccccc-0000-4000-8000-000000000003"
BEN = "dddddddd-0000-4000-8000-000000000004"
OUTSIDER = "eeeeeeee-0000-4000-8000-000000000005"
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def arm_server() -> Iterator[FakeArm]:
    with FakeArm() as arm:
        yield arm


@pytest.fixture
def arm(arm_server: FakeArm) -> FakeArm:
    arm_server.reset()
    arm_server.page_size = 100
    arm_server.user_token_verifier = verify_user_token
    arm_server.managed_apps.group_members[GROUP] = {BEN}
    return arm_server


@pytest.fixture
def apps(arm: FakeArm) -> Iterator[ManagedApps]:
    client = ManagedApps(
        FakeCredential(),
        base_url=arm.base_url,
        connection_verify=str(arm.ca_file),
        timeout=5,
        retry_total=0,
        polling_interval=0,
    )
    yield client
    client.close()


@pytest.fixture
def pim(arm: FakeArm) -> PimApprovals:
    return PimApprovals(
        base_url=arm.base_url, connection_verify=str(arm.ca_file), timeout=5, retry_total=0
    )


@pytest.fixture
def request_(arm: FakeArm, apps: ManagedApps) -> NativeRequest:
    """A pending request on a ManualApprove application approved by Ava or the group."""
    app = arm.managed_apps.add_application(
        SUB,
        RG,
        "contoso",
        managed_resource_group="mrg-contoso",
        approval_mode="ManualApprove",
        approvers=[{"id": AVA, "type": "user"}, {"id": GROUP, "type": "group"}],
        authorizations=[{"principalId": PUBLISHER, "roleDefinitionId": CONTRIBUTOR}],
    )
    return apps.create_request(
        user_token(PUBLISHER),
        f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Solutions/jitRequests/r1",
        app.id,
        [RoleAuthorization(PUBLISHER, CONTRIBUTOR)],
        NOW,
        timedelta(hours=1),
    )


def test_approve_moves_the_request(
    pim: PimApprovals, apps: ManagedApps, arm: FakeArm, request_: NativeRequest
) -> None:
    token = user_token(AVA, name="Ava", preferred_username="ava@contoso.example")
    stage = pim.find_stage(token, MRG, request_)
    assert stage is not None
    assert stage.approval_id == arm.managed_apps.request(request_.id).approval_id

    pim.decide(token, stage, True, "deploy fix for INC-42")

    assert apps.get_request(request_.id).state is JitRequestState.APPROVED
    approval = arm.managed_apps.approvals[stage.approval_id.lower()]
    assert approval.review_result == "Approve"
    assert approval.justification == "deploy fix for INC-42"
    assert approval.reviewed_by is not None and approval.reviewed_by["principalId"] == AVA
    # Azure grants the access at the managed resource group, for the window.
    [granted] = arm.at(MRG)
    assert granted.principal_id == PUBLISHER and granted.ends_at == NOW + timedelta(hours=1)
    # Nothing is left to decide.
    assert pim.find_stage(token, MRG, request_) is None
    assert {"2020-10-01", "2021-01-01-preview"} <= arm.api_versions


def test_deny_moves_the_request(
    pim: PimApprovals, apps: ManagedApps, arm: FakeArm, request_: NativeRequest
) -> None:
    token = user_token(AVA)
    stage = pim.find_stage(token, MRG, request_)
    assert stage is not None

    pim.decide(token, stage, False, "not during the freeze")

    assert apps.get_request(request_.id).state is JitRequestState.DENIED
    assert not arm.at(MRG)


def test_a_group_approver_through_the_membership_map(
    pim: PimApprovals, apps: ManagedApps, request_: NativeRequest
) -> None:
    token = user_token(BEN)
    stage = pim.find_stage(token, MRG, request_)
    assert stage is not None
    pim.decide(token, stage, True, "ok")
    assert apps.get_request(request_.id).state is JitRequestState.APPROVED


def test_someone_who_is_not_an_approver(
    pim: PimApprovals, apps: ManagedApps, request_: NativeRequest
) -> None:
    outsider = user_token(OUTSIDER)
    assert pim.find_stage(outsider, MRG, request_) is None
    stage = pim.find_stage(user_token(AVA), MRG, request_)
    assert stage is not None

    with pytest.raises(ExternalLookupFailed) as err:
        pim.decide(outsider, stage, True, "let me in")

    assert NOT_AN_APPROVER in str(err.value)
    assert apps.get_request(request_.id).state is JitRequestState.PENDING


def test_a_request_decided_in_the_portal_has_no_stage_left(
    pim: PimApprovals, arm: FakeArm, request_: NativeRequest
) -> None:
    arm.managed_apps.set_request_state(request_.id, "Approved")
    assert pim.find_stage(user_token(AVA), MRG, request_) is None


def test_a_different_start_or_role_does_not_match(
    pim: PimApprovals, request_: NativeRequest
) -> None:
    later = NativeRequest(
        id=request_.id,
        application_id=request_.application_id,
        state=request_.state,
        authorizations=request_.authorizations,
        starts_at=request_.starts_at + timedelta(minutes=2),
        duration=request_.duration,
    )
    other_role = NativeRequest(
        id=request_.id,
        application_id=request_.application_id,
        state=request_.state,
        authorizations=(RoleAuthorization(PUBLISHER, "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"),),
        starts_at=request_.starts_at,
        duration=request_.duration,
    )
    upper = NativeRequest(
        id=request_.id,
        application_id=request_.application_id,
        state=request_.state,
        authorizations=(
            RoleAuthorization(
                PUBLISHER.upper(),
                f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/"
                + CONTRIBUTOR.upper(),
            ),
        ),
        starts_at=request_.starts_at + timedelta(seconds=30),
        duration=request_.duration,
    )
    token = user_token(AVA)
    assert pim.find_stage(token, MRG, later) is None
    assert pim.find_stage(token, MRG, other_role) is None
    assert pim.find_stage(token, MRG, upper) is not None


def test_a_lapsed_sign_in(pim: PimApprovals, request_: NativeRequest) -> None:
    expired = user_token(AVA, expired=True)
    with pytest.raises(SignInLapsed):
        pim.find_stage(expired, MRG, request_)
    stage = pim.find_stage(user_token(AVA), MRG, request_)
    assert stage is not None
    with pytest.raises(SignInLapsed):
        pim.decide(expired, stage, True, "ok")


def test_deciding_twice_is_refused(pim: PimApprovals, request_: NativeRequest) -> None:
    token = user_token(AVA)
    stage = pim.find_stage(token, MRG, request_)
    assert stage is not None
    pim.decide(token, stage, True, "ok")
    with pytest.raises(ExternalLookupFailed, match="400"):
        pim.decide(user_token(BEN), stage, False, "too late")


MALFORMED = [
    ("/roleAssignmentScheduleRequests", {"value": {"x": 1}}),
    ("/roleAssignmentScheduleRequests", {"value": [{"properties": {"principalId": 5}}]}),
    (
        "/roleAssignmentScheduleRequests",
        {
            "value": [
                {
                    "properties": {
                        "principalId": PUBLISHER,
                        "roleDefinitionId": CONTRIBUTOR,
                        "status": "PendingApproval",
                        "approvalId": "x",
                        "scheduleInfo": {"startDateTime": "yesterday"},
                    }
                }
            ]
        },
    ),
    ("/roleAssignmentApprovals/", {"id": "x", "properties": {}}),
    (
        "/roleAssignmentApprovals/",
        {"properties": {"stages": [{"id": "no-stage-here", "properties": {}}]}},
    ),
    (
        "/roleAssignmentApprovals/",
        {
            "properties": {
                "stages": [
                    {
                        "id": "/providers/Microsoft.Authorization/roleAssignmentApprovals/a/stages/s",
                        "properties": {"assignedToMe": "true", "status": "InProgress"},
                    }
                ]
            }
        },
    ),
]


@pytest.mark.parametrize(("path", "body"), MALFORMED)
def test_a_malformed_answer_while_finding(
    pim: PimApprovals, arm: FakeArm, request_: NativeRequest, path: str, body: Any
) -> None:
    arm.answer_next(body, path=path)
    with pytest.raises(ExternalLookupFailed, match="azure answered|could not be read"):
        pim.find_stage(user_token(AVA), MRG, request_)


@pytest.mark.parametrize(
    "body",
    [
        "Approved",
        {"id": "/x/stages/s", "properties": {"assignedToMe": True, "status": "Completed"}},
        {
            "id": "/x/stages/s",
            "properties": {"assignedToMe": True, "status": "Completed", "reviewResult": "Deny"},
        },
    ],
)
def test_a_malformed_answer_to_a_decision(
    pim: PimApprovals, arm: FakeArm, request_: NativeRequest, body: Any
) -> None:
    stage = pim.find_stage(user_token(AVA), MRG, request_)
    assert stage is not None
    arm.answer_next(body, path="/stages/", method="PATCH")
    with pytest.raises(ExternalLookupFailed):
        pim.decide(user_token(AVA), stage, True, "ok")


def test_an_arm_error_while_deciding(
    pim: PimApprovals, arm: FakeArm, request_: NativeRequest
) -> None:
    arm.fail_next(500, "InternalServerError", "boom", method="PATCH")
    with pytest.raises(ExternalLookupFailed, match="500 InternalServerError"):
        pim.decide(user_token(AVA), PendingApprovalStage("a", "s"), True, "ok")
