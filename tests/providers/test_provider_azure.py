"""The Azure provider against a fake ARM over HTTPS, through the real Azure SDK."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fakes.fake_arm import ARM_SCOPE, FakeArm, FakeCredential
from jitaccess.providers.azure import (
    ASSIGNMENT_NAMESPACE,
    AzureProvider,
    HeldGrant,
    assignment_name,
    parse_request_id,
)
from jitaccess.providers.base import GrantSpec, ProviderError

SUB = "11111111-2222-3333-4444-555555555555"
SCOPE = f"/subscriptions/{SUB}/resourceGroups/mrg-contoso-app"
USER_OID = "aaaaaaaa-0000-0000-0000-000000000001"
GROUP_OID = "bbbbbbbb-0000-0000-0000-000000000002"
CUSTOM_ROLE = "cccccccc-0000-0000-0000-000000000003"
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
OWNER = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"
NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)

#: These tests cover plain role assignments; scheduled (PIM) mode is in
#: tests/test_provider_azure_scheduled.py.
CONFIG: dict[str, Any] = {
    "principals": {"UPUB1": {"object_id": USER_OID, "type": "User"}},
    "role_definitions": {"Custom Ops": CUSTOM_ROLE},
    "assignment_mode": "direct",
}


def role_id(guid: str) -> str:
    return f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{guid}"


def spec(
    request_id: int = 42,
    *,
    role: str = "Contributor",
    principal: str = "UPUB1",
    scope: str = SCOPE,
    config: dict[str, Any] | None = None,
) -> GrantSpec:
    return GrantSpec(
        request_id=request_id,
        app="contoso-app",
        scope=scope,
        principal=principal,
        role=role,
        starts_at=NOW,
        ends_at=NOW + timedelta(hours=2),
        config=CONFIG if config is None else config,
    )


@pytest.fixture(scope="module")
def arm_server() -> Iterator[FakeArm]:
    with FakeArm() as arm:
        yield arm


@pytest.fixture
def arm(arm_server: FakeArm) -> FakeArm:
    arm_server.reset()
    arm_server.page_size = 100
    return arm_server


@pytest.fixture
def credential() -> FakeCredential:
    return FakeCredential()


@pytest.fixture
def provider(arm: FakeArm, credential: FakeCredential) -> Iterator[AzureProvider]:
    p = AzureProvider(
        credential,
        base_url=arm.base_url,
        connection_verify=str(arm.ca_file),
        timeout=5,
        retry_total=0,
    )
    yield p
    p.close()


# -- grant ---------------------------------------------------------------------------


def test_grant_creates_one_deterministic_assignment(
    provider: AzureProvider, arm: FakeArm, credential: FakeCredential
) -> None:
    provider.grant(spec(), NOW)

    [a] = arm.at(SCOPE)
    assert a.name == assignment_name(42)
    assert a.name == str(uuid.uuid5(ASSIGNMENT_NAMESPACE, "jitaccess:42"))
    assert a.principal_id == USER_OID
    assert a.principal_type == "User"
    assert a.role_definition_id == role_id(CONTRIBUTOR)
    assert a.description is not None and a.description.startswith("jitaccess request 42")
    assert arm.api_versions == {"2022-04-01"}
    assert credential.scopes_requested and credential.scopes_requested[0] == (ARM_SCOPE,)
    # The SDK sent the PUT at the app's scope with the deterministic name.
    assert any(
        method == "PUT" and f"{SCOPE}/providers/Microsoft.Authorization/roleAssignments/" in path
        for method, path in arm.requests
    )


def test_grant_twice_is_one_assignment(provider: AzureProvider, arm: FakeArm) -> None:
    provider.grant(spec(), NOW)
    provider.grant(spec(), NOW)  # a retry after a crash between grant and commit
    assert [a.name for a in arm.at(SCOPE)] == [assignment_name(42)]


def test_grant_when_principal_already_holds_role_elsewhere_succeeds(
    provider: AzureProvider, arm: FakeArm
) -> None:
    arm.add(SCOPE, "dddddddd-0000-0000-0000-000000000004", role_id(CONTRIBUTOR), USER_OID)
    provider.grant(spec(), NOW)  # 409 RoleAssignmentExists through another assignment
    assert len(arm.at(SCOPE)) == 1
    provider.revoke(spec(), NOW)  # ours never existed: nothing to remove, no error
    assert len(arm.at(SCOPE)) == 1


def test_distinct_requests_get_distinct_names(provider: AzureProvider, arm: FakeArm) -> None:
    provider.grant(spec(1, role="Contributor"), NOW)
    provider.grant(spec(2, role="Owner"), NOW)
    assert {a.name for a in arm.at(SCOPE)} == {assignment_name(1), assignment_name(2)}
    assert assignment_name(1) != assignment_name(2)


def test_default_principal_custom_role_and_full_id(provider: AzureProvider, arm: FakeArm) -> None:
    config = {
        "default_principal": {"object_id": GROUP_OID, "type": "Group"},
        "role_definitions": {"Custom Ops": CUSTOM_ROLE},
        "assignment_mode": "direct",
    }
    provider.grant(spec(7, role="Custom Ops", principal="USOMEONE", config=config), NOW)
    provider.grant(spec(8, role=role_id(OWNER), principal="USOMEONE", config=config), NOW)
    by_name = {a.name: a for a in arm.at(SCOPE)}
    seven, eight = by_name[assignment_name(7)], by_name[assignment_name(8)]
    assert (seven.principal_id, seven.principal_type) == (GROUP_OID, "Group")
    assert seven.role_definition_id == role_id(CUSTOM_ROLE)
    assert eight.role_definition_id == role_id(OWNER)


# -- revoke --------------------------------------------------------------------------


def test_revoke_deletes_exactly_ours_then_succeeds_again(
    provider: AzureProvider, arm: FakeArm
) -> None:
    other = arm.add(SCOPE, "eeeeeeee-0000-0000-0000-000000000005", role_id(OWNER), GROUP_OID)
    provider.grant(spec(), NOW)
    provider.revoke(spec(), NOW)
    assert [a.name for a in arm.at(SCOPE)] == [other.name]
    provider.revoke(spec(), NOW)  # already gone (ARM answers 204)
    assert [a.name for a in arm.at(SCOPE)] == [other.name]


def test_revoke_404_is_success(provider: AzureProvider, arm: FakeArm) -> None:
    arm.fail_next(404, "RoleAssignmentNotFound", "The role assignment does not exist.")
    provider.revoke(spec(), NOW)


# -- errors --------------------------------------------------------------------------


def test_403_says_which_permission_is_missing_and_how_to_fix(
    provider: AzureProvider, arm: FakeArm
) -> None:
    arm.fail_next(
        403,
        "AuthorizationFailed",
        "The client 'x' does not have authorization to perform action "
        "'Microsoft.Authorization/roleAssignments/write'.",
    )
    with pytest.raises(ProviderError) as err:
        provider.grant(spec(), NOW)
    text = str(err.value)
    assert "Microsoft.Authorization/roleAssignments/write" in text
    assert SCOPE in text
    assert "User Access Administrator" in text
    assert "Role Based Access Control Administrator" in text
    assert arm.at(SCOPE) == []

    arm.fail_next(403, "AuthorizationFailed", "nope", method="DELETE")
    with pytest.raises(ProviderError, match="roleAssignments/delete"):
        provider.revoke(spec(), NOW)


def test_404_scope_not_found(provider: AzureProvider, arm: FakeArm) -> None:
    arm.fail_next(
        404, "ResourceGroupNotFound", "Resource group 'mrg-contoso-app' could not be found."
    )
    with pytest.raises(ProviderError, match="scope not found"):
        provider.grant(spec(), NOW)


def test_429_is_throttling_and_fails_fast(provider: AzureProvider, arm: FakeArm) -> None:
    arm.fail_next(429, "TooManyRequests", "Too many requests.", retry_after=30)
    started = time.monotonic()
    with pytest.raises(ProviderError) as err:
        provider.grant(spec(), NOW)
    assert time.monotonic() - started < 3  # no 30 s sleep: the core does the retrying
    assert "throttl" in str(err.value)
    assert "retrying" in str(err.value)
    assert "30" in str(err.value)


def test_principal_not_found_says_retrying(provider: AzureProvider, arm: FakeArm) -> None:
    arm.fail_next(
        400, "PrincipalNotFound", f"Principal {USER_OID} does not exist in the directory."
    )
    with pytest.raises(ProviderError) as err:
        provider.grant(spec(), NOW)
    text = str(err.value)
    assert USER_OID in text
    assert "does not exist yet" in text
    assert "retrying" in text


def test_500_reports_code_and_message(provider: AzureProvider, arm: FakeArm) -> None:
    arm.fail_next(500, "InternalServerError", "Something went wrong in ARM.")
    with pytest.raises(ProviderError) as err:
        provider.grant(spec(), NOW)
    assert "500 InternalServerError" in str(err.value)
    assert "Something went wrong in ARM." in str(err.value)


def test_other_errors_carry_arm_code_and_message(provider: AzureProvider, arm: FakeArm) -> None:
    arm.fail_next(400, "RoleAssignmentLimitExceeded", "No more role assignments can be created.")
    with pytest.raises(ProviderError) as err:
        provider.grant(spec(), NOW)
    assert "RoleAssignmentLimitExceeded" in str(err.value)
    assert "No more role assignments" in str(err.value)


def test_sdk_retry_policy_is_used_when_allowed(arm: FakeArm, credential: FakeCredential) -> None:
    p = AzureProvider(
        credential, base_url=arm.base_url, connection_verify=str(arm.ca_file), retry_total=1
    )
    arm.fail_next(503, "ServiceUnavailable", "try again", retry_after=0)
    p.grant(spec(), NOW)  # one quick SDK retry, then success
    assert len(arm.at(SCOPE)) == 1
    p.close()


def test_unreachable_arm_is_a_readable_error(arm: FakeArm, credential: FakeCredential) -> None:
    p = AzureProvider(
        credential,
        base_url="https://127.0.0.1:1",
        connection_verify=str(arm.ca_file),
        timeout=2,
        retry_total=0,
    )
    with pytest.raises(ProviderError, match="could not reach Azure Resource Manager"):
        p.grant(spec(), NOW)


def test_untrusted_certificate_is_refused(arm: FakeArm, credential: FakeCredential) -> None:
    p = AzureProvider(credential, base_url=arm.base_url, timeout=2, retry_total=0)
    with pytest.raises(ProviderError, match="could not reach"):
        p.grant(spec(), NOW)
    assert arm.at(SCOPE) == []


# -- configuration errors ------------------------------------------------------------


def test_missing_principal_mapping(provider: AzureProvider, arm: FakeArm) -> None:
    with pytest.raises(ProviderError) as err:
        provider.grant(spec(principal="UNOBODY", config={"principals": {}}), NOW)
    text = str(err.value)
    assert "no Azure principal mapped for Slack user UNOBODY" in text
    assert "principals" in text and "default_principal" in text
    assert arm.requests == []


def test_bad_object_id_and_unknown_role(provider: AzureProvider) -> None:
    bad = {"principals": {"UPUB1": {"object_id": "alice@example.com"}}}
    with pytest.raises(ProviderError, match="object id"):
        provider.grant(spec(config=bad), NOW)
    with pytest.raises(ProviderError, match="unknown Azure role 'Janitor'.*role_definitions"):
        provider.grant(spec(role="Janitor"), NOW)


@pytest.mark.parametrize(
    "scope",
    [
        "mrg-contoso-app",
        "/subscriptions/not-a-guid/resourceGroups/rg",
        f"subscriptions/{SUB}/resourceGroups/rg",
        f"/subscriptions/{SUB}/resourcegroups/",
    ],
)
def test_malformed_scope(provider: AzureProvider, arm: FakeArm, scope: str) -> None:
    with pytest.raises(ProviderError) as err:
        provider.grant(spec(scope=scope), NOW)
    assert "malformed" in str(err.value)
    assert "/subscriptions/<subscription-id>/resourceGroups/<resource-group-name>" in str(err.value)
    with pytest.raises(ProviderError, match="malformed"):
        provider.revoke(spec(scope=scope), NOW)
    assert arm.requests == []


# -- list_grants -----------------------------------------------------------------------


def test_list_grants_finds_ours_only(provider: AzureProvider, arm: FakeArm) -> None:
    arm.page_size = 2  # exercise nextLink paging through the SDK
    provider.grant(spec(42), NOW)
    provider.grant(spec(43, role="Owner"), NOW)
    arm.add(
        SCOPE,
        "ffffffff-0000-0000-0000-000000000006",
        role_id(OWNER),
        GROUP_OID,
        description="break-glass",
    )
    arm.add(SCOPE, "ffffffff-0000-0000-0000-000000000007", role_id(CONTRIBUTOR), GROUP_OID)
    # inherited from the subscription, even if it looks like ours: not at this scope
    arm.add(
        f"/subscriptions/{SUB}",
        "ffffffff-0000-0000-0000-000000000008",
        role_id(OWNER),
        GROUP_OID,
        description="jitaccess request 9",
    )
    # another resource group
    arm.add(
        f"/subscriptions/{SUB}/resourceGroups/other",
        "ffffffff-0000-0000-0000-000000000009",
        role_id(OWNER),
        GROUP_OID,
        description="jitaccess request 10",
    )

    held = provider.list_grants(SCOPE, CONFIG)

    assert sorted(held, key=lambda h: h.request_id or 0) == [
        HeldGrant(42, USER_OID, role_id(CONTRIBUTOR), assignment_name(42), SCOPE),
        HeldGrant(43, USER_OID, role_id(OWNER), assignment_name(43), SCOPE),
    ]
    assert any("skipToken" in path for _, path in arm.requests)


def test_list_grants_errors_are_translated(provider: AzureProvider, arm: FakeArm) -> None:
    arm.fail_next(403, "AuthorizationFailed", "no read")
    with pytest.raises(ProviderError, match="roleAssignments/read"):
        provider.list_grants(SCOPE, CONFIG)


def test_parse_request_id() -> None:
    assert parse_request_id("jitaccess request 17: Owner for U1") == 17
    assert parse_request_id("jitaccess request x") is None
    assert parse_request_id("someone else") is None
    assert parse_request_id(None) is None


# -- construction ------------------------------------------------------------------------


def test_construction_is_lazy_and_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    import azure.identity

    made: list[str] = []

    class Boom:
        def __init__(self, *a: object, **kw: object) -> None:
            made.append("DefaultAzureCredential")
            raise AssertionError("must not be created at construction time")

    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", Boom)
    AzureProvider()
    AzureProvider.from_settings(None, None, None)
    assert made == []

    p = AzureProvider.from_settings("tenant", "client", "secret", "https://127.0.0.1:1")
    assert type(p._arm.credential()).__name__ == "ClientSecretCredential"
    p.close()
    with pytest.raises(ProviderError, match="missing client_secret"):
        AzureProvider.from_settings("tenant", "client", None)


# -- logs ----------------------------------------------------------------------------


@pytest.mark.parametrize(("level", "headers_logged"), [("INFO", False), ("DEBUG", True)])
def test_the_sdks_request_and_response_headers_are_logged_only_at_debug(
    provider: AzureProvider,
    arm: FakeArm,
    caplog: pytest.LogCaptureFixture,
    level: str,
    headers_logged: bool,
) -> None:
    """JITACCESS_LOG_LEVEL=INFO: no multi-line header dumps from the Azure SDK (its
    warnings still show); DEBUG: they are there for whoever debugs."""
    import logging

    from jitaccess import logs

    root = logging.getLogger()
    http_logger = logging.getLogger(logs.AZURE_HTTP_LOGGER)
    saved = (root.handlers[:], root.level, http_logger.level)
    try:
        logs.configure(level)
        root.addHandler(caplog.handler)  # configure() replaced the handlers
        provider.grant(spec(), NOW)
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        http_logger.setLevel(saved[2])
    dumps = [r for r in caplog.records if r.name == logs.AZURE_HTTP_LOGGER]
    assert bool(dumps) is headers_logged
    assert all(r.levelno >= logging.WARNING for r in dumps) or headers_logged
    assert arm.at(SCOPE)  # the grant itself went through


# -- what an application may name ----------------------------------------------------


@pytest.mark.parametrize(
    "scope",
    [
        f"/subscriptions/{SUB}",
        SCOPE,
        f"{SCOPE}/providers/Microsoft.Web/sites/contoso",
    ],
)
def test_validate_scope_accepts_what_the_provider_grants_at(
    provider: AzureProvider, scope: str
) -> None:
    provider.validate_scope(scope)


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ("not-a-scope", "is malformed"),
        ("hello world", "is malformed"),
        ("/subscriptions/not-a-guid/resourceGroups/x", "is malformed"),
        ("/providers/Microsoft.Management/managementGroups/mg1", "is a management group"),
    ],
)
def test_validate_scope_refuses_what_it_could_never_grant_at(
    provider: AzureProvider, scope: str, expected: str
) -> None:
    with pytest.raises(ProviderError, match=expected) as refused:
        provider.validate_scope(scope)
    assert "/subscriptions/<subscription-id>/resourceGroups/" in str(refused.value)


@pytest.mark.parametrize(
    "role", ["Contributor", "reader", "Custom Ops", "custom ops", CUSTOM_ROLE, role_id(OWNER)]
)
def test_validate_role_accepts_what_the_provider_resolves(
    provider: AzureProvider, role: str
) -> None:
    provider.validate_role(role, CONFIG)


def test_validate_role_refuses_an_unknown_role_with_what_is_accepted(
    provider: AzureProvider,
) -> None:
    with pytest.raises(ProviderError) as refused:
        provider.validate_role("NotARole", CONFIG)
    message = str(refused.value)
    assert "use one of Owner, Contributor, Reader, Custom Ops, a role definition GUID" in message
    assert "role_definitions (NotARole: <role definition GUID>)" in message
