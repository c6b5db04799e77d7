"""Shared fixtures: a migrated database (SQLite by default, PostgreSQL on demand)
and a service wired like production, with the log provider."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from jitaccess.app.deps import build_deps
from jitaccess.app.service import AppSpec, JitService, RetryPolicy
from jitaccess.domain.policy import ApprovalMode, Policy
from jitaccess.providers.base import ProviderRegistry
from jitaccess.providers.log import LogProvider
from jitaccess.slack.principals import SLACK_PRINCIPALS
from jitaccess.store.db import Database, normalise_url
from jitaccess_sandbox.fake_slack import FakeSlack

PG_ENV = "JITACCESS_TEST_DATABASE_URL"
START = "2026-11-27 10:00:00"
PUBLISHER = "UPUB1"
APPROVER = "UAPP1"
APPROVER2 = "UAPP2"
ADMIN = "UADM1"
OUTSIDER = "UOUT1"


def crowd(count: int) -> tuple[str, ...]:
    """``count`` publishers, PUBLISHER first: overlapping requests for one role and scope
    are refused per person, so tests that need many at once spread them over people."""
    return tuple(f"UPUB{i}" for i in range(1, count + 1))


def utc(text_: str) -> datetime:
    return datetime.fromisoformat(text_).replace(tzinfo=UTC)


def reset_postgres(url: str) -> None:
    engine = create_engine(normalise_url(url))
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """A test that starts the server configures logging for the process; put the root
    logger back afterwards, so the next test's CLI output has no log lines in it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jitaccess.db'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    url = os.environ.get(PG_ENV)
    if not url:
        if os.environ.get("JITACCESS_REQUIRE_POSTGRES"):
            pytest.fail(f"JITACCESS_REQUIRE_POSTGRES is set but {PG_ENV} is not")
        pytest.skip(f"{PG_ENV} is not set: PostgreSQL tests need a database (CI sets it)")
    reset_postgres(url)
    yield url


@pytest.fixture
def db(sqlite_url: str) -> Iterator[Database]:
    database = Database(sqlite_url)
    database.upgrade()
    yield database
    database.dispose()


def make_service(db: Database, **kwargs: object) -> tuple[JitService, LogProvider]:
    providers = ProviderRegistry()
    log_provider = LogProvider(db)
    providers.register(log_provider)
    retry = kwargs.pop("retry", None) or RetryPolicy(
        base=timedelta(seconds=10), cap=timedelta(minutes=5)
    )
    # rng=1.0: backoff takes its full (largest) value, so tests know when to tick.
    service = JitService(
        build_deps(
            db, providers, retry=retry, rng=lambda: 1.0, principals=SLACK_PRINCIPALS, **kwargs
        )
    )  # type: ignore[arg-type]
    return service, log_provider


@pytest.fixture
def service(db: Database) -> JitService:
    return make_service(db)[0]


@pytest.fixture
def log_provider(service: JitService) -> LogProvider:
    provider = service.providers.get("log")
    assert isinstance(provider, LogProvider)
    return provider


def register(
    service: JitService,
    name: str = "crm",
    *,
    mode: ApprovalMode = ApprovalMode.MANUAL,
    approvers: tuple[str, ...] = (APPROVER, APPROVER2),
    max_duration: timedelta = timedelta(hours=8),
    jit: bool = True,
    roles: tuple[str, ...] = ("Contributor", "Owner"),
    provider: str = "log",
    now: datetime | None = None,
    publishers: tuple[str, ...] = (PUBLISHER,),
    provider_config: dict[str, object] | None = None,
    policy: Policy | None = None,
) -> None:
    """Register ``name`` (scope ``…/mrg-NAME``); ``policy`` replaces the one made of
    ``mode``, ``approvers`` and ``max_duration``."""
    service.register_app(
        AppSpec(
            name=name,
            scope=f"/subscriptions/s1/resourceGroups/mrg-{name}",
            publishers=publishers,
            roles=roles,
            admins=(ADMIN,),
            jit_enabled=jit,
            policy=policy or Policy(mode=mode, max_duration=max_duration, approvers=approvers),
            provider=provider,
            provider_config=provider_config or {},
        ),
        actor="test",
        now=now or utc(START),
    )


# -- the CLI, in-process (tests/test_cli.py, tests/test_audit_cli.py) ---------------
def flat(text: str) -> str:
    """Terminal output as one line: box-drawing borders gone, whitespace collapsed,
    so a message wrapped inside a Rich panel still matches as a phrase."""
    for border in "│┃╭╮╰╯─━":
        text = text.replace(border, " ")
    return " ".join(text.split())


class Cli:
    """Runs ``jitaccess`` in-process against one SQLite file.

    Every call asserts the exit code (``code``) and that the command never crashed:
    a traceback is not an acceptable answer, whatever the exit code.
    """

    def __init__(self, db_path: Path) -> None:
        from typer.testing import CliRunner

        self.db_path = db_path
        self.runner = CliRunner()

    def __call__(self, *args: object, code: int = 0):  # -> typer.testing.Result
        import traceback

        from jitaccess.cli import app

        result = self.runner.invoke(app, [str(a) for a in args])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            trace = "".join(traceback.format_exception(*result.exc_info))
            pytest.fail(f"`jitaccess {' '.join(map(str, args))}` crashed:\n{trace}")
        assert result.exit_code == code, (
            f"`jitaccess {' '.join(map(str, args))}` exited {result.exit_code}, not {code}\n"
            f"stdout: {result.stdout}\nstderr: {result.stderr}"
        )
        return result

    def json(self, *args: object):  # -> the parsed --json output
        import json

        return json.loads(self(*args, "--json").stdout)


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("JITACCESS_DATABASE_URL", f"sqlite:///{tmp_path / 'j.db'}")
    # Wide, plain output so tables and panels do not wrap or colour what we assert on.
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("TERM", "xterm")
    # Times print in the operator's zone: pinned, so no test depends on the machine's.
    monkeypatch.setenv("TZ", "UTC")
    for var in ("FORCE_COLOR", "TTY_COMPATIBLE", "TERMINAL_WIDTH"):
        monkeypatch.delenv(var, raising=False)
    return Cli(tmp_path / "j.db")


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    """A fake Slack Web API on 127.0.0.1 with the demo people in it."""
    fake = FakeSlack()
    fake.add_user(PUBLISHER, name="pat", real_name="Pat Publisher", tz="Europe/Paris")
    fake.add_user(APPROVER, name="ava", real_name="Ava Approver", tz="America/New_York")
    fake.add_user(APPROVER2, name="abe", real_name="Abe Approver", tz="UTC")
    fake.add_user(ADMIN, name="ada", real_name="Ada Admin", tz="UTC")
    fake.add_user(OUTSIDER, name="olly", real_name="Olly Outsider", tz="UTC")
    with fake:
        yield fake
