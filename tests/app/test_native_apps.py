"""Native mode end to end, below Slack: Azure's own managed-application JIT driven through
the use cases, with the real Azure SDK against the fake ARM (Microsoft.Solutions and PIM
approvals) and real msal and Graph calls against the fake Entra, all over HTTPS.

What a person would notice: an import that maps approvers and lists what it cannot; a
request that exists in Azure, made as the publisher; an approval that is a PIM decision
made as the approver; states that follow Azure's; refusals that say why and change
nothing (no sign-in, a lapsed one, no multi-factor proof, a verb Azure does not offer, a
portal change racing a write-back)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from fakes.fake_arm import FakeArm
from fakes.fake_entra import FakeEntra
from jitaccess.app.deps import NativePorts, build_deps
from jitaccess.app.native import NeedsSignIn
from jitaccess.app.reconcile import reconcile
from jitaccess.app.service import JitService
from jitaccess.app.signins import TokenCipher
from jitaccess.app.sweep import RetryPolicy
from jitaccess.domain.errors import Conflict, RuleViolation
from jitaccess.domain.native import SignInLapsed
from jitaccess.providers.base import ProviderRegistry
from jitaccess.providers.log import LogProvider
from jitaccess.providers.native import NativeWitness
from jitaccess.slack.principals import SLACK_PRINCIPALS
from jitaccess.store.db import Database
from jitaccess.store.models import AccessRequest, AuditEvent, EntraLink
from native_world import (
    AVA,
    AVA_OID,
    BEN,
    CARL,
    CONTRIBUTOR,
    GROUP_OID,
    PAT,
    PAT_OID,
    PEOPLE,
    SUB,
    azure_fakes,
    native_ports,
)

EMAILS = {email: user for user, (_name, email, _oid, _real) in PEOPLE.items()}


class Clock:
    """One time for the service, the fake ARM and the fake Entra; moved by tests."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def move(self, by: timedelta) -> datetime:
        self.now += by
        return self.now


@dataclass
class World:
    service: JitService
    arm: FakeArm
    entra: FakeEntra
    clock: Clock
    db: Database
    app_id: str

    def sign_in(self, slack_user: str, username: str, *, mfa: bool = False) -> None:
        link = self.service.signins.link_for(slack_user, now=self.clock(), step_up=mfa)
        answer = self.entra.sign_in(link, username, mfa=mfa)
        self.service.signins.finish(answer.params, now=self.clock())

    def request(self, **kwargs: object) -> int:
        view = self.service.submit(
            "contoso",
            requester=PAT,
            role="Contributor",
            duration=timedelta(hours=1),
            justification="fix the index",
            now=self.clock(),
            **kwargs,  # type: ignore[arg-type]
        )
        return view.id

    def jit_request(self, request_id: int) -> str:
        with self.db.transaction(readonly=True) as session:
            row = session.get(AccessRequest, request_id)
            assert row is not None and row.native_request_id
            return row.native_request_id

    def actions(self) -> list[str]:
        with self.db.transaction(readonly=True) as session:
            return list(
                session.execute(select(AuditEvent.action).order_by(AuditEvent.seq)).scalars()
            )


@pytest.fixture
def world(db: Database) -> Iterator[World]:
    clock = Clock()
    with azure_fakes(clock, unmapped_approver=True) as (arm, entra, app_id):
        ports = native_ports(arm, entra, EMAILS.get, clock)
        assert ports.managed_apps is not None
        providers = ProviderRegistry()
        providers.register(LogProvider(db))
        providers.register(NativeWitness(ports.managed_apps))
        service = JitService(
            build_deps(
                db,
                providers,
                retry=RetryPolicy(base=timedelta(seconds=10), cap=timedelta(minutes=5)),
                rng=lambda: 1.0,
                principals=SLACK_PRINCIPALS,
                native=ports,
            )
        )
        report = service.native.import_apps(
            SUB,
            None,
            publishers=[PAT],
            admins=[CARL],
            requests_resource_group=None,
            actor=CARL,
            now=clock(),
        )
        assert report.registered == ["contoso"]
        yield World(service, arm, entra, clock, db, app_id)


# -- import ---------------------------------------------------------------------------


def test_import_maps_approvers_by_email_and_lists_what_it_cannot(world: World) -> None:
    app = world.service.get_app("contoso")
    assert app.provider == "azure-managed-app"
    assert app.scope == f"/subscriptions/{SUB}/resourceGroups/mrg-contoso"
    assert app.policy.approvers == (AVA,)  # Ava mapped; the group stays Entra's
    assert app.policy.max_duration == timedelta(hours=4)
    assert app.eligible_roles == ("Contributor",)
    report = world.service.native.import_apps(
        SUB,
        None,
        publishers=[],
        admins=[],
        requests_resource_group=None,
        actor=CARL,
        now=world.clock(),
    )
    assert report.updated == ["contoso"]
    assert any("No Slack" in line and "no Slack account" in line for line in report.unmapped)
    assert "native_imported" in world.actions()


def test_an_application_deployed_without_jit_is_imported_and_refuses_requests(
    world: World,
) -> None:
    world.arm.managed_apps.add_application(
        SUB, "apps", "legacy", managed_resource_group="mrg-legacy", jit_enabled=False
    )
    report = world.service.native.import_apps(
        SUB,
        None,
        publishers=[PAT],
        admins=[CARL],
        requests_resource_group=None,
        actor=CARL,
        now=world.clock(),
    )
    assert any("legacy" in line and "cannot be enabled" in line for line in report.refused)
    with pytest.raises(RuleViolation, match="JIT"):
        world.service.submit(
            "legacy",
            requester=PAT,
            role="Reader",
            duration=timedelta(hours=1),
            justification="x",
            now=world.clock(),
        )


# -- requests as the publisher, approvals as the approver ------------------------------


def test_a_request_needs_the_publishers_own_sign_in_and_records_nothing_without_it(
    world: World,
) -> None:
    with pytest.raises(NeedsSignIn) as refused:
        world.request()
    assert "Sign in with Microsoft" in str(refused.value)
    assert refused.value.link.startswith(world.entra.base_url)
    assert world.arm.managed_apps.jit_requests == {}
    assert world.service.list_requests() == []


def test_request_approve_activate_expire_follow_azure(world: World) -> None:
    world.sign_in(PAT, "pat@fabrikam.example")
    request_id = world.request()
    jit_id = world.jit_request(request_id)
    made = world.arm.managed_apps.request(jit_id)
    assert made.created_by["oid"] == PAT_OID  # the publisher's identity, not jitaccess's
    assert made.state == "Pending"
    assert world.service.get_request(request_id).state == "pending"

    with pytest.raises(NeedsSignIn):  # Ava has not signed in: nothing recorded
        world.service.approve(request_id, actor=AVA, reason="ok", now=world.clock())
    assert world.service.get_request(request_id).state == "pending"
    assert world.arm.managed_apps.request(jit_id).state == "Pending"

    world.sign_in(AVA, "ava@contoso.example")
    view = world.service.approve(request_id, actor=AVA, reason="go ahead", now=world.clock())
    assert view.state in ("approved", "active")
    assert world.arm.managed_apps.request(jit_id).state == "Approved"
    with world.db.transaction(readonly=True) as session:
        entry = session.execute(
            select(AuditEvent).where(AuditEvent.action == "approve")
        ).scalar_one()
        assert entry.details["entra_user"] == "ava@contoso.example"
        assert entry.details["jit_request"] == jit_id

    world.service.sweep(world.clock())
    assert world.service.get_request(request_id).state == "active"
    world.clock.move(timedelta(hours=1, minutes=1))
    world.service.native.refresh(world.clock())
    world.service.sweep(world.clock())
    assert world.service.get_request(request_id).state == "expired"


def test_a_deny_is_the_approvers_pim_decision(world: World) -> None:
    world.sign_in(PAT, "pat@fabrikam.example")
    request_id = world.request()
    world.sign_in(AVA, "ava@contoso.example")
    view = world.service.deny(request_id, actor=AVA, reason="not today", now=world.clock())
    assert view.state == "denied"
    assert world.arm.managed_apps.request(world.jit_request(request_id)).state == "Denied"


def test_a_member_of_an_approver_group_decides_once_signed_in(world: World) -> None:
    world.sign_in(PAT, "pat@fabrikam.example")
    request_id = world.request()
    with pytest.raises(RuleViolation):  # not linked: jitaccess cannot know Ben is in Ops
        world.service.approve(request_id, actor=BEN, reason="ok", now=world.clock())
    world.sign_in(BEN, "ben@contoso.example")
    assert world.service.approve(request_id, actor=BEN, reason="ok", now=world.clock()).state in (
        "approved",
        "active",
    )


def test_someone_who_is_not_an_approver_cannot_link_nor_decide(world: World) -> None:
    world.sign_in(PAT, "pat@fabrikam.example")
    request_id = world.request()
    with pytest.raises(RuleViolation, match="not an approver or a publisher"):
        world.sign_in("U0EVE0005", "carl@contoso.example")
    with world.db.transaction(readonly=True) as session:
        assert session.get(EntraLink, "U0EVE0005") is None
    with pytest.raises(RuleViolation):
        world.service.approve(request_id, actor="U0EVE0005", reason="me", now=world.clock())
    assert world.arm.managed_apps.request(world.jit_request(request_id)).state == "Pending"


def test_verbs_azure_does_not_offer_are_refused_and_change_nothing(world: World) -> None:
    world.sign_in(PAT, "pat@fabrikam.example")
    request_id = world.request()
    before = world.actions()
    for call in (
        lambda: world.service.cancel(request_id, actor=PAT, now=world.clock()),
        lambda: world.service.revoke(request_id, actor=CARL, reason="x", now=world.clock()),
        lambda: world.service.release(request_id, actor=PAT, now=world.clock()),
    ):
        with pytest.raises(RuleViolation, match="only be tagged"):
            call()
    assert world.actions() == before
    assert world.service.get_request(request_id).state == "pending"


# -- require_mfa -------------------------------------------------------------------------


def test_require_mfa_asks_for_a_multi_factor_sign_in_before_an_approval_counts(
    world: World,
) -> None:
    world.service.set_require_mfa("contoso", True, actor=CARL, now=world.clock())
    world.sign_in(PAT, "pat@fabrikam.example")
    request_id = world.request()
    world.sign_in(AVA, "ava@contoso.example")  # a password sign-in
    with pytest.raises(NeedsSignIn, match="multi-factor"):
        world.service.approve(request_id, actor=AVA, reason="ok", now=world.clock())
    assert world.arm.managed_apps.request(world.jit_request(request_id)).state == "Pending"
    world.sign_in(AVA, "ava@contoso.example", mfa=True)
    assert world.service.approve(request_id, actor=AVA, reason="ok", now=world.clock()).state in (
        "approved",
        "active",
    )


def test_a_step_up_sign_in_without_mfa_does_not_count(world: World) -> None:
    world.service.set_require_mfa("contoso", True, actor=CARL, now=world.clock())
    world.sign_in(PAT, "pat@fabrikam.example")
    request_id = world.request()
    link = world.service.signins.link_for(AVA, now=world.clock(), step_up=True)
    answer = world.entra.sign_in(link, "ava@contoso.example", mfa=False)
    world.service.signins.finish(answer.params, now=world.clock())
    with pytest.raises(NeedsSignIn, match="multi-factor"):
        world.service.approve(request_id, actor=AVA, reason="ok", now=world.clock())


# -- sign-ins ------------------------------------------------------------------------------


def test_a_sign_in_link_works_once_and_for_ten_minutes(world: World) -> None:
    link = world.service.signins.link_for(AVA, now=world.clock())
    answer = world.entra.sign_in(link, "ava@contoso.example")
    world.service.signins.finish(answer.params, now=world.clock())
    with pytest.raises(RuleViolation, match="already used"):
        world.service.signins.finish(answer.params, now=world.clock())
    late = world.service.signins.link_for(AVA, now=world.clock())
    answer = world.entra.sign_in(late, "ava@contoso.example")
    with pytest.raises(RuleViolation, match="expired"):
        world.service.signins.finish(answer.params, now=world.clock() + timedelta(minutes=11))
    with pytest.raises(RuleViolation, match="not one jitaccess made"):
        world.service.signins.finish({"state": "forged", "code": "x"}, now=world.clock())


def test_the_refresh_token_is_stored_encrypted_and_a_revoked_sign_in_lapses(
    world: World,
) -> None:
    world.sign_in(AVA, "ava@contoso.example")
    with world.db.transaction(readonly=True) as session:
        row = session.get(EntraLink, AVA)
        assert row is not None and row.object_id == AVA_OID
        stored = row.refresh_token
    assert stored.startswith("gAAAAA")  # a Fernet token, not Entra's
    world.service.signins.tokens_for(AVA, now=world.clock())
    world.entra.revoke_sign_ins(AVA_OID)
    with pytest.raises(SignInLapsed):
        world.service.signins.tokens_for(AVA, now=world.clock())
    assert world.service.signins.link_of(AVA) is None  # forgotten: the card offers the link


def test_sign_out_forgets_the_link(world: World) -> None:
    world.sign_in(AVA, "ava@contoso.example")
    assert world.service.signins.sign_out(AVA, actor=AVA, now=world.clock())
    assert world.service.signins.link_of(AVA) is None
    assert not world.service.signins.sign_out(AVA, actor=AVA, now=world.clock())
    assert "signed_out" in world.actions()


def test_keys_rotate_without_losing_a_sign_in(world: World, db: Database) -> None:
    world.sign_in(AVA, "ava@contoso.example")
    old_key = world.service.deps.native.token_keys or ""
    new_key = TokenCipher.new_key()
    rotated = JitService(
        build_deps(
            db,
            world.service.providers,
            principals=SLACK_PRINCIPALS,
            native=NativePorts(
                sign_in=world.service.deps.native.sign_in, token_keys=f"{new_key},{old_key}"
            ),
        )
    )
    assert rotated.signins.rotate_keys() == 1
    only_new = JitService(
        build_deps(
            db,
            world.service.providers,
            principals=SLACK_PRINCIPALS,
            native=NativePorts(sign_in=world.service.deps.native.sign_in, token_keys=new_key),
        )
    )
    token, link = only_new.signins.tokens_for(AVA, now=world.clock())
    assert token and link.object_id == AVA_OID


# -- following Azure ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("azure", "ours"),
    [
        ("Denied", "denied"),
        ("Canceled", "cancelled"),
        ("Timeout", "timed_out"),
        ("Failed", "failed"),
    ],
)
def test_a_pending_request_follows_what_azure_says(world: World, azure: str, ours: str) -> None:
    world.sign_in(PAT, "pat@fabrikam.example")
    request_id = world.request()
    world.arm.managed_apps.set_request_state(world.jit_request(request_id), azure)
    report = world.service.native.refresh(world.clock())
    assert report.requests_changed == 1
    view = world.service.get_request(request_id)
    assert view.state == ours
    assert world.service.native.refresh(world.clock()).requests_changed == 0  # once


@pytest.mark.parametrize("azure", ["NotSpecified", "Paused"])
def test_an_unknown_state_is_a_failed_lookup_and_moves_nothing(world: World, azure: str) -> None:
    world.sign_in(PAT, "pat@fabrikam.example")
    request_id = world.request()
    world.arm.managed_apps.set_request_state(world.jit_request(request_id), azure)
    before = world.actions()
    report = world.service.native.refresh(world.clock())
    assert report.requests_changed == 0
    assert report.failures or azure == "NotSpecified"
    assert world.service.get_request(request_id).state == "pending"
    assert world.actions() == before
    findings = reconcile(
        world.service, world.clock(), db=world.db, providers=world.service.providers
    )
    assert any(f.kind == "differs" and f.request_id == request_id for f in findings)


def test_an_approval_in_the_portal_is_followed(world: World) -> None:
    world.sign_in(PAT, "pat@fabrikam.example")
    request_id = world.request(starts_at=world.clock() + timedelta(minutes=30))
    world.arm.managed_apps.set_request_state(world.jit_request(request_id), "Approved")
    world.service.native.refresh(world.clock())
    view = world.service.get_request(request_id)
    assert view.state == "approved" and view.decided_by == "azure"


def test_a_request_made_in_the_portal_appears(world: World) -> None:
    world.sign_in(PAT, "pat@fabrikam.example")
    token, _link = world.service.signins.tokens_for(PAT, now=world.clock())
    managed = world.service.deps.native.managed_apps
    assert managed is not None
    from jitaccess.domain.native import RoleAuthorization

    made = managed.create_request(
        token,
        f"/subscriptions/{SUB}/resourceGroups/mrg-contoso/providers/Microsoft.Solutions/"
        "jitRequests/from-portal",
        world.app_id,
        [RoleAuthorization(PAT_OID, CONTRIBUTOR)],
        world.clock() + timedelta(minutes=5),
        timedelta(hours=2),
    )
    report = world.service.native.refresh(world.clock())
    assert report.requests_found == 1
    (view,) = world.service.list_requests()
    assert view.requester == PAT  # the creator's linked Slack account
    assert view.state == "pending"
    assert world.jit_request(view.id) == made.id


# -- the policy: Azure's, read back and written back ---------------------------------------


def test_a_portal_change_is_adopted_and_audited(world: World) -> None:
    world.arm.managed_apps.change_policy_in_portal(
        world.app_id, approval_mode="AutoApprove", maximum_duration="PT2H"
    )
    report = world.service.native.refresh(world.clock())
    assert report.policies_changed == ["contoso"]
    app = world.service.get_app("contoso")
    assert app.policy.mode == "automatic"
    assert app.policy.max_duration == timedelta(hours=2)
    assert "policy_changed_in_azure" in world.actions()


def test_an_admins_change_is_written_to_azure_through_the_long_running_patch(
    world: World,
) -> None:
    view = world.service.set_policy(
        "contoso", actor=CARL, now=world.clock(), max_duration=timedelta(hours=2)
    )
    assert view.policy.max_duration == timedelta(hours=2)
    azure = world.arm.managed_apps.application(world.app_id).jit_access_policy
    assert azure is not None and azure["maximumJitAccessDuration"] == "PT2H"
    assert "policy_written_to_azure" in world.actions()


def test_a_portal_change_racing_a_write_back_is_refused_with_the_difference(
    world: World,
) -> None:
    world.arm.managed_apps.change_policy_in_portal(world.app_id, maximum_duration="PT1H")
    with pytest.raises(Conflict, match="changed in Azure") as refused:
        world.service.set_policy(
            "contoso", actor=CARL, now=world.clock(), max_duration=timedelta(hours=3)
        )
    assert "maximum duration" in str(refused.value)
    azure = world.arm.managed_apps.application(world.app_id).jit_access_policy
    assert azure is not None and azure["maximumJitAccessDuration"] == "PT1H"  # not overwritten
    assert world.service.get_app("contoso").policy.max_duration == timedelta(hours=1)


def test_only_azures_policy_fields_can_be_changed_on_a_native_application(
    world: World,
) -> None:
    with pytest.raises(RuleViolation, match="native Azure managed application"):
        world.service.set_policy("contoso", actor=CARL, now=world.clock(), approvers=(AVA, CARL))
    with pytest.raises(RuleViolation):  # not a consumer admin
        world.service.set_policy(
            "contoso", actor=PAT, now=world.clock(), max_duration=timedelta(hours=2)
        )


def test_the_config_form_sending_every_field_changes_only_what_differs(world: World) -> None:
    """/jit config submits all its fields; on a native application the unchanged
    approvers, time-out and quorum pass, the maximum goes to Azure, the feed stays ours."""
    app = world.service.get_app("contoso")
    view = world.service.set_policy(
        "contoso",
        actor=CARL,
        now=world.clock(),
        mode=app.policy.mode,
        max_duration=timedelta(hours=3),
        approvers=app.policy.approvers,
        approval_timeout=app.policy.approval_timeout,
        required_approvals=app.policy.required_approvals,
        feed_channel="CFEED0001",
    )
    assert view.policy.max_duration == timedelta(hours=3)
    assert view.policy.feed_channel == "CFEED0001"
    azure = world.arm.managed_apps.application(world.app_id).jit_access_policy
    assert azure is not None and azure["maximumJitAccessDuration"] == "PT3H"


# -- Azure or Microsoft answering badly: refused, nothing recorded ---------------------


def test_azure_refusing_the_publishers_token_asks_them_to_sign_in_again(world: World) -> None:
    world.sign_in(PAT, "pat@fabrikam.example")
    world.arm.user_token_verifier = lambda token: None  # ARM answers 401 to any person
    with pytest.raises(NeedsSignIn, match="Azure did not accept your sign-in"):
        world.request()
    assert world.arm.managed_apps.jit_requests == {}
    assert world.service.list_requests() == []


def test_microsoft_answering_out_of_shape_refuses_and_records_nothing(world: World) -> None:
    world.sign_in(PAT, "pat@fabrikam.example")
    world.entra.answer_next({"token_type": "Bearer"}, path="/oauth2/v2.0/token")
    with pytest.raises(RuleViolation, match="nothing was recorded") as refused:
        world.request()
    assert not isinstance(refused.value, NeedsSignIn)
    assert world.arm.managed_apps.jit_requests == {}
    assert world.service.list_requests() == []
    assert world.service.signins.link_of(PAT) is not None  # a bad answer is not a sign-out


def test_a_pim_failure_refuses_the_decision_and_records_nothing(world: World) -> None:
    world.sign_in(PAT, "pat@fabrikam.example")
    request_id = world.request()
    world.sign_in(AVA, "ava@contoso.example")
    world.arm.pim_available = False
    with pytest.raises(RuleViolation, match="nothing was recorded"):
        world.service.approve(request_id, actor=AVA, reason="ok", now=world.clock())
    assert world.service.get_request(request_id).state == "pending"
    assert "approve" not in world.actions()


def test_no_approval_stage_in_the_public_api_points_to_the_portal(world: World) -> None:
    world.sign_in(PAT, "pat@fabrikam.example")
    request_id = world.request()
    world.sign_in(AVA, "ava@contoso.example")
    world.arm.managed_apps.approvals.clear()  # Azure shows Ava no stage for it
    with pytest.raises(RuleViolation, match="Decide it in the Azure portal") as refused:
        world.service.approve(request_id, actor=AVA, reason="ok", now=world.clock())
    assert "portal.azure.com" in str(refused.value)
    assert world.service.get_request(request_id).state == "pending"
    assert world.arm.managed_apps.request(world.jit_request(request_id)).state == "Pending"


def test_require_mfa_on_an_engine_application_needs_the_same_proof(world: World) -> None:
    """require_mfa is a policy option of any application: on one enforced by jitaccess's
    own engine (the log provider here), an approval counts only after a recent
    multi-factor sign-in with Microsoft; nothing else of Azure is involved."""
    from conftest import ADMIN, register
    from jitaccess.domain.policy import ApprovalMode

    register(
        world.service,
        "crm",
        mode=ApprovalMode.MANUAL,
        approvers=(AVA,),
        publishers=(PAT,),
        now=world.clock(),
    )
    world.service.set_require_mfa("crm", True, actor=ADMIN, now=world.clock())
    view = world.service.submit(
        "crm",
        requester=PAT,
        role="Contributor",
        duration=timedelta(hours=1),
        justification="deploy",
        now=world.clock(),
    )
    with pytest.raises(NeedsSignIn, match="multi-factor"):  # never signed in
        world.service.approve(view.id, actor=AVA, reason="ok", now=world.clock())
    world.sign_in(AVA, "ava@contoso.example")  # a link, but no MFA proof
    with pytest.raises(NeedsSignIn, match="multi-factor"):
        world.service.approve(view.id, actor=AVA, reason="ok", now=world.clock())
    assert world.service.get_request(view.id).state == "pending"
    world.sign_in(AVA, "ava@contoso.example", mfa=True)
    assert world.service.approve(view.id, actor=AVA, reason="ok", now=world.clock()).state in (
        "approved",
        "active",
    )
    world.clock.move(timedelta(hours=2))  # the proof is an hour old at most
    second = world.service.submit(
        "crm",
        requester=PAT,
        role="Owner",
        duration=timedelta(hours=1),
        justification="again",
        now=world.clock(),
    )
    with pytest.raises(NeedsSignIn, match="older"):
        world.service.approve(second.id, actor=AVA, reason="ok", now=world.clock())


def test_linked_members_of_an_approver_group_get_the_request(world: World) -> None:
    world.sign_in(BEN, "ben@contoso.example")
    world.sign_in(PAT, "pat@fabrikam.example")
    view = world.service.get_request(world.request())
    assert set(view.notified_approvers) == {AVA, BEN}
    world.entra.add_group(GROUP_OID, [])  # Ben leaves Ops: read afresh at the decision
    with pytest.raises(RuleViolation):
        world.service.approve(view.id, actor=BEN, reason="ok", now=world.clock())
