"""Native mode's e-mail → Slack person (``slack/directory.py`` SlackEmailLookup): the real
WebClient's ``users.lookupByEmail`` against the fake Slack. Someone is found, or is
nobody (no such address, a deactivated account, a bot), or the lookup failed and says
why (a missing scope, a refusal, an answer of the wrong shape): never a guess."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from jitaccess.domain.native import ExternalLookupFailed
from jitaccess.slack.directory import SlackEmailLookup
from jitaccess.slack.runtime import slack_client
from jitaccess_sandbox.fake_slack import FakeSlack

AVA = "U0AVA0001"
METHOD = "users.lookupByEmail"


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack(
        users={
            "U0OLD0009": {"name": "old", "email": "old@contoso.example", "deleted": True},
        }
    ) as fake:
        fake.add_user(AVA, name="ava", real_name="Ava Adams", email="ava@contoso.example")
        fake.add_user("U0BOT0008", name="robot", email="robot@contoso.example", is_bot=True)
        yield fake


@pytest.fixture
def lookup(fake: FakeSlack) -> SlackEmailLookup:
    return SlackEmailLookup(slack_client("xoxb-test-token", fake.base_url))


def test_a_person_is_found_by_their_address(fake: FakeSlack, lookup: SlackEmailLookup) -> None:
    assert lookup.find("ava@contoso.example") == AVA
    assert lookup.find("Ava@Contoso.Example") == AVA  # Slack matches addresses case-blind
    [call, *_] = fake.calls_to(METHOD)
    assert call.args["email"] == "ava@contoso.example"
    assert call.token == "xoxb-test-token"


def test_an_address_slack_does_not_know_is_nobody(lookup: SlackEmailLookup) -> None:
    assert lookup.find("nobody@contoso.example") is None


@pytest.mark.parametrize("email", ["old@contoso.example", "robot@contoso.example"])
def test_a_deactivated_account_or_a_bot_is_nobody_to_map_to(
    lookup: SlackEmailLookup, email: str
) -> None:
    assert lookup.find(email) is None


def test_a_missing_scope_says_to_reinstall(fake: FakeSlack, lookup: SlackEmailLookup) -> None:
    fake.fail_next(METHOD, status=200, error="missing_scope")
    with pytest.raises(ExternalLookupFailed, match=r"users:read\.email.*reinstall"):
        lookup.find("ava@contoso.example")


@pytest.mark.parametrize(
    ("status", "error"), [(200, "invalid_auth"), (200, "account_inactive"), (500, None)]
)
def test_any_other_refusal_is_a_failed_lookup_naming_it(
    fake: FakeSlack, lookup: SlackEmailLookup, status: int, error: str | None
) -> None:
    fake.fail_next(METHOD, status=status, error=error)
    with pytest.raises(ExternalLookupFailed, match="users.lookupByEmail") as failed:
        lookup.find("ava@contoso.example")
    assert (error or "internal_error") in str(failed.value)


@pytest.mark.parametrize(
    "body",
    [
        {"ok": True},  # no user at all
        {"ok": True, "user": AVA},  # the id alone, not the user object
        {"ok": True, "user": None},
        {"ok": True, "user": {"name": "ava"}},  # no id
        {"ok": True, "user": {"id": 42}},
        {"ok": True, "user": {"id": "ava"}},  # not a Slack user id
        {"ok": True, "user": {"id": AVA, "deleted": "no"}},  # a flag that is not a boolean
        {"ok": True, "user": {"id": AVA, "is_bot": None}},
        {"ok": "true", "user": {"id": AVA}},  # ok must be exactly true
        {"ok": False},  # a refusal without its error
        [{"ok": True, "user": {"id": AVA}}],  # not a JSON object
        "ok",
        None,
    ],
)
def test_an_answer_of_the_wrong_shape_is_a_failed_lookup_never_a_person(
    fake: FakeSlack, lookup: SlackEmailLookup, body: Any
) -> None:
    fake.answer_next(METHOD, body)
    with pytest.raises(ExternalLookupFailed, match="users.lookupByEmail"):
        lookup.find("ava@contoso.example")


def test_slack_down_is_a_failed_lookup(fake: FakeSlack, lookup: SlackEmailLookup) -> None:
    fake.set_down(True)
    with pytest.raises(ExternalLookupFailed, match="users.lookupByEmail"):
        lookup.find("ava@contoso.example")
