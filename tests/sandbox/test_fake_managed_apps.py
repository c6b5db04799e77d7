"""The fake ARM's managed applications, jitRequests and PIM approvals, spoken to in plain
HTTPS: the rules the fake itself keeps (tokens, API versions, the long-running PATCH,
tags-only PATCH of a jitRequest, who may decide)."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fakes.fake_arm import TOKEN, FakeArm
from fakes.fake_managed_apps import user_token, verify_user_token

SUB = "11111111-2222-3333-4444-555555555555"
RG = "rg-consumer"
PUBLISHER = "aaaaaaaa-0000-4000-8000-000000000001"
AVA = "bbbbbbbb-0000-4000-8000-000000000002"
OUTSIDER = "eeeeeeee-0000-4000-8000-000000000005"
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
SOLUTIONS = "api-version=2021-07-01"
APPROVALS = "api-version=2021-01-01-preview"
JIT = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Solutions/jitRequests/r1"


@pytest.fixture(scope="module")
def arm_server() -> Iterator[FakeArm]:
    with FakeArm() as arm:
        yield arm


@pytest.fixture
def arm(arm_server: FakeArm) -> FakeArm:
    arm_server.reset()
    arm_server.page_size = 100
    arm_server.user_token_verifier = verify_user_token
    return arm_server


def call(
    arm: FakeArm, method: str, path: str, token: str = TOKEN, body: Any = None
) -> tuple[int, Any, dict[str, str]]:
    context = ssl.create_default_context(cafile=str(arm.ca_file))
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        arm.base_url + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=5) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None, dict(response.headers)
    except urllib.error.HTTPError as err:
        raw = err.read()
        return err.code, json.loads(raw) if raw else None, dict(err.headers)


def add_app(arm: FakeArm, approvers: list[dict[str, str]] | None = None) -> str:
    return arm.managed_apps.add_application(
        SUB,
        RG,
        "contoso",
        managed_resource_group="mrg-contoso",
        approval_mode="ManualApprove",
        approvers=approvers or [{"id": AVA, "type": "user"}],
        authorizations=[{"principalId": PUBLISHER, "roleDefinitionId": CONTRIBUTOR}],
    ).id


def jit_body(app: str) -> dict[str, Any]:
    start = (datetime.now(UTC) + timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    return {
        "properties": {
            "applicationResourceId": app,
            "jitAuthorizationPolicies": [
                {"principalId": PUBLISHER, "roleDefinitionId": CONTRIBUTOR}
            ],
            "jitSchedulingPolicy": {"type": "Once", "duration": "PT1H", "startTime": start},
        }
    }


def test_tokens_and_api_versions(arm: FakeArm) -> None:
    app = add_app(arm)
    status, body, _ = call(arm, "GET", f"{app}?{SOLUTIONS}", token="forged")
    assert status == 401 and body["error"]["code"] == "InvalidAuthenticationToken"
    assert call(arm, "GET", f"{app}?api-version=2019-07-01")[0] == 400
    assert call(arm, "GET", f"{app}?{SOLUTIONS}")[0] == 200
    assert call(arm, "GET", f"{app}?{SOLUTIONS}", token=user_token(AVA))[0] == 200
    arm.user_token_verifier = None
    assert call(arm, "GET", f"{app}?{SOLUTIONS}", token=user_token(AVA))[0] == 401


def test_the_application_patch_is_long_running(arm: FakeArm) -> None:
    app = add_app(arm)
    arm.managed_apps.lro_polls = 2
    policy = {"jitAccessEnabled": True, "jitApprovalMode": "AutoApprove", "jitApprovers": []}

    status, body, headers = call(
        arm, "PATCH", f"{app}?{SOLUTIONS}", body={"properties": {"jitAccessPolicy": policy}}
    )

    assert status == 202
    assert body["properties"]["jitAccessPolicy"]["jitApprovalMode"] == "ManualApprove"
    assert "etag" not in {k.lower() for k in headers} and "etag" not in body
    status_url = headers["Azure-AsyncOperation"].removeprefix(arm.base_url)
    result_url = headers["Location"].removeprefix(arm.base_url)
    assert call(arm, "GET", result_url)[0] == 202
    done, operation, _ = call(arm, "GET", status_url)
    assert done == 200 and operation["status"] == "Succeeded"
    assert call(arm, "GET", result_url)[0] == 204
    assert call(arm, "GET", f"{app}?{SOLUTIONS}")[1]["properties"]["jitAccessPolicy"] == policy


def test_jit_can_be_neither_enabled_nor_disabled_after_deployment(arm: FakeArm) -> None:
    app = add_app(arm)
    status, body, _ = call(
        arm,
        "PATCH",
        f"{app}?{SOLUTIONS}",
        body={"properties": {"jitAccessPolicy": {"jitAccessEnabled": False}}},
    )
    assert status == 400 and body["error"]["code"] == "JitAccessPolicyUpdateNotAllowed"


def test_a_jit_request_is_made_by_a_person_and_only_tagged_after(arm: FakeArm) -> None:
    app = add_app(arm)
    arm.managed_apps.lro_polls = 0
    assert call(arm, "PUT", f"{JIT}?{SOLUTIONS}", body=jit_body(app))[0] == 403
    status, made, _ = call(
        arm, "PUT", f"{JIT}?{SOLUTIONS}", token=user_token(PUBLISHER), body=jit_body(app)
    )
    assert status == 201
    assert made["properties"]["jitRequestState"] == "Pending"
    assert made["properties"]["createdBy"]["oid"] == PUBLISHER

    refused = call(arm, "PATCH", f"{JIT}?{SOLUTIONS}", body={"properties": {}})
    tagged = call(arm, "PATCH", f"{JIT}?{SOLUTIONS}", body={"tags": {"ticket": "INC-42"}})

    assert refused[0] == 400
    assert tagged[0] == 200 and tagged[1]["tags"] == {"ticket": "INC-42"}
    assert tagged[1]["properties"]["updatedBy"]["oid"] != PUBLISHER  # the service's token
    listed = call(
        arm, "GET", f"/subscriptions/{SUB}/providers/Microsoft.Solutions/jitRequests?{SOLUTIONS}"
    )
    assert [r["id"] for r in listed[1]["value"]] == [JIT] and "nextLink" not in listed[1]


def test_only_an_assigned_approver_decides_and_never_their_own(arm: FakeArm) -> None:
    app = add_app(arm, approvers=[{"id": AVA, "type": "user"}, {"id": PUBLISHER, "type": "user"}])
    arm.managed_apps.lro_polls = 0
    call(arm, "PUT", f"{JIT}?{SOLUTIONS}", token=user_token(PUBLISHER), body=jit_body(app))
    listing = "/providers/Microsoft.Authorization/roleAssignmentApprovals"

    mine = call(arm, "GET", f"{listing}?$filter=asApprover()&{APPROVALS}", token=user_token(AVA))
    none = call(
        arm, "GET", f"{listing}?$filter=asApprover()&{APPROVALS}", token=user_token(OUTSIDER)
    )

    [approval] = mine[1]["value"]
    assert none[1]["value"] == []
    [stage] = approval["properties"]["stages"]
    assert stage["properties"]["assignedToMe"] is True
    decision = {"properties": {"reviewResult": "Approve", "justification": "ok"}}
    stage_path = f"{stage['id']}?{APPROVALS}"
    outsider = call(arm, "PUT", stage_path, token=user_token(OUTSIDER), body=decision)
    own = call(arm, "PUT", stage_path, token=user_token(PUBLISHER), body=decision)
    ava = call(arm, "PUT", stage_path, token=user_token(AVA), body=decision)

    assert outsider[0] == 403 and outsider[1]["error"]["code"] == "AuthorizationFailed"
    assert own[0] == 403
    assert ava[0] == 200 and ava[1]["properties"]["reviewResult"] == "Approve"
    assert arm.managed_apps.request(JIT).state == "Approved"


def test_without_p2_there_are_no_approvals(arm: FakeArm) -> None:
    arm.pim_available = False
    status, body, _ = call(
        arm,
        "GET",
        f"/providers/Microsoft.Authorization/roleAssignmentApprovals?{APPROVALS}",
        token=user_token(AVA),
    )
    assert status == 400 and body["error"]["code"] == "AadPremiumLicenseRequired"


def test_snapshot_and_reset(arm: FakeArm) -> None:
    add_app(arm)
    assert [a["name"] for a in arm.snapshot()["managed_apps"]["applications"]] == ["contoso"]
    arm.reset()
    assert arm.snapshot()["managed_apps"]["applications"] == []
    # The existing routes still take only the service token.
    path = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignments?api-version=2022-04-01"
    assert call(arm, "GET", path, token=user_token(AVA))[0] == 401
    assert call(arm, "GET", path)[0] == 200
