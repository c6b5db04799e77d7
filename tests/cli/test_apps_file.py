"""What an operator meets in `apps apply -f` and `apps register`: files that are not
UTF-8, duplicate keys, scopes and roles the backend could never grant, and every problem
of a file reported in one run, with its application, field and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import PUBLISHER, Cli, flat


def apply_file(cli: Cli, tmp_path: Path, text: str | bytes, code: int) -> str:
    path = tmp_path / "apps.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    result = cli("apps", "apply", "-f", path, code=code)
    assert "Traceback" not in result.output
    return result.stderr


def nothing_applied(cli: Cli) -> None:
    assert cli.json("apps", "list") == []
    assert cli.json("offers", "list") == []


def test_a_file_that_is_not_utf8_is_a_usage_error_naming_the_line(cli: Cli, tmp_path: Path) -> None:
    text = (
        "apps:\n  - name: crm\n    scope: /subscriptions/s1/resourceGroups/caf\xe9\n"
        f"    publishers: [{PUBLISHER}]\n"
    ).encode("latin-1")
    message = flat(apply_file(cli, tmp_path, text, code=2))
    assert "is not UTF-8 text: byte 0xe9 on line 3" in message
    assert "save the file as UTF-8" in message
    nothing_applied(cli)


def test_a_key_given_twice_is_refused_naming_key_application_and_line(
    cli: Cli, tmp_path: Path
) -> None:
    text = f"""apps:
  - name: crm
    scope: /subscriptions/s1/resourceGroups/crm-a
    publishers: [{PUBLISHER}]
    scope: /subscriptions/s1/resourceGroups/crm-b
    policy:
      max_duration: 1h
      max_duration: 8h
"""
    lines = apply_file(cli, tmp_path, text, code=2).splitlines()
    assert lines[0].endswith("is not a valid apps file (2 problems; nothing was applied):")
    assert lines[1:] == [
        "  - crm, scope, line 5: `scope` is given twice (first on line 3); YAML would keep "
        "only the last: keep one",
        "  - crm, policy.max_duration, line 8: `max_duration` is given twice (first on line "
        "7); YAML would keep only the last: keep one",
    ]
    nothing_applied(cli)


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        pytest.param(
            '"/subscriptions/s1/resourceGroups/crm\\n"',
            "contains an invisible or control character (U+000A)",
            id="newline",
        ),
        pytest.param('"hello world"', "contains a space", id="space"),
        pytest.param('"/subscriptions/s1/resource\\tGroups/crm"', "(U+0009)", id="tab"),
    ],
)
def test_a_scope_with_whitespace_or_control_characters_is_refused(
    cli: Cli, tmp_path: Path, scope: str, expected: str
) -> None:
    text = f"apps:\n  - name: crm\n    scope: {scope}\n    publishers: [{PUBLISHER}]\n"
    message = flat(apply_file(cli, tmp_path, text, code=1))
    assert "crm, scope, line 3: Scope '" in message
    assert expected in message
    assert "a scope is one resource ID" in message
    nothing_applied(cli)


def test_register_refuses_a_scope_with_a_space(cli: Cli) -> None:
    result = cli(
        "apps", "register", "crm", "--scope", "hello world", "--publisher", PUBLISHER, code=1
    )
    assert "Scope 'hello world' contains a space" in flat(result.stderr)
    assert cli.json("apps", "list") == []


def test_register_refuses_what_azure_could_never_grant(cli: Cli) -> None:
    """An `azure` application needs an ARM scope and roles the provider can resolve;
    both are reported in one run."""
    result = cli(
        "apps",
        "register",
        "crm",
        "--provider",
        "azure",
        "--scope",
        "not-a-scope",
        "--publisher",
        PUBLISHER,
        "--role",
        "NotARole",
        "--role",
        "Contributor",
        code=1,
    )
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert "Azure scope 'not-a-scope' is malformed" in lines[0]
    assert "/subscriptions/<subscription-id>/resourceGroups/<resource-group-name>" in lines[0]
    assert "unknown Azure role 'NotARole': use one of Owner, Contributor, Reader" in lines[1]
    assert "role definition GUID" in lines[1]
    assert cli.json("apps", "list") == []


SIX_MISTAKES = f"""offers:
  - name: crm-offer
    publishers: [{PUBLISHER}]
apps:
  - name: web
    provider: azure
    scope: not-a-scope
    publishers: [{PUBLISHER}]
    roles: [Contributor, NotARole]
  - name: db
    scope: "/subscriptions/s1/resourceGroups/db\\n"
    publishers: [not-a-user]
    policy:
      mode: manual
      approvers: [UAPP1]
      max_duration: 90d
  - name: cache
    scope: /subscriptions/s1/resourceGroups/cache
    publishers: [{PUBLISHER}]
    publishers: [UAPP1]
  - name: fine
    scope: /subscriptions/s1/resourceGroups/fine
    offer: crm-offer
"""


def test_apply_reports_every_problem_of_the_file_in_one_run(cli: Cli, tmp_path: Path) -> None:
    """Six mistakes in three applications: one run names all six, each with its
    application, field and line; nothing is applied, not even the correct entries."""
    lines = apply_file(cli, tmp_path, SIX_MISTAKES, code=2).splitlines()
    assert lines[0].endswith("is not a valid apps file (6 problems; nothing was applied):")
    problems = lines[1:]
    assert len(problems) == 6, problems
    expected = [
        ("cache, publishers, line 20:", "`publishers` is given twice (first on line 19)"),
        ("web, scope, line 7:", "Azure scope 'not-a-scope' is malformed"),
        ("web, roles, line 9:", "unknown Azure role 'NotARole'"),
        ("db, scope, line 11:", "(U+000A)"),
        ("db, publishers, line 12:", "Publisher 'not-a-user' is not a Slack user ID"),
        ("db, policy.max_duration, line 16:", "Maximum duration 90d is too long: at most 30d"),
    ]
    for where, what in expected:
        assert any(p.startswith(f"  - {where}") and what in p for p in problems), (where, problems)
    nothing_applied(cli)


def test_apply_reports_every_rule_problem_with_exit_1(cli: Cli, tmp_path: Path) -> None:
    """A well-formed file whose applications break rules: all of them, exit 1."""
    text = f"""apps:
  - name: one
    scope: /subscriptions/s1/resourceGroups/one
    publishers: [{PUBLISHER}]
    policy:
      mode: manual
  - name: two
    scope: /subscriptions/s1/resourceGroups/two
    publishers: [{PUBLISHER}]
    admins: [nobody]
    policy:
      approval_timeout: 0m
"""
    lines = apply_file(cli, tmp_path, text, code=1).splitlines()
    assert lines[0].endswith("was refused (3 problems; nothing was applied):"), lines
    assert lines[1].startswith("  - one, policy.approvers, line 5: Manual approval needs")
    assert lines[2].startswith("  - two, admins, line 10: Admin 'nobody' is not a Slack user ID")
    assert lines[3].startswith(
        "  - two, policy.approval_timeout, line 12: Approval timeout must be positive"
    )
    nothing_applied(cli)


def test_register_with_a_provider_config_file_that_is_not_utf8(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_bytes("url: https://caf\xe9.example\n".encode("latin-1"))
    result = cli(
        "apps", "register", "crm", "--scope", "/s/crm", "--publisher", PUBLISHER,
        "--provider", "webhook", "--provider-config", f"@{config}", code=2,
    )  # fmt: skip
    assert "is not UTF-8 text" in flat(result.stderr)
    assert cli.json("apps", "list") == []
