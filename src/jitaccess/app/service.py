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
from jitaccess.app.native import NativeApps, is_native
from jitaccess.app.queries import Queries
from jitaccess.app.requests import Requests
from jitaccess.app.signins import SignIns, TokenCipher
from jitaccess.app.sweep import RetryPolicy as RetryPolicy
from jitaccess.app.sweep import Sweeper
from jitaccess.app.sweep import SweepReport as SweepReport
from jitaccess.app.views import AppView, RequestView
from jitaccess.domain import policy as rules
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
        #: Sign in with Microsoft: see ``signins.py``.
        native = deps.native
        self.signins = SignIns(
            deps.db,
            native.sign_in,
            TokenCipher.from_setting(native.token_keys),
            self._may_link,
            mfa_auth_context=native.mfa_auth_context,
            mfa_max_age=native.mfa_max_age,
        )
        #: Azure's own managed-application JIT: see ``native.py``.
        self.native = NativeApps(
            deps.db,
            deps.rows,
            deps.after_change,
            managed_apps=native.managed_apps,
            pim=native.pim,
            graph=native.graph,
            slack_lookup=native.slack_lookup,
            signins=self.signins,
        )

    def _may_link(self, slack_user: str, user: object) -> str | None:
        """An Entra account may be linked by an approver of a native application
        (directly or through an Entra group), by a publisher or an admin, or by an
        approver of an application that requires MFA."""
        from jitaccess.domain.native import SignedInUser

        assert isinstance(user, SignedInUser)
        for app in self.list_apps():
            if slack_user in app.publishers or slack_user in app.admins:
                return None
            if is_native(app):
                if self.native.is_azure_approver(app.provider_config, user.object_id):
                    return None
            elif app.require_mfa and slack_user in self.approvers_of(app.policy.approvers):
                return None
        return (
            f"The Microsoft account {user.username} is not an approver or a publisher of any "
            "application jitaccess knows: nothing was linked"
        )

    def revoke_sign_in(self, slack_user: str, *, actor: str, now: datetime) -> bool:
        """Forget ``slack_user``'s Microsoft sign-in: themselves, or a consumer admin."""
        if actor != slack_user and not any(actor in app.admins for app in self.list_apps()):
            raise RuleViolation(
                "Only the person themselves or a consumer admin (of any application) may "
                "revoke a Microsoft sign-in"
            )
        return self.signins.sign_out(slack_user, actor=actor, now=now)

    def _native_of_request(self, request_id: int) -> AppView | None:
        app = self.get_app(self.get_request(request_id).app, include_removed=True)
        return app if is_native(app) else None

    def refuse_if_native(self, request_id: int, verb: str) -> None:
        """Extend, release, revoke and cancel do not exist for a native request."""
        app = self._native_of_request(request_id)
        if app is not None:
            self.native.refuse(str(app.provider_config.get("application_id", "")), verb)

    def native_deciders(self, app: AppView) -> tuple[str, ...]:
        """The Slack people who may decide on a native application's request (see
        ``NativeApps.deciders``)."""
        return self.native.deciders(app.policy.approvers, app.provider_config)

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
        app = self.get_app(app_name)
        if is_native(app):
            # The config form sends every field: only those that differ count. Approvers,
            # time-outs, quorum and break-glass are Azure's (or do not exist there).
            current = app.policy
            changed = [
                name
                for name, wanted, now_is in (
                    (
                        "approvers",
                        tuple(approvers) if approvers is not None else None,
                        current.approvers,
                    ),
                    ("approval timeout", approval_timeout, current.approval_timeout),
                    (
                        "break-glass",
                        tuple(breakglass) if breakglass is not None else None,
                        current.breakglass,
                    ),
                    ("break-glass maximum", breakglass_max, current.breakglass_max),
                    ("required approvals", required_approvals, current.required_approvals),
                )
                if wanted is not None and wanted != now_is
            ]
            if changed:
                raise RuleViolation(
                    f"{app_name} is a native Azure managed application: its policy is Azure's "
                    f"jitAccessPolicy, so {', '.join(changed)} cannot be changed here (approvers "
                    "are set in the portal, under the application's JIT Configuration); only "
                    "the approval mode, the maximum duration and the feed channel can"
                )
            if feed_channel is not None and feed_channel != (current.feed_channel or ""):
                # The feed is jitaccess's own (a Slack channel): nothing of Azure's.
                self.applications.set_policy(
                    app_name, actor=actor, now=now, feed_channel=feed_channel
                )
            return self.native.write_policy(
                app_name, actor=actor, now=now, mode=mode, max_duration=max_duration
            )
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

    def set_require_mfa(self, app_name: str, value: bool, *, actor: str, now: datetime) -> AppView:
        return self.applications.set_require_mfa(app_name, value, actor=actor, now=now)

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
        if is_native(self.get_app(app_name)):
            return self.native.submit(
                app_name,
                requester=requester,
                role=role,
                duration=duration,
                justification=justification,
                now=now,
                starts_at=starts_at,
            )
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
        return self._decide(request_id, actor=actor, reason=reason, now=now, approve=True)

    def deny(self, request_id: int, *, actor: str, reason: str, now: datetime) -> RequestView:
        return self._decide(request_id, actor=actor, reason=reason, now=now, approve=False)

    def _decide(
        self, request_id: int, *, actor: str, reason: str, now: datetime, approve: bool
    ) -> RequestView:
        app = self.get_app(self.get_request(request_id).app, include_removed=True)
        if is_native(app):
            return self.native.decide(
                request_id,
                actor=actor,
                reason=reason,
                now=now,
                approve=approve,
                deciders=lambda _row: self.native_deciders(app),
            )
        if approve and app.require_mfa:
            # Refused (with a sign-in link) before anything is recorded; the request's
            # own rules (who may decide, the quorum) are then the usual ones.
            self.native.require_step_up(actor, now)
        if approve:
            return self.requests.approve(request_id, actor=actor, reason=reason, now=now)
        return self.requests.deny(request_id, actor=actor, reason=reason, now=now)

    def cancel(
        self, request_id: int, *, actor: str, now: datetime, reason: str | None = None
    ) -> RequestView:
        self.refuse_if_native(request_id, "cancelling it")
        return self.requests.cancel(request_id, actor=actor, now=now, reason=reason)

    def close_for_removal(
        self, request_id: int, *, actor: str, reason: str, now: datetime
    ) -> RequestView:
        return self.requests.close_for_removal(request_id, actor=actor, reason=reason, now=now)

    def revoke(self, request_id: int, *, actor: str, reason: str, now: datetime) -> RequestView:
        self.refuse_if_native(request_id, "revoking it")
        return self.requests.revoke(request_id, actor=actor, reason=reason, now=now)

    def release(self, request_id: int, *, actor: str, now: datetime) -> RequestView:
        self.refuse_if_native(request_id, "releasing it")
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
        """Why ``actor`` cannot ``verb`` the request now, or None (a read-only pre-check
        for buttons). On a native request revoke does not exist, and the deciders are
        Azure's approvers (:meth:`native_deciders`), not the Slack policy's."""
        app = self._native_of_request(request_id)
        if app is None:
            return self.queries.decision_refusal(request_id, actor, verb)
        try:
            if verb == "revoke":
                self.refuse_if_native(request_id, "revoking it")
            view = self.get_request(request_id)
            if view.state != "pending":
                return self.queries.decision_refusal(request_id, actor, verb)
            rules.check_decider(self.native_deciders(app), view.requester, actor, verb)
        except RuleViolation as exc:
            return exc
        return None

    def sign_in_refusal(
        self, request_id: int, actor: str, verb: str, *, now: datetime
    ) -> RuleViolation | None:
        """Before a decision form asks for a reason: does ``actor`` need to sign in with
        Microsoft first (a native request is decided in Azure as them; ``require_mfa``
        needs a recent multi-factor sign-in)? The refusal carries a fresh link. Reads
        what jitaccess stored only: a sign-in Entra no longer honours is found when the
        decision calls Azure, and refused then with a link as well."""
        if verb not in ("approve", "deny"):
            return None
        app = self.get_app(self.get_request(request_id).app, include_removed=True)
        native = is_native(app)
        require_mfa = app.require_mfa and (native or verb == "approve")
        if not native and not require_mfa:
            return None
        return self.native.sign_in_refusal(actor, now=now, doing=verb, require_mfa=require_mfa)

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
