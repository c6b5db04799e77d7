"""The application use cases: register, apply, change the policy.

Each public method is one use case in one transaction; ``now`` is an argument.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from jitaccess.app import quorum
from jitaccess.app.directory import Directory
from jitaccess.app.views import AppView
from jitaccess.domain import policy as rules
from jitaccess.domain.errors import Findings, RuleViolation
from jitaccess.domain.policy import ApprovalMode, Policy
from jitaccess.domain.principals import PrincipalRules
from jitaccess.providers.base import DefinitionChecker, ProviderError, ProviderRegistry
from jitaccess.store import audit
from jitaccess.store.db import Database
from jitaccess.store.models import AccessRequest, Application
from jitaccess.store.rows import Rows


@dataclass(frozen=True)
class AppSpec:
    """A managed application as registered (CLI flags or ``apps apply`` YAML)."""

    name: str
    scope: str
    publishers: tuple[str, ...]
    roles: tuple[str, ...] = rules.DEFAULT_ROLES
    admins: tuple[str, ...] = ()
    jit_enabled: bool = True
    policy: Policy = field(default_factory=Policy)
    provider: str = "log"
    provider_config: dict[str, Any] = field(default_factory=dict)


@dataclass
class ApplyResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


_APP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class Applications:
    """The application use cases: register, apply, change the policy."""

    def __init__(
        self,
        db: Database,
        rows: Rows,
        providers: ProviderRegistry,
        principals: PrincipalRules,
        listing_directory: Directory,
    ) -> None:
        self.db = db
        self.rows = rows
        self.providers = providers
        #: The chat front end's rules for the ids in a definition or policy.
        self.principals = principals
        #: Who approver groups name, to tell people added or removed.
        self.listing_directory = listing_directory

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

    def set_require_mfa(self, app_name: str, value: bool, *, actor: str, now: datetime) -> AppView:
        """Turn ``require_mfa`` on or off (consumer admins): approvals then count only
        from approvers whose Microsoft sign-in proved multi-factor authentication."""
        with self.db.transaction() as session:
            row = self.rows.app(session, app_name)
            rules.check_admin(AppView.of(row).rules(), actor)
            if bool(row.require_mfa) == value:
                return AppView.of(row)
            row.require_mfa = value
            row.updated_at = now
            audit.append(
                session,
                at=now,
                actor=actor,
                action="policy_changed",
                app=row.name,
                details={"require_mfa": {"before": not value, "after": value}},
            )
            return AppView.of(row)

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
