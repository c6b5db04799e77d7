"""The README stays true: its diagram, its module map and its commands."""

from __future__ import annotations

import re
from pathlib import Path

from jitaccess.cli import app as cli_app
from jitaccess.domain.lifecycle import mermaid

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_diagram_is_the_machine() -> None:
    block = re.search(r"```mermaid\n(.*?)```", README, re.S)
    assert block is not None
    assert block.group(1).strip() == mermaid().strip(), "paste `jitaccess diagram` output"


#: The packages the module map describes: the product and the sandbox distribution.
PACKAGES = (ROOT / "src" / "jitaccess", ROOT / "sandbox" / "src" / "jitaccess_sandbox")


def test_module_map_names_every_module() -> None:
    assert all(package.is_dir() for package in PACKAGES)
    modules = [
        p
        for package in PACKAGES
        for p in package.rglob("*.py")
        if p.name != "__init__.py" and "migrations" not in p.parts
    ]
    missing = [str(p.relative_to(ROOT)) for p in modules if f" {p.name} " not in README]
    assert missing == []


def test_the_two_set_up_commands_are_shown() -> None:
    assert "make run" in README and "make test" in README


def test_every_cli_command_is_in_the_reference() -> None:
    import typer.main

    group = typer.main.get_command(cli_app)
    names = []
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        sub = getattr(command, "commands", None)
        names += [f"jitaccess {name} {s}" for s in sub] if sub else [f"jitaccess {name}"]
    text = README.replace("|", " ")
    missing = [
        n
        for n in names
        if not re.search(
            re.escape(n.rsplit(" ", 1)[0]) + r"\b.*\b" + re.escape(n.rsplit(" ", 1)[1]), text
        )
    ]
    assert missing == []


SHELL_FENCE = re.compile(r"^([ \t]*)```(?:sh|bash|shell|console)\n(.*?)^\1```", re.S | re.M)
QUOTED = re.compile(r"'[^']*'|\"(?:[^\"\\]|\\.)*\"")
PLACEHOLDER = re.compile(r"<[A-Za-z][\w.-]*>")


def shell_placeholders(markdown: str) -> list[str]:
    """`<word>` outside quotes in shell blocks: bash reads it as a redirection."""
    found = []
    for block in SHELL_FENCE.finditer(markdown):
        for line in block.group(2).splitlines():
            code = QUOTED.sub("''", line)
            code = re.split(r"(?:^|\s)#", code, maxsplit=1)[0]  # a comment is not run
            found += [f"{line.strip()}  ({m})" for m in PLACEHOLDER.findall(code)]
    return found


def test_shell_examples_paste_into_bash_without_placeholders() -> None:
    """Every ```sh example runs as pasted: no <placeholder> that bash takes for a redirection."""
    assert shell_placeholders("```sh\ncmd --scope /s/<sub>/rg\n```\n") != []  # the check works
    assert shell_placeholders("```sh\ncmd --x '<ok>' \"<ok>\"  # <ok>\n```\n") == []
    assert shell_placeholders(README) == []


def test_every_proof_the_correctness_section_names_exists() -> None:
    """'How it stays correct' names, next to each promise, the tests that prove it: each
    named file exists under tests/, and each named test is defined in that file."""
    section = README.split("### How it stays correct", 1)[1].split("\n## ", 1)[0]
    promises = section.split("\n- **")[1:]
    assert len(promises) >= 10
    named = re.findall(r"`((?:\w+/)*test_\w+\.py)(?:::(\w+))?", section)
    assert named, "no test named in the section"
    for promise in promises:
        assert re.search(r"`(?:\w+/)*test_\w+\.py", promise), f"no proof named: {promise[:60]}"
    for path, test in named:
        source = ROOT / "tests" / path
        assert source.is_file(), f"README names {path}, which does not exist"
        if test:
            assert re.search(rf"^(async )?def {test}\(", source.read_text(), re.M), (
                f"README names {path}::{test}, which is not defined there"
            )


def module_map_paths() -> set[str]:
    """The files the README's module map (its ``text`` tree) names, as paths from the
    repository's root: each name sits two spaces deeper than its folder."""
    section = README.split("## Module map", 1)[1]
    tree = section.split("```text\n", 1)[1].split("```", 1)[0]
    folders: list[str] = []
    paths = set()
    for line in tree.splitlines():
        name = line.strip().split(" ", 1)[0]
        depth = (len(line) - len(line.lstrip())) // 2
        if not name or len(line) - len(line.lstrip()) >= 20:  # a description's next line
            continue
        del folders[depth:]
        if name.endswith("/"):
            folders.append(name.rstrip("/"))
        else:
            paths.add("/".join([*folders, name]))
    return paths


def test_module_map_is_the_tree() -> None:
    """Every module of the product and the sandbox is in the map, in its own folder, and
    the map names no module that is not there."""
    named = {p for p in module_map_paths() if p.endswith(".py")}
    files = {
        str(p.relative_to(ROOT))
        for package in PACKAGES
        for p in package.rglob("*.py")
        if "migrations" not in p.parts
    }
    required = {p for p in files if not p.endswith("__init__.py")}
    assert sorted(required - named) == [], "modules missing from the map"
    assert sorted(named - files) == [], "the map names modules that do not exist"


def test_layer_diagram_draws_only_allowed_imports() -> None:
    """The Module map's diagram: each arrow is an import the layers allow
    (``tests/test_import_graph.py``), and every layer is drawn."""
    from test_import_graph import ALLOWED

    section = README.split("## Module map", 1)[1]
    diagram = section.split("```mermaid\n", 1)[1].split("```", 1)[0]
    arrows = re.findall(r"^\s*(\w+) --> (\w+)$", diagram, re.M)
    assert len(arrows) == len(diagram.strip().splitlines()) - 1  # every line but the header
    assert all(target in ALLOWED[source] for source, target in arrows), arrows
    assert {layer for arrow in arrows for layer in arrow} == set(ALLOWED)
