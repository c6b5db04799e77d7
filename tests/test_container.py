"""The composition root (``container.build``) builds each piece once, with its wiring
as constructor arguments, and nothing in src/ re-wires a piece afterwards."""

from __future__ import annotations

import ast
import dataclasses
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import jitaccess
from jitaccess.app.outbox import OutboxRelay
from jitaccess.app.service import JitService
from jitaccess.app.sweep import Sweeper
from jitaccess.container import Container, build
from jitaccess.metrics import Metrics
from jitaccess.roles import Role
from jitaccess.scheduler import DeadlineScheduler
from jitaccess.server import Server
from jitaccess.settings import Settings
from jitaccess.slack import runtime
from jitaccess.slack.notifier import SlackNotifier
from jitaccess.store.db import Database

SRC = Path(jitaccess.__file__).parent
PIECES: dict[str, type] = {
    "db": Database,
    "service": JitService,
    "sweeper": Sweeper,
    "metrics": Metrics,
    "notifier": SlackNotifier,
    "relay": OutboxRelay,
    "scheduler": DeadlineScheduler,
}


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """How many of each piece (and Slack client, and Bolt app) get constructed."""
    counts: Counter[str] = Counter()

    def counting(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return original(*args, **kwargs)

        return wrapper

    for name, cls in PIECES.items():
        monkeypatch.setattr(cls, "__init__", counting(name, cls.__init__))
    monkeypatch.setattr(runtime, "slack_client", counting("slack client", runtime.slack_client))
    monkeypatch.setattr(runtime, "build_slack", counting("bolt app", runtime.build_slack))
    yield counts


def settings(tmp_path: Path, role: Role = Role.ALL, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "JITACCESS_DATABASE_URL": f"sqlite:///{tmp_path}/j.db",
        "JITACCESS_ROLE": role,
        "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_SIGNING_SECRET": "secret",
        "SLACK_API_URL": "http://127.0.0.1:9/api/",  # never called: nothing starts
    }
    return Settings(_env_file=None, **(values | extra))  # type: ignore[call-arg]


def test_serve_builds_each_piece_once_and_wires_it_at_construction(
    built: Counter[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = Server(settings(tmp_path))
    c = server.container
    try:
        assert built == {
            "db": 1,
            "service": 1,
            "sweeper": 1,
            "metrics": 1,
            # One client and one notifier, shared by the listeners and the relay
            # (the relay used to make a second pair, then have its notifier swapped).
            "slack client": 1,
            "notifier": 1,
            "bolt app": 1,
            "relay": 1,
            "scheduler": 1,
        }
        assert c.slack is not None and c.scheduler is not None and c.metrics is not None
        assert c.service.inline is False
        assert c.service.observer is c.metrics
        assert c.service.sweeper.observer is c.metrics
        assert c.relay.notifier is c.slack.notifier
        assert c.scheduler.relay is c.relay and c.scheduler.service is c.service
        assert c.scheduler.on_sweep == c.metrics.sweep_finished
        assert (server.slack, server.scheduler, server.metrics) == (c.slack, c.scheduler, c.metrics)
        # The service wakes this scheduler.
        woken: list[datetime | None] = []
        monkeypatch.setattr(c.scheduler, "wake_at", woken.append)
        assert c.service.on_deadline is not None
        when = datetime(2030, 1, 1, tzinfo=UTC)
        c.service.on_deadline(when)
        assert woken == [when]
        assert c.relay is c.relay  # read again: still the one built
        assert built["relay"] == 1
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        (Role.WEB, {"slack client": 1, "notifier": 1, "bolt app": 1}),
        (Role.WORKER, {"slack client": 1, "notifier": 1, "relay": 1, "scheduler": 1}),
    ],
)
def test_each_role_builds_only_what_it_runs(
    built: Counter[str], tmp_path: Path, role: Role, expected: dict[str, int]
) -> None:
    server = Server(settings(tmp_path, role))
    try:
        assert built == {"db": 1, "service": 1, "sweeper": 1, "metrics": 1} | expected
        if role is Role.WEB:
            assert server.container.service.on_deadline is None
            with pytest.raises(RuntimeError, match="runs no outbox relay"):
                server.container.relay  # noqa: B018 - the property is what is tested
    finally:
        server.stop()


def test_the_cli_container_builds_the_service_once_and_the_relay_on_first_use(
    built: Counter[str], tmp_path: Path
) -> None:
    c = build(settings(tmp_path, SLACK_BOT_TOKEN=None))
    try:
        assert built == {"db": 1, "service": 1, "sweeper": 1}
        assert (c.role, c.metrics, c.slack, c.scheduler) == (None, None, None, None)
        assert c.service.inline is True and c.service.on_deadline is None
        relay = c.relay
        assert c.relay is relay
        assert relay.notifier is None  # no bot token here: messages wait for serve
        assert built == {"db": 1, "service": 1, "sweeper": 1, "relay": 1}
    finally:
        c.close()


def test_the_container_is_frozen(tmp_path: Path) -> None:
    c = build(settings(tmp_path))
    try:
        with pytest.raises(dataclasses.FrozenInstanceError):
            c.service = c.service  # type: ignore[misc]
        assert dataclasses.is_dataclass(Container)
    finally:
        c.close()


#: Attributes that wire one piece to another: set in the piece's own ``__init__``
#: (from its constructor arguments), never from outside or later.
WIRING = {
    "inline",
    "observer",
    "on_deadline",
    "on_sweep",
    "notifier",
    "relay",
    "scheduler",
    "sweeper",
    "service",
    "metrics",
}


def rewirings(source: str) -> list[tuple[int, str]]:
    """Assignments to a wiring attribute anywhere but ``self.X = …`` in ``__init__``
    (including ``setattr(x, "X", …)``)."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, function: str | None) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node.name
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            targets = [node.target]
        while targets:
            part = targets.pop()
            if isinstance(part, ast.Tuple | ast.List):
                targets.extend(part.elts)
                continue
            if isinstance(part, ast.Attribute) and part.attr in WIRING:
                own = isinstance(part.value, ast.Name) and part.value.id == "self"
                if not (own and function == "__init__"):
                    found.append((part.lineno, ast.unparse(part)))
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "setattr"
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in WIRING
        ):
            found.append((node.lineno, ast.unparse(node)))
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(ast.parse(source), None)
    return found


def test_nothing_in_src_rewires_a_piece_after_construction() -> None:
    offenders = [
        f"{path.relative_to(SRC)}:{line}: {text}"
        for path in sorted(SRC.rglob("*.py"))
        for line, text in rewirings(path.read_text())
    ]
    assert offenders == []


def test_the_guard_sees_the_old_patching() -> None:
    old = (
        "class Server:\n"
        "    def __init__(self):\n"
        "        self.container.service.inline = False\n"
        "        self.container.relay.notifier = self.slack.notifier\n"
        "        self.scheduler.on_sweep = self.metrics.sweep_finished\n"
        "        self.inline = True\n"
        "def scheduler(self):\n"
        "    self.service.on_deadline = s.wake_at\n"
        "    setattr(service, 'observer', m)\n"
    )
    assert [line for line, _ in rewirings(old)] == [3, 4, 5, 8, 9]
