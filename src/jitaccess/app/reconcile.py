"""Reconciliation: compare what each backend holds with what the database says.

An *orphan* is a grant the backend holds with no request that should hold it
(after a database restore, or a crash between grant and commit). A *missing*
grant is an active request whose grant the backend does not hold. Both are
reported and audited; ``fix`` revokes orphans and re-grants missing ones. The
periodic run under ``serve`` revokes orphans only for applications whose
provider config says ``revoke_orphans: true``, and never re-grants on its own.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jitaccess.app.native import NativeApps, is_native
from jitaccess.app.service import JitService
from jitaccess.app.views import AppView
from jitaccess.domain.lifecycle import RequestState
from jitaccess.providers.base import (
    GrantLister,
    GrantSpec,
    HeldGrantLike,
    ProviderError,
    ProviderRegistry,
)
from jitaccess.store import audit
from jitaccess.store.db import Database
from jitaccess.store.models import AccessRequest, StandingGrant
from jitaccess.store.rows import Rows

log = logging.getLogger("jitaccess.reconcile")
#: A grant for a request in these states is expected (or in flight): not an orphan.
EXPECTED = {RequestState.ACTIVE, RequestState.APPROVED, RequestState.AUTO_APPROVED}


@dataclass(frozen=True)
class Finding:
    app: str
    kind: str  # "orphan" | "missing" | "skipped" | "differs" (native: Azure's state)
    request_id: int | None
    detail: str
    fixed: bool = False
    error: str | None = None

    def line(self) -> str:
        what = f"request {self.request_id}" if self.request_id is not None else "unknown request"
        outcome = " (fixed)" if self.fixed else f" (fix failed: {self.error})" if self.error else ""
        return f"{self.app}: {self.kind} {what}: {self.detail}{outcome}"


@dataclass(frozen=True)
class Reach:
    """What reconciliation compares: the database's records and the backends."""

    db: Database
    providers: ProviderRegistry
    native: NativeApps


def reconcile(
    service: JitService,
    now: datetime,
    *,
    db: Database,
    providers: ProviderRegistry,
    app: str | None = None,
    fix: bool = False,
    periodic: bool = False,
    actor: str = "system:reconcile",
) -> list[Finding]:
    reach = Reach(db, providers, service.native)
    apps = [service.get_app(app)] if app else service.list_apps()
    findings: list[Finding] = []
    for view in apps:
        if service.stopping.is_set():
            break  # the process is stopping; the next run looks again
        findings.extend(_one_app(reach, view, now, fix=fix, periodic=periodic))
    if findings:
        with db.transaction() as session:
            for finding in findings:
                if finding.kind == "skipped":
                    continue
                audit.append(
                    session,
                    at=now,
                    actor=actor,
                    action=f"reconcile_{finding.kind}",
                    app=finding.app,
                    request_id=finding.request_id,
                    reason=finding.detail,
                    details={"fixed": finding.fixed, "error": finding.error},
                )
    for finding in findings:
        if finding.kind != "skipped":
            log.warning("reconcile: %s", finding.line())
    return findings


def _one_app(
    reach: Reach, app: AppView, now: datetime, *, fix: bool, periodic: bool
) -> list[Finding]:
    """Compare every backend the application's grants may be on: its provider now, and
    each backend an active request's grant was made on (a provider switch must not
    hide a grant on the old one). A native application has no grant of jitaccess's:
    its requests' states are compared with Azure's ``jitRequestState`` instead."""
    if is_native(app):
        return [
            Finding(app.name, "differs", request_id, detail)
            for request_id, detail in reach.native.compare(app.name, now)
        ]
    active = _active(reach, app.name)
    current = _backend(app.provider, app.provider_config)
    backends = {current: (app.provider, dict(app.provider_config))}
    for row in active:
        name, config = _grant_backend(app, row)
        backends.setdefault(_backend(name, config), (name, config))
    findings: list[Finding] = []
    for key, (name, config) in backends.items():
        findings.extend(
            _one_backend(
                reach,
                app,
                name,
                config,
                [r for r in active if _backend(*_grant_backend(app, r)) == key],
                now,
                fix=fix,
                periodic=periodic,
                standing=key == current,
            )
        )
    return findings


def _one_backend(
    reach: Reach,
    app: AppView,
    name: str,
    config: dict[str, Any],
    active: list[AccessRequest],
    now: datetime,
    *,
    fix: bool,
    periodic: bool,
    standing: bool,
) -> list[Finding]:
    try:
        provider = reach.providers.get(name)
    except ProviderError as exc:
        return [Finding(app.name, "skipped", None, str(exc))]
    if not isinstance(provider, GrantLister):
        return [
            Finding(app.name, "skipped", None, f"the {name} provider cannot list what it holds")
        ]
    try:
        held = provider.list_grants(app.scope, config)
    except ProviderError as exc:
        return [Finding(app.name, "skipped", None, f"could not list grants on {name}: {exc}")]
    standing_held = [g for g in held if getattr(g, "standing", False)]
    held = [g for g in held if not getattr(g, "standing", False)]
    findings = (
        _standing_findings(reach, app, standing_held, now, fix=fix, periodic=periodic)
        if standing
        else []
    )
    requests = _requests(reach, app.name, {g.request_id for g in held if g.request_id})
    here = _backend(name, config)
    held_ids = {g.request_id for g in held}
    for grant in held:
        row = requests.get(grant.request_id) if grant.request_id is not None else None
        if (
            row is not None
            and row.state in EXPECTED
            and (row.grant_provider is None or _backend(*_grant_backend(app, row)) == here)
        ):
            continue
        if row is not None and row.next_deadline_at is not None and row.grant_started_at:
            continue  # a revoke is already owed and retried by the sweep
        state = row.state if row is not None else "no such request"
        detail = f"the backend ({name}) holds a grant for a request that is {state}"
        revoke = fix or (periodic and bool(app.provider_config.get("revoke_orphans")))
        if not revoke or grant.request_id is None:
            findings.append(Finding(app.name, "orphan", grant.request_id, detail))
            continue
        spec = _spec(app, grant.request_id, row, now, _held_identity(config, grant, row))
        findings.append(
            _attempt(
                app.name,
                "orphan",
                grant.request_id,
                detail,
                functools.partial(provider.revoke, spec, now),
            )
        )
    for row in active:
        if row.id in held_ids or row.end_requested or row.ends_at <= now:
            continue
        detail = f"the request is active but the backend ({name}) does not hold its grant"
        if not fix:
            findings.append(Finding(app.name, "missing", row.id, detail))
            continue
        spec = _spec(app, row.id, row, now, config)
        findings.append(
            _attempt(
                app.name, "missing", row.id, detail, functools.partial(provider.grant, spec, now)
            )
        )
    return findings


def _grant_backend(app: AppView, row: AccessRequest) -> tuple[str, dict[str, Any]]:
    """Where the request's grant was made (its application's backend before any call)."""
    if row.grant_provider is None:
        return app.provider, dict(app.provider_config)
    return row.grant_provider, dict(row.grant_config or {})


def _backend(name: str, config: Mapping[str, Any]) -> tuple[str, str]:
    return name, json.dumps(dict(config), sort_keys=True, default=str)


def _standing_findings(
    reach: Reach,
    app: AppView,
    held: list[HeldGrantLike],
    now: datetime,
    *,
    fix: bool,
    periodic: bool,
) -> list[Finding]:
    """Standing access: held but taken away (orphan), or should be held and is not
    (missing). Missing standing access is restored by the periodic run too: keeping
    it in place is the point of it."""
    provider = reach.providers.get(app.provider)
    with reach.db.transaction(readonly=True) as session:
        rows = {r.id: r for r in Rows.standing_grants(session, app=app.name)}
    findings: list[Finding] = []
    held_ids = {g.request_id for g in held}
    for grant in held:
        row = rows.get(grant.request_id) if grant.request_id is not None else None
        if row is not None and row.desired:
            continue
        detail = "the backend holds standing access that was taken away"
        if not (fix or (periodic and bool(app.provider_config.get("revoke_orphans")))) or (
            grant.request_id is None
        ):
            findings.append(Finding(app.name, "orphan", None, detail))
            continue
        spec = _standing_spec(app, grant.request_id, row, now)
        findings.append(
            _attempt(
                app.name, "orphan", None, detail, functools.partial(provider.revoke, spec, now)
            )
        )
    for row in rows.values():
        if not row.desired or not row.held or row.id in held_ids:
            continue
        detail = f"standing {row.role} for {row.principal} is missing from the backend"
        spec = _standing_spec(app, row.id, row, now)
        findings.append(
            _attempt(
                app.name, "missing", None, detail, functools.partial(provider.grant, spec, now)
            )
        )
    return findings


def _standing_spec(
    app: AppView, grant_id: int, row: StandingGrant | None, now: datetime
) -> GrantSpec:
    return GrantSpec(
        request_id=grant_id,
        app=app.name,
        scope=app.scope,
        principal=row.principal if row else "",
        role=row.role if row else "",
        starts_at=now,
        ends_at=now,
        config=app.provider_config,
        standing=True,
    )


def _attempt(
    app: str, kind: str, request_id: int | None, detail: str, action: Callable[[], None]
) -> Finding:
    try:
        action()
    except Exception as exc:  # report every failure, keep reconciling the rest
        return Finding(app, kind, request_id, detail, error=str(exc) or type(exc).__name__)
    return Finding(app, kind, request_id, detail, fixed=True)


def _held_identity(
    config: Mapping[str, Any], grant: HeldGrantLike, row: AccessRequest | None
) -> Mapping[str, Any]:
    """For a grant whose request row is gone, name the backend's own principal and
    role to the provider (as the mapping for the empty user and role the spec then
    carries), so a backend that revokes by principal and role (Azure PIM) can still
    remove it. Backends that revoke by the grant's name ignore them."""
    principal = getattr(grant, "principal_id", "")
    role = getattr(grant, "role_definition_id", "")
    if row is not None or not principal or not role:
        return config
    return {
        **config,
        "principals": {"": {"object_id": principal}},
        "role_definitions": {"": role},
    }


def _spec(
    app: AppView,
    request_id: int,
    row: AccessRequest | None,
    now: datetime,
    config: Mapping[str, Any],
) -> GrantSpec:
    return GrantSpec(
        request_id=request_id,
        app=app.name,
        scope=app.scope,
        principal=row.requester if row else "",
        role=row.role if row else "",
        starts_at=row.starts_at if row else now,
        ends_at=row.ends_at if row else now,
        config=config,
    )


def _requests(reach: Reach, app: str, ids: set[int | None]) -> dict[int | None, AccessRequest]:
    wanted = [i for i in ids if i is not None]
    if not wanted:
        return {}
    with reach.db.transaction(readonly=True) as session:
        return {r.id: r for r in Rows.requests_by_id(session, wanted) if r.app.name == app}


def _active(reach: Reach, app: str) -> list[AccessRequest]:
    with reach.db.transaction(readonly=True) as session:
        return Rows.requests_of(session, app, state=RequestState.ACTIVE)
