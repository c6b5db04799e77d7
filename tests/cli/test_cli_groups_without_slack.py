"""The README's quorum example (`## Quorum and approver groups`) followed with the CLI
and no Slack settings: an approver group cannot be read, and the refusal says so and
what to do, instead of only that too few approvers can decide."""

from __future__ import annotations

from freezegun import freeze_time

from conftest import ADMIN, APPROVER, APPROVER2, PUBLISHER, START, Cli, flat

SCOPE = "/subscriptions/s1/resourceGroups/mrg-crm"


def register(cli: Cli) -> None:
    cli("apps", "register", "crm", "--scope", SCOPE, "--publisher", PUBLISHER,
        "--role", "Contributor", "--admin", ADMIN, "--mode", "manual",
        "--approver", APPROVER, "--approver", APPROVER2)  # fmt: skip


def test_a_group_approver_without_slack_says_why_and_what_to_do(cli: Cli) -> None:
    with freeze_time(START):
        register(cli)
        cli("apps", "policy", "crm", "--as", ADMIN, "--mode", "manual", "--approver",
            "S0SECOPS", "--approver", APPROVER, "--required-approvals", "2")  # fmt: skip
        refused = cli("requests", "submit", "crm", "--as", PUBLISHER, "--role", "Contributor",
                      "--duration", "1h", "--reason", "deploy", code=1)  # fmt: skip
    message = flat(refused.stderr)
    assert "crm needs 2 approvals but only 1 approver other than you can decide" in message
    assert "The approver group S0SECOPS is a Slack user group" in message
    assert "only with Slack settings (SLACK_BOT_TOKEN)" in message
    assert "set them, or name approvers as people (U…)" in message
    assert cli.json("requests", "list") == []


def test_a_quorum_short_of_people_alone_gets_no_slack_hint(cli: Cli) -> None:
    with freeze_time(START):
        register(cli)
        cli("apps", "policy", "crm", "--as", ADMIN, "--approver", APPROVER,
            "--approver", PUBLISHER, "--required-approvals", "2")  # fmt: skip
        refused = cli("requests", "submit", "crm", "--as", PUBLISHER, "--role", "Contributor",
                      "--duration", "1h", "--reason", "deploy", code=1)  # fmt: skip
    message = flat(refused.stderr)
    assert "needs 2 approvals but only 1 approver other than you" in message
    assert "Slack" not in message
