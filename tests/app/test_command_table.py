"""One command table (``app/commands.py``) for Slack and the CLI: every command has one
handler, and every ``/jit`` verb in it parses into its command, asked by its user."""

from __future__ import annotations

from datetime import timedelta
from typing import get_args

from jitaccess.app.commands import HANDLERS, VERBS, Command, ExtendRequest, SubmitRequest
from jitaccess.slack.commands import USAGE, app_command, parse

EXAMPLES = {
    "request": "request crm Contributor 2h deploy hotfix",
    "cancel": "cancel 12",
    "release": "release #12",
    "revoke": "revoke 12 left the team",
    "approve": "approve 12 CHG-7 covers it",
    "deny": "deny 12 not this week",
    "extend": "extend 12 1h tests still running",
    "breakglass": "breakglass crm Owner 1h INC-4711 database down",
    "ack": "ack 12 checked the incident",
}


def test_every_command_has_one_handler() -> None:
    assert set(HANDLERS) == set(get_args(Command))


def test_every_verb_in_the_table_parses_into_its_command() -> None:
    assert set(VERBS) == set(EXAMPLES) and set(VERBS) <= set(USAGE)
    for verb, text in EXAMPLES.items():
        command = app_command(parse(text), "UPUB1")
        assert type(command) is VERBS[verb], verb
    assert app_command(parse("request crm Contributor 2h deploy hotfix"), "UPUB1") == (
        SubmitRequest(
            "crm",
            requester="UPUB1",
            role="Contributor",
            duration=timedelta(hours=2),
            justification="deploy hotfix",
        )
    )
    assert app_command(parse("extend 12 1h tests"), "U1") == ExtendRequest(
        12, actor="U1", added=timedelta(hours=1), reason="tests"
    )


def test_verbs_slack_answers_itself_are_no_command() -> None:
    for text in ("help", "list", "pending", "apps", "history crm", "config crm", "request"):
        assert app_command(parse(text), "UPUB1") is None, text
