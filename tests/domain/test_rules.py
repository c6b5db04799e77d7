"""The pure rules: durations and policy checks, without a database."""

from datetime import timedelta

import pytest

from conftest import PUBLISHER, utc
from jitaccess.domain.durations import format_duration, parse_duration
from jitaccess.domain.errors import RuleViolation
from jitaccess.domain.lifecycle import RequestState, allowed_events, mermaid
from jitaccess.domain.policy import ApprovalMode, AppRules, Policy, check_submission
from jitaccess.slack.principals import SLACK_PRINCIPALS

NOW = utc("2026-11-27 10:00:00")
APP = AppRules(
    name="crm",
    jit_enabled=True,
    publishers=(PUBLISHER,),
    eligible_roles=("Contributor", "Owner"),
    policy=Policy(max_duration=timedelta(hours=8)),
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90m", timedelta(minutes=90)),
        ("2h", timedelta(hours=2)),
        ("1h30m", timedelta(minutes=90)),
        ("PT8H", timedelta(hours=8)),
        ("pt1h30m", timedelta(minutes=90)),
        ("1d", timedelta(days=1)),
    ],
)
def test_durations_people_type_are_understood(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected
    assert parse_duration(format_duration(expected)) == expected


@pytest.mark.parametrize("text", ["", "abc", "2 hours", "h", "PT", "-1h", "1.5h"])
def test_malformed_durations_say_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match="use forms like 90m, 2h, 1h30m or PT8H"):
        parse_duration(text)


def test_manual_mode_without_approvers_is_not_a_policy() -> None:
    with pytest.raises(RuleViolation, match="at least one approver"):
        Policy(mode=ApprovalMode.MANUAL).validated(SLACK_PRINCIPALS)


def test_approvers_must_be_slack_member_ids() -> None:
    with pytest.raises(RuleViolation, match="not a Slack user ID"):
        Policy(mode=ApprovalMode.MANUAL, approvers=("alice@example.com",)).validated(
            SLACK_PRINCIPALS
        )


def test_start_within_clock_skew_counts_as_now() -> None:
    _role, window, _ = check_submission(
        APP, PUBLISHER, "owner", timedelta(hours=1), NOW - timedelta(seconds=30), "x", NOW
    )
    assert window.starts_at == NOW
    assert window.ends_at == NOW + timedelta(hours=1)


def test_role_is_matched_without_case_and_stored_canonically() -> None:
    role, _, _ = check_submission(APP, PUBLISHER, "owner", timedelta(hours=1), None, "x", NOW)
    assert role == "Owner"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"requester": "UOTHER"}, "Only crm's publishers may request"),
        ({"role": "Reader"}, "choose one of Contributor, Owner"),
        ({"duration": timedelta(hours=9)}, "maximum of 8h: ask for 8h or less"),
        ({"duration": timedelta(0)}, "must be positive"),
        ({"starts_at": NOW - timedelta(minutes=5)}, "start time is in the past"),
        ({"starts_at": NOW + timedelta(days=31)}, "more than 30 days ahead"),
        ({"justification": "   "}, "justification is required"),
    ],
)
def test_each_refusal_says_what_to_change(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "requester": PUBLISHER,
        "role": "Contributor",
        "duration": timedelta(hours=1),
        "starts_at": None,
        "justification": "deploy hotfix",
    }
    args.update(kwargs)
    with pytest.raises(RuleViolation, match=message):
        check_submission(
            APP,
            args["requester"],
            args["role"],
            args["duration"],
            args["starts_at"],  # type: ignore[arg-type]
            args["justification"],
            NOW,  # type: ignore[arg-type]
        )


def test_machine_allows_only_the_designed_moves() -> None:
    assert allowed_events(RequestState.PENDING) == [
        "approve",
        "auto_approve",
        "cancel",
        "deny",
        "fail",  # native mode: Azure reports a pending jitRequest Failed
        "time_out",
    ]
    assert allowed_events(RequestState.ACTIVE) == ["expire", "extend", "release", "revoke"]
    assert allowed_events(RequestState.APPROVED) == [
        "activate",
        "cancel",
        "expire",
        "extend",
        "fail",
    ]
    assert allowed_events(RequestState.EXPIRED) == []


def test_diagram_is_drawn_from_the_machine() -> None:
    text = mermaid()
    assert text.startswith("stateDiagram-v2")
    for state in RequestState:
        assert f" as {state.value}" in text
    assert "pending --> approved" in text
    assert "active --> expired" in text
    assert "active --> active : Extend" in text  # the extension, on the same grant
