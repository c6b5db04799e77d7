"""The layers the README describes, checked on the import graph of ``src/jitaccess``.

Every import counts: at the top of a module, under ``if TYPE_CHECKING:`` and inside
functions. Each module belongs to exactly one layer (``LAYERS``, most specific prefix
wins), and a layer may import only the layers ``ALLOWED`` names. The graph has no cycle.

Issue 17 is moving the code there step by step: what still breaks the rules today is
listed, exactly, in ``KNOWN_CYCLES`` and ``KNOWN_ARROWS``. A new break fails, and so does
a listed one that is gone (take it off the list: the ratchet only tightens).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

#: Module prefix -> layer. The longest matching prefix decides.
LAYERS = {
    # Leaves anyone may import: the package, settings and the small shared utilities.
    "jitaccess": "base",
    "jitaccess.roles": "base",
    "jitaccess.settings": "base",
    "jitaccess.logs": "base",
    "jitaccess.terminal": "base",
    "jitaccess.answers": "base",
    # The pure core.
    "jitaccess.domain": "domain",
    # Adapters to the database and to the access backends (the log provider writes its
    # grants in the database, so providers may use the store).
    "jitaccess.store": "store",
    "jitaccess.providers": "providers",
    # Use cases, the sweep, the journal and the outbox.
    "jitaccess.app": "app",
    # Front ends and the other adapters that drive the application layer.
    "jitaccess.slack": "slack",
    "jitaccess.cli": "cli",
    "jitaccess.metrics": "metrics",
    "jitaccess.scheduler": "scheduler",
    "jitaccess.web": "web",
    # The Sign in with Microsoft callback page (a web front end of app.signins).
    "jitaccess.signin_page": "signin",
    # The composition root and the process. (The sandbox is its own distribution,
    # jitaccess_sandbox under sandbox/, outside this graph.)
    "jitaccess.container": "container",
    "jitaccess.server": "server",
}

#: Layer -> the layers it may import (itself always).
ALLOWED = {
    "base": set(),
    "domain": {"base"},
    "store": {"base", "domain"},
    "providers": {"base", "domain", "store"},
    "app": {"base", "domain", "store", "providers"},
    "metrics": {"base", "domain", "store", "app"},
    "scheduler": {"base", "app"},
    "web": {"base"},
    "signin": {"base", "domain", "app"},
    "slack": {"base", "domain", "app", "metrics"},
    "container": {
        "base",
        "domain",
        "store",
        "providers",
        "app",
        "metrics",
        "scheduler",
        "slack",
        "signin",
    },
    "server": {"base", "app", "metrics", "scheduler", "web", "slack", "container"},
    "cli": {"base", "domain", "store", "providers", "app", "container", "server"},
}

#: Cycles still to break (issue 17): each as the sorted modules in it.
KNOWN_CYCLES: set[tuple[str, ...]] = set()

#: Imports against the layers still to remove (issue 17), as (importer, imported).
KNOWN_ARROWS: set[tuple[str, str]] = set()


def modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "jitaccess").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if "migrations" in parts:
            continue  # Alembic's scripts, loaded by Alembic, never imported
        found[".".join(parts)] = path
    return found


def resolve(name: str, known: dict[str, Path]) -> str | None:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports(known: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the jitaccess modules it imports, anywhere in its source."""
    edges: dict[str, set[str]] = defaultdict(set)
    for module, path in known.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                # ``from pkg import module`` names a module; ``from mod import name`` the module.
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                    for alias in node.names
                ]
            else:
                continue
            for target in targets:
                if target.split(".")[0] != "jitaccess":
                    continue
                resolved = resolve(target, known)
                if resolved is not None and resolved != module:
                    edges[module].add(resolved)
    return edges


def layer_of(module: str) -> str:
    prefixes = [p for p in LAYERS if module == p or module.startswith(p + ".")]
    return LAYERS[max(prefixes, key=len)]


def cycles(edges: dict[str, set[str]], nodes: list[str]) -> set[tuple[str, ...]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[tuple[str, ...]] = set()
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.add(tuple(sorted(component)))
    return found


def test_every_module_has_a_layer_and_every_layer_its_rules() -> None:
    known = modules()
    assert len(known) > 50
    assert set(LAYERS.values()) == set(ALLOWED)
    for module in known:
        assert layer_of(module) in ALLOWED, module


def test_no_import_goes_against_the_layers() -> None:
    known = modules()
    edges = imports(known)
    against = {
        (source, target)
        for source, targets in edges.items()
        for target in targets
        if layer_of(target) != layer_of(source)
        and layer_of(target) not in ALLOWED[layer_of(source)]
    }
    new = sorted(against - KNOWN_ARROWS)
    assert new == [], "imports against the layers (see ALLOWED): " + ", ".join(
        f"{a} ({layer_of(a)}) -> {b} ({layer_of(b)})" for a, b in new
    )
    assert against >= KNOWN_ARROWS, f"fixed, take off KNOWN_ARROWS: {KNOWN_ARROWS - against}"


def test_the_import_graph_has_no_new_cycle() -> None:
    known = modules()
    found = cycles(imports(known), sorted(known))
    assert found - KNOWN_CYCLES == set(), f"new import cycles: {found - KNOWN_CYCLES}"
    assert found >= KNOWN_CYCLES, f"broken, take off KNOWN_CYCLES: {KNOWN_CYCLES - found}"


def test_the_checker_sees_what_it_must(tmp_path: Path) -> None:
    """The walk finds imports in functions and under TYPE_CHECKING, relative ones too,
    and the cycle finder finds a cycle (so the tests above can fail)."""
    package = tmp_path / "jitaccess"
    (package / "domain").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "domain" / "__init__.py").write_text("")
    (package / "domain" / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from jitaccess.slack import x\n"
    )
    (package / "slack").mkdir()
    (package / "slack" / "__init__.py").write_text("")
    (package / "slack" / "x.py").write_text("def f():\n    from ..domain import a\n")
    known = {
        name: package / path
        for name, path in {
            "jitaccess": "__init__.py",
            "jitaccess.domain": "domain/__init__.py",
            "jitaccess.domain.a": "domain/a.py",
            "jitaccess.slack": "slack/__init__.py",
            "jitaccess.slack.x": "slack/x.py",
        }.items()
    }
    edges = imports(known)
    assert edges["jitaccess.domain.a"] == {"jitaccess.slack.x"}
    assert edges["jitaccess.slack.x"] == {"jitaccess.domain.a"}
    assert layer_of("jitaccess.slack.x") not in ALLOWED[layer_of("jitaccess.domain.a")]
    assert cycles(edges, sorted(known)) == {("jitaccess.domain.a", "jitaccess.slack.x")}
