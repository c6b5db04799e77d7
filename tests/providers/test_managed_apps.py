"""ManagedApps (Microsoft.Solutions 2021-07-01) through the real SDK, over HTTPS, against
the fake ARM's managed applications."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fakes.fake_arm import FakeArm, FakeCredential
from fakes.fake_managed_apps import user_token, verify_user_token
from jitaccess.domain.native import (
    ApproverKind,
    ExternalLookupFailed,
    JitApprovalMode,
    JitApprover,
    JitRequestState,
    NativePolicy,
    RoleAuthorization,
    SignInLapsed,
    state_for,
)
from jitaccess.providers.managed_apps import ManagedApps
from jitaccess.providers.native_answers import format_iso_duration

SUB = "11111111-2222-3333-4444-555555555555"
RG = "rg-consumer"
MRG = f"/subscriptions/{SUB}/resourceGroups/mrg-contoso"
PUBLISHER = "aaaaaaaa-0000-4000-8000-000000000001"
AVA = "bbbbbbbb-0000-4000-8000-000000000002"
APPROVERS_GROUP = "cccccccc-0000-4000-8000-000000000003"
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
NOW = datetime.now(UTC).replace(microsecond=0)


def app_id(name: str, rg: str = RG) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Solutions/applications/{name}"


def request_id(name: str) -> str:
    return (
        f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Solutions/jitRequests/{name}"
    )


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


@pytest.fixture
def apps(arm: FakeArm) -> Iterator[ManagedApps]:
    client = ManagedApps(
        FakeCredential(),
        base_url=arm.base_url,
        connection_verify=str(arm.ca_file),
        timeout=5,
        retry_total=0,
        polling_interval=0,
        operation_timeout=10,
    )
    yield client
    client.close()


def add_app(arm: FakeArm, name: str = "contoso", *, rg: str = RG, **kwargs: Any) -> str:
    options: dict[str, Any] = {
        "managed_resource_group": "mrg-contoso",
        "approval_mode": "ManualApprove",
        "approvers": [
            {"id": AVA, "type": "user", "displayName": "Ava"},
            {"id": APPROVERS_GROUP, "type": "group", "displayName": "Approvers"},
        ],
        "maximum_duration": "PT4H",
        "authorizations": [{"principalId": PUBLISHER, "roleDefinitionId": CONTRIBUTOR}],
    }
    options.update(kwargs)
    return arm.managed_apps.add_application(SUB, rg, name, **options).id


def create(apps: ManagedApps, app: str, name: str = "req1", **kwargs: Any) -> Any:
    return apps.create_request(
        kwargs.get("token", user_token(PUBLISHER)),
        request_id(name),
        app,
        [RoleAuthorization(PUBLISHER, CONTRIBUTOR)],
        kwargs.get("starts_at", NOW + timedelta(minutes=5)),
        kwargs.get("duration", timedelta(hours=2)),
    )


# -- applications ------------------------------------------------------------------------


def test_get_application_reads_the_policy(apps: ManagedApps, arm: FakeArm) -> None:
    app = apps.get_application(add_app(arm))

    assert app.name == "contoso"
    assert app.managed_resource_group_id == MRG
    assert app.publisher_tenant_id
    assert app.authorizations == (RoleAuthorization(PUBLISHER, CONTRIBUTOR),)
    assert app.policy == NativePolicy(
        enabled=True,
        approval_mode=JitApprovalMode.MANUAL,
        approvers=(
            JitApprover(AVA, ApproverKind.USER, "Ava"),
            JitApprover(APPROVERS_GROUP, ApproverKind.GROUP, "Approvers"),
        ),
        max_duration=timedelta(hours=4),
    )
    assert arm.api_versions == {"2021-07-01"}


def test_an_application_without_jit(apps: ManagedApps, arm: FakeArm) -> None:
    disabled = apps.get_application(add_app(arm, "off", jit_enabled=False))
    bare = apps.get_application(add_app(arm, "bare", with_policy=False))

    assert disabled.policy is not None and disabled.policy.enabled is False
    assert bare.policy is None


def test_list_follows_next_links_and_filters_by_resource_group(
    apps: ManagedApps, arm: FakeArm
) -> None:
    arm.page_size = 2
    for n in range(5):
        add_app(arm, f"app{n}")
    add_app(arm, "elsewhere", rg="rg-other")

    everything = apps.list_applications(SUB)
    in_group = apps.list_applications(SUB, RG)

    assert sorted(a.name for a in everything) == [
        "app0",
        "app1",
        "app2",
        "app3",
        "app4",
        "elsewhere",
    ]
    assert sorted(a.name for a in in_group) == ["app0", "app1", "app2", "app3", "app4"]
    assert sum(1 for m, p in arm.requests if "skipToken" in p) >= 4


def test_write_policy_waits_for_the_long_running_operation(apps: ManagedApps, arm: FakeArm) -> None:
    app = add_app(arm)
    arm.managed_apps.lro_polls = 3
    wanted = NativePolicy(True, JitApprovalMode.AUTO, (), timedelta(hours=2, minutes=30))

    written = apps.write_policy(app, wanted)

    assert written.policy == wanted
    statuses = [p for m, p in arm.requests if "operationStatuses" in p]
    assert len(statuses) == 3
    patches = [p for m, p in arm.requests if m == "PATCH"]
    assert len(patches) == 1 and "api-version=2021-07-01" in patches[0]
    stored = arm.managed_apps.application(app).jit_access_policy
    assert stored == {
        "jitAccessEnabled": True,
        "jitApprovalMode": "AutoApprove",
        "jitApprovers": [],
        "maximumJitAccessDuration": "PT2H30M",
    }


def test_the_change_lands_only_when_the_operation_ends(apps: ManagedApps, arm: FakeArm) -> None:
    """What a reader sees while the PATCH is running is the old policy."""
    app = add_app(arm)
    arm.managed_apps.lro_polls = 2
    seen: list[Any] = []
    real = arm.managed_apps._operation

    def spy(match: Any, query: Any) -> Any:
        seen.append(arm.managed_apps.application(app).jit_access_policy["jitApprovalMode"])
        return real(match, query)

    arm.managed_apps._operation = spy  # type: ignore[method-assign]
    apps.write_policy(app, NativePolicy(True, JitApprovalMode.AUTO, (), timedelta(hours=1)))

    assert seen == ["ManualApprove", "ManualApprove"]
    assert arm.managed_apps.application(app).jit_access_policy["jitApprovalMode"] == "AutoApprove"


def test_write_policy_answered_at_once(apps: ManagedApps, arm: FakeArm) -> None:
    app = add_app(arm)
    arm.managed_apps.lro_polls = 0
    written = apps.write_policy(
        app,
        NativePolicy(
            True, JitApprovalMode.MANUAL, (JitApprover(AVA, ApproverKind.USER),), timedelta(hours=8)
        ),
    )
    assert written.policy is not None and written.policy.approvers[0].id == AVA
    assert not [p for m, p in arm.requests if "operationStatuses" in p]


def test_write_policy_refused_by_azure(apps: ManagedApps, arm: FakeArm) -> None:
    app = add_app(arm, jit_enabled=False)
    with pytest.raises(ExternalLookupFailed) as err:
        apps.write_policy(app, NativePolicy(True, JitApprovalMode.AUTO, (), timedelta(hours=8)))
    assert "JitAccessPolicyUpdateNotAllowed" in str(err.value)
    assert "write the JIT policy" in str(err.value)


def test_write_policy_operation_failed(apps: ManagedApps, arm: FakeArm) -> None:
    app = add_app(arm)
    arm.managed_apps.lro_polls = 2
    arm.managed_apps.fail_operation_next("InternalServerError", "it broke")
    with pytest.raises(ExternalLookupFailed) as err:
        apps.write_policy(app, NativePolicy(True, JitApprovalMode.AUTO, (), timedelta(hours=8)))
    assert "did not succeed: InternalServerError: it broke" in str(err.value)
    assert arm.managed_apps.application(app).jit_access_policy["jitApprovalMode"] == "ManualApprove"


def test_write_policy_gives_up_on_an_operation_that_never_ends(arm: FakeArm) -> None:
    app = add_app(arm)
    arm.managed_apps.lro_polls = 10**6
    client = ManagedApps(
        FakeCredential(),
        base_url=arm.base_url,
        connection_verify=str(arm.ca_file),
        timeout=5,
        retry_total=0,
        polling_interval=0.01,
        operation_timeout=0.3,
    )
    try:
        with pytest.raises(ExternalLookupFailed, match="did not finish within"):
            client.write_policy(
                app, NativePolicy(True, JitApprovalMode.AUTO, (), timedelta(hours=8))
            )
    finally:
        client.close()


def test_iso_durations_round_trip() -> None:
    assert format_iso_duration(timedelta(hours=8)) == "PT8H"
    assert format_iso_duration(timedelta(days=1, minutes=5)) == "P1DT5M"
    assert format_iso_duration(timedelta(days=2)) == "P2D"
    with pytest.raises(ValueError):
        format_iso_duration(timedelta(0))


# -- malformed answers ---------------------------------------------------------------------


MALFORMED = [
    ("list", "/applications", {"value": {"a": 1}}),
    ("list", "/applications", {"value": [{"id": "x", "name": "y", "properties": {}}]}),
    ("list", "/applications", {"value": [], "nextLink": 5}),
    ("get", "/applications/contoso", "a string"),
    (
        "get",
        "/applications/contoso",
        {
            "id": app_id("contoso"),
            "name": "contoso",
            "properties": {
                "managedResourceGroupId": MRG,
                "jitAccessPolicy": {"jitAccessEnabled": "yes"},
            },
        },
    ),
    (
        "get",
        "/applications/contoso",
        {
            "id": app_id("contoso"),
            "name": "contoso",
            "properties": {
                "managedResourceGroupId": MRG,
                "jitAccessPolicy": {"jitAccessEnabled": True, "jitApprovalMode": "NotSpecified"},
            },
        },
    ),
    (
        "get",
        "/applications/contoso",
        {
            "id": app_id("contoso"),
            "name": "contoso",
            "properties": {
                "managedResourceGroupId": MRG,
                "jitAccessPolicy": {
                    "jitAccessEnabled": True,
                    "jitApprovalMode": "AutoApprove",
                    "maximumJitAccessDuration": "8 hours",
                },
            },
        },
    ),
    ("list_requests", "/jitRequests", {"value": None}),
    ("list_requests", "/jitRequests", {"value": [{"id": "x"}]}),
    ("get_request", "/jitRequests/req1", {"id": request_id("req1"), "properties": []}),
]


@pytest.mark.parametrize(("call", "path", "body"), MALFORMED)
def test_a_malformed_answer_is_a_failed_lookup(
    apps: ManagedApps, arm: FakeArm, call: str, path: str, body: Any
) -> None:
    app = add_app(arm)
    if call == "get_request":
        create(apps, app)
    arm.answer_next(body, path=path)
    with pytest.raises(ExternalLookupFailed, match="azure answered|could not be read"):
        if call == "list":
            apps.list_applications(SUB)
        elif call == "get":
            apps.get_application(app)
        elif call == "list_requests":
            apps.list_requests(SUB)
        else:
            apps.get_request(request_id("req1"))


def test_a_malformed_application_after_the_operation(apps: ManagedApps, arm: FakeArm) -> None:
    app = add_app(arm)
    arm.answer_next({"id": app}, path="/applications/contoso", method="GET")
    with pytest.raises(ExternalLookupFailed, match="write the JIT policy"):
        apps.write_policy(app, NativePolicy(True, JitApprovalMode.AUTO, (), timedelta(hours=8)))


def test_a_malformed_created_request(apps: ManagedApps, arm: FakeArm) -> None:
    app = add_app(arm)
    arm.answer_next({"properties": {"jitRequestState": "Pending"}}, path="/jitRequests/req1")
    with pytest.raises(ExternalLookupFailed):
        create(apps, app)


def test_an_arm_error_is_a_failed_lookup(apps: ManagedApps, arm: FakeArm) -> None:
    app = add_app(arm)
    arm.fail_next(503, "ServiceUnavailable", "try later")
    with pytest.raises(ExternalLookupFailed, match="503 ServiceUnavailable"):
        apps.get_application(app)


# -- jitRequests ---------------------------------------------------------------------------


def test_create_a_request_as_the_publisher(apps: ManagedApps, arm: FakeArm) -> None:
    app = add_app(arm)
    arm.managed_apps.lro_polls = 2
    starts = NOW + timedelta(minutes=5)

    request = create(apps, app, starts_at=starts)

    assert request.id == request_id("req1")
    assert request.application_id == app
    assert request.state is JitRequestState.PENDING
    assert request.created_by == PUBLISHER
    assert request.starts_at == starts
    assert request.duration == timedelta(hours=2)
    assert request.authorizations == (RoleAuthorization(PUBLISHER, CONTRIBUTOR),)
    stored = arm.managed_apps.request(request.id)
    assert stored.created_by["oid"] == PUBLISHER
    assert stored.provisioning_state == "Succeeded"
    assert apps.get_request(request.id) == request
    assert [r.id for r in apps.list_requests(SUB)] == [request.id]


def test_an_automatic_application_approves_at_once(apps: ManagedApps, arm: FakeArm) -> None:
    app = add_app(arm, approval_mode="AutoApprove", approvers=[])
    assert create(apps, app).state is JitRequestState.APPROVED


def test_azure_refuses_a_duration_above_the_maximum(apps: ManagedApps, arm: FakeArm) -> None:
    app = add_app(arm)
    with pytest.raises(ExternalLookupFailed, match="JitAccessDurationExceeded"):
        create(apps, app, duration=timedelta(hours=5))


def test_a_rejected_user_token_is_a_lapsed_sign_in(apps: ManagedApps, arm: FakeArm) -> None:
    app = add_app(arm)
    with pytest.raises(SignInLapsed):
        create(apps, app, token=user_token(PUBLISHER, expired=True))
    with pytest.raises(SignInLapsed):
        create(apps, app, token="")
    assert not arm.managed_apps.jit_requests


def test_the_service_identity_cannot_create_a_request(apps: ManagedApps, arm: FakeArm) -> None:
    """The fake refuses jitaccess's own token for a jitRequest (the publisher makes it)."""
    from fakes.fake_arm import TOKEN

    app = add_app(arm)
    with pytest.raises(ExternalLookupFailed, match="403 AuthorizationFailed"):
        create(apps, app, token=TOKEN)


@pytest.mark.parametrize("state", [s.value for s in JitRequestState])
def test_a_request_in_each_state(apps: ManagedApps, arm: FakeArm, state: str) -> None:
    app = add_app(arm)
    made = create(apps, app)
    arm.managed_apps.set_request_state(made.id, state)

    read = apps.get_request(made.id)

    assert read.state == JitRequestState(state)
    if read.state is JitRequestState.NOT_SPECIFIED:
        with pytest.raises(ExternalLookupFailed):
            state_for(read.state, read.starts_at, read.starts_at + read.duration, NOW)


def test_an_unknown_state_is_a_failed_lookup(apps: ManagedApps, arm: FakeArm) -> None:
    app = add_app(arm)
    made = create(apps, app)
    arm.managed_apps.set_request_state(made.id, "Exploded")
    with pytest.raises(ExternalLookupFailed, match="jitRequestState 'Exploded'"):
        apps.get_request(made.id)
    with pytest.raises(ExternalLookupFailed):
        apps.list_requests(SUB)


def test_an_approved_request_expires_when_its_window_ends(apps: ManagedApps, arm: FakeArm) -> None:
    app = add_app(arm, approval_mode="AutoApprove", approvers=[])
    made = create(apps, app)
    arm.clock = lambda: NOW + timedelta(hours=3)
    assert apps.get_request(made.id).state is JitRequestState.EXPIRED


def test_list_requests_follows_a_next_link(apps: ManagedApps, arm: FakeArm) -> None:
    """The spec does not page jitRequests; a nextLink that comes anyway is followed."""
    app = add_app(arm)
    made = create(apps, app)
    arm.answer_next(
        {
            "value": [],
            "nextLink": f"{arm.base_url}/subscriptions/{SUB}/providers/Microsoft.Solutions/"
            "jitRequests?api-version=2021-07-01",
        },
        path="/jitRequests",
    )
    assert [r.id for r in apps.list_requests(SUB)] == [made.id]
