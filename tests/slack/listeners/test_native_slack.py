"""Native mode through Slack: the real Bolt app and WebClient against the fake Slack, over
the real Azure SDK against the fake ARM (Microsoft.Solutions and PIM approvals) and real
msal and Graph calls against the fake Entra, all wired as ``serve`` wires them.

What a person in Slack would notice: ``/jit signin`` hands them a link of their own that
works once; a native request's card says it is Azure's own JIT request and where the
portal offers the same; Approve without a (valid, or multi-factor) sign-in says so with a
*Sign in with Microsoft* link and records nothing; after signing in, the same click is
their PIM decision in Azure and the card follows; verbs Azure does not offer are refused
with the reason and change nothing."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from fakes.fake_arm import FakeArm
from fakes.fake_entra import TENANT_ID, FakeEntra
from jitaccess.app.native import PORTAL_APPROVALS, portal_link
from jitaccess.app.signins import Link
from jitaccess.domain.errors import RuleViolation
from jitaccess.providers.native import NativeWitness
from jitaccess.slack.blocks import ids
from jitaccess.slack.directory import SlackEmailLookup
from jitaccess.slack.listeners.base import SORRY
from jitaccess.slack.runtime import slack_client
from jitaccess.store.db import Database
from jitaccess.store.models import AccessRequest, AuditEvent, SignInAttempt
from jitaccess_sandbox.fake_slack import FakeSlack
from native_world import (
    AVA,
    AVA_OID,
    BEN,
    CARL,
    PAT,
    PEOPLE,
    SUB,
    azure_fakes,
    native_ports,
)
from slack_harness import SlackWorld, texts, time_problems

#: How Slack shows the sign-in link: a mrkdwn link labelled "Sign in with Microsoft".
SIGN_IN_LINK = re.compile(r"<(https://[^|>\s]+)\|Sign in with Microsoft>")


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Native:
    slack: SlackWorld
    arm: FakeArm
    entra: FakeEntra
    db: Database
    app_id: str

    @property
    def fake(self) -> FakeSlack:
        return self.slack.fake

    # -- signing in, as a person does from Slack ----------------------------------------
    def follow(self, text: str, user: str, *, mfa: bool = False) -> Link:
        """Follow the Sign in with Microsoft link shown in ``text``, sign in on the fake
        Entra page as ``user`` and come back to jitaccess's callback."""
        url = sign_in_url(text)
        answer = self.entra.sign_in(url, PEOPLE[user][1], mfa=mfa)
        return self.slack.service.signins.finish(answer.params, now=now())

    def sign_in(self, user: str, *, mfa: bool = False) -> Link:
        return self.follow(self.slack.say(user, "signin"), user, mfa=mfa)

    # -- requests --------------------------------------------------------------------------
    def request(self) -> int:
        said = self.slack.say(PAT, "request contoso Contributor 1h fix the index")
        found = re.search(r"Request #(\d+) submitted", said)
        assert found, said
        self.slack.deliver()
        return int(found.group(1))

    def jit_request(self, request_id: int) -> str:
        with self.db.transaction(readonly=True) as session:
            row = session.get(AccessRequest, request_id)
            assert row is not None and row.native_request_id
            return row.native_request_id

    def azure_state(self, request_id: int) -> str:
        return str(self.arm.managed_apps.request(self.jit_request(request_id)).state)

    def state(self, request_id: int) -> str:
        return self.slack.service.get_request(request_id).state

    def actions(self) -> list[str]:
        with self.db.transaction(readonly=True) as session:
            return list(
                session.execute(select(AuditEvent.action).order_by(AuditEvent.seq)).scalars()
            )

    def last_ephemeral(self, user: str) -> str:
        shown = self.fake.ephemerals_to(user)
        assert shown, f"nothing was shown to {user}"
        return str(shown[-1]["text"])


def sign_in_url(text: str) -> str:
    """The address a person reaches by clicking the link in ``text`` (Slack decodes the
    ``&amp;`` its mrkdwn escaping wrote)."""
    found = SIGN_IN_LINK.search(text)
    assert found, f"no Sign in with Microsoft link in {text[:500]}"
    return html.unescape(found.group(1))


@pytest.fixture
def native(db: Database) -> Iterator[Native]:
    fake = FakeSlack()
    for user, (name, email, _oid, real) in PEOPLE.items():
        fake.add_user(user, name=name, real_name=real, email=email)
    with fake, azure_fakes() as (arm, entra, app_id):
        # Approvers are mapped the way serve maps them: Graph's mail, then Slack's
        # users.lookupByEmail on the fake Slack.
        lookup = SlackEmailLookup(slack_client("xoxb-test-token", fake.base_url))
        ports = native_ports(arm, entra, lookup.find)
        assert ports.managed_apps is not None
        world = SlackWorld(fake, db, native=ports)
        world.service.providers.register(NativeWitness(ports.managed_apps))
        report = world.service.native.import_apps(
            SUB,
            None,
            publishers=[PAT],
            admins=[CARL],
            requests_resource_group=None,
            actor=CARL,
            now=now(),
        )
        assert report.registered == ["contoso"]
        assert world.service.get_app("contoso").policy.approvers == (AVA,)
        yield Native(world, arm, entra, db, app_id)


# -- approvers mapped through Slack's users.lookupByEmail ------------------------------------


def test_an_import_lists_an_approver_slack_could_not_look_up_and_maps_nobody(
    native: Native,
) -> None:
    native.fake.fail_next("users.lookupByEmail", status=200, error="missing_scope")
    report = native.slack.service.native.import_apps(
        SUB,
        None,
        publishers=[PAT],
        admins=[CARL],
        requests_resource_group=None,
        actor=CARL,
        now=now(),
    )
    assert report.updated == ["contoso"]
    [line] = report.unmapped
    assert "ava@contoso.example" in line and "users:read.email" in line and "reinstall" in line
    assert native.slack.service.get_app("contoso").policy.approvers == ()  # never guessed


# -- /jit signin and /jit signout ---------------------------------------------------------


def test_signin_answers_ephemerally_with_a_link_that_works_once(native: Native) -> None:
    response, key = native.slack.command(AVA, "signin")
    assert response.status == 200 and not response.body  # acked empty: nothing in channel
    [reply] = native.fake.responses[key]
    assert reply.get("response_type", "ephemeral") == "ephemeral"
    assert native.fake.messages_in("C0GENERAL") == []
    url = sign_in_url(reply["text"])
    assert url.startswith(f"{native.entra.base_url}/{TENANT_ID}/oauth2/v2.0/authorize?")
    assert "works once" in reply["text"] and "10 minutes" in reply["text"]

    answer = native.entra.sign_in(url, "ava@contoso.example")
    link = native.slack.service.signins.finish(answer.params, now=now())
    assert (link.slack_user, link.object_id) == (AVA, AVA_OID)
    with pytest.raises(RuleViolation, match="already used"):
        native.slack.service.signins.finish(answer.params, now=now())
    assert native.actions().count("signed_in") == 1


def test_signout_forgets_the_sign_in_and_says_when_there_was_none(native: Native) -> None:
    assert "You were not signed in" in native.slack.say(AVA, "signout")
    native.sign_in(AVA)
    assert "Signed out" in native.slack.say(AVA, "signout")
    assert native.slack.service.signins.link_of(AVA) is None
    assert "signed_out" in native.actions()
    assert "You were not signed in" in native.slack.say(AVA, "signout")


@pytest.mark.parametrize("text", ["signin now", "signout everywhere", "SIGNIN please"])
def test_words_after_signin_or_signout_are_a_usage_error(native: Native, text: str) -> None:
    native.sign_in(AVA)
    said = native.slack.say(AVA, text)
    verb = text.split()[0].lower()
    assert f"Usage: `/jit {verb}` (nothing after it)" in said
    assert native.slack.service.signins.link_of(AVA) is not None  # signout did not happen
    with native.db.transaction(readonly=True) as session:
        attempts = session.execute(select(func.count()).select_from(SignInAttempt)).scalar()
    assert attempts == 1  # only the sign-in above made a link


def test_signin_without_sign_in_configured_says_what_to_set(
    fake_slack: FakeSlack, db: Database
) -> None:
    world = SlackWorld(fake_slack, db)  # no NativePorts: nothing of Entra configured
    said = world.say(AVA, "signin")
    for setting in ("ENTRA_CLIENT_ID", "JITACCESS_PUBLIC_URL", "JITACCESS_TOKEN_KEYS"):
        assert setting in said
    assert SORRY not in said and "Traceback" not in said
    assert "You were not signed in" in world.say(AVA, "signout")


# -- the card of a native request ---------------------------------------------------------


def test_a_native_requests_card_says_it_is_azures_and_where_the_portal_decides_it(
    native: Native,
) -> None:
    native.sign_in(PAT)
    rid = native.request()
    card = native.slack.card_for(AVA, rid)
    shown = texts(card)
    assert "Azure managed-application JIT: decided in Azure PIM as you" in shown
    assert f"<{PORTAL_APPROVALS}|" in shown
    assert f"<{portal_link(native.app_id)}|the application" in shown
    assert ids.APPROVE in shown and ids.DENY in shown
    # The requester's card says Azure grants and ends it.
    [mine, *_] = native.slack.requester_cards(PAT, rid)
    assert "Azure grants and ends this access" in texts(mine)


def test_an_engine_mode_card_says_nothing_of_azure(fake_slack: FakeSlack, db: Database) -> None:
    from conftest import APPROVER, PUBLISHER, register

    world = SlackWorld(fake_slack, db)
    register(world.service, now=now())
    view = world.service.submit(
        "crm",
        requester=PUBLISHER,
        role="Contributor",
        duration=timedelta(hours=1),
        justification="deploy",
        now=now(),
    )
    assert not view.native
    world.deliver()
    assert "Azure managed-application" not in texts(world.card_for(APPROVER, view.id))


# -- a publisher's request is made as themselves ---------------------------------------------


def test_a_request_without_the_publishers_sign_in_offers_the_link_and_records_nothing(
    native: Native,
) -> None:
    said = native.slack.say(PAT, "request contoso Contributor 1h fix the index")
    assert "sign in" in said.lower()
    sign_in_url(said)
    assert native.arm.managed_apps.jit_requests == {}
    assert native.slack.service.list_requests() == []


# -- Approve and Deny: the approver's own PIM decision ---------------------------------------


def test_approve_without_a_sign_in_offers_the_link_then_decides_in_azure(
    native: Native,
) -> None:
    native.sign_in(PAT)
    rid = native.request()
    before = native.actions()
    card = native.slack.card_for(AVA, rid)

    native.slack.click(AVA, card, ids.APPROVE)
    told = native.last_ephemeral(AVA)
    assert "sign in with Microsoft first" in told
    # The form that opened became the refusal, with the same link.
    modal = native.slack.last_modal(AVA)
    assert modal["view"].get("callback_id") != ids.DECISION_MODAL
    assert sign_in_url(json.dumps(modal["view"]["blocks"])) == sign_in_url(told)
    assert native.azure_state(rid) == "Pending"
    assert native.state(rid) == "pending"
    assert native.actions() == before

    native.follow(told, AVA)  # the link in the reply, followed
    native.slack.click(AVA, native.slack.card_for(AVA, rid), ids.APPROVE)
    assert native.slack.last_modal(AVA)["view"]["callback_id"] == ids.DECISION_MODAL
    response = native.slack.submit_reason(AVA, "go ahead")
    assert response.status == 200 and not response.body
    assert native.azure_state(rid) == "Approved"  # the PIM stage, decided as Ava
    assert native.state(rid) in ("approved", "active")
    with native.db.transaction(readonly=True) as session:
        entry = session.execute(
            select(AuditEvent).where(AuditEvent.action == "approve")
        ).scalar_one()
        assert entry.actor == AVA and entry.details["entra_user"] == "ava@contoso.example"

    native.slack.deliver()
    updated = texts(native.slack.card_for(AVA, rid))
    assert f"by <@{AVA}>: go ahead" in updated
    assert ids.APPROVE not in updated  # no buttons once decided


def test_a_lapsed_sign_in_is_refused_with_the_link_and_nothing_is_recorded(
    native: Native,
) -> None:
    native.sign_in(PAT)
    rid = native.request()
    native.sign_in(AVA)
    native.entra.revoke_sign_ins(AVA_OID)  # e.g. an admin revoked Ava's sessions in Entra
    before = native.actions()

    native.slack.click(AVA, native.slack.card_for(AVA, rid), ids.APPROVE)
    # What jitaccess stored still looks fine: the form asks for the reason.
    assert native.slack.last_modal(AVA)["view"]["callback_id"] == ids.DECISION_MODAL
    native.slack.submit_reason(AVA, "go ahead")
    told = native.last_ephemeral(AVA)
    assert "sign in again" in told
    assert native.azure_state(rid) == "Pending"
    assert native.state(rid) == "pending"
    assert "approve" not in native.actions()[len(before) :]

    native.follow(told, AVA)
    assert "now" in native.slack.say(AVA, f"approve {rid} signed in again")
    assert native.azure_state(rid) == "Approved"


def test_jit_approve_and_deny_in_a_command_follow_the_same_rules(native: Native) -> None:
    native.sign_in(PAT)
    rid = native.request()
    said = native.slack.say(AVA, f"approve {rid} looks fine")
    assert "sign in with Microsoft first" in said or "sign in again" in said
    sign_in_url(said)  # a clickable link, not the raw address
    assert native.azure_state(rid) == "Pending"

    native.follow(said, AVA)
    said = native.slack.say(AVA, f"deny {rid} not during the freeze")
    assert f"Request #{rid} is now denied" in said
    assert native.azure_state(rid) == "Denied"
    native.slack.deliver()
    assert f"by <@{AVA}>: not during the freeze" in texts(native.slack.card_for(AVA, rid))


def test_require_mfa_asks_for_a_multi_factor_sign_in_before_the_click_counts(
    native: Native,
) -> None:
    native.slack.service.set_require_mfa("contoso", True, actor=CARL, now=now())
    native.sign_in(PAT)
    rid = native.request()
    native.sign_in(AVA)  # a password-only sign-in

    native.slack.click(AVA, native.slack.card_for(AVA, rid), ids.APPROVE)
    told = native.last_ephemeral(AVA)
    assert "multi-factor" in told
    assert native.azure_state(rid) == "Pending"
    assert native.state(rid) == "pending"

    # The link asks Entra for the authentication context; a sign-in without MFA does
    # not satisfy it, one with MFA does.
    native.follow(told, AVA, mfa=False)
    native.slack.click(AVA, native.slack.card_for(AVA, rid), ids.APPROVE)
    told = native.last_ephemeral(AVA)
    assert "multi-factor" in told
    native.follow(told, AVA, mfa=True)
    native.slack.click(AVA, native.slack.card_for(AVA, rid), ids.APPROVE)
    native.slack.submit_reason(AVA, "checked")
    assert native.azure_state(rid) == "Approved"


def test_a_member_of_an_approver_group_is_offered_the_decision_once_linked(
    native: Native,
) -> None:
    native.sign_in(PAT)
    rid = native.request()
    # Ben is in the Entra approver group; Slack knows it once he has signed in.
    native.sign_in(BEN)
    assert "now" in native.slack.say(BEN, f"approve {rid} on call")
    assert native.azure_state(rid) == "Approved"


def test_require_mfa_on_an_engine_mode_application_asks_at_the_click_too(
    native: Native,
) -> None:
    from conftest import ADMIN, register

    service = native.slack.service
    register(service, "crm", approvers=(AVA,), publishers=(PAT,), now=now())
    service.set_require_mfa("crm", True, actor=ADMIN, now=now())
    view = service.submit(
        "crm",
        requester=PAT,
        role="Contributor",
        duration=timedelta(hours=1),
        justification="deploy",
        now=now(),
    )
    native.slack.deliver()
    card = native.slack.card_for(AVA, view.id)
    assert "Azure managed-application" not in texts(card)  # jitaccess's own request

    native.slack.click(AVA, card, ids.APPROVE)
    told = native.last_ephemeral(AVA)
    assert "multi-factor" in told
    assert native.state(view.id) == "pending"
    native.follow(told, AVA, mfa=True)
    native.slack.click(AVA, native.slack.card_for(AVA, view.id), ids.APPROVE)
    native.slack.submit_reason(AVA, "checked")
    assert native.state(view.id) in ("approved", "active")


# -- what Azure does not offer -------------------------------------------------------------


def test_cancel_on_a_native_request_is_refused_with_the_reason_and_changes_nothing(
    native: Native,
) -> None:
    native.sign_in(PAT)
    rid = native.request()
    before = native.actions()
    [card, *_] = native.slack.requester_cards(PAT, rid)
    native.slack.click(PAT, card, ids.CANCEL)
    told = native.last_ephemeral(PAT)
    assert "native Azure managed-application JIT request" in told
    assert "only be tagged" in told
    assert native.state(rid) == "pending"
    assert native.azure_state(rid) == "Pending"
    assert native.actions() == before


def test_extend_and_revoke_on_an_active_native_request_are_refused(native: Native) -> None:
    native.sign_in(PAT)
    rid = native.request()
    native.sign_in(AVA)
    native.slack.say(AVA, f"approve {rid} go")
    native.slack.tick()
    assert native.state(rid) == "active"
    native.slack.deliver()
    before = native.actions()

    mine = native.slack.requester_cards(PAT, rid)[-1]
    native.slack.click(PAT, mine, ids.EXTEND)
    assert "only be tagged" in texts(native.slack.last_modal(PAT)["view"])

    native.slack.click(AVA, native.slack.card_for(AVA, rid), ids.REVOKE)
    assert "only be tagged" in native.last_ephemeral(AVA)
    assert "only be tagged" in native.slack.say(CARL, f"revoke {rid} done")
    assert native.state(rid) == "active"
    assert native.azure_state(rid) == "Approved"
    assert native.actions() == before


def test_native_mode_cards_show_times_only_as_date_tokens(native: Native) -> None:
    """A native request (Azure's own JIT request), approved in Azure PIM from Slack: no
    bare time in any payload (tests/slack/test_times_in_slack.py walks the rest)."""
    native.sign_in(PAT)
    native.sign_in(AVA)
    rid = native.request()
    native.slack.click(AVA, native.slack.card_for(AVA, rid), ids.APPROVE)
    native.slack.submit_reason(AVA, "go ahead")
    native.slack.deliver()
    native.slack.say(PAT, "list")
    assert time_problems(native.fake) == []
    assert "<!date^" in json.dumps(native.slack.card_for(AVA, rid))
