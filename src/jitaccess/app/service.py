"""The ``JitService`` facade: the use cases behind one object, for callers that hold
a single service (``slack/``, ``cli/``, the tests). Delegation only; the use cases
are in ``requests.py``, ``applications.py``, ``queries.py`` and their neighbours.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta

from jitaccess.app import quorum
from jitaccess.app.applications import Applications
from jitaccess.app.applications import ApplyResult as ApplyResult
from jitaccess.app.applications import AppSpec as AppSpec
from jitaccess.app.breakglass import BreakGlass
from jitaccess.app.catalog import Catalog
from jitaccess.app.deps import Deps
from jitaccess.app.deps import NullObserver as NullObserver
from jitaccess.app.deps import ServiceObserver as ServiceObserver
from jitaccess.app.directory import Directory
from jitaccess.app.extensions import Extensions
from jitaccess.app.journal import POLICY_ACTOR as POLICY_ACTOR
from jitaccess.app.journal import SYSTEM as SYSTEM
from jitaccess.app.queries import Queries
from jitaccess.app.requests import Requests
from jitaccess.app.sweep import RetryPolicy as RetryPolicy
from jitaccess.app.sweep import Sweeper
from jitaccess.app.sweep import SweepReport as SweepReport
from jitaccess.app.views import AppView, RequestView
from jitaccess.domain.errors import RuleViolation
from jitaccess.domain.policy import ApprovalMode
from jitaccess.domain.principals import PrincipalRules
from jitaccess.providers.base import GrantSpec, ProviderRegistry
from jitaccess.store.db import Database
from jitaccess.store.rows import Rows


class JitService:
    """The use cases behind one facade, for the callers that hold a single service
    (``slack/``, ``cli/``, tests): delegation only. The use cases themselves are in
    ``requests.py``, ``applications.py``, ``queries.py``, ``extensions.py``,
    ``breakglass.py`` and ``catalog.py``, each given only what it uses."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.requests = deps.inject(Requests)
        self.applications = deps.inject(Applications)
        self.queries = deps.inject(Queries)
        #: Extend without a gap (``/jit extend``): see ``extensions.py``.
        self.extensions = deps.inject(Extensions)
        #: Break-glass: see ``breakglass.py``.
        self.breakglass = deps.inject(BreakGlass)
        #: Offers, deploy, standing access and removal: see ``catalog.py``.
        self.catalog = deps.inject(Catalog, applications=self.applications, requests=self.requests)

    @property
    def db(self) -> Database:
        return self.deps.db

    @property
    def rows(self) -> Rows:
        return self.deps.rows

    @property
    def providers(self) -> ProviderRegistry:
        return self.deps.providers

    @property
    def principals(self) -> PrincipalRules:
        return self.deps.principals

    @property
    def directory(self) -> Directory:
        return self.deps.directory

    @property
    def listing_directory(self) -> Directory:
        return self.deps.listing_directory

    @property
    def sweeper(self) -> Sweeper:
        return self.deps.sweeper

    @property
    def retry(self) -> RetryPolicy:
        return self.deps.sweeper.retry

    @property
    def stopping(self) -> threading.Event:
        return self.deps.stopping

    @property
    def observer(self) -> ServiceObserver:
        return self.deps.observer

    @property
    def inline(self) -> bool:
        return self.deps.after_change.inline

    @property
    def on_deadline(self) -> Callable[[datetime], None] | None:
        return self.deps.after_change.wake

    def sweep(
        self, now: datetime, *, batch_size: int = 500, max_batches: int | None = None
    ) -> SweepReport:
        """Do every transition that is due at ``now`` (see ``Sweeper.sweep``)."""
        return self.sweeper.sweep(now, batch_size=batch_size, max_batches=max_batches)

    def run_due(self, now: datetime, ids: Iterable[int]) -> SweepReport:
        """Sweep just these requests, right after a person's action."""
        return self.sweeper.run_due(now, ids)

    def group_members_changed(self, group_id: str, *, now: datetime) -> int:
        """Cards follow a user group's new members (see ``quorum.group_members_changed``)."""
        d = self.deps
        return quorum.group_members_changed(d.db, d.rows, d.listing_directory, group_id, now=now)

    # -- delegated to the use cases --------------------------------------------------
    def register_app(self, spec: AppSpec, *, actor: str, now: datetime) -> AppView:
        return self.applications.register_app(spec, actor=actor, now=now)

    def check_apps(self, specs: Sequence[AppSpec]) -> list[AppSpec]:
        return self.applications.check_apps(specs)

    def apply_apps(self, specs: Sequence[AppSpec], *, actor: str, now: datetime) -> ApplyResult:
        return self.applications.apply_apps(specs, actor=actor, now=now)

    def set_policy(
        self,
        app_name: str,
        *,
        actor: str,
        now: datetime,
        mode: ApprovalMode | None = None,
        max_duration: timedelta | None = None,
        approvers: Sequence[str] | None = None,
        approval_timeout: timedelta | None = None,
        breakglass: Sequence[str] | None = None,
        breakglass_max: timedelta | None = None,
        required_approvals: int | None = None,
        feed_channel: str | None = None,
    ) -> AppView:
        return self.applications.set_policy(
            app_name,
            actor=actor,
            now=now,
            mode=mode,
            max_duration=max_duration,
            approvers=approvers,
            approval_timeout=approval_timeout,
            breakglass=breakglass,
            breakglass_max=breakglass_max,
            required_approvals=required_approvals,
            feed_channel=feed_channel,
        )

    def get_app(self, name: str, *, include_removed: bool = False) -> AppView:
        return self.queries.get_app(name, include_removed=include_removed)

    def list_apps(self) -> list[AppView]:
        return self.queries.list_apps()

    def submit(
        self,
        app_name: str,
        *,
        requester: str,
        role: str,
        duration: timedelta,
        justification: str,
        now: datetime,
        starts_at: datetime | None = None,
    ) -> RequestView:
        return self.requests.submit(
            app_name,
            requester=requester,
            role=role,
            duration=duration,
            justification=justification,
            now=now,
            starts_at=starts_at,
        )

    def approve(self, request_id: int, *, actor: str, reason: str, now: datetime) -> RequestView:
        return self.requests.approve(request_id, actor=actor, reason=reason, now=now)

    def deny(self, request_id: int, *, actor: str, reason: str, now: datetime) -> RequestView:
        return self.requests.deny(request_id, actor=actor, reason=reason, now=now)

    def cancel(
        self, request_id: int, *, actor: str, now: datetime, reason: str | None = None
    ) -> RequestView:
        return self.requests.cancel(request_id, actor=actor, now=now, reason=reason)

    def close_for_removal(
        self, request_id: int, *, actor: str, reason: str, now: datetime
    ) -> RequestView:
        return self.requests.close_for_removal(request_id, actor=actor, reason=reason, now=now)

    def revoke(self, request_id: int, *, actor: str, reason: str, now: datetime) -> RequestView:
        return self.requests.revoke(request_id, actor=actor, reason=reason, now=now)

    def release(self, request_id: int, *, actor: str, now: datetime) -> RequestView:
        return self.requests.release(request_id, actor=actor, now=now)

    def get_request(self, request_id: int) -> RequestView:
        return self.queries.get_request(request_id)

    def list_requests(
        self,
        *,
        app: str | None = None,
        state: str | None = None,
        requester: str | None = None,
        limit: int = 200,
    ) -> list[RequestView]:
        return self.queries.list_requests(app=app, state=state, requester=requester, limit=limit)

    def pending_for(self, approver: str, *, app: str | None = None) -> list[RequestView]:
        return self.queries.pending_for(approver, app=app)

    def approvers_of(self, entries: Sequence[str]) -> tuple[str, ...]:
        return self.queries.approvers_of(entries)

    def decision_refusal(self, request_id: int, actor: str, verb: str) -> RuleViolation | None:
        return self.queries.decision_refusal(request_id, actor, verb)

    def overseen_active(self, user: str) -> list[RequestView]:
        return self.queries.overseen_active(user)

    def apps_for_publisher(self, user: str) -> list[AppView]:
        return self.queries.apps_for_publisher(user)

    def check_can_read(self, app_name: str, user: str) -> AppView:
        return self.queries.check_can_read(app_name, user)

    def history(self, app_name: str, *, limit: int = 200, offset: int = 0) -> list[RequestView]:
        return self.queries.history(app_name, limit=limit, offset=offset)

    def next_deadline(self) -> datetime | None:
        return self.queries.next_deadline()

    def grant_spec(self, request_id: int) -> GrantSpec:
        return self.queries.grant_spec(request_id)
