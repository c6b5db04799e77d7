"""What a CLI of the gh/kubectl/az family is expected to have: ``--version``,
``serve --port`` overriding JITACCESS_PORT, help that names values with words
(``NAME``, ``ID``, ``DURATION``) and not Python types, tables that never cut a value, and
exit codes 0 (done), 1 (refused) and 2 (usage error)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.main
from typer.testing import CliRunner

from conftest import Cli
from jitaccess_sandbox.fake_slack import FakeSlack
from slack_harness import SECRET, free_port, wait_until


def test_version_prints_the_installed_version(cli: Cli) -> None:
    result = cli("--version")
    assert result.stdout.strip() == f"jitaccess {version('jitaccess')}"


def test_a_port_out_of_range_is_a_usage_error_that_starts_nothing(cli: Cli) -> None:
    for bad in ("0", "65536", "http"):
        result = cli("serve", "--port", bad, code=2)
        assert "--port" in result.stderr


def test_serve_port_overrides_the_configured_port(fake_slack: FakeSlack, tmp_path: Path) -> None:
    wanted, configured = free_port(), free_port()
    env = {
        **os.environ,
        "JITACCESS_DATABASE_URL": f"sqlite:///{tmp_path}/port.db",
        "SLACK_BOT_TOKEN": "xoxb-port",
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": fake_slack.base_url,
        "JITACCESS_PORT": str(configured),
        "JITACCESS_HOST": "127.0.0.1",
    }
    env.pop("SLACK_APP_TOKEN", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "jitaccess.cli", "serve", "--port", str(wanted)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{wanted}/healthz", timeout=1) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    try:
        assert wait_until(healthy, 60), "serve did not listen on --port"
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{configured}/healthz", timeout=1)
            listened_on_configured = True
        except OSError:
            listened_on_configured = False
        assert not listened_on_configured
    finally:
        process.terminate()
        process.wait(timeout=30)


# -- --help reads as gh's, kubectl's and az's ---------------------------------------------
#: A Python type where a word should be: `<str>`, `<int>`, `<bool>`, `<list[str]>`, `<path>`.
TYPE_NOISE = re.compile(r"<[a-z][^<>\s=]*>")


def help_problems(command: Any, path: list[str], text: str) -> list[str]:
    """What in one command's ``--help`` a gh/kubectl/az user would trip over."""
    where = " ".join(["jitaccess", *path])
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    problems = [f"{where}: type noise {t}" for t in TYPE_NOISE.findall(text)]
    if "{" in usage:
        problems.append(f"{where}: braces in the usage line: {usage.strip()}")
    for param in command.params:
        if param.param_type_name == "argument":
            word = param.display_name_raw
            if word != word.upper() or f" {word}" not in usage:
                problems.append(f"{where}: argument {word!r} is not an upper-case word in usage")
    if "(required)" in text:
        problems.append(f"{where}: says (required) as well as [required]")
    required = sum(1 for p in command.params if p.required)
    if text.count("[required]") != required:
        problems.append(f"{where}: [required] {text.count('[required]')}× for {required}")
    return problems


def every_command(command: Any, path: list[str]) -> Iterator[tuple[Any, list[str]]]:
    yield command, path
    for name, sub in getattr(command, "commands", {}).items():
        yield from every_command(sub, [*path, name])


def test_every_help_names_values_with_words_not_types(cli: Cli) -> None:
    from jitaccess.cli import app

    problems: list[str] = []
    commands = list(every_command(typer.main.get_command(app), []))
    assert len(commands) > 40  # every group and leaf, not just the top
    for command, path in commands:
        problems += help_problems(command, path, cli(*path, "--help").stdout)
    assert problems == []


def test_the_help_check_finds_what_typer_prints_by_default(cli: Cli) -> None:
    """The check above can fail: a command as Typer draws it by default is caught, and
    the same command under the jitaccess group is clean."""
    from jitaccess.cli.params import ConventionalGroup

    def build(cls: Any) -> typer.Typer:
        demo = typer.Typer(cls=cls)

        @demo.command("show")
        def show(
            name: str,
            count: int = 1,
            tags: Annotated[list[str] | None, typer.Option(help="Tags")] = None,
            flag: bool = False,
            reason: Annotated[str, typer.Option(help="Why (required)")] = ...,  # type: ignore[assignment]
        ) -> None: ...

        @demo.command("other")
        def other() -> None: ...

        return demo

    for cls, clean in ((None, False), (ConventionalGroup, True)):
        demo = build(cls)
        command = typer.main.get_command(demo).commands["show"]  # type: ignore[attr-defined]
        text = CliRunner().invoke(demo, ["show", "--help"], env={"COLUMNS": "200"}).stdout
        problems = help_problems(command, ["show"], text)
        if clean:
            assert [p for p in problems if "(required)" not in p] == [], text
        else:
            assert any("<int>" in p for p in problems), problems
            assert any("<bool>" in p for p in problems), problems
            assert any("braces" in p for p in problems), problems


# -- a long scope is never cut ------------------------------------------------------------
LONG_SCOPE = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/"
    "mrg-crm-contoso-production-westeurope-0001/providers/Microsoft.Storage/"
    "storageAccounts/stcrmcontosoprod"
)


def last_column(text: str) -> str:
    """The last column of a boxed table, its wrapped lines joined."""
    cells = []
    for line in text.splitlines():
        bars = [i for i, ch in enumerate(line) if ch in "│┃"]
        if len(bars) >= 2:
            cells.append(line[bars[-2] + 1 : bars[-1]].strip())
    return "".join(cells)


def test_apps_list_and_show_wrap_a_long_scope_at_80_columns(tmp_path: Path) -> None:
    """In a real 80-column terminal (a process of its own: the width is read at start)."""
    env = {
        **os.environ,
        "JITACCESS_DATABASE_URL": f"sqlite:///{tmp_path}/wide.db",
        "COLUMNS": "80",
        "TERM": "xterm",
    }

    def jitaccess(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "jitaccess.cli", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout

    jitaccess("apps", "register", "crm", "--scope", LONG_SCOPE, "--publisher", "U0PUB")
    listing = jitaccess("apps", "list")
    shown = jitaccess("apps", "show", "crm")
    for text in (listing, shown):
        assert max(len(line) for line in text.splitlines()) <= 80
        assert "…" not in text
    assert LONG_SCOPE in last_column(listing)
    scope_rows = shown[shown.index("Scope") : shown.index("JIT")]
    assert LONG_SCOPE in last_column(scope_rows)


# -- exit codes: 0 done, 1 refused, 2 usage error -----------------------------------------
def test_exit_codes_are_documented_and_kept(cli: Cli) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## CLI") :]
    section = " ".join(section[: section.index("\n## ")].split())
    assert "exits 0 on success, 1 when a rule refuses" in section
    assert "2 on usage errors" in section

    cli("apps", "register", "crm", "--scope", "/subscriptions/s/resourceGroups/rg",
        "--publisher", "U0PUB", "--role", "Contributor")  # fmt: skip
    refused = cli("requests", "submit", "crm", "--as", "U0PUB", "--role", "Owner",
                  "--duration", "1h", "--reason", "r", code=1)  # fmt: skip
    assert refused.stderr.startswith("error:")
    assert "Contributor" in refused.stderr  # what to ask for instead
    assert refused.stdout == ""
    usage = cli("requests", "submit", "crm", "--as", "U0PUB", "--role", "Contributor",
                "--duration", "forever", "--reason", "r", code=2)  # fmt: skip
    assert "'forever' is not a duration" in usage.stderr
    assert "Try 'jitaccess requests submit --help'" in usage.stderr
    assert cli.json("requests", "list") == []


def test_the_readme_reference_names_arguments_as_the_help_does() -> None:
    """Each command's line in README.md's CLI reference shows its arguments with the
    words its --help uses (`requests approve ID`, `offers show OFFER`)."""
    from jitaccess.cli import app

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## CLI") :]
    reference = section[section.index("```text") : section.index("```\n", 8)]
    lines = reference.replace("|", " ").splitlines()
    problems = []
    for command, path in every_command(typer.main.get_command(app), []):
        words = [p.display_name_raw for p in command.params if p.param_type_name == "argument"]
        if not words:
            continue
        group, name = " ".join(path[:-1]), path[-1]
        line = next(
            (
                line
                for line in lines
                if f"jitaccess {group} " in line and re.search(rf"\s{re.escape(name)}\s", line)
            ),
            "",
        )
        problems += [f"{' '.join(path)}: {word}" for word in words if f" {word}" not in line]
    assert problems == []
