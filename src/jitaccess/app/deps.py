"""What the use cases share, built once by the composition root and never re-wired.

:class:`Deps` is the bag; a use case never takes it whole. It names in its
constructor only what it uses (``db``, ``rows``, ``directory``, ``after_change`` …),
and :meth:`Deps.inject` passes exactly those, by name (as cosmicpython's
``bootstrap.py`` injects what a handler's signature names). So a use case's
signature says what it touches, and a test can build one with fakes for just that.
"""

from __future__ import annotations

import inspect
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol, TypeVar

from jitaccess.app.after_change import AfterChange
from jitaccess.app.directory import Directory, StaticDirectory
from jitaccess.app.sweep import RetryPolicy, Sweeper
from jitaccess.domain.native import (
    DirectoryPort,
    ManagedAppsPort,
    PimApprovalsPort,
    SignInPort,
)
from jitaccess.domain.principals import PrincipalRules
from jitaccess.providers.base import ProviderRegistry
from jitaccess.store.db import Database
from jitaccess.store.rows import Rows

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from jitaccess.app.activity_reports import ActivityReporter

T = TypeVar("T")


class ServiceObserver(Protocol):
    """What the use cases report for metrics; the default reports nowhere."""

    def transitions_committed(self, moves: list[tuple[str | None, str]]) -> None: ...

    def provider_called(
        self, provider: str, operation: str, error: str | None, seconds: float
    ) -> None: ...


class NullObserver:
    def transitions_committed(self, moves: list[tuple[str | None, str]]) -> None:
        return None

    def provider_called(
        self, provider: str, operation: str, error: str | None, seconds: float
    ) -> None:
        return None


@dataclass(frozen=True)
class NativePorts:
    """Native mode's adapters (``providers/managed_apps.py``, ``pim_approvals.py``,
    ``graph.py``, ``entra.py``) and settings; each None when not configured, and the use
    case then refuses saying what to set."""

    managed_apps: ManagedAppsPort | None = None
    pim: PimApprovalsPort | None = None
    graph: DirectoryPort | None = None
    #: Slack's ``users.lookupByEmail``: the Slack person with this address, or None.
    slack_lookup: Callable[[str], str | None] | None = None
    sign_in: SignInPort | None = None
    #: Comma-separated Fernet keys (``JITACCESS_TOKEN_KEYS``).
    token_keys: str | None = None
    mfa_auth_context: str = "c1"
    mfa_max_age: timedelta = timedelta(hours=1)


@dataclass(frozen=True)
class Deps:
    """Everything a use case may need, each built once (see :func:`build_deps`)."""

    db: Database
    rows: Rows
    providers: ProviderRegistry
    #: The chat front end's rules for the ids people type (Slack's, under serve and
    #: the CLI): the domain treats ids as opaque.
    principals: PrincipalRules
    #: Who is in an approver group now (Slack's ``usergroups.users.list`` under serve):
    #: asked afresh for every decision, so someone who left a group cannot decide.
    directory: Directory
    #: The same for sending cards and showing lists, where a short cache is fine.
    listing_directory: Directory
    #: Does what is due (time-outs, grants, revokes); also the use cases' ``run_due``.
    sweeper: Sweeper
    after_change: AfterChange
    #: Metrics: transitions counted after commit, and the sweep's backend calls.
    observer: ServiceObserver
    stopping: threading.Event
    #: How long before the end the requester is reminded (None: never).
    remind_before: timedelta | None
    native: NativePorts

    def inject(self, factory: Callable[..., T], **given: object) -> T:
        """``factory`` called with the dependencies its signature names, by name, and
        with ``given`` (what is not shared: other use cases, say)."""
        names = {f.name for f in fields(self)}
        wanted = inspect.signature(factory).parameters
        shared = {name: getattr(self, name) for name in wanted if name in names}
        return factory(**shared, **given)


def build_deps(
    db: Database,
    providers: ProviderRegistry,
    *,
    retry: RetryPolicy | None = None,
    worker_id: str = "worker",
    on_deadline: Callable[[datetime], None] | None = None,
    rng: Callable[[], float] = random.random,
    remind_before: timedelta | None = timedelta(minutes=15),
    inline: bool = True,
    stopping: threading.Event | None = None,
    provider_concurrency: int = 32,
    observer: ServiceObserver | None = None,
    directory: Directory | None = None,
    listing_directory: Directory | None = None,
    activity: ActivityReporter | None = None,
    principals: PrincipalRules,
    native: NativePorts | None = None,
    clock: Callable[[], datetime] | None = None,
) -> Deps:
    """The use cases' dependencies, each made once. ``on_deadline`` is called with a
    deadline a person's action just made (the scheduler's ``wake_at`` under
    ``serve``; None: nothing to wake). ``inline``: see :class:`AfterChange`.
    ``clock``: what every worker reads (see :class:`Sweeper`), for leases."""
    observer = observer or NullObserver()
    rows = Rows(db)
    sweeper = Sweeper(
        db,
        providers,
        retry=retry,
        worker_id=worker_id,
        rng=rng,
        remind_before=remind_before,
        stopping=stopping,
        provider_concurrency=provider_concurrency,
        observer=observer,
        activity=activity,
        clock=clock,
    )
    decisions = directory or StaticDirectory()

    def committed(session: Session) -> None:
        """After a commit: report the transitions it made (never before, so a
        rolled-back transition is never counted)."""
        moves = session.info.pop("jit_transitions", None)
        if moves:
            observer.transitions_committed(moves)

    db.on_commit(committed)
    return Deps(
        db=db,
        rows=rows,
        providers=providers,
        principals=principals,
        directory=decisions,
        listing_directory=listing_directory or decisions,
        sweeper=sweeper,
        after_change=AfterChange(
            db=db, rows=rows, run_due=sweeper.run_due, inline=inline, wake=on_deadline
        ),
        observer=observer,
        stopping=sweeper.stopping,
        remind_before=remind_before,
        native=native or NativePorts(),
    )
