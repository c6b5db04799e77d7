"""Offers, deployments and standing access: the first two steps of the flow.

1. A publisher *offers* a managed application (its publishers, eligible roles,
   standing role, whether JIT is available).
2. A consumer *deploys* it as an application, JIT enabled by default when the
   offer allows it (``--no-jit`` is final), with a policy chosen at deployment.

Standing access is made real: at deployment the provider grants each publisher
the standing role (JIT enabled) or every eligible role for good (JIT disabled);
reconciliation keeps it in place. Removing an application ends everything it
granted, step by step, each step audited.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from jitaccess.app.applications import Applications, ApplyResult, AppSpec
from jitaccess.app.requests import Requests
from jitaccess.app.views import AppView, read_app, read_request
from jitaccess.domain import policy as rules
from jitaccess.domain.errors import Findings, NotFound, RuleViolation
from jitaccess.domain.lifecycle import APPROVED_STATES, FINAL_STATES, RequestState
from jitaccess.domain.principals import PrincipalRules
from jitaccess.providers.base import GrantSpec, ProviderRegistry
from jitaccess.store import audit
from jitaccess.store.db import Database
from jitaccess.store.models import Application, Offer, StandingGrant
from jitaccess.store.rows import Rows

log = logging.getLogger("jitaccess.catalog")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class OfferSpec:
    name: str
    publishers: tuple[str, ...]
    roles: tuple[str, ...] = rules.DEFAULT_ROLES
    standing_role: str = "Reader"
    jit_available: bool = True
    provider_config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OfferView:
    name: str
    publishers: tuple[str, ...]
    eligible_roles: tuple[str, ...]
    standing_role: str
    jit_available: bool
    provider_config: dict[str, Any]

    @classmethod
    def of(cls, row: Offer) -> OfferView:
        return cls(
            row.name,
            tuple(row.publishers),
            tuple(row.eligible_roles),
            row.standing_role,
            row.jit_available,
            dict(row.provider_config or {}),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "publishers": list(self.publishers),
            "roles": list(self.eligible_roles),
            "standing_role": self.standing_role,
            "jit_available": self.jit_available,
        }


@dataclass(frozen=True)
class StandingView:
    app: str
    principal: str
    role: str
    desired: bool
    held: bool
    last_error: str | None


@dataclass
class RemovalReport:
    cancelled: list[int] = field(default_factory=list)
    revoked: list[int] = field(default_factory=list)
    still_active: list[int] = field(default_factory=list)
    standing_revoked: int = 0
    standing_failing: list[str] = field(default_factory=list)
    removed: bool = False


class Catalog:
    """Offers, deployments, standing access and removing an application, through the
    application and request use cases it is given."""

    def __init__(
        self,
        db: Database,
        rows: Rows,
        providers: ProviderRegistry,
        principals: PrincipalRules,
        stopping: threading.Event,
        applications: Applications,
        requests: Requests,
    ) -> None:
        self.db = db
        self.rows = rows
        self.providers = providers
        #: The chat front end's rules for the ids in an offer.
        self.principals = principals
        #: Set when the process stops: standing grants stop at the next one.
        self.stopping = stopping
        self.applications = applications
        self.requests = requests

    # -- offers ----------------------------------------------------------------------
    def register_offer(self, spec: OfferSpec, *, actor: str, now: datetime) -> OfferView:
        publishers, roles = self._checked_offer(spec, self.principals)
        with self.db.transaction() as session:
            if self.rows.offer(session, spec.name) is not None:
                raise RuleViolation(f"Offer {spec.name} is already registered")
            row = Offer(
                name=spec.name.strip(),
                publishers=list(publishers),
                eligible_roles=list(roles),
                standing_role=spec.standing_role.strip() or "Reader",
                jit_available=spec.jit_available,
                provider_config=dict(spec.provider_config),
                created_at=now,
            )
            session.add(row)
            session.flush()
            view = OfferView.of(row)
            audit.append(
                session, at=now, actor=actor, action="offer_registered", details=view.to_json()
            )
            return view

    @staticmethod
    def _checked_offer(
        spec: OfferSpec, ids: PrincipalRules
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The offer's publishers and roles, cleaned; every problem at once."""
        rules.check_definition(
            "The offer",
            name=spec.name,
            roles=spec.roles,
            standing_role=spec.standing_role,
            provider_config=spec.provider_config,
        )
        found = Findings(spec.name)
        if not _NAME.match(spec.name.strip()):
            found.add(
                RuleViolation(
                    f"'{spec.name}' is not a valid offer name: use letters, digits, '.', '_' "
                    "or '-'",
                    field="name",
                )
            )
        publishers = found(lambda: rules.check_user_ids(spec.publishers, "Publisher", ids), None)
        if publishers == ():
            found.add(
                RuleViolation(
                    f"Offer {spec.name} needs at least one publisher (--publisher U…)",
                    field="publishers",
                )
            )
        roles = found(lambda: rules.check_roles(spec.roles), None)
        if roles == ():
            found.add(
                RuleViolation(f"Offer {spec.name} needs at least one eligible role", field="roles")
            )
        found.raise_any()
        assert publishers and roles
        return publishers, roles

    def list_offers(self) -> list[OfferView]:
        with self.db.transaction(readonly=True) as session:
            return [OfferView.of(r) for r in self.rows.offers(session)]

    def get_offer(self, name: str) -> OfferView:
        with self.db.transaction(readonly=True) as session:
            row = self.rows.offer(session, name)
            if row is None:
                raise NotFound(f"No offer named '{name}': see `jitaccess offers list`")
            return OfferView.of(row)

    # -- deploy ----------------------------------------------------------------------
    def deploy(
        self, spec: AppSpec, *, offer: str | None, jit: bool | None, actor: str, now: datetime
    ) -> AppView:
        """Register an application (from an offer, or from its own flags) and grant the
        publishers their standing access."""
        view = self.applications.register_app(
            self.resolve(spec, offer=offer, jit=jit), actor=actor, now=now
        )
        self._start_standing(view.name, offer, actor=actor, now=now)
        return view

    def _start_standing(self, name: str, offer: str | None, *, actor: str, now: datetime) -> None:
        """Record the standing access a new application's publishers hold, and grant it."""
        source = self.get_offer(offer) if offer is not None else None
        with self.db.transaction() as session:
            app = self._app_row(session, name)
            app.standing_role = source.standing_role if source else "Reader"
            app.offer_id = self._offer_id(offer) if offer is not None else None
        self._align_standing(name, actor=actor, now=now)

    def _align_standing(self, name: str, *, actor: str, now: datetime) -> None:
        """Make the standing grants match the application as defined now: each publisher
        holds the standing role (JIT enabled) or every eligible role (JIT disabled);
        a publisher or role no longer listed loses it. Then grant and revoke."""
        with self.db.transaction() as session:
            app = self._app_row(session, name)
            roles = [app.standing_role] if app.jit_enabled else list(app.eligible_roles)
            wanted = {(publisher, role) for publisher in app.publishers for role in roles}
            existing = {
                (grant.principal, grant.role): grant
                for grant in self.rows.standing_grants(session, app_id=app.id)
            }
            for key, grant in existing.items():
                if grant.desired != (key in wanted):
                    grant.desired = key in wanted
                    grant.updated_at = now
            for publisher, role in sorted(wanted - set(existing)):
                session.add(
                    StandingGrant(
                        app_id=app.id,
                        principal=publisher,
                        role=role,
                        desired=True,
                        held=False,
                        created_at=now,
                        updated_at=now,
                        attempts=0,
                    )
                )
        self.sync_standing(now, app=name, actor=actor)

    def resolve(
        self,
        spec: AppSpec,
        *,
        offer: str | None,
        jit: bool | None,
        new_offers: Mapping[str, OfferSpec] | None = None,
    ) -> AppSpec:
        """The application as deployed: publishers and roles from the offer, JIT enabled
        by default when the offer makes it available. ``new_offers``: offers about to be
        registered with it (``apps apply``), looked up before the registered ones."""
        if offer is None:
            return replace(spec, jit_enabled=True if jit is None else jit)
        pending = (new_offers or {}).get(offer)
        source = (
            OfferView(
                pending.name,
                pending.publishers,
                pending.roles,
                pending.standing_role,
                pending.jit_available,
                pending.provider_config,
            )
            if pending is not None
            else self.get_offer(offer)
        )
        if jit and not source.jit_available:
            raise RuleViolation(
                f"Offer {offer} does not make JIT available, so {spec.name} cannot enable "
                "it: deploy without --jit (the publisher then holds permanent access), or "
                "ask the publisher to offer JIT"
            )
        return replace(
            spec,
            publishers=source.publishers,
            roles=source.eligible_roles,
            jit_enabled=source.jit_available if jit is None else jit,
            provider_config={**source.provider_config, **spec.provider_config},
        )

    def apply(
        self,
        offers: list[OfferSpec],
        apps: list[tuple[AppSpec, str | None, bool | None]],
        *,
        actor: str,
        now: datetime,
    ) -> tuple[list[str], ApplyResult]:
        """Config as code: register missing offers, then create or update every
        application in one transaction; new applications get their standing access."""
        resolved = self.check(offers, apps)
        known = {o.name for o in self.list_offers()}
        created_offers = []
        for offer in offers:
            if offer.name not in known:
                self.register_offer(offer, actor=actor, now=now)
                created_offers.append(offer.name)
        result = self.applications.apply_apps(resolved, actor=actor, now=now)
        offer_of = {spec.name: offer for spec, offer, _ in apps}
        for name in result.created:
            self._start_standing(name, offer_of.get(name), actor=actor, now=now)
        for name in result.updated:
            # Publishers, roles or the backend may have changed: standing access follows.
            self._align_standing(name, actor=actor, now=now)
        return created_offers, result

    def check(
        self, offers: list[OfferSpec], apps: list[tuple[AppSpec, str | None, bool | None]]
    ) -> list[AppSpec]:
        """Every problem of a set of offers and applications (``apps apply``), at once
        (:class:`Problems`, each with its offer's or application's name), before anything
        is written; else the applications as they will be deployed."""
        found = Findings()
        known = {o.name: o for o in self.list_offers()}
        new_offers = {}
        for offer in offers:
            existing = known.get(offer.name)
            if existing is None:
                try:
                    self._checked_offer(offer, self.principals)
                except RuleViolation as exc:
                    found.add(exc, subject=offer.name)
                new_offers[offer.name] = offer
            elif (
                existing.publishers,
                existing.eligible_roles,
                existing.standing_role,
                existing.jit_available,
            ) != (offer.publishers, offer.roles, offer.standing_role, offer.jit_available):
                found.add(
                    RuleViolation(
                        f"Offer {offer.name} already exists with other settings; offers do not "
                        "change once registered: give the new definition a new name "
                        "(nothing was applied)"
                    ),
                    subject=offer.name,
                )
        resolved = []
        for spec, offer_name, jit in apps:
            try:
                resolved.append(
                    self.resolve(spec, offer=offer_name, jit=jit, new_offers=new_offers)
                )
            except RuleViolation as exc:
                found.add(exc, subject=spec.name)
            except NotFound as exc:
                found.add(RuleViolation(str(exc), field="offer"), subject=spec.name)
        try:
            self.applications.check_apps(resolved)
        except RuleViolation as exc:
            found.add(exc)
        found.raise_any()
        return resolved

    def standing(self, app: str) -> list[StandingView]:
        with self.db.transaction(readonly=True) as session:
            rows = self.rows.standing_grants(session, app=app)
            return [
                StandingView(app, r.principal, r.role, r.desired, r.held, r.last_error)
                for r in rows
            ]

    def sync_standing(
        self, now: datetime, *, app: str | None = None, actor: str = "system:reconcile"
    ) -> list[str]:
        """Grant what should be held and is not; revoke what is held and should not be,
        and what is held on a backend the application no longer uses (before granting
        on the new one). Returns one line per failure (retried on the next run)."""
        with self.db.transaction(readonly=True) as session:
            rows = self.rows.standing_grants(session, app=app)
        failures = []
        for row in rows:
            if self.stopping.is_set():
                break  # the process is stopping; the rest stays marked for the next run
            current = (row.app.provider, dict(row.app.provider_config or {}))
            held_on = (
                (row.held_provider, dict(row.held_config or {}))
                if row.held_provider is not None
                else (current if row.held else None)
            )
            error, held = None, row.held
            if held_on is not None and (not row.desired or held_on != current):
                error = self._standing_call(row, "revoke", held_on, actor=actor, now=now)
                if error is None:
                    held_on, held = None, False
            if error is None and row.desired and not (held and held_on == current):
                error = self._standing_call(row, "grant", current, actor=actor, now=now)
            if error is not None:
                failures.append(f"{row.app.name}: {row.role} for {row.principal}: {error}")
        return failures

    def _standing_call(
        self,
        row: StandingGrant,
        operation: str,
        backend: tuple[str, dict[str, Any]],
        *,
        actor: str,
        now: datetime,
    ) -> str | None:
        """One standing grant or revoke on ``backend``; before a grant, record where it
        may be held (intent before effect). Returns the error, or None."""
        provider_name, config = backend
        if operation == "grant":
            with self.db.transaction() as session:
                current = session.get(StandingGrant, row.id)
                assert current is not None
                current.held_provider, current.held_config = provider_name, dict(config)
        spec = GrantSpec(
            request_id=row.id,
            app=row.app.name,
            scope=row.app.scope,
            principal=row.principal,
            role=row.role,
            starts_at=now,
            ends_at=now,
            config=config,
            standing=True,
        )
        error = None
        try:
            provider = self.providers.get(provider_name)
            if operation == "grant":
                provider.grant(spec, now)
            else:
                provider.revoke(spec, now)
        except Exception as exc:  # recorded and retried, never fatal
            error = str(exc) or type(exc).__name__
        with self.db.transaction() as session:
            current = session.get(StandingGrant, row.id)
            assert current is not None
            current.attempts += 1
            current.updated_at = now
            current.last_error = error
            if error is None:
                current.held = operation == "grant"
                if operation == "revoke":
                    current.held_provider, current.held_config = None, None
            audit.append(
                session,
                at=now,
                actor=actor,
                action=(
                    ("standing_granted" if operation == "grant" else "standing_revoked")
                    if error is None
                    else "standing_failed"
                ),
                app=row.app.name,
                reason=error,
                details={
                    "principal": row.principal,
                    "role": row.role,
                    "operation": operation,
                    "provider": provider_name,
                },
            )
        return error

    # -- remove ----------------------------------------------------------------------
    def remove(
        self,
        app_name: str,
        *,
        actor: str,
        now: datetime,
        force: bool = False,
        reason: str | None = None,
    ) -> RemovalReport:
        """Delete an application: cancel what has not started, revoke what is active,
        take standing access away. Refused while a revoke is failing, unless forced."""
        view = read_app(self.db, self.rows, app_name)
        rules.check_admin(view.rules(), actor)
        if force:
            reason = rules.check_reason(reason, "force the removal")
        why = reason or f"{app_name} was removed by a consumer admin"
        report = RemovalReport()
        with self.db.transaction(readonly=True) as session:
            rows = self.rows.requests_of(session, app_name)
        failing = [r.id for r in rows if r.revoke_failing_since is not None]
        if failing and not force:
            raise RuleViolation(
                f"{app_name} still has grants whose revoke is failing (requests "
                f"{', '.join(map(str, failing))}): fix the backend first, or use --force with "
                "--reason to remove it anyway (jitaccess keeps retrying those revokes)"
            )
        for row in rows:
            if row.end_requested is not None:
                continue  # already being ended
            if row.state == RequestState.PENDING or row.state in APPROVED_STATES:
                self.requests.close_for_removal(row.id, actor=actor, reason=why, now=now)
            elif row.state == RequestState.ACTIVE:
                self.requests.revoke(row.id, actor=actor, reason=why, now=now)
        for row_id in [r.id for r in rows if r.state not in FINAL_STATES]:
            state = read_request(self.db, self.rows, row_id).state
            if state == RequestState.CANCELLED:
                report.cancelled.append(row_id)
            elif state == RequestState.REVOKED:
                report.revoked.append(row_id)
            elif state not in FINAL_STATES:
                report.still_active.append(row_id)  # a revoke is still owed
        with self.db.transaction() as session:
            for grant in self.rows.standing_grants(session, app=app_name):
                grant.desired = False
        report.standing_failing = self.sync_standing(now, app=app_name, actor=actor)
        report.standing_revoked = sum(1 for s in self.standing(app_name) if not s.held)
        if (report.still_active or report.standing_failing) and not force:
            return report  # stays registered until everything it granted is gone
        with self.db.transaction() as session:
            app = self._app_row(session, app_name)
            app.removed_at = now
            app.removed_by = actor
            audit.append(
                session,
                at=now,
                actor=actor,
                action="app_removed",
                app=app_name,
                reason=why,
                details={
                    "forced": force,
                    "cancelled": report.cancelled,
                    "revoked": report.revoked,
                    "still_active": report.still_active,
                },
            )
        report.removed = True
        return report

    # -- helpers ---------------------------------------------------------------------
    def _offer_id(self, name: str) -> int:
        with self.db.transaction(readonly=True) as session:
            row = self.rows.offer(session, name)
            assert row is not None
            return row.id

    def _app_row(self, session: Any, name: str) -> Application:
        row = self.rows.find_app(session, name)
        if row is None:
            raise NotFound(f"No application named '{name}'")
        return row
