"""Use cases. Each public method is one use case in one transaction.

Times are arguments (``now``); nothing here reads a clock or calls a backend: a
person's action records what must happen, and the sweep (``sweep.Sweeper``) does what
is due, calling the backends outside any transaction. Every transition goes through
the journal (state, audit entry, outbox rows in one transaction); every read and lock
through ``store.rows``.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from jitaccess.app import journal, quorum
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
from jitaccess.app.sweep import RetryPolicy as RetryPolicy
from jitaccess.app.sweep import Sweeper, grant_spec_of
from jitaccess.app.sweep import SweepReport as SweepReport
from jitaccess.app.views import AppView, RequestView
from jitaccess.domain import policy as rules
from jitaccess.domain.errors import Conflict, Findings, Mention, Part, RuleViolation
from jitaccess.domain.lifecycle import (
    APPROVED_STATES,
    FINAL_STATES,
    Event,
    RequestState,
    initial_state,
)
from jitaccess.domain.policy import ApprovalMode, Policy
from jitaccess.domain.principals import PrincipalRules
from jitaccess.providers.base import DefinitionChecker, GrantSpec, ProviderError, ProviderRegistry
from jitaccess.store import audit
from jitaccess.store.db import Database
from jitaccess.store.models import AccessRequest, Application
from jitaccess.store.rows import Rows

log = logging.getLogger("jitaccess.service")

_APP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def _timed_out(request_id: int, deadline: datetime) -> str:
    return (
        f"Request {request_id} timed out at {deadline:%Y-%m-%d %H:%M} UTC before anyone "
        "decided; it is now timed_out: the requester must submit a new request"
    )


def row_approvers(row: AccessRequest) -> list[str]:
    """Who has approved ``row`` so far."""
    return [a.approver for a in row.approvals]


def _approvals_detail(row: AccessRequest) -> dict[str, Any] | None:
    """The approvals behind a quorum decision, for its audit entry."""
    if row.required_approvals <= 1:
        return None
    return {"approvals": [{"approver": a.approver, "reason": a.reason} for a in row.approvals]}


class JitService:
    """The use cases over one :class:`~jitaccess.app.deps.Deps` (the container's)."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.after_change = deps.after_change
        #: Extend without a gap (``/jit extend``): see ``extensions.py``.
        self.extensions = deps.inject(Extensions)
        #: Break-glass: see ``breakglass.py``.
        self.breakglass = deps.inject(BreakGlass)
        #: Offers, deploy, standing access and removal: see ``catalog.py``.
        self.catalog = deps.inject(Catalog, applications=self, requests=self)

    # What the use cases run on, read-only: the container wires it once.
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

    # -- deadlines --------------------------------------------------------------------
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

    # -- applications ---------------------------------------------------------------
    def register_app(self, spec: AppSpec, *, actor: str, now: datetime) -> AppView:
        spec = self._validated(spec)
        with self.db.transaction() as session:
            gone = self.rows.find_app(session, spec.name, removed=True)
            if gone is not None and gone.removed_at is not None:
                raise RuleViolation(
                    f"{spec.name} was removed on {gone.removed_at:%Y-%m-%d}; its history stays "
                    "under that name: register the new application under another name"
                )
            if self.rows.find_app(session, spec.name) is not None:
                raise RuleViolation(
                    f"{spec.name} is already registered: change its policy with "
                    "`apps policy` or its definition with `apps apply`"
                )
            row = self._create_app(session, spec, actor=actor, now=now)
            return AppView.of(row)

    def check_apps(self, specs: Sequence[AppSpec]) -> list[AppSpec]:
        """``specs`` cleaned, or every problem of every application at once
        (:class:`Problems`, each with its name), including what cannot change since
        registration. Writes nothing."""
        found = Findings()
        validated = []
        for spec in specs:
            try:
                validated.append(self._validated(spec))
            except RuleViolation as exc:
                found.add(exc, subject=spec.name)
        names = [spec.name.strip() for spec in specs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            found.add(
                RuleViolation(
                    f"{', '.join(duplicates)} defined more than once: keep one", field="name"
                )
            )
        with self.db.transaction(readonly=True) as session:
            for spec in validated:
                row = self.rows.find_app(session, spec.name)
                try:
                    if row is not None:
                        self._check_fixed(row, spec)
                except RuleViolation as exc:
                    found.add(exc, subject=spec.name)
        found.raise_any()
        return validated

    def apply_apps(self, specs: Sequence[AppSpec], *, actor: str, now: datetime) -> ApplyResult:
        """Create or update every application, all or nothing. Every problem of every
        application is reported at once (:class:`Problems`), each with its name."""
        validated = self.check_apps(specs)
        names = [spec.name for spec in validated]
        result = ApplyResult()
        with self.db.transaction() as session:
            apps = [self.rows.find_app(session, name) for name in names]
            for spec, row in zip(validated, apps, strict=True):
                if row is not None:  # changed since check_apps: still refused
                    self._check_fixed(row, spec)
            open_rows = self._open_requests(session, [a.id for a in apps if a is not None])
            for spec in validated:
                row = self.rows.find_app(session, spec.name)
                if row is None:
                    self._create_app(session, spec, actor=actor, now=now)
                    result.created.append(spec.name)
                    continue
                before = AppView.of(row).to_json()
                old_approvers = tuple(row.approvers)
                self._write_app(row, spec, now)
                after = AppView.of(row).to_json()
                if before == after:
                    result.unchanged.append(spec.name)
                    continue
                session.flush()
                entry = audit.append(
                    session,
                    at=now,
                    actor=actor,
                    action="app_updated",
                    app=spec.name,
                    details={"before": before, "after": after},
                )
                self._approvers_changed(
                    session,
                    row,
                    old_approvers,
                    open_rows.get(row.id, []),
                    change=entry.seq,
                    actor=actor,
                    now=now,
                )
                result.updated.append(spec.name)
        return result

    @staticmethod
    def _check_fixed(row: Application, spec: AppSpec) -> None:
        """What cannot change after registration: whether JIT is enabled, and the scope."""
        if row.jit_enabled != spec.jit_enabled:
            state = "enabled" if row.jit_enabled else "disabled"
            raise RuleViolation(
                f"{spec.name} was registered with JIT {state}; JIT cannot be "
                f"{'disabled' if row.jit_enabled else 'enabled'} after registration: "
                f"set jit_enabled: {str(row.jit_enabled).lower()} (nothing was applied)",
                field="jit_enabled",
            )
        if row.scope != spec.scope:
            raise RuleViolation(
                f"{spec.name}'s scope is fixed at registration ({row.scope}): register "
                "a new application for another scope (nothing was applied)",
                field="scope",
            )

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
        """Change an application's policy. Mode, maximum duration, timeout and quorum
        apply to requests submitted afterwards; the approver list applies at once, also to
        pending requests (added approvers get their cards, removed ones are told).
        ``feed_channel`` "" turns the feed off (None leaves it as it is)."""
        with self.db.transaction() as session:
            row = self.rows.app(session, app_name)
            view = AppView.of(row)
            rules.check_admin(view.rules(), actor)
            if not row.jit_enabled:
                raise RuleViolation(rules.disabled_message(row.name))
            old = view.policy
            # Lock the open requests before the audit head, in the order decisions take
            # them (request, then head), so a concurrent approval cannot deadlock with us.
            open_rows = self._open_requests(session, [row.id]) if approvers is not None else {}
            new = Policy(
                mode=mode or old.mode,
                max_duration=old.max_duration if max_duration is None else max_duration,
                approvers=tuple(approvers) if approvers is not None else old.approvers,
                approval_timeout=(
                    old.approval_timeout if approval_timeout is None else approval_timeout
                ),
                breakglass=tuple(breakglass) if breakglass is not None else old.breakglass,
                breakglass_max=old.breakglass_max if breakglass_max is None else breakglass_max,
                required_approvals=(
                    old.required_approvals if required_approvals is None else required_approvals
                ),
                feed_channel=old.feed_channel if feed_channel is None else feed_channel,
            ).validated(self.principals)
            self._write_policy(row, new, now)
            after = AppView.of(row)
            entry = audit.append(
                session,
                at=now,
                actor=actor,
                action="policy_changed",
                app=row.name,
                details={"before": view.to_json()["policy"], "after": after.to_json()["policy"]},
            )
            self._approvers_changed(
                session,
                row,
                old.approvers,
                open_rows.get(row.id, []),
                change=entry.seq,
                actor=actor,
                now=now,
            )
            return after

    def _open_requests(
        self, session: Session, app_ids: list[int]
    ) -> dict[int, list[AccessRequest]]:
        """The applications' requests not yet final, locked (PostgreSQL) in id order."""
        found: dict[int, list[AccessRequest]] = {}
        for request in self.rows.open_requests(session, app_ids):
            found.setdefault(request.app_id, []).append(request)
        return found

    def _approvers_changed(
        self,
        session: Session,
        app: Application,
        old: Sequence[str],
        open_rows: Sequence[AccessRequest],
        *,
        change: int,
        actor: str,
        now: datetime,
    ) -> None:
        """Tell the people an approver-list change concerns, in its own transaction.

        Every approver is notified of every request: one added while requests are
        pending gets their cards (and is listed in ``notified_approvers``). One removed
        sees each open request's card say they no longer decide; the card is rendered
        from the current policy, so it loses its buttons. ``change`` (the audit entry's
        seq) keeps each change's outbox keys unique, also when an approver comes back.
        """
        if tuple(app.approvers) == tuple(old):
            return
        # Approvers are people and groups: compare the people they name now.
        new = quorum.people(self.listing_directory, tuple(app.approvers))
        before = quorum.people(self.listing_directory, tuple(old))
        added = [a for a in new if a not in before]
        removed = [a for a in before if a not in new]
        if not added and not removed:
            return
        for row in open_rows:
            quorum.tell_approver_changes(
                session, row, added, removed, step=f"approvers:{change}", actor=actor, now=now
            )

    def get_app(self, name: str, *, include_removed: bool = False) -> AppView:
        with self.db.transaction(readonly=True) as session:
            return AppView.of(self.rows.app(session, name, include_removed=include_removed))

    def list_apps(self) -> list[AppView]:
        with self.db.transaction(readonly=True) as session:
            return [AppView.of(row) for row in self.rows.apps(session)]

    # -- requests -------------------------------------------------------------------
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
        # Slack is asked who is in the groups between transactions, never inside one.
        return self.after_change.settled(
            quorum.with_groups_resolved(
                lambda known: self._submit(
                    known,
                    app_name,
                    requester=requester,
                    role=role,
                    duration=duration,
                    justification=justification,
                    now=now,
                    starts_at=starts_at,
                )
            ),
            now,
        )

    def _submit(
        self,
        known: dict[tuple[str, ...], tuple[str, ...]],
        app_name: str,
        *,
        requester: str,
        role: str,
        duration: timedelta,
        justification: str,
        now: datetime,
        starts_at: datetime | None,
    ) -> RequestView:
        with self.db.transaction() as session:
            app = self.rows.app(session, app_name)
            view = AppView.of(app)
            role, window, justification = rules.check_submission(
                view.rules(), requester, role, duration, starts_at, justification, now
            )
            # Cards go to the people the approver entries name now (groups expanded).
            policy = view.policy
            deciders = quorum.known_people(
                known,
                policy.approvers,
                lambda: self._deciders(self.listing_directory, policy),
            )
            if view.policy.mode is ApprovalMode.MANUAL:
                rules.check_enough_deciders(
                    view.name, deciders, requester, view.policy.required_approvals
                )
            rules.check_no_overlap(
                window, self.rows.open_windows(session, requester, app.scope, role)
            )
            row = AccessRequest(
                app=app,
                requester=requester,
                role=role,
                justification=justification,
                # Stored in UTC, and the view returned shows them as they are stored.
                starts_at=window.starts_at.astimezone(UTC),
                ends_at=window.ends_at.astimezone(UTC),
                approval_deadline_at=rules.approval_deadline(
                    now, view.policy.approval_timeout, window
                ).astimezone(UTC),
                approval_mode=view.policy.mode.value,
                notified_approvers=list(deciders),
                required_approvals=view.policy.required_approvals,
                created_at=now,
                feed_channel=app.feed_channel,
                attempts=0,
                state=initial_state(),  # the machine's initial state
            )
            # Pending until a decision or the time-out (an automatic approval moves it).
            row.next_deadline_at = row.approval_deadline_at
            session.add(row)
            session.flush()
            journal.record(
                session, row, "submit", None, actor=requester, now=now, reason=justification
            )
            if view.policy.mode is ApprovalMode.AUTOMATIC:
                journal.transition(
                    session,
                    row,
                    Event.AUTO_APPROVE,
                    actor=POLICY_ACTOR,
                    now=now,
                    reason="approved automatically by policy",
                )
                row.decided_by = POLICY_ACTOR
                row.decided_at = now
                row.decision_reason = "approved automatically by policy"
                row.next_deadline_at = row.starts_at
            return RequestView.of(row)

    def approve(self, request_id: int, *, actor: str, reason: str, now: datetime) -> RequestView:
        return self._decide(request_id, actor=actor, reason=reason, now=now, approve=True)

    def deny(self, request_id: int, *, actor: str, reason: str, now: datetime) -> RequestView:
        return self._decide(request_id, actor=actor, reason=reason, now=now, approve=False)

    def cancel(
        self, request_id: int, *, actor: str, now: datetime, reason: str | None = None
    ) -> RequestView:
        """The requester withdraws a request that has not started (pending or approved)."""
        with self.db.transaction() as session:
            row = self.rows.lock(session, request_id)
            if actor != row.requester:
                raise RuleViolation(
                    "Only the requester (",
                    Mention(row.requester),
                    f") may cancel request {row.id}; approvers can deny or revoke it instead",
                )
            if row.state == RequestState.ACTIVE:
                raise RuleViolation(
                    f"Request {row.id} is already active: use release to end your access now"
                )
            if row.state in FINAL_STATES:
                raise Conflict(*self._already(row))
            owed = self._end_before_start(
                session,
                row,
                Event.CANCEL,
                actor=actor,
                now=now,
                reason=reason or "cancelled by the requester",
            )
            result = RequestView.of(row)
        return self.after_change.ending(request_id, now) if owed else result

    def close_for_removal(
        self, request_id: int, *, actor: str, reason: str, now: datetime
    ) -> RequestView:
        """Cancel a request that has not started because its application is being
        removed (the consumer admin acts, not the requester)."""
        with self.db.transaction() as session:
            row = self.rows.lock(session, request_id)
            if row.state != RequestState.PENDING and row.state not in APPROVED_STATES:
                raise Conflict(*self._already(row))
            owed = self._end_before_start(
                session, row, Event.CANCEL, actor=actor, now=now, reason=reason
            )
            result = RequestView.of(row)
        return self.after_change.ending(request_id, now) if owed else result

    def revoke(self, request_id: int, *, actor: str, reason: str, now: datetime) -> RequestView:
        """An approver or consumer admin ends a grant early (or stops an approved one)."""
        with self.db.transaction() as session:
            row = self.rows.lock(session, request_id)
            self._check_revoker(row, actor, self.directory)
            reason = rules.check_reason(reason, "revoke")
            if row.state in APPROVED_STATES:
                owed = self._end_before_start(
                    session, row, Event.CANCEL, actor=actor, now=now, reason=reason
                )
                result = RequestView.of(row)
            else:
                self._request_end(row, Event.REVOKE, actor=actor, reason=reason, now=now)
                owed = True
        return self.after_change.ending(request_id, now) if owed else result

    def release(self, request_id: int, *, actor: str, now: datetime) -> RequestView:
        """The requester is done early ("I'm done")."""
        with self.db.transaction() as session:
            row = self.rows.lock(session, request_id)
            if actor != row.requester:
                raise RuleViolation(
                    "Only the requester (",
                    Mention(row.requester),
                    f") may release request {row.id}; approvers and admins can revoke it",
                )
            self._request_end(
                row, Event.RELEASE, actor=actor, reason="released early by the requester", now=now
            )
        return self.after_change.ending(request_id, now)

    def get_request(self, request_id: int) -> RequestView:
        with self.db.transaction(readonly=True) as session:
            return RequestView.of(self.rows.get(session, request_id))

    def list_requests(
        self,
        *,
        app: str | None = None,
        state: str | None = None,
        requester: str | None = None,
        limit: int = 200,
    ) -> list[RequestView]:
        if state is not None and state not in {s.value for s in RequestState}:
            raise RuleViolation(
                f"'{state}' is not a state: use one of " + ", ".join(s.value for s in RequestState)
            )
        with self.db.transaction(readonly=True) as session:
            app_id = self.rows.app(session, app).id if app is not None else None
            found = self.rows.requests(
                session, app_id=app_id, state=state, requester=requester, limit=limit
            )
            return [RequestView.of(row) for row in found]

    def pending_for(self, approver: str, *, app: str | None = None) -> list[RequestView]:
        """Requests waiting on ``approver``, across every application (or one)."""
        with self.db.transaction(readonly=True) as session:
            app_id = self.rows.app(session, app).id if app is not None else None
            found = []
            for row in self.rows.in_state(session, RequestState.PENDING, app_id=app_id):
                if approver == row.requester or approver in (a.approver for a in row.approvals):
                    continue  # their own, or one they already approved (waiting on others)
                if approver in self.approvers_of(row.app.approvers):
                    found.append(RequestView.of(row))
            return found

    def _deciders(self, directory: Directory, policy: Policy) -> tuple[str, ...]:
        """The people a policy's approvers name now; a group that cannot be read refuses
        the submission, in either mode (nothing is recorded). In automatic mode every
        approver must be told of the access the policy grants: granting it while a group
        could not be read would grant it with nobody told."""
        return quorum.people(directory, policy.approvers)

    def approvers_of(self, entries: Sequence[str]) -> tuple[str, ...]:
        """The people approver ``entries`` name (groups expanded), for showing things;
        a group that cannot be read counts as empty here."""
        return quorum.people_or_known(self.listing_directory, tuple(entries))

    def _check_revoker(self, row: AccessRequest, actor: str, directory: Directory) -> None:
        app = AppView.of(row.app).rules()
        if actor in app.admins or actor in app.policy.approvers:
            return
        rules.check_revoker(app, actor, quorum.people(directory, app.policy.approvers))

    def decision_refusal(self, request_id: int, actor: str, verb: str) -> RuleViolation | None:
        """Why ``actor`` cannot ``verb`` the request now, or None if they can.

        A read-only pre-check for buttons; the decision itself checks again."""
        with self.db.transaction(readonly=True) as session:
            row = self.rows.get(session, request_id)
            try:
                if verb == "revoke":
                    self._check_revoker(row, actor, self.directory)
                    if row.state in FINAL_STATES:
                        return Conflict(*self._already(row))
                    return None
                if row.state != RequestState.PENDING:
                    return Conflict(*self._already(row))
                deciders = quorum.people(self.directory, tuple(row.app.approvers))
                rules.check_decider(deciders, row.requester, actor, verb)
                if verb == "approve":
                    rules.check_not_yet_approved(row_approvers(row), actor, row.id)
            except RuleViolation as exc:
                return exc
            return None

    def overseen_active(self, user: str) -> list[RequestView]:
        """Active grants in applications where ``user`` is an approver or admin."""
        with self.db.transaction(readonly=True) as session:
            return [
                RequestView.of(row)
                for row in self.rows.in_state(session, RequestState.ACTIVE)
                if user in row.app.admins or user in self.approvers_of(row.app.approvers)
            ]

    def apps_for_publisher(self, user: str) -> list[AppView]:
        """JIT-enabled applications ``user`` may request access to."""
        return [a for a in self.list_apps() if a.jit_enabled and user in a.publishers]

    def check_can_read(self, app_name: str, user: str) -> AppView:
        """Publishers, approvers and consumer admins may read an application's requests."""
        app = self.get_app(app_name, include_removed=True)
        readers = (*app.publishers, *app.admins, *self.approvers_of(app.policy.approvers))
        if user not in readers:
            raise RuleViolation(
                f"Only {app.name}'s publishers, approvers and consumer admins may see its "
                "requests, and you are none of these"
            )
        return app

    def history(self, app_name: str, *, limit: int = 200, offset: int = 0) -> list[RequestView]:
        with self.db.transaction(readonly=True) as session:
            app = self.rows.app(session, app_name, include_removed=True)
            found = self.rows.history(session, app.id, limit=limit, offset=offset)
            return [RequestView.of(row) for row in found]

    def next_deadline(self) -> datetime | None:
        with self.db.transaction(readonly=True) as session:
            return self.rows.next_deadline(session)

    # -- deadlines ------------------------------------------------------------------

    # -- helpers --------------------------------------------------------------------
    def _decide(
        self, request_id: int, *, actor: str, reason: str, now: datetime, approve: bool
    ) -> RequestView:
        # A fresh look at the groups (someone who left one can no longer decide), taken
        # between transactions so no lock is held while Slack answers.
        result, timed_out = quorum.with_groups_resolved(
            lambda known: self._record_decision(
                known, request_id, actor=actor, reason=reason, now=now, approve=approve
            )
        )
        if timed_out:
            raise Conflict(_timed_out(request_id, result.approval_deadline_at))
        return self.after_change.settled(result, now)

    def _record_decision(
        self,
        known: dict[tuple[str, ...], tuple[str, ...]],
        request_id: int,
        *,
        actor: str,
        reason: str,
        now: datetime,
        approve: bool,
    ) -> tuple[RequestView, bool]:
        verb = Event.APPROVE if approve else Event.DENY
        timed_out = False
        with self.db.transaction() as session:
            row = self.rows.lock(session, request_id)
            if row.state != RequestState.PENDING:
                raise Conflict(*self._already(row))
            entries = tuple(row.app.approvers)
            deciders = quorum.known_people(
                known, entries, lambda: quorum.people(self.directory, entries)
            )
            rules.check_decider(deciders, row.requester, actor, verb)
            reason = rules.check_reason(reason, verb)
            if row.approval_deadline_at <= now:
                journal.end_by_system(session, row, Event.TIME_OUT, journal.TIMED_OUT, now)
                timed_out = True
            elif approve and not quorum.record_approval(
                session, row, actor=actor, reason=reason, now=now, deciders=deciders
            ):
                pass  # recorded; the request stays pending until the quorum is reached
            else:
                # The decision's columns first: the row is then written in one UPDATE,
                # when the journal's audit append flushes it.
                row.decided_by = actor
                row.decided_at = now
                row.decision_reason = reason
                if approve:
                    row.next_deadline_at = row.starts_at
                else:
                    row.ended_at = now
                    row.next_deadline_at = None
                journal.transition(
                    session,
                    row,
                    verb,
                    actor=actor,
                    now=now,
                    reason=reason,
                    details=_approvals_detail(row) if approve else None,
                )
            return RequestView.of(row), timed_out

    def _request_end(
        self, row: AccessRequest, kind: Event, *, actor: str, reason: str, now: datetime
    ) -> None:
        if row.state == RequestState.PENDING:
            raise RuleViolation(
                f"Request {row.id} is pending, not active: approvers can deny it, and the "
                "requester can cancel it"
            )
        if row.state in APPROVED_STATES:
            raise RuleViolation(f"Request {row.id} is {row.state}, not active: cancel it instead")
        if row.state in FINAL_STATES:
            raise Conflict(*self._already(row))
        self._ask_sweep_to_end(row, kind, actor=actor, reason=reason, now=now)

    def _ask_sweep_to_end(
        self, row: AccessRequest, event: Event, *, actor: str, reason: str, now: datetime
    ) -> None:
        """Record that the request must end with ``event`` once its grant is revoked;
        the sweep revokes, then makes the transition."""
        if row.end_requested == Event.EXPIRE:
            raise Conflict(
                f"Request {row.id} is already ending: its window ended at "
                f"{row.ends_at:%Y-%m-%d %H:%M} UTC and its access is being revoked"
                + (f"; the backend keeps failing: {row.last_error}" if row.last_error else "")
            )
        if row.end_requested:
            raise Conflict(
                f"Request {row.id} is already being ended ({row.end_requested} by ",
                Mention(row.end_requested_by or ""),
                f" at {row.end_requested_at:%Y-%m-%d %H:%M} UTC)"
                + (f"; the backend keeps failing: {row.last_error}" if row.last_error else ""),
            )
        row.end_requested = event
        row.end_requested_by = actor
        row.end_requested_at = now
        row.end_requested_reason = reason
        row.attempts = 0
        if row.claimed_by is None or row.next_deadline_at is None or row.next_deadline_at <= now:
            row.next_deadline_at = now
        # else: a sweeper holds the row with a call in flight (maybe the grant itself).
        # Its lease stands, so no one revokes before that call returns; when it records
        # its outcome it sees this change and makes the revoke due at once.

    def _end_before_start(
        self,
        session: Session,
        row: AccessRequest,
        event: Event,
        *,
        actor: str,
        now: datetime,
        reason: str,
    ) -> bool:
        """End a pending or approved request. Returns True when it cannot end yet:
        a grant call was started for it (maybe in flight, maybe landed before a crash),
        so the backend may hold access and the sweep must revoke it first."""
        if row.grant_started_at is None:
            self._end_without_grant(session, row, event, actor=actor, now=now, reason=reason)
            return False
        self._ask_sweep_to_end(row, event, actor=actor, reason=reason, now=now)
        return True

    def _end_without_grant(
        self,
        session: Session,
        row: AccessRequest,
        event: Event,
        *,
        actor: str,
        now: datetime,
        reason: str,
    ) -> None:
        """End a request for which no grant call was ever started."""
        journal.transition(session, row, event, actor=actor, now=now, reason=reason)
        row.ended_at = now
        row.ended_by = actor
        row.end_reason = reason
        row.next_deadline_at = None

    @staticmethod
    def _already(row: AccessRequest) -> tuple[Part, ...]:
        """Who got there first, as message parts (the people in it are mentions)."""
        state = row.state
        if state in (RequestState.APPROVED, RequestState.DENIED, RequestState.AUTO_APPROVED):
            who: Part = (
                "policy (automatic mode)"
                if state == RequestState.AUTO_APPROVED
                else Mention(row.decided_by or "")
            )
            verb = "approved" if state != RequestState.DENIED else "denied"
            text = ""
            if row.decided_at is not None:
                text += f" at {row.decided_at:%Y-%m-%d %H:%M} UTC"
            if row.decision_reason and state != RequestState.AUTO_APPROVED:
                text += f": {row.decision_reason}"
            return (f"Request {row.id} was already {verb} by ", who, text)
        if state == RequestState.ACTIVE:
            return (
                f"Request {row.id} was already approved by ",
                Mention(row.decided_by or ""),
                f" and is active until {row.ends_at:%Y-%m-%d %H:%M} UTC",
            )
        if state == RequestState.TIMED_OUT:
            return (
                f"Request {row.id} is already timed_out: it timed out at "
                f"{row.approval_deadline_at:%Y-%m-%d %H:%M} UTC before anyone decided; "
                "the requester must submit a new request",
            )
        if row.ended_by:
            return (f"Request {row.id} is already {state} by ", Mention(row.ended_by))
        return (f"Request {row.id} is already {state}",)

    def grant_spec(self, request_id: int) -> GrantSpec:
        """What the backend is asked to grant or revoke for this request."""
        with self.db.transaction(readonly=True) as session:
            return grant_spec_of(self.rows.get(session, request_id))

    def _validated(self, spec: AppSpec) -> AppSpec:
        """``spec`` cleaned, or every rule it breaks at once (:class:`Problems`; a single
        one is raised as it is)."""
        rules.check_definition(
            "The application",
            name=spec.name,
            scope=spec.scope,
            roles=spec.roles,
            provider=spec.provider,
            provider_config=spec.provider_config,
        )
        found = Findings(spec.name)
        name = spec.name.strip()
        if not _APP_NAME.match(name):
            found.add(
                RuleViolation(
                    f"'{spec.name}' is not a valid application name: use letters, digits, "
                    "'.', '_' or '-' (at most 100 characters)",
                    field="name",
                )
            )
        scope = found(lambda: rules.check_scope(spec.scope), None)
        publishers = found(
            lambda: rules.check_user_ids(spec.publishers, "Publisher", self.principals), None
        )
        if publishers == ():
            found.add(
                RuleViolation(
                    f"{name} needs at least one publisher (--publisher U…)", field="publishers"
                )
            )
        roles = found(lambda: rules.check_roles(spec.roles), None)
        if roles == ():
            found.add(
                RuleViolation(
                    f"{name} needs at least one eligible role (--role Contributor)", field="roles"
                )
            )
        no_admins: tuple[str, ...] = ()
        admins = found(
            lambda: rules.check_user_ids(spec.admins, "Admin", self.principals), no_admins
        )
        try:
            provider = self.providers.get(spec.provider)
        except ProviderError as exc:
            found.add(RuleViolation(f"{name}: {exc}", field="provider"))
        else:
            if isinstance(provider, DefinitionChecker):
                self._check_backend(provider, spec, scope, roles or (), found)
        policy = found(
            lambda: (
                spec.policy.validated(self.principals)
                if spec.jit_enabled
                else replace(
                    spec.policy,
                    feed_channel=rules.check_feed_channel(
                        spec.policy.feed_channel, self.principals
                    ),
                )
            ),
            spec.policy,
        )
        found.raise_any()
        assert scope is not None and publishers and roles
        return replace(
            spec,
            name=name,
            scope=scope,
            publishers=publishers,
            roles=roles,
            admins=admins,
            policy=policy,
        )

    @staticmethod
    def _check_backend(
        provider: DefinitionChecker,
        spec: AppSpec,
        scope: str | None,
        roles: Sequence[str],
        found: Findings,
    ) -> None:
        """What the application's provider says about its scope and roles."""
        if scope is not None:
            try:
                provider.validate_scope(scope)
            except ProviderError as exc:
                found.add(RuleViolation(str(exc), field="scope"))
        for role in roles:
            try:
                provider.validate_role(role, spec.provider_config)
            except ProviderError as exc:
                found.add(RuleViolation(str(exc), field="roles"))

    def _create_app(
        self, session: Session, spec: AppSpec, *, actor: str, now: datetime
    ) -> Application:
        row = Application(
            name=spec.name, jit_enabled=spec.jit_enabled, scope=spec.scope, created_at=now
        )
        self._write_app(row, spec, now)
        session.add(row)
        session.flush()
        audit.append(
            session,
            at=now,
            actor=actor,
            action="app_registered",
            app=spec.name,
            details=AppView.of(row).to_json(),
        )
        return row

    def _write_app(self, row: Application, spec: AppSpec, now: datetime) -> None:
        row.publishers = list(spec.publishers)
        row.eligible_roles = list(spec.roles)
        row.admins = list(spec.admins)
        row.provider = spec.provider
        row.provider_config = dict(spec.provider_config)
        self._write_policy(row, spec.policy, now)

    @staticmethod
    def _write_policy(row: Application, policy: Policy, now: datetime) -> None:
        row.approval_mode = policy.mode.value
        row.max_duration_s = int(policy.max_duration.total_seconds())
        row.approvers = list(policy.approvers)
        row.approval_timeout_s = int(policy.approval_timeout.total_seconds())
        row.breakglass = list(policy.breakglass)
        row.breakglass_max_s = int(policy.breakglass_max.total_seconds())
        row.required_approvals = policy.required_approvals
        row.feed_channel = policy.feed_channel
        row.updated_at = now
