"""The ``jitaccess`` CLI as operators use it: in-process, against a SQLite file,
under frozen time. Exit 0 done, 1 refused by a rule (stderr says what to change,
nothing changed), 2 usage error."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time

from conftest import ADMIN, APPROVER, APPROVER2, OUTSIDER, PUBLISHER, START, Cli, flat

SCOPE = "/subscriptions/s1/resourceGroups/mrg-crm"
ALL_STATES = (
    "pending",
    "approved",
    "auto_approved",
    "active",
    "expired",
    "denied",
    "cancelled",
    "timed_out",
    "revoked",
    "failed",
)


def register_manual(cli: Cli, name: str = "crm", *extra: str) -> None:
    cli(
        "apps",
        "register",
        name,
        "--scope",
        SCOPE,
        "--publisher",
        PUBLISHER,
        "--role",
        "Contributor",
        "--role",
        "Owner",
        "--admin",
        ADMIN,
        "--mode",
        "manual",
        "--approver",
        APPROVER,
        "--approver",
        APPROVER2,
        *extra,
    )


def register_auto(cli: Cli, name: str = "auto") -> None:
    cli(
        "apps",
        "register",
        name,
        "--scope",
        f"/subscriptions/s1/resourceGroups/mrg-{name}",
        "--publisher",
        PUBLISHER,
        "--admin",
        ADMIN,
    )


def submit(
    cli: Cli,
    app: str = "crm",
    *,
    as_user: str = PUBLISHER,
    role: str = "Contributor",
    duration: str = "2h",
    start: str | None = None,
    reason: str = "deploy hotfix 4.2",
) -> dict[str, Any]:
    args = ["requests", "submit", app, "--as", as_user, "--role", role]
    args += ["--duration", duration, "--reason", reason]
    if start is not None:
        args += ["--start", start]
    return cli.json(*args)


def show(cli: Cli, request_id: int) -> dict[str, Any]:
    return cli.json("requests", "show", request_id)


def snapshot(cli: Cli) -> tuple[Any, Any, str]:
    """Everything a refusal must leave alone: apps, requests and the audit log."""
    return (
        cli.json("apps", "list"),
        cli.json("requests", "list"),
        cli("audit", "export", "--format", "jsonl").stdout,
    )


# -- the whole manual flow -------------------------------------------------------------
def test_manual_flow_register_submit_approve_activate_expire(cli: Cli) -> None:
    with freeze_time(START) as frozen:
        registered = cli(
            "apps",
            "register",
            "crm",
            "--scope",
            SCOPE,
            "--publisher",
            PUBLISHER,
            "--role",
            "Contributor",
            "--role",
            "Owner",
            "--admin",
            ADMIN,
            "--mode",
            "manual",
            "--approver",
            APPROVER,
            "--approver",
            APPROVER2,
        )
        assert "Registered crm (JIT enabled)" in registered.stdout

        request = submit(cli, role="owner", start="2026-11-27T12:00Z", reason="deploy hotfix 4.2")
        rid = request["id"]
        assert request["state"] == "pending"
        assert request["role"] == "Owner"  # the app's spelling, whatever the case typed
        assert request["starts_at"] == "2026-11-27T12:00:00+00:00"
        assert request["ends_at"] == "2026-11-27T14:00:00+00:00"
        assert request["notified_approvers"] == [APPROVER, APPROVER2]

        frozen.move_to("2026-11-27 10:30:00")
        approved = cli.json("requests", "approve", rid, "--as", APPROVER, "--reason", "CHG-42 ok")
        assert approved["state"] == "approved"
        assert approved["decided_by"] == APPROVER

        frozen.move_to("2026-11-27 11:59:00")
        assert "activated 0" in cli("sweep").stdout
        assert show(cli, rid)["state"] == "approved"

        frozen.move_to("2026-11-27 12:00:00")
        assert "activated 1" in cli("sweep").stdout
        active = show(cli, rid)
        assert active["state"] == "active"
        assert active["activated_at"] == "2026-11-27T12:00:00+00:00"

        frozen.move_to("2026-11-27 13:59:00")
        assert "expired 0" in cli("sweep").stdout
        assert show(cli, rid)["state"] == "active"

        frozen.move_to("2026-11-27 14:00:00")
        assert "expired 1" in cli("sweep").stdout
        shown = show(cli, rid)
        for key in (
            "id",
            "app",
            "requester",
            "role",
            "state",
            "starts_at",
            "ends_at",
            "decided_by",
            "decision_reason",
            "justification",
        ):
            assert key in shown
        assert shown["state"] == "expired"
        assert shown["ended_at"] == "2026-11-27T14:00:00+00:00"
        assert shown["decision_reason"] == "CHG-42 ok"
        assert shown["justification"] == "deploy hotfix 4.2"

        history = cli.json("requests", "history", "crm")
        assert [(h["id"], h["requester"], h["state"]) for h in history] == [
            (rid, PUBLISHER, "expired")
        ]
        assert history[0]["decided_by"] == APPROVER
        assert history[0]["decision_reason"] == "CHG-42 ok"

        table = cli("requests", "history", "crm").stdout
        row = next(line for line in table.splitlines() if f" {rid} " in line)
        for cell in (
            PUBLISHER,
            "Owner",
            "expired",
            APPROVER,
            "CHG-42 ok",
            "2026-11-27 12:00 +00:00",
        ):
            assert cell in row


def test_submit_prints_the_id_and_who_must_approve(cli: Cli) -> None:
    with freeze_time(START):
        register_manual(cli)
        result = cli(
            "requests",
            "submit",
            "crm",
            "--as",
            PUBLISHER,
            "--role",
            "Contributor",
            "--duration",
            "90m",
            "--reason",
            "rotate keys",
        )
    assert "Request 1 is waiting for approval: Contributor on crm" in result.stdout
    assert "from 2026-11-27 10:00 +00:00 to 2026-11-27 11:30 +00:00" in result.stdout
    assert f"Waiting for one of: {APPROVER}, {APPROVER2}" in result.stdout


def test_start_with_an_offset_is_stored_in_utc(cli: Cli) -> None:
    with freeze_time(START):
        register_manual(cli)
        request = submit(cli, start="2026-11-27T13:00+01:00", duration="PT1H")
    assert request["starts_at"] == "2026-11-27T12:00:00+00:00"
    assert request["ends_at"] == "2026-11-27T13:00:00+00:00"


def test_manual_approval_of_a_request_starting_now_grants_at_once(cli: Cli) -> None:
    with freeze_time(START):
        register_manual(cli)
        rid = submit(cli)["id"]
        approved = cli.json("requests", "approve", rid, "--as", APPROVER2, "--reason", "ok")
    assert approved["state"] == "active"
    assert approved["decided_by"] == APPROVER2


def test_human_output_prints_what_people_typed_literally(cli: Cli) -> None:
    # Square brackets are Rich markup: they used to vanish, or crash the command.
    with freeze_time(START):
        register_manual(cli)
        rid = submit(cli, reason="fix [prod] outage [/x]")["id"]
        cli("requests", "approve", rid, "--as", APPROVER, "--reason", "per [CHG-9]")
        shown = cli("requests", "show", rid).stdout
        listing = cli("requests", "list").stdout
    assert "fix [prod] outage [/x]" in shown
    assert "per [CHG-9]" in shown
    assert "active" in shown
    assert "per [CHG-9]" in listing


# -- automatic mode --------------------------------------------------------------------
def test_automatic_mode_approves_and_grants_at_once(cli: Cli) -> None:
    with freeze_time(START):
        register_auto(cli)
        request = submit(cli, "auto")
        log = [json.loads(line) for line in cli("audit", "export").stdout.splitlines()]
    assert request["state"] == "active"
    assert request["decided_by"] == "policy:automatic"
    assert request["decision_reason"] == "approved automatically by policy"
    assert request["activated_at"] == "2026-11-27T10:00:00+00:00"
    steps = [(e["action"], e["to"]) for e in log if e["request_id"] == request["id"]]
    assert steps == [
        ("submit", "pending"),
        ("auto_approve", "auto_approved"),
        ("activate", "active"),
    ]


def test_automatic_mode_with_a_later_start_waits_in_auto_approved(cli: Cli) -> None:
    with freeze_time(START) as frozen:
        register_auto(cli)
        request = submit(cli, "auto", start="2026-11-27T11:00Z")
        assert request["state"] == "auto_approved"
        frozen.move_to("2026-11-27 11:00:00")
        cli("sweep")
        assert show(cli, request["id"])["state"] == "active"


# -- refusals: exit 1, a message that says what to change, nothing changed ---------------
@pytest.fixture
def world(cli: Cli) -> Iterator[Cli]:
    """crm (manual, max 4h), auto (automatic), legacy (JIT disabled), selfie (an approver
    is also its publisher); request 1 pending on crm, starting at 12:00."""
    with freeze_time(START):
        register_manual(cli, "crm", "--max-duration", "4h")
        register_auto(cli)
        cli(
            "apps",
            "register",
            "legacy",
            "--scope",
            "/s/legacy",
            "--publisher",
            PUBLISHER,
            "--admin",
            ADMIN,
            "--no-jit",
        )
        cli(
            "apps",
            "register",
            "selfie",
            "--scope",
            "/s/selfie",
            "--publisher",
            APPROVER,
            "--mode",
            "manual",
            "--approver",
            APPROVER,
            "--approver",
            APPROVER2,
        )
        assert submit(cli, start="2026-11-27T12:00Z")["id"] == 1
        yield cli


SUBMIT = ("requests", "submit")


def _submit_args(app: str = "crm", **over: str) -> list[str]:
    opts = {"as": PUBLISHER, "role": "Contributor", "duration": "1h", "reason": "hotfix"}
    opts.update(over)
    args = [*SUBMIT, app]
    for key, value in opts.items():
        args += [f"--{key}", value]
    return args


ACTIVE_AUTO = _submit_args("auto")  # in `world`, request 2, active at once
APPROVED_1 = ["requests", "approve", "1", "--as", APPROVER, "--reason", "CHG-7 fine"]


REFUSALS: list[tuple[str, list[list[str]], list[str], list[str]]] = [
    (
        "non-publisher submit",
        [],
        _submit_args(**{"as": OUTSIDER}),
        ["Only crm's publishers may request access", "ask a consumer admin to add you"],
    ),
    (
        "JIT disabled",
        [],
        _submit_args("legacy"),
        ["JIT is disabled for legacy", "permanent access"],
    ),
    (
        "unknown role",
        [],
        _submit_args(role="Reader"),
        ["'Reader' is not an eligible role for crm", "choose one of Contributor, Owner"],
    ),
    (
        "role that looks like markup",
        [],
        _submit_args(role="[/x]"),
        ["'[/x]' is not an eligible role for crm"],
    ),
    (
        "duration over the maximum",
        [],
        _submit_args(duration="4h1m"),
        ["longer than crm's maximum of 4h", "ask for 4h or less"],
    ),
    ("zero duration", [], _submit_args(duration="0m"), ["Duration must be positive"]),
    (
        "start in the past",
        [],
        _submit_args(start="2026-11-27T09:58Z"),
        ["start time is in the past", "leave it empty to start now"],
    ),
    (
        "start more than 30 days ahead",
        [],
        _submit_args(start="2026-12-27T10:01Z"),
        ["more than 30 days ahead", "pick an earlier time"],
    ),
    (
        "blank justification",
        [],
        _submit_args(reason="   "),
        ["A justification is required", "say why"],
    ),
    ("unknown app", [], _submit_args("nope"), ["No application named 'nope'", "apps list"]),
    (
        "self-approval",
        [_submit_args("selfie", **{"as": APPROVER})],
        ["requests", "approve", "2", "--as", APPROVER, "--reason", "trust me"],
        ["cannot approve your own request", "another approver must decide"],
    ),
    (
        "non-approver approves",
        [],
        ["requests", "approve", "1", "--as", OUTSIDER, "--reason", "ok"],
        ["Only this application's approvers may approve"],
    ),
    (
        "the requester approves on an app where they are not an approver",
        [],
        ["requests", "approve", "1", "--as", PUBLISHER, "--reason", "ok"],
        ["Only this application's approvers may approve"],
    ),
    (
        "approve without a reason",
        [],
        ["requests", "approve", "1", "--as", APPROVER, "--reason", " "],
        ["A reason is required to approve"],
    ),
    (
        "second approver loses the race",
        [APPROVED_1],
        ["requests", "approve", "1", "--as", APPROVER2, "--reason", "me too"],
        ["already approved by UAPP1", "CHG-7 fine"],
    ),
    (
        "deny after someone approved",
        [APPROVED_1],
        ["requests", "deny", "1", "--as", APPROVER2, "--reason", "no"],
        ["already approved by UAPP1"],
    ),
    (
        "cancel by someone other than the requester",
        [],
        ["requests", "cancel", "1", "--as", APPROVER],
        ["Only the requester (UPUB1) may cancel request 1", "deny or revoke"],
    ),
    (
        "cancel an active request",
        [ACTIVE_AUTO],
        ["requests", "cancel", "2", "--as", PUBLISHER],
        ["already active", "use release"],
    ),
    (
        "revoke by the publisher",
        [ACTIVE_AUTO],
        ["requests", "revoke", "2", "--as", PUBLISHER, "--reason", "done"],
        ["Only auto's approvers and consumer admins may revoke", "release"],
    ),
    (
        "release by someone else",
        [ACTIVE_AUTO],
        ["requests", "release", "2", "--as", APPROVER],
        ["Only the requester (UPUB1) may release request 2", "revoke"],
    ),
    (
        "release a request twice",
        [ACTIVE_AUTO, ["requests", "release", "2", "--as", PUBLISHER]],
        ["requests", "release", "2", "--as", PUBLISHER],
        ["Request 2 is already revoked by UPUB1"],
    ),
    (
        "policy change by a non-admin",
        [],
        ["apps", "policy", "crm", "--as", PUBLISHER, "--max-duration", "8h"],
        ["Only crm's consumer admins may change its policy"],
    ),
    (
        "manual mode with no approver",
        [],
        ["apps", "policy", "auto", "--as", ADMIN, "--mode", "manual"],
        ["Manual approval needs at least one approver", "add one (--approver U…)"],
    ),
    (
        "approver that is not a Slack ID",
        [],
        ["apps", "policy", "crm", "--as", ADMIN, "--approver", "alice"],
        ["Approver 'alice' is not a Slack user ID"],
    ),
    (
        "manual mode with no approver (register)",
        [],
        ["apps", "register", "x", "--scope", "/s/x", "--publisher", PUBLISHER, "--mode", "manual"],
        ["Manual approval needs at least one approver", "--approver"],
    ),
    (
        "zero maximum duration at registration",
        [],
        [
            "apps",
            "register",
            "x",
            "--scope",
            "/s/x",
            "--publisher",
            PUBLISHER,
            "--max-duration",
            "0m",
        ],
        ["Maximum duration must be positive"],
    ),
    (
        "policy for a JIT-disabled app",
        [],
        ["apps", "policy", "legacy", "--as", ADMIN, "--max-duration", "2h"],
        ["JIT is disabled for legacy"],
    ),
    (
        "register an existing name",
        [],
        ["apps", "register", "crm", "--scope", SCOPE, "--publisher", PUBLISHER],
        ["crm is already registered", "apps policy"],
    ),
    (
        "publisher that is not a Slack ID",
        [],
        ["apps", "register", "x", "--scope", "/s/x", "--publisher", "bob@example.com"],
        ["is not a Slack user ID", "Copy member ID"],
    ),
    (
        "unknown request id",
        [],
        ["requests", "approve", "99", "--as", APPROVER, "--reason", "ok"],
        ["No request 99"],
    ),
    ("show an unknown request", [], ["requests", "show", "99"], ["No request 99"]),
    ("show an unknown app", [], ["apps", "show", "nope"], ["No application named 'nope'"]),
    ("history of an unknown app", [], ["requests", "history", "nope"], ["No application"]),
    (
        "list with an unknown state",
        [],
        ["requests", "list", "--state", "bogus"],
        ["'bogus' is not a state", "pending, approved"],
    ),
]


@pytest.mark.parametrize(
    ("setup", "args", "expected"),
    [pytest.param(s, a, e, id=name) for name, s, a, e in REFUSALS],
)
def test_refusal_exits_1_says_what_to_change_and_changes_nothing(
    world: Cli, setup: list[list[str]], args: list[str], expected: list[str]
) -> None:
    for step in setup:
        world(*step)
    before = snapshot(world)
    result = world(*args, code=1)
    message = flat(result.stderr)
    assert message.startswith("error:")
    for fragment in expected:
        assert fragment in message
    assert result.stdout == ""
    assert snapshot(world) == before


def test_approve_after_the_approval_deadline_says_it_timed_out(cli: Cli) -> None:
    with freeze_time(START) as frozen:
        register_manual(cli, "crm", "--approval-timeout", "1h")
        rid = submit(cli, start="2026-11-27T12:00Z")["id"]
        frozen.move_to("2026-11-27 11:00:00")
        result = cli("requests", "approve", rid, "--as", APPROVER, "--reason", "ok", code=1)
        assert "timed out at 2026-11-27 11:00 +00:00" in flat(result.stderr)
        assert "submit a new request" in flat(result.stderr)
        assert show(cli, rid)["state"] == "timed_out"
        assert show(cli, rid)["decided_by"] is None


def test_boundaries_are_accepted(world: Cli) -> None:
    """Exactly the maximum duration and exactly 30 days ahead are allowed."""
    # (Owner: request 1 already holds Contributor at 12:00, and requests may not overlap)
    assert submit(world, duration="4h", role="Owner")["state"] == "pending"
    assert submit(world, start="2026-12-27T10:00Z")["state"] == "pending"


# -- usage errors: exit 2, nothing changed ----------------------------------------------
USAGE = [
    ("bad duration", _submit_args(duration="abc"), ["'abc' is not a duration", "90m"]),
    (
        "bad ISO time",
        _submit_args(start="yesterday"),
        ["'yesterday' is not an ISO 8601 time", "2026-11-27T14:00"],
    ),
    (
        "missing --as",
        [*SUBMIT, "crm", "--role", "Owner", "--duration", "1h", "--reason", "r"],
        ["Missing option '--as'"],
    ),
    (
        "missing --reason on approve",
        ["requests", "approve", "1", "--as", APPROVER],
        ["Missing option '--reason'"],
    ),
    ("--mine without --as", ["requests", "list", "--mine"], ["--mine needs --as"]),
    (
        "--as that is no Slack user id",
        [*SUBMIT, "crm", "--role", "Owner", "--duration", "1h", "--reason", "r", "--as", "pat"],
        ["'--as': User 'pat' is not a Slack user ID", "Copy member ID"],
    ),
    (
        "--as a user group",
        ["requests", "approve", "1", "--as", "SOPS", "--reason", "r"],
        ["User 'SOPS' is not a Slack user ID"],
    ),
    (
        "--mine --as a channel",
        ["requests", "list", "--mine", "--as", "C0123ABCD"],
        ["User 'C0123ABCD' is not a Slack user ID"],
    ),
    (
        "non-numeric request id",
        ["requests", "approve", "one", "--as", APPROVER, "--reason", "r"],
        ["Invalid value for 'ID'", "valid integer"],
    ),
    (
        "unknown mode",
        ["apps", "policy", "crm", "--as", ADMIN, "--mode", "sometimes"],
        ["sometimes"],
    ),
    (
        "bad max duration",
        ["apps", "policy", "crm", "--as", ADMIN, "--max-duration", "forever"],
        ["'forever' is not a duration"],
    ),
]


@pytest.mark.parametrize(
    ("args", "expected"), [pytest.param(a, e, id=name) for name, a, e in USAGE]
)
def test_usage_error_exits_2_and_changes_nothing(
    world: Cli, args: list[str], expected: list[str]
) -> None:
    before = snapshot(world)
    result = world(*args, code=2)
    message = flat(result.stderr)
    for fragment in expected:
        assert fragment in message
    assert "Traceback" not in result.stderr
    assert snapshot(world) == before


# -- apps show / list / policy -----------------------------------------------------------
def test_apps_show_and_list(world: Cli) -> None:
    crm = world.json("apps", "show", "crm")
    assert crm["policy"] == {
        "mode": "manual",
        "max_duration": "4h",
        "approvers": [APPROVER, APPROVER2],
        "approval_timeout": "24h",
        "breakglass": [],
        "breakglass_max": "1h",
        "required_approvals": 1,
        "feed_channel": None,
    }
    assert crm["roles"] == ["Contributor", "Owner"]
    assert world.json("apps", "show", "legacy")["jit_enabled"] is False
    assert [a["name"] for a in world.json("apps", "list")] == ["auto", "crm", "legacy", "selfie"]

    human = world("apps", "show", "legacy").stdout
    assert "disabled (publisher has permanent access)" in human
    listing = world("apps", "list").stdout
    crm_row = next(line for line in listing.splitlines() if " crm " in line)
    assert "manual" in crm_row and "4h" in crm_row and f"{APPROVER}, {APPROVER2}" in crm_row


def test_policy_change_by_admin_applies_to_new_requests(world: Cli) -> None:
    changed = world.json(
        "apps", "policy", "crm", "--as", ADMIN, "--max-duration", "2h", "--approver", APPROVER2
    )
    assert changed["policy"]["max_duration"] == "2h"
    assert changed["policy"]["approvers"] == [APPROVER2]
    assert changed["policy"]["mode"] == "manual"  # untouched options keep their value
    refused = world(*_submit_args(duration="3h"), code=1)
    assert "maximum of 2h" in refused.stderr
    approved = world.json("requests", "approve", "1", "--as", APPROVER2, "--reason", "ok")
    assert approved["state"] == "approved"
    log = [json.loads(x) for x in world("audit", "export").stdout.splitlines()]
    policy_events = [e for e in log if e["action"] == "policy_changed"]
    assert [(e["actor"], e["details"]["after"]["max_duration"]) for e in policy_events] == [
        (ADMIN, "2h")
    ]


def test_policy_with_zero_max_duration_is_refused(world: Cli) -> None:
    result = world("apps", "policy", "crm", "--as", ADMIN, "--max-duration", "0m", code=1)
    assert "Maximum duration must be positive" in result.stderr


def test_revoke_of_a_pending_request_tells_an_approver_to_deny(world: Cli) -> None:
    result = world("requests", "revoke", "1", "--as", APPROVER, "--reason", "no", code=1)
    assert "deny" in result.stderr


# -- apps apply -------------------------------------------------------------------------
def apps_yaml(**over: Any) -> str:
    crm: dict[str, Any] = {
        "name": "crm",
        "scope": SCOPE,
        "publishers": [PUBLISHER],
        "roles": ["Contributor", "Owner"],
        "admins": [ADMIN],
        "jit_enabled": True,
        "policy": {
            "mode": "manual",
            "max_duration": "8h",
            "approvers": [APPROVER],
            "approval_timeout": "24h",
        },
    }
    billing: dict[str, Any] = {
        "name": "billing",
        "scope": "/s/billing",
        "publishers": [PUBLISHER],
        "jit_enabled": False,
    }
    for key, value in over.items():
        app, _, field = key.partition("__")
        target = crm if app == "crm" else billing
        if field.startswith("policy_"):
            target["policy"][field.removeprefix("policy_")] = value
        else:
            target[field] = value
    return json.dumps({"apps": [billing, crm]})  # JSON is YAML


def apply(cli: Cli, text: str, code: int = 0) -> Any:
    path = Path("apps.yaml")
    path.write_text(text)
    return cli("apps", "apply", "-f", path, code=code)


def test_apply_creates_then_updates_then_reports_unchanged(cli: Cli) -> None:
    assert "created: billing, crm" in apply(cli, apps_yaml()).stdout
    crm = cli.json("apps", "show", "crm")
    assert crm["policy"]["mode"] == "manual"
    assert crm["policy"]["approvers"] == [APPROVER]
    assert cli.json("apps", "show", "billing")["jit_enabled"] is False

    out = apply(cli, apps_yaml(crm__policy_max_duration="4h")).stdout
    assert "updated: crm" in out
    assert "unchanged: billing" in out
    assert cli.json("apps", "show", "crm")["policy"]["max_duration"] == "4h"

    out = apply(cli, apps_yaml(crm__policy_max_duration="4h")).stdout
    assert "unchanged: billing, crm" in out
    assert "updated" not in out
    log = [json.loads(x) for x in cli("audit", "export").stdout.splitlines()]
    assert [e["action"] for e in log if e["action"].startswith("app_")] == [
        "app_registered",
        "app_registered",
        "app_updated",
    ]
    # each new application's publisher got standing Reader access, audited
    assert [e["action"] for e in log].count("standing_granted") == 2


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(
            {"billing__jit_enabled": True},
            ["JIT cannot be enabled after registration", "set jit_enabled: false"],
            id="enable JIT",
        ),
        pytest.param(
            {"crm__jit_enabled": False},
            ["JIT cannot be disabled after registration", "set jit_enabled: true"],
            id="disable JIT",
        ),
        pytest.param(
            {"crm__scope": "/s/elsewhere"},
            ["crm's scope is fixed at registration", "register a new application"],
            id="scope change",
        ),
        pytest.param(
            {"crm__policy_mode": "manual", "crm__policy_approvers": []},
            ["Manual approval needs at least one approver"],
            id="manual without approvers",
        ),
        pytest.param(
            {"crm__provider": "nowhere"},
            ["no access provider named 'nowhere'"],
            id="unknown provider",
        ),
    ],
)
def test_apply_refusal_applies_nothing(
    cli: Cli, change: dict[str, Any], expected: list[str]
) -> None:
    apply(cli, apps_yaml())
    before = snapshot(cli)
    doc = json.loads(apps_yaml(crm__policy_max_duration="2h", **change))
    # a new app and a policy change in the same file, before the refused one, are not
    # applied either
    doc["apps"].insert(0, {"name": "newapp", "scope": "/s/new", "publishers": [PUBLISHER]})
    result = apply(cli, json.dumps(doc), code=1)
    message = flat(result.stderr)
    for fragment in expected:
        assert fragment in message
    assert snapshot(cli) == before
    assert cli.json("apps", "show", "crm")["policy"]["max_duration"] == "8h"
    cli("apps", "show", "newapp", code=1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("apps: [name: x\n", ["cannot read", "apps.yaml"], id="malformed YAML"),
        pytest.param(
            apps_yaml(crm__approver=[APPROVER]),
            ["not a valid apps file", "approver", "Extra inputs are not permitted"],
            id="unknown key",
        ),
        pytest.param(
            apps_yaml(crm__policy_approver=[APPROVER]),
            ["policy.approver", "Extra inputs are not permitted"],
            id="unknown policy key",
        ),
        pytest.param(
            apps_yaml(crm__policy_mode="sometimes"),
            ["not a valid apps file", "mode"],
            id="unknown mode",
        ),
        pytest.param(
            apps_yaml(crm__policy_max_duration="a while"),
            ["'a while' is not a duration"],
            id="bad duration",
        ),
        pytest.param("", ["not a valid apps file"], id="empty file"),
        pytest.param("- name: crm\n", ["not a valid apps file"], id="a list, not apps:"),
    ],
)
def test_apply_bad_file_is_a_usage_error(cli: Cli, text: str, expected: list[str]) -> None:
    apply(cli, apps_yaml())
    before = snapshot(cli)
    result = apply(cli, text, code=2)
    message = flat(result.stderr)
    for fragment in expected:
        assert fragment in message
    assert snapshot(cli) == before


def test_apply_missing_file_is_a_usage_error(cli: Cli) -> None:
    result = cli("apps", "apply", "-f", "nowhere.yaml", code=2)
    assert "cannot read nowhere.yaml" in flat(result.stderr)


def test_apply_zero_max_duration_is_refused_not_defaulted(cli: Cli) -> None:
    result = apply(cli, apps_yaml(crm__policy_max_duration="0m"), code=1)
    assert "Maximum duration must be positive" in result.stderr
    assert cli.json("apps", "list") == []


# -- cancel / deny / revoke / release --------------------------------------------------------
def test_requester_cancels_pending_and_approved_requests(cli: Cli) -> None:
    with freeze_time(START) as frozen:
        register_manual(cli)
        pending = submit(cli, start="2026-11-27T12:00Z")["id"]
        approved = submit(cli, start="2026-11-27T12:00Z", role="Owner")["id"]
        cli("requests", "approve", approved, "--as", APPROVER, "--reason", "ok")

        out = cli("requests", "cancel", pending, "--as", PUBLISHER).stdout
        assert f"Request {pending} is cancelled" in out
        cancelled = cli.json("requests", "cancel", approved, "--as", PUBLISHER)
        assert cancelled["state"] == "cancelled"
        assert cancelled["ended_by"] == PUBLISHER

        frozen.move_to("2026-11-27 12:00:00")
        assert "activated 0" in cli("sweep").stdout
        assert {show(cli, r)["state"] for r in (pending, approved)} == {"cancelled"}
        again = cli("requests", "cancel", pending, "--as", PUBLISHER, code=1)
        assert f"Request {pending} is already cancelled by {PUBLISHER}" in again.stderr


def test_deny_records_who_and_why_and_never_grants(cli: Cli) -> None:
    with freeze_time(START) as frozen:
        register_manual(cli)
        rid = submit(cli, start="2026-11-27T12:00Z")["id"]
        denied = cli.json("requests", "deny", rid, "--as", APPROVER2, "--reason", "no ticket")
        assert (denied["state"], denied["decided_by"], denied["decision_reason"]) == (
            "denied",
            APPROVER2,
            "no ticket",
        )
        frozen.move_to("2026-11-27 12:00:00")
        cli("sweep")
        assert show(cli, rid)["state"] == "denied"
        late = cli("requests", "approve", rid, "--as", APPROVER, "--reason", "ok", code=1)
        assert "already denied by UAPP2" in flat(late.stderr)


@pytest.mark.parametrize("revoker", [APPROVER, ADMIN])
def test_approver_or_admin_revokes_active_access(cli: Cli, revoker: str) -> None:
    with freeze_time(START) as frozen:
        register_manual(cli)
        rid = submit(cli)["id"]
        cli("requests", "approve", rid, "--as", APPROVER2, "--reason", "ok")
        assert show(cli, rid)["state"] == "active"
        frozen.tick(600)
        out = cli("requests", "revoke", rid, "--as", revoker, "--reason", "incident over").stdout
        assert f"Request {rid} is revoked" in out
        revoked = show(cli, rid)
        assert (revoked["ended_by"], revoked["end_reason"]) == (revoker, "incident over")
        assert revoked["ended_at"] == "2026-11-27T10:10:00+00:00"
        frozen.move_to("2026-11-27 12:00:00")
        assert "expired 0" in cli("sweep").stdout
        assert show(cli, rid)["state"] == "revoked"


def test_revoke_of_an_approved_request_that_has_not_started_cancels_it(cli: Cli) -> None:
    with freeze_time(START):
        register_manual(cli)
        rid = submit(cli, start="2026-11-27T12:00Z")["id"]
        cli("requests", "approve", rid, "--as", APPROVER, "--reason", "ok")
        stopped = cli.json("requests", "revoke", rid, "--as", ADMIN, "--reason", "change freeze")
    assert stopped["state"] == "cancelled"
    assert (stopped["ended_by"], stopped["end_reason"]) == (ADMIN, "change freeze")


def test_requester_releases_own_access(cli: Cli) -> None:
    with freeze_time(START) as frozen:
        register_auto(cli)
        rid = submit(cli, "auto")["id"]
        frozen.tick(1800)
        released = cli.json("requests", "release", rid, "--as", PUBLISHER)
    assert released["state"] == "revoked"
    assert released["ended_by"] == PUBLISHER
    assert released["end_reason"] == "released early by the requester"
    assert released["ended_at"] == "2026-11-27T10:30:00+00:00"


def test_release_before_start_says_cancel(cli: Cli) -> None:
    with freeze_time(START):
        register_auto(cli)
        rid = submit(cli, "auto", start="2026-11-27T11:00Z")["id"]
        result = cli("requests", "release", rid, "--as", PUBLISHER, code=1)
    assert "is approved automatically, not active: cancel it instead" in result.stderr


def test_pending_request_times_out_on_sweep(cli: Cli) -> None:
    with freeze_time(START) as frozen:
        register_manual(cli, "crm", "--approval-timeout", "1h")
        rid = submit(cli, start="2026-11-27T12:00Z")["id"]
        frozen.move_to("2026-11-27 10:59:00")
        assert "timed out 0" in cli("sweep").stdout
        frozen.move_to("2026-11-27 11:00:00")
        assert "timed out 1" in cli("sweep").stdout
        assert show(cli, rid)["state"] == "timed_out"


# -- requests list ---------------------------------------------------------------------------
def test_list_filters_by_app_state_and_mine(world: Cli) -> None:
    world(*_submit_args("selfie", **{"as": APPROVER}))  # 2, pending on selfie
    world(*ACTIVE_AUTO)  # 3, active on auto
    assert [r["id"] for r in world.json("requests", "list")] == [3, 2, 1]  # newest first
    assert [r["id"] for r in world.json("requests", "list", "--app", "crm")] == [1]
    assert [r["id"] for r in world.json("requests", "list", "--state", "pending")] == [2, 1]
    assert [r["id"] for r in world.json("requests", "list", "--mine", "--as", PUBLISHER)] == [
        3,
        1,
    ]
    assert world.json("requests", "list", "--mine", "--as", OUTSIDER) == []
    assert "No requests match." in world("requests", "list", "--app", "legacy").stdout


# -- misc commands -----------------------------------------------------------------------------
def test_db_upgrade_creates_the_database(cli: Cli) -> None:
    assert not cli.db_path.exists()
    out = cli("db", "upgrade").stdout
    assert "Database at the newest schema (sqlite)" in out
    assert cli.db_path.exists()
    assert cli.json("apps", "list") == []
    assert "No applications yet" in cli("apps", "list").stdout


def test_diagram_mermaid_names_every_state(cli: Cli, tmp_path: Path) -> None:
    text = cli("diagram", "--format", "mermaid").stdout
    assert text.startswith("stateDiagram-v2")
    for state in ALL_STATES:
        assert f" as {state}" in text
    assert "pending --> approved" in text
    assert "active --> expired" in text
    cli("diagram", "-o", tmp_path / "lifecycle.mmd")
    assert (tmp_path / "lifecycle.mmd").read_text() == text


def test_diagram_svg_needs_graphviz(cli: Cli, tmp_path: Path) -> None:
    target = tmp_path / "lifecycle.svg"
    if shutil.which("dot"):
        cli("diagram", "--format", "svg", "-o", target)
        svg = target.read_text()
        assert "<svg" in svg
        for state in ("pending", "auto_approved", "timed_out", "failed"):
            assert state in svg
    else:
        result = cli("diagram", "--format", "svg", "-o", target, code=1)
        assert "graphviz" in result.stderr.lower()
        assert "--format mermaid" in result.stderr
        assert not target.exists()


def test_absurd_numbers_get_a_message_not_a_traceback(cli: Cli) -> None:
    huge = cli(
        "requests",
        "submit",
        "crm",
        "--as",
        PUBLISHER,
        "--role",
        "Owner",
        "--duration",
        "99999999999999h",
        "--reason",
        "x",
        code=2,
    )
    assert "far too long a duration" in huge.stderr
    missing = cli("requests", "show", "99999999999", code=1)
    assert "No request 99999999999" in missing.stderr


# -- control and bidi characters in what people typed ------------------------------------
HOSTILE_REASON = "deploy \x1b[2J\x1b]0;owned\x07 fix \u202egnp.exe\u2066 \x9b31m done"
HOSTILE_DECISION = "ok \x1b[31mRED\x1b[0m \u202dCHG-1"
RAW = ("\x1b", "\x07", "\x9b", "\u202e", "\u202d", "\u2066")


def _assert_escaped(text: str) -> None:
    for char in RAW:
        assert char not in text, (char, text)
    for shown in ("\\x1b[2J", "\\x07", "\\u202egnp.exe", "\\u2066", "\\x9b31m"):
        assert shown in text, (shown, text)


def test_control_and_bidi_characters_are_shown_escaped_never_raw(cli: Cli) -> None:
    """show, list, history, approve and errors print escape sequences as visible text."""
    with freeze_time(START):
        register_manual(cli)
        rid = submit(cli, reason=HOSTILE_REASON)["id"]
        decided = cli("requests", "approve", rid, "--as", APPROVER, "--reason", HOSTILE_DECISION)
        shown = cli("requests", "show", rid).stdout
        listing = cli("requests", "list").stdout
        history = cli("requests", "history", "crm").stdout
        stored = show(cli, rid)
        missing = cli("requests", "history", "crm\x1b[8m", code=1)
    _assert_escaped(shown)
    assert "\\x1b[31mRED\\x1b[0m \\u202dCHG-1" in shown
    for text in (listing, history, decided.stdout):
        assert not any(char in text for char in RAW), text
    assert "\\x1b[31mRED" in listing and "\\x1b[31mRED" in history
    assert "crm\\x1b[8m" in missing.stderr and "\x1b[8m" not in missing.stderr
    # stored exactly as given; JSON escapes it by itself
    assert stored["justification"] == HOSTILE_REASON
    assert stored["decision_reason"] == HOSTILE_DECISION


def test_audit_export_escapes_control_characters_on_a_terminal_only(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A CSV export to a terminal shows escapes; to a file it keeps the exact text."""
    import jitaccess.cli.output

    with freeze_time(START):
        register_manual(cli)
        submit(cli, reason=HOSTILE_REASON)
        cli("audit", "export", "--format", "csv", "-o", tmp_path / "audit.csv")
        piped = cli("audit", "export", "--format", "csv").stdout
        monkeypatch.setattr(jitaccess.cli.output, "stdout_is_terminal", lambda: True)
        on_terminal = cli("audit", "export", "--format", "csv").stdout
        jsonl = cli("audit", "export", "--format", "jsonl").stdout
    assert HOSTILE_REASON in (tmp_path / "audit.csv").read_text()
    assert HOSTILE_REASON in piped
    _assert_escaped(on_terminal)
    assert not any(char in jsonl for char in RAW)
    assert any(json.loads(line)["reason"] == HOSTILE_REASON for line in jsonl.splitlines())


def test_deciding_after_the_approval_deadline_says_the_request_timed_out(cli: Cli) -> None:
    """approve/deny after the timeout say it is now timed_out and a new request is needed, exit 1."""
    with freeze_time(START) as frozen:
        register_manual(cli, "crm", "--approval-timeout", "1h")
        rid = submit(cli, start="2026-11-27T12:00Z")["id"]
        frozen.move_to("2026-11-27 11:30:00")
        first = cli("requests", "deny", rid, "--as", APPROVER, "--reason", "no", "--json", code=1)
        again = cli("requests", "approve", rid, "--as", APPROVER2, "--reason", "ok", code=1)
    assert first.stdout == ""
    message = flat(first.stderr)
    assert message.startswith("error: Request 1 timed out at 2026-11-27 11:00 +00:00"), message
    assert "before anyone decided; it is now timed out" in message
    assert "the requester must submit a new request" in message
    later = flat(again.stderr)
    assert later.startswith(
        "error: Request 1 has already timed out: it timed out at 2026-11-27 11:00"
    )
    assert "before anyone decided; the requester must submit a new request" in later
    assert show(cli, rid)["state"] == "timed_out"
