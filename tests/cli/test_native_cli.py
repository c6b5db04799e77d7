"""Native mode from the operator's seat: `jitaccess apps import`, `apps policy` and
`jitaccess signins`, run as the real command against the fake ARM, the fake Entra (which
also serves Graph and the client-credentials token endpoint) and the fake Slack, over
HTTPS, with nothing but settings in the environment.

The container builds jitaccess's own Azure identity from those settings exactly as in
production: a ClientSecretCredential signing in at AZURE_AUTHORITY_HOST (the fake Entra;
instance discovery off, since it is not one of Microsoft's hosts) and trusting
ENTRA_CA_BUNDLE; ARM at AZURE_ARM_URL trusting AZURE_CA_BUNDLE; Graph at GRAPH_URL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from cryptography.fernet import Fernet

from conftest import Cli, flat
from fakes.fake_arm import FakeArm
from fakes.fake_entra import CLIENT_ID, CLIENT_SECRET, TENANT_ID, FakeEntra
from jitaccess.app.signins import TokenCipher
from jitaccess.container import build
from jitaccess.settings import load_settings
from jitaccess.store.models import EntraLink
from jitaccess_sandbox.fake_slack import FakeSlack

SUB = "0a1b2c3d-1111-4222-8333-444455556666"
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
AVA_OID = "aaaaaaaa-0000-4000-8000-000000000001"
PAT_OID = "bbbbbbbb-0000-4000-8000-000000000002"
NOBODY_OID = "ffffffff-0000-4000-8000-000000000006"
GROUP_OID = "eeeeeeee-0000-4000-8000-000000000005"
AVA, PAT, CARL = "U0AVA0001", "U0PAT0002", "U0CARL004"
PUBLIC_URL = "https://jitaccess.test"
AZURE_VARS = (
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_AUTHORITY_HOST",
    "AZURE_ARM_URL",
    "AZURE_CA_BUNDLE",
)
SIGNIN_VARS = (
    "ENTRA_AUTHORITY",
    "ENTRA_CLIENT_ID",
    "ENTRA_CLIENT_SECRET",
    "ENTRA_CA_BUNDLE",
    "GRAPH_URL",
    "JITACCESS_PUBLIC_URL",
    "JITACCESS_TOKEN_KEYS",
)


@dataclass
class Native:
    cli: Cli
    arm: FakeArm
    entra: FakeEntra
    slack: FakeSlack
    monkeypatch: pytest.MonkeyPatch
    key: str
    app_id: str = ""

    def import_apps(self, *extra: str, code: int = 0):  # -> typer.testing.Result
        return self.cli(
            "apps", "import", "--subscription", SUB, "--publisher", PAT, "--as", CARL, *extra,
            code=code,
        )  # fmt: skip

    def link(self, slack_user: str, username: str) -> None:
        """Sign ``slack_user`` in as ``username`` the way Slack's link does: the service
        built from the same settings makes the link, the person signs in on the fake
        Entra's page, the callback finishes it."""
        container = build(load_settings())
        try:
            signins = container.service.signins
            now = datetime.now(UTC)
            answer = self.entra.sign_in(signins.link_for(slack_user, now=now), username)
            signins.finish(answer.params, now=now)
        finally:
            container.close()

    def stored_token(self, slack_user: str) -> str:
        container = build(load_settings())
        try:
            with container.db.transaction(readonly=True) as session:
                row = session.get(EntraLink, slack_user)
                assert row is not None
                return row.refresh_token
        finally:
            container.close()

    def patches(self) -> list[str]:
        return [target for method, target in self.arm.requests if method == "PATCH"]


@pytest.fixture
def native(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> Iterator[Native]:
    with (
        FakeEntra(redirect_uris=[f"{PUBLIC_URL}/auth/callback"]) as entra,
        FakeArm() as arm,
        FakeSlack() as slack,
    ):
        arm.user_token_verifier = entra.verify_access_token
        # One status poll; Retry-After keeps azure-core from waiting its 5 s default.
        arm.managed_apps.lro_polls = 2
        arm.managed_apps.retry_after = 1
        for oid, username, name in (
            (AVA_OID, "ava@contoso.example", "Ava Adams"),
            (PAT_OID, "pat@fabrikam.example", "Pat Publisher"),
            (NOBODY_OID, "nobody@contoso.example", "No Slack"),
        ):
            entra.add_user(oid, username, name, mail=username)
        slack.add_user(AVA, name="ava", email="ava@contoso.example")
        slack.add_user(PAT, name="pat", email="pat@fabrikam.example")
        slack.add_user(CARL, name="carl", email="carl@contoso.example")
        app = arm.managed_apps.add_application(
            SUB,
            "apps",
            "contoso",
            managed_resource_group="mrg-contoso",
            approval_mode="ManualApprove",
            approvers=[
                {"id": AVA_OID, "type": "user", "displayName": "Ava Adams"},
                {"id": NOBODY_OID, "type": "user", "displayName": "No Slack"},
                {"id": GROUP_OID, "type": "group", "displayName": "Ops"},
            ],
            maximum_duration="PT4H",
            authorizations=[{"principalId": PAT_OID, "roleDefinitionId": CONTRIBUTOR}],
        )
        key = TokenCipher.new_key()
        for name, value in {
            "AZURE_TENANT_ID": TENANT_ID,
            "AZURE_CLIENT_ID": CLIENT_ID,
            "AZURE_CLIENT_SECRET": CLIENT_SECRET,
            "AZURE_AUTHORITY_HOST": entra.base_url,
            "AZURE_ARM_URL": arm.base_url,
            "AZURE_CA_BUNDLE": str(arm.ca_file),
            "ENTRA_AUTHORITY": entra.authority,
            "ENTRA_CLIENT_ID": CLIENT_ID,
            "ENTRA_CLIENT_SECRET": CLIENT_SECRET,
            "ENTRA_CA_BUNDLE": str(entra.ca_file),
            "GRAPH_URL": entra.graph_url,
            "JITACCESS_PUBLIC_URL": PUBLIC_URL,
            "JITACCESS_TOKEN_KEYS": key,
            "SLACK_BOT_TOKEN": "xoxb-test",
            "SLACK_API_URL": slack.base_url,
        }.items():
            monkeypatch.setenv(name, value)
        yield Native(cli, arm, entra, slack, monkeypatch, key, app.id)


# -- apps import ---------------------------------------------------------------------------


def test_import_registers_native_apps_and_lists_what_it_cannot_map(native: Native) -> None:
    native.arm.managed_apps.add_application(
        SUB, "apps", "legacy", managed_resource_group="mrg-legacy", jit_enabled=False
    )
    result = native.import_apps()
    assert result.stdout.splitlines() == ["registered: contoso, legacy"]
    errors = flat(result.stderr)
    assert (
        "not mapped: contoso: Entra user No Slack (nobody@contoso.example): no Slack account "
        "with that e-mail" in errors
    )
    assert "Ava" not in errors  # mapped through Graph's mail and Slack's lookupByEmail
    assert "note: legacy: JIT access is disabled on it in Azure (and cannot be enabled" in errors
    # jitaccess's own identity: a client-credentials token from the configured authority.
    assert ("POST", f"/{TENANT_ID}/oauth2/v2.0/token") in native.entra.requests

    shown = native.cli.json("apps", "show", "contoso")
    assert shown["provider"] == "azure-managed-app"
    assert shown["scope"] == f"/subscriptions/{SUB}/resourceGroups/mrg-contoso"
    assert shown["policy"]["approvers"] == [AVA]
    assert shown["policy"]["mode"] == "manual"
    assert shown["policy"]["max_duration"] == "4h"
    assert shown["publishers"] == [PAT] and shown["admins"] == [CARL]

    again = native.import_apps()
    assert again.stdout.splitlines() == ["updated: contoso, legacy"]


def test_import_of_one_resource_group_and_of_an_empty_one(native: Native) -> None:
    native.arm.managed_apps.add_application(
        SUB, "other", "elsewhere", managed_resource_group="mrg-elsewhere"
    )
    assert native.import_apps("--resource-group", "other").stdout.splitlines() == [
        "registered: elsewhere"
    ]
    empty = native.import_apps("--resource-group", "nothing-here")
    assert "No managed applications found there." in empty.stdout
    assert [a["name"] for a in native.cli.json("apps", "list")] == ["elsewhere"]


@pytest.mark.parametrize("failure", ["malformed", "500"])
def test_a_failed_listing_is_refused_and_registers_nothing(native: Native, failure: str) -> None:
    if failure == "malformed":
        native.arm.answer_next(
            {"value": "not a list"}, path="/providers/Microsoft.Solutions/applications"
        )
    else:  # more than the client's retries
        native.arm.fail_next(500, "InternalServerError", "Something broke", times=5)
    result = native.import_apps(code=1)
    errors = flat(result.stderr)
    assert "Listing the managed applications failed, nothing was recorded" in errors
    assert f"list managed applications in subscription {SUB}" in errors
    if failure == "500":
        assert "500" in errors
    assert native.cli.json("apps", "list") == []


def test_without_azure_settings_import_says_what_to_set(native: Native) -> None:
    for name in AZURE_VARS:
        native.monkeypatch.delenv(name)
    errors = flat(native.import_apps(code=1).stderr)
    assert "Native mode needs Azure Resource Manager" in errors
    assert "AZURE_TENANT_ID" in errors and "AZURE_CLIENT_SECRET" in errors
    assert native.cli.json("apps", "list") == []


def test_half_an_azure_identity_is_refused_naming_what_is_missing(native: Native) -> None:
    native.monkeypatch.delenv("AZURE_CLIENT_SECRET")
    errors = flat(native.import_apps(code=1).stderr)
    assert "Azure settings are incomplete (missing client_secret)" in errors
    assert CLIENT_SECRET not in errors


def test_a_wrong_client_secret_is_a_refusal_that_does_not_repeat_it(native: Native) -> None:
    native.monkeypatch.setenv("AZURE_CLIENT_SECRET", "wrong-secret-value")
    errors = flat(native.import_apps(code=1).stderr)
    assert "Listing the managed applications failed, nothing was recorded" in errors
    assert "wrong-secret-value" not in errors


# -- apps policy ----------------------------------------------------------------------------


def test_a_policy_change_is_written_to_azure_and_shown(native: Native) -> None:
    native.import_apps()
    result = native.cli("apps", "policy", "contoso", "--max-duration", "2h", "--as", CARL)
    assert "Maximum duration 2h" in flat(result.stdout)
    azure = native.arm.managed_apps.application(native.app_id).jit_access_policy
    assert azure is not None and azure["maximumJitAccessDuration"] == "PT2H"
    assert azure["jitApprovalMode"] == "ManualApprove"  # the rest as Azure had it
    assert len(native.patches()) == 1
    # The long-running PATCH was followed to its end: its status was polled.
    assert any("/operationStatuses/" in target for _m, target in native.arm.requests)
    assert native.cli.json("apps", "show", "contoso")["policy"]["max_duration"] == "2h"


def test_a_portal_change_in_between_is_refused_with_the_difference(native: Native) -> None:
    native.import_apps()
    native.arm.managed_apps.change_policy_in_portal(native.app_id, maximum_duration="PT1H")
    result = native.cli("apps", "policy", "contoso", "--max-duration", "3h", "--as", CARL, code=1)
    errors = flat(result.stderr)
    assert "contoso's JIT policy was changed in Azure since jitaccess last read it" in errors
    assert "maximum duration: 4h → 1h" in errors
    assert native.patches() == []
    azure = native.arm.managed_apps.application(native.app_id).jit_access_policy
    assert azure is not None and azure["maximumJitAccessDuration"] == "PT1H"
    # jitaccess now shows Azure's policy; the same change made again goes through.
    assert native.cli.json("apps", "show", "contoso")["policy"]["max_duration"] == "1h"
    native.cli("apps", "policy", "contoso", "--max-duration", "3h", "--as", CARL)
    azure = native.arm.managed_apps.application(native.app_id).jit_access_policy
    assert azure is not None and azure["maximumJitAccessDuration"] == "PT3H"


def test_approvers_of_a_native_app_are_azures_and_refused_here(native: Native) -> None:
    native.import_apps()
    result = native.cli(
        "apps", "policy", "contoso", "--approver", PAT, "--require-mfa", "--as", CARL, code=1
    )
    errors = flat(result.stderr)
    assert "contoso is a native Azure managed application" in errors
    assert "approvers are set in the portal" in errors
    shown = native.cli.json("apps", "show", "contoso")
    assert shown["policy"]["approvers"] == [AVA]
    assert shown["require_mfa"] is False  # refused as a whole
    assert native.patches() == []


def test_only_a_consumer_admin_changes_a_native_policy(native: Native) -> None:
    native.import_apps()
    native.cli("apps", "policy", "contoso", "--max-duration", "2h", "--as", PAT, code=1)
    native.cli("apps", "policy", "contoso", "--require-mfa", "--as", PAT, code=1)
    assert native.patches() == []
    assert native.cli.json("apps", "show", "contoso")["require_mfa"] is False


def test_require_mfa_on_a_native_app_asks_nothing_of_azure(native: Native) -> None:
    native.import_apps()
    result = native.cli("apps", "policy", "contoso", "--require-mfa", "--as", CARL)
    assert "Multi-factor sign-in required for approvals" in flat(result.stdout)
    assert "note:" not in result.stderr  # sign-in is set up here
    assert native.patches() == []
    assert native.cli.json("apps", "show", "contoso")["require_mfa"] is True
    native.cli("apps", "policy", "contoso", "--no-require-mfa", "--as", CARL)
    assert native.cli.json("apps", "show", "contoso")["require_mfa"] is False


def test_require_mfa_on_an_engine_app_and_a_note_without_sign_in(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in AZURE_VARS + SIGNIN_VARS:
        monkeypatch.delenv(name, raising=False)
    cli(
        "apps", "register", "crm", "--scope", "/subscriptions/s1/resourceGroups/mrg-crm",
        "--publisher", PAT, "--admin", CARL, "--mode", "manual", "--approver", AVA,
    )  # fmt: skip
    result = cli("apps", "policy", "crm", "--require-mfa", "--as", CARL)
    assert "Multi-factor sign-in required for approvals" in flat(result.stdout)
    assert "note: Sign in with Microsoft is not set up on this jitaccess" in flat(result.stderr)
    assert cli.json("apps", "show", "crm")["require_mfa"] is True
    both = cli.json(
        "apps", "policy", "crm", "--no-require-mfa", "--max-duration", "3h", "--as", CARL
    )
    assert both["require_mfa"] is False and both["policy"]["max_duration"] == "3h"


# -- signins ----------------------------------------------------------------------------------


def test_new_key_prints_a_fernet_key(cli: Cli) -> None:
    first = cli("signins", "new-key").stdout.strip()
    second = cli("signins", "new-key").stdout.strip()
    Fernet(first.encode())  # a valid key, nothing around it
    assert first != second


def test_list_shows_who_is_linked_and_never_a_token(native: Native) -> None:
    native.import_apps()
    assert native.cli("signins", "list").stdout == "Nobody has signed in with Microsoft yet.\n"
    native.link(AVA, "ava@contoso.example")
    stored = native.stored_token(AVA)
    refresh_token = TokenCipher([native.key]).decrypt(stored)
    listed = native.cli("signins", "list").stdout
    assert AVA in listed and "ava@contoso.example" in listed and AVA_OID in listed
    for secret in (stored, refresh_token, stored[:20], refresh_token[:20]):
        assert secret not in listed


def test_revoke_by_the_person_or_an_admin_and_its_refusals(native: Native) -> None:
    native.import_apps()
    native.link(AVA, "ava@contoso.example")
    native.link(PAT, "pat@fabrikam.example")

    refused = native.cli("signins", "revoke", AVA, "--as", PAT, code=1)
    assert "Only the person themselves or a consumer admin" in flat(refused.stderr)
    assert AVA in native.cli("signins", "list").stdout

    assert (
        f"Forgot {AVA}'s Microsoft sign-in."
        in native.cli("signins", "revoke", AVA, "--as", AVA).stdout
    )
    again = native.cli("signins", "revoke", AVA, "--as", AVA, code=1)
    assert f"{AVA} has no Microsoft sign-in; nothing changed." in flat(again.stderr)

    native.cli("signins", "revoke", PAT, "--as", CARL)  # a consumer admin
    listed = native.cli("signins", "list").stdout
    assert AVA not in listed and PAT not in listed
    assert native.cli("signins", "revoke", "not-a-user", "--as", CARL, code=2)


def test_rotate_key_with_a_new_key_first_keeps_every_sign_in(native: Native) -> None:
    native.import_apps()
    native.link(AVA, "ava@contoso.example")
    before = native.stored_token(AVA)
    new_key = native.cli("signins", "new-key").stdout.strip()
    native.monkeypatch.setenv("JITACCESS_TOKEN_KEYS", f"{new_key},{native.key}")
    result = native.cli("signins", "rotate-key")
    assert "Re-encrypted 1 stored sign-ins with the first key." in result.stdout
    after = native.stored_token(AVA)
    assert after != before
    assert TokenCipher([new_key]).decrypt(after) == TokenCipher([native.key]).decrypt(before)

    # The old key can go: the sign-in still works (a refresh through the fake Entra).
    native.monkeypatch.setenv("JITACCESS_TOKEN_KEYS", new_key)
    container = build(load_settings())
    try:
        token, link = container.service.signins.tokens_for(AVA, now=datetime.now(UTC))
        assert token and link.object_id == AVA_OID
    finally:
        container.close()


def test_signins_without_sign_in_set_up_say_what_to_set(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in SIGNIN_VARS:
        monkeypatch.delenv(name, raising=False)
    errors = flat(cli("signins", "rotate-key", code=1).stderr)
    assert "Sign in with Microsoft is not set up on this jitaccess" in errors
    assert "JITACCESS_TOKEN_KEYS" in errors
    assert cli("signins", "list").exit_code == 0


def test_a_malformed_token_key_is_one_line_and_never_echoed(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JITACCESS_TOKEN_KEYS", "secret-looking-but-not-a-key")
    result = cli("signins", "list", code=2)
    assert result.stderr.splitlines() == [
        "JITACCESS_TOKEN_KEYS is not valid: expected comma-separated Fernet keys (make one "
        "with `jitaccess signins new-key`) (environment or .env)"
    ]
    assert "secret-looking" not in result.stdout + result.stderr


def test_list_prints_the_step_up_time_in_the_local_zone_or_utc(
    native: Native, monkeypatch: pytest.MonkeyPatch
) -> None:
    native.import_apps()
    native.link(AVA, "ava@contoso.example")
    # A multi-factor step-up recorded at 10:00 UTC (as the callback stores it).
    container = build(load_settings())
    try:
        with container.db.transaction() as session:
            link = session.get(EntraLink, AVA)
            assert link is not None
            link.authenticated_at = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    finally:
        container.close()
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # +05:30
    listed = native.cli("signins", "list").stdout
    assert "2026-11-27 15:30 +05:30" in next(line for line in listed.splitlines() if AVA in line)
    listed = native.cli("signins", "list", "--utc").stdout
    assert "2026-11-27 10:00 UTC" in next(line for line in listed.splitlines() if AVA in line)
