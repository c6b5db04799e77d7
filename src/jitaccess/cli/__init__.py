"""The ``jitaccess`` command: the operators' and break-glass path.

It acts on behalf of a Slack user given with ``--as``, under the same rules as
Slack. Exit codes: 0 done, 1 refused by a rule (message on stderr, nothing
changed), 2 usage error.
"""

from __future__ import annotations

import csv
import gc
import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from jitaccess.roles import Role
from jitaccess.terminal import visible

# Only what `--help` needs is imported here (typer, rich): the service, the store,
# SQLAlchemy, the providers and their SDKs are imported inside the commands that use
# them, so `jitaccess --help` starts in a fraction of the time (bench/cli_start.py).
if TYPE_CHECKING:
    from jitaccess.catalog import OfferSpec, StandingView
    from jitaccess.container import Container
    from jitaccess.domain.policy import Policy
    from jitaccess.service import AppSpec
    from jitaccess.views import AppView, RequestView

    AppEntry = tuple[AppSpec, str | None, bool | None]

app = typer.Typer(
    name="jitaccess",
    help="Just-in-time privileged access for managed applications, run from Slack.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
apps_app = typer.Typer(help="Managed applications and their JIT policies.", no_args_is_help=True)
requests_app = typer.Typer(help="Access requests.", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)
offers_app = typer.Typer(
    help="Publishers' offers (managed application definitions).", no_args_is_help=True
)
app.add_typer(db_app, name="db")
app.add_typer(apps_app, name="apps")
app.add_typer(requests_app, name="requests")
app.add_typer(audit_app, name="audit")
app.add_typer(offers_app, name="offers")


class _Console(Console):
    """Prints people's text (reasons, names, backend errors) with control and bidi
    characters shown as escapes: the one door to the terminal for human output."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        super().print(*(visible(o) if isinstance(o, str) else o for o in objects), **kwargs)


class _Table(Table):
    """A table whose cells go through :func:`visible`, like everything else printed."""

    def add_row(self, *renderables: Any, **kwargs: Any) -> None:
        super().add_row(*(visible(r) if isinstance(r, str) else r for r in renderables), **kwargs)


out = _Console(soft_wrap=True, markup=False)
err = _Console(stderr=True, soft_wrap=True)


def now() -> datetime:
    return datetime.now(UTC)


class Mode(StrEnum):
    automatic = "automatic"
    manual = "manual"


class ExportFormat(StrEnum):
    jsonl = "jsonl"
    csv = "csv"


class DiagramFormat(StrEnum):
    mermaid = "mermaid"
    svg = "svg"
    png = "png"


def _duration(value: str | None) -> timedelta | None:
    from jitaccess.domain.durations import parse_duration

    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise typer.BadParameter(visible(str(exc))) from None


def _duration_or(value: str | None, default: timedelta) -> timedelta:
    parsed = _duration(value)
    return default if parsed is None else parsed


def _instant(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(
            f"'{visible(value)}' is not an ISO 8601 time: use e.g. 2026-11-27T14:00 (UTC) "
            "or 2026-11-27T15:00+01:00"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


AsUser = Annotated[str, typer.Option("--as", help="Slack user ID you act as (U…)")]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output")]
Reason = Annotated[str, typer.Option("--reason", help="Why (recorded in the audit log)")]


@contextmanager
def _container() -> Iterator[Container]:
    """Build the service for one command; rule refusals become exit code 1."""
    from jitaccess.container import build
    from jitaccess.domain.errors import JitError
    from jitaccess.providers.base import ProviderError

    container: Container | None = None
    try:
        container = build()
        container.db.upgrade()
        _end_gc_pause()
        yield container
    except (JitError, ProviderError) as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    finally:
        if container is not None:
            container.close()


def _stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def _emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _fmt_time(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M UTC")


# -- db ----------------------------------------------------------------------------
@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the schema to the newest version."""
    with _container() as c:
        out.print(f"Database at the newest schema ({c.db.dialect}).")


# -- apps --------------------------------------------------------------------------
def _policy(
    mode: Mode | None,
    max_duration: str | None,
    approvers: list[str] | None,
    approval_timeout: str | None,
) -> Policy:
    from jitaccess.domain.policy import (
        DEFAULT_APPROVAL_TIMEOUT,
        DEFAULT_MAX_DURATION,
        ApprovalMode,
        Policy,
    )

    return Policy(
        mode=ApprovalMode(mode.value) if mode else ApprovalMode.AUTOMATIC,
        max_duration=_duration_or(max_duration, DEFAULT_MAX_DURATION),
        approvers=tuple(approvers or ()),
        approval_timeout=_duration_or(approval_timeout, DEFAULT_APPROVAL_TIMEOUT),
    )


@apps_app.command("register")
def apps_register(
    name: str,
    scope: Annotated[str, typer.Option(help="The managed resource group's ID")],
    offer: Annotated[
        str | None, typer.Option(help="Deploy this offer: its publishers and roles")
    ] = None,
    publisher: Annotated[
        list[str] | None, typer.Option(help="Publisher's Slack user ID (repeat; without --offer)")
    ] = None,
    role: Annotated[list[str] | None, typer.Option(help="Eligible role (repeat)")] = None,
    admin: Annotated[list[str] | None, typer.Option(help="Consumer admin (repeat)")] = None,
    jit: Annotated[
        bool | None,
        typer.Option(
            "--jit/--no-jit",
            help="JIT enabled (default when available); fixed forever at registration",
        ),
    ] = None,
    mode: Annotated[Mode | None, typer.Option(help="Approval mode")] = None,
    max_duration: Annotated[str | None, typer.Option(help="Longest window, e.g. 8h")] = None,
    approver: Annotated[list[str] | None, typer.Option(help="Approver (repeat)")] = None,
    approval_timeout: Annotated[str | None, typer.Option(help="e.g. 24h")] = None,
    provider: Annotated[str, typer.Option(help="Access provider: log, azure, webhook, …")] = "log",
    provider_config: Annotated[
        str | None, typer.Option(help="Provider settings as JSON, or @FILE (JSON or YAML)")
    ] = None,
    as_json: Json = False,
) -> None:
    """Register (deploy) a managed application, and grant the publishers standing access."""
    from jitaccess.catalog import Catalog
    from jitaccess.domain.policy import DEFAULT_ROLES
    from jitaccess.service import AppSpec

    if offer is None and not publisher:
        raise typer.BadParameter(
            "give --offer OFFER, or --publisher U… for an application without an offer"
        )
    if offer is not None and (publisher or role):
        raise typer.BadParameter(
            "--offer brings the publishers and roles: drop --publisher and --role"
        )
    spec = AppSpec(
        name=name,
        scope=scope,
        publishers=tuple(publisher or ()),
        roles=tuple(role or DEFAULT_ROLES),
        admins=tuple(admin or ()),
        provider=provider,
        provider_config=_provider_config(provider_config),
        policy=_policy(mode, max_duration, approver, approval_timeout),
    )
    with _container() as c:
        catalog = Catalog(c.service)
        view = catalog.deploy(spec, offer=offer, jit=jit, actor="cli", now=now())
        standing = catalog.standing(view.name)
    if as_json:
        _emit_json({**view.to_json(), "standing": [vars(s) for s in standing]})
        return
    out.print(f"Registered {view.name} (JIT {'enabled' if view.jit_enabled else 'disabled'}).")
    if not view.jit_enabled:
        out.print("JIT is disabled: the publisher holds permanent access; this cannot change.")
    _print_standing(standing)


def _print_standing(standing: list[StandingView]) -> None:
    for grant in standing:
        state = "held" if grant.held else f"NOT held yet: {grant.last_error or 'pending'}"
        if not grant.desired:
            state = "removed" if not grant.held else f"still held: {grant.last_error}"
        out.print(f"Standing access: {grant.role} for {grant.principal}: {state}")


@apps_app.command("remove")
def apps_remove(
    name: str,
    as_user: AsUser,
    force: Annotated[
        bool, typer.Option("--force", help="Remove even while a revoke is failing")
    ] = False,
    reason: Annotated[str | None, typer.Option(help="Why (required with --force)")] = None,
    as_json: Json = False,
) -> None:
    """Delete an application: cancel its requests, revoke its grants and standing access."""
    from jitaccess.catalog import Catalog

    with _container() as c:
        report = Catalog(c.service).remove(
            name, actor=as_user, now=now(), force=force, reason=reason
        )
    if as_json:
        _emit_json(
            {
                "name": name,
                "removed": report.removed,
                "cancelled": report.cancelled,
                "revoked": report.revoked,
                "standing_revoked": report.standing_revoked,
                "still_active": report.still_active,
                "standing_failing": report.standing_failing,
            }
        )
    else:
        out.print(
            f"Cancelled {len(report.cancelled)} requests, revoked {len(report.revoked)} "
            f"grants and {report.standing_revoked} standing grants."
        )
    if report.removed:
        if not as_json:
            out.print(f"{name} is removed; its history stays readable.")
        return
    for request_id in report.still_active:
        err.print(f"request {request_id}: revoke failing, retrying")
    for line in report.standing_failing:
        err.print(f"standing access: {escape(line)}")
    err.print(
        f"{escape(name)} stays registered until everything it granted is gone: run "
        "`apps remove` again, or add --force --reason"
    )
    raise typer.Exit(1)


# -- offers ----------------------------------------------------------------------------
@offers_app.command("register")
def offers_register(
    name: str,
    publisher: Annotated[list[str], typer.Option(help="Publisher's Slack user ID (repeat)")],
    role: Annotated[list[str] | None, typer.Option(help="Eligible role (repeat)")] = None,
    standing_role: Annotated[str, typer.Option(help="Always-on role")] = "Reader",
    jit_available: Annotated[
        bool, typer.Option("--jit-available/--no-jit-available", help="Offer JIT access")
    ] = True,
    provider_config: Annotated[
        str | None,
        typer.Option(help="Settings deployments inherit (e.g. Azure principals), JSON or @FILE"),
    ] = None,
    as_json: Json = False,
) -> None:
    """Register a publisher's offer (its managed application definition)."""
    from jitaccess.catalog import Catalog, OfferSpec
    from jitaccess.domain.policy import DEFAULT_ROLES

    spec = OfferSpec(
        name=name,
        publishers=tuple(publisher),
        roles=tuple(role or DEFAULT_ROLES),
        standing_role=standing_role,
        jit_available=jit_available,
        provider_config=_provider_config(provider_config),
    )
    with _container() as c:
        view = Catalog(c.service).register_offer(spec, actor="cli", now=now())
    if as_json:
        _emit_json(view.to_json())
    else:
        out.print(
            f"Registered offer {view.name} (JIT "
            f"{'available' if view.jit_available else 'not available'})."
        )


@offers_app.command("list")
def offers_list(as_json: Json = False) -> None:
    """List the offers."""
    from jitaccess.catalog import Catalog

    with _container() as c:
        views = Catalog(c.service).list_offers()
    if as_json:
        _emit_json([v.to_json() for v in views])
        return
    table = _Table("Offer", "JIT", "Publishers", "Eligible roles", "Standing role")
    for v in views:
        table.add_row(
            v.name,
            "available" if v.jit_available else "not available",
            ", ".join(v.publishers),
            ", ".join(v.eligible_roles),
            v.standing_role,
        )
    out.print(table if views else "No offers yet: `jitaccess offers register --help`.")


@offers_app.command("show")
def offers_show(name: str, as_json: Json = False) -> None:
    """Show one offer."""
    from jitaccess.catalog import Catalog

    with _container() as c:
        view = Catalog(c.service).get_offer(name)
    if as_json:
        _emit_json(view.to_json())
        return
    table = _Table(show_header=False)
    for key, value in (
        ("Offer", view.name),
        ("JIT", "available" if view.jit_available else "not available"),
        ("Publishers", ", ".join(view.publishers)),
        ("Eligible roles", ", ".join(view.eligible_roles)),
        ("Standing role", view.standing_role),
    ):
        table.add_row(key, value)
    out.print(table)


@apps_app.command("policy")
def apps_policy(
    name: str,
    as_user: AsUser,
    mode: Annotated[Mode | None, typer.Option(help="automatic or manual")] = None,
    max_duration: Annotated[str | None, typer.Option(help="Longest window, e.g. 8h")] = None,
    approver: Annotated[
        list[str] | None, typer.Option(help="Approver (repeat); replaces the list")
    ] = None,
    approval_timeout: Annotated[str | None, typer.Option(help="e.g. 24h")] = None,
    as_json: Json = False,
) -> None:
    """Change an application's JIT policy (consumer admins). Applies to new requests."""
    from jitaccess.domain.policy import ApprovalMode

    with _container() as c:
        view = c.service.set_policy(
            name,
            actor=as_user,
            now=now(),
            mode=ApprovalMode(mode.value) if mode else None,
            max_duration=_duration(max_duration),
            approvers=approver,
            approval_timeout=_duration(approval_timeout),
        )
    if as_json:
        _emit_json(view.to_json())
    else:
        _print_app(view)


def _provider_config(value: str | None) -> dict[str, Any]:
    """Parse --provider-config: inline JSON, or @path to a JSON or YAML file."""
    import yaml

    if not value:
        return {}
    try:
        text = Path(value[1:]).read_text() if value.startswith("@") else value
        parsed = yaml.safe_load(text)  # YAML is a superset of JSON
    except (OSError, yaml.YAMLError) as exc:
        raise typer.BadParameter(f"cannot read the provider config: {exc}") from None
    if not isinstance(parsed, dict):
        raise typer.BadParameter("the provider config must be a mapping, e.g. '{\"url\": …}'")
    return parsed


def _load_apps(path: Path) -> tuple[list[OfferSpec], list[AppEntry]]:
    import yaml
    from pydantic import ValidationError

    from jitaccess.catalog import OfferSpec
    from jitaccess.cli.apps_file import AppsDoc
    from jitaccess.domain.policy import DEFAULT_APPROVAL_TIMEOUT, DEFAULT_MAX_DURATION, Policy
    from jitaccess.service import AppSpec

    try:
        raw = yaml.safe_load(path.read_text())
        doc = AppsDoc.model_validate(raw)
    except (OSError, yaml.YAMLError) as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise typer.BadParameter(f"{path} is not a valid apps file: {problems}") from None
    if not doc.apps and not doc.offers:
        raise typer.BadParameter(f"{path} has no `apps:` or `offers:` entries")
    offers = [
        OfferSpec(
            name=o.name,
            publishers=tuple(o.publishers),
            roles=tuple(o.roles),
            standing_role=o.standing_role,
            jit_available=o.jit_available,
            provider_config=o.provider_config,
        )
        for o in doc.offers
    ]
    apps: list[AppEntry] = []
    for item in doc.apps:
        if item.offer is None and not item.publishers:
            raise typer.BadParameter(f"{path}: app {item.name} needs `offer:` or `publishers:`")
        policy = Policy(
            mode=item.policy.mode,
            max_duration=_duration_or(item.policy.max_duration, DEFAULT_MAX_DURATION),
            approvers=tuple(item.policy.approvers),
            approval_timeout=_duration_or(item.policy.approval_timeout, DEFAULT_APPROVAL_TIMEOUT),
        )
        spec = AppSpec(
            name=item.name,
            scope=item.scope,
            publishers=tuple(item.publishers),
            roles=tuple(item.roles),
            admins=tuple(item.admins),
            policy=policy,
            provider=item.provider,
            provider_config=item.provider_config,
        )
        apps.append((spec, item.offer, item.jit_enabled))
    return offers, apps


@apps_app.command("apply")
def apps_apply(
    file: Annotated[
        Path, typer.Option("-f", "--file", help="YAML with `offers:` and `apps:` lists")
    ],
) -> None:
    """Create or update offers and applications from a YAML file (config as code)."""
    from jitaccess.catalog import Catalog

    offers, apps = _load_apps(file)
    with _container() as c:
        created_offers, result = Catalog(c.service).apply(
            offers, apps, actor="cli:apply", now=now()
        )
    if created_offers:
        out.print(f"offers created: {', '.join(created_offers)}")
    for label, names in (
        ("created", result.created),
        ("updated", result.updated),
        ("unchanged", result.unchanged),
    ):
        if names:
            out.print(f"{label}: {', '.join(names)}")


@apps_app.command("list")
def apps_list(as_json: Json = False) -> None:
    """List the registered applications."""
    from jitaccess.domain.durations import format_duration

    with _container() as c:
        views = c.service.list_apps()
    if as_json:
        _emit_json([v.to_json() for v in views])
        return
    table = _Table("Name", "JIT", "Mode", "Max", "Approvers", "Roles", "Scope")
    for v in views:
        table.add_row(
            v.name,
            "enabled" if v.jit_enabled else "disabled",
            v.policy.mode.value if v.jit_enabled else "-",
            format_duration(v.policy.max_duration) if v.jit_enabled else "-",
            ", ".join(v.policy.approvers) or "-",
            ", ".join(v.eligible_roles),
            v.scope,
        )
    out.print(table if views else "No applications yet: `jitaccess apps register --help`.")


def _print_app(v: AppView) -> None:
    from jitaccess.domain.durations import format_duration

    table = _Table(show_header=False)
    for key, value in (
        ("Name", v.name),
        ("Scope", v.scope),
        ("JIT", "enabled" if v.jit_enabled else "disabled (publisher has permanent access)"),
        ("Publishers", ", ".join(v.publishers)),
        ("Eligible roles", ", ".join(v.eligible_roles)),
        ("Consumer admins", ", ".join(v.admins) or "-"),
        ("Approval mode", v.policy.mode.value),
        ("Maximum duration", format_duration(v.policy.max_duration)),
        ("Approvers", ", ".join(v.policy.approvers) or "-"),
        ("Approval timeout", format_duration(v.policy.approval_timeout)),
        ("Provider", v.provider),
    ):
        table.add_row(key, value)
    out.print(table)


@apps_app.command("show")
def apps_show(name: str, as_json: Json = False) -> None:
    """Show one application and its policy."""
    from jitaccess.catalog import Catalog

    with _container() as c:
        view = c.service.get_app(name)
        standing = Catalog(c.service).standing(name)
    if as_json:
        _emit_json({**view.to_json(), "standing": [vars(g) for g in standing]})
    else:
        _print_app(view)
        _print_standing(standing)


# -- requests ----------------------------------------------------------------------
@requests_app.command("submit")
def requests_submit(
    app_name: Annotated[str, typer.Argument(metavar="APP")],
    as_user: AsUser,
    role: Annotated[str, typer.Option(help="An eligible role, e.g. Contributor")],
    duration: Annotated[str, typer.Option(help="e.g. 2h, 90m, PT8H")],
    reason: Annotated[str, typer.Option(help="Justification (required)")],
    start: Annotated[str | None, typer.Option(help="ISO 8601 start; default now")] = None,
    as_json: Json = False,
) -> None:
    """Ask for elevated access; prints the request id."""
    length = _duration(duration)
    assert length is not None
    starts_at = _instant(start)
    with _container() as c:
        view = c.service.submit(
            app_name,
            requester=as_user,
            role=role,
            duration=length,
            justification=reason,
            starts_at=starts_at,
            now=now(),
        )
    if as_json:
        _emit_json(view.to_json())
        return
    out.print(
        f"Request {view.id} is {view.state}: {view.role} on {view.app} from "
        f"{_fmt_time(view.starts_at)} to {_fmt_time(view.ends_at)}.",
        highlight=False,
    )
    if view.state == "pending":
        out.print(f"Waiting for one of: {', '.join(view.notified_approvers)}.")


def _decision(command: str) -> Any:
    def run(request_id: int, as_user: AsUser, reason: Reason, as_json: Json = False) -> None:
        with _container() as c:
            method = c.service.approve if command == "approve" else c.service.deny
            view = method(request_id, actor=as_user, reason=reason, now=now())
        _print_outcome(view, as_json)

    run.__doc__ = f"{command.capitalize()} a pending request (approvers)."
    return run


requests_app.command("approve")(_decision("approve"))
requests_app.command("deny")(_decision("deny"))


@requests_app.command("cancel")
def requests_cancel(request_id: int, as_user: AsUser, as_json: Json = False) -> None:
    """Withdraw your own request before it starts."""
    with _container() as c:
        view = c.service.cancel(request_id, actor=as_user, now=now())
    _print_outcome(view, as_json)


@requests_app.command("revoke")
def requests_revoke(
    request_id: int, as_user: AsUser, reason: Reason, as_json: Json = False
) -> None:
    """End someone's access early (approvers and consumer admins)."""
    with _container() as c:
        view = c.service.revoke(request_id, actor=as_user, reason=reason, now=now())
    _print_outcome(view, as_json)


@requests_app.command("release")
def requests_release(request_id: int, as_user: AsUser, as_json: Json = False) -> None:
    """End your own access early ("I'm done")."""
    with _container() as c:
        view = c.service.release(request_id, actor=as_user, now=now())
    _print_outcome(view, as_json)


def _print_outcome(view: RequestView, as_json: bool) -> None:
    if as_json:
        _emit_json(view.to_json())
        return
    out.print(f"Request {view.id} is {view.status_line(now())}.", highlight=False)
    if view.last_error:
        out.print(
            f"Last backend error ({view.attempts} attempts): {view.last_error}", highlight=False
        )


@requests_app.command("show")
def requests_show(request_id: int, as_json: Json = False) -> None:
    """Show one request in full."""
    from jitaccess.domain.durations import format_duration

    with _container() as c:
        view = c.service.get_request(request_id)
    if as_json:
        _emit_json(view.to_json())
        return
    table = _Table(show_header=False)
    rows: list[tuple[str, str]] = [
        ("Request", str(view.id)),
        ("Application", f"{view.app} ({view.scope})"),
        ("Requester", view.requester),
        ("Role", view.role),
        ("State", view.status_line(now())),
        (
            "Window",
            f"{_fmt_time(view.starts_at)} → {_fmt_time(view.ends_at)} "
            f"({format_duration(view.duration)})",
        ),
        ("Justification", view.justification),
        ("Mode", view.approval_mode),
        ("Decided by", view.decided_by or "-"),
        ("Decision reason", view.decision_reason or "-"),
        ("Activated", _fmt_time(view.activated_at) or "-"),
        ("Ended", _fmt_time(view.ended_at) or "-"),
        ("Ended by", view.ended_by or "-"),
        ("End reason", view.end_reason or "-"),
    ]
    if view.attempts or view.last_error:
        rows.append(("Backend attempts", str(view.attempts)))
        rows.append(("Last error", view.last_error or "-"))
    for key, value in rows:
        table.add_row(key, value)
    out.print(table)


def _request_table(views: list[RequestView]) -> Table:
    table = _Table(
        "ID", "App", "Requester", "Role", "State", "Start", "End", "Decided by", "Reason"
    )
    moment = now()
    for v in views:
        table.add_row(
            str(v.id),
            v.app,
            v.requester,
            v.role,
            v.status_line(moment),
            _fmt_time(v.starts_at),
            _fmt_time(v.ends_at),
            v.decided_by or "-",
            v.decision_reason or v.end_reason or "-",
        )
    return table


@requests_app.command("list")
def requests_list(
    app_name: Annotated[str | None, typer.Option("--app", help="Only this application")] = None,
    state: Annotated[str | None, typer.Option(help="Only this state, e.g. pending")] = None,
    mine: Annotated[bool, typer.Option("--mine", help="Only requests made --as you")] = False,
    as_user: Annotated[str | None, typer.Option("--as", help="Slack user ID (with --mine)")] = None,
    as_json: Json = False,
) -> None:
    """List requests, newest first."""
    if mine and not as_user:
        raise typer.BadParameter("--mine needs --as U… to know who you are")
    with _container() as c:
        views = c.service.list_requests(
            app=app_name, state=state, requester=as_user if mine else None
        )
    if as_json:
        _emit_json([v.to_json() for v in views])
    else:
        out.print(_request_table(views) if views else "No requests match.")


@requests_app.command("history")
def requests_history(
    app_name: Annotated[str, typer.Argument(metavar="APP")], as_json: Json = False
) -> None:
    """An application's request history: who asked, who decided, when access began and ended."""
    with _container() as c:
        views = c.service.history(app_name)
    if as_json:
        _emit_json([v.to_json() for v in views])
    else:
        out.print(_request_table(views) if views else f"No requests for {app_name} yet.")


# -- deadlines, audit, diagram, serve -----------------------------------------------
@app.command("sweep")
def sweep() -> None:
    """Run every transition that is due now, once, and deliver the notifications to
    Slack when Slack is configured (else they wait for `serve`)."""
    with _container() as c:
        report = c.service.sweep(now())
        relayed = c.relay.drain(now())
    if c.relay.notifier is None:
        delivery = (
            f"{relayed.held} notifications left for serve to deliver (no SLACK_BOT_TOKEN here)"
        )
    else:
        delivery = f"notifications delivered to Slack {relayed.delivered}"
        if relayed.failed:
            delivery += f", {relayed.failed} failed (retried later)"
        if relayed.dropped:
            delivery += f", {relayed.dropped} undeliverable"
    out.print(
        f"activated {report.activated}, expired {report.expired}, revoked {report.revoked}, "
        f"cancelled {report.cancelled}, timed out {report.timed_out}, failed {report.failed}, "
        f"lapsed {report.lapsed}, retrying {report.retrying}; {delivery}"
    )


@app.command("reconcile")
def reconcile_command(
    app_name: Annotated[str | None, typer.Option("--app", help="Only this application")] = None,
    fix: Annotated[bool, typer.Option("--fix", help="Revoke orphans, re-grant missing")] = False,
    as_json: Json = False,
) -> None:
    """Compare what each backend holds with the database; exit 1 if anything differs."""
    from jitaccess.reconcile import reconcile

    with _container() as c:
        findings = reconcile(c.service, now(), app=app_name, fix=fix, actor="cli:reconcile")
    if as_json:
        _emit_json([vars(f) for f in findings])
    else:
        for finding in findings:
            out.print(finding.line())
        differences = [f for f in findings if f.kind != "skipped"]
        if not differences:
            out.print("Backends and database agree.")
    unresolved = [f for f in findings if f.kind != "skipped" and not f.fixed]
    if unresolved:
        raise typer.Exit(1)


_HEAD = re.compile(r"^(\d{1,12}):([0-9a-fA-F]{64})$")


def _anchor(value: str) -> tuple[int, str]:
    match = _HEAD.match(value.strip())
    if match is None:
        raise typer.BadParameter(
            f"'{value}' is not SEQ:HASH: give a head as `audit verify` prints it or the "
            "audit_head log line has it (e.g. 42:3f5a…, the hash in full, 64 hex digits)"
        )
    return int(match.group(1)), match.group(2).lower()


@audit_app.command("verify")
def audit_verify(
    expect: Annotated[
        list[str] | None,
        typer.Option(
            "--expect",
            metavar="SEQ:HASH",
            help="A head recorded earlier (off this box) that the log must still contain; "
            "repeatable",
        ),
    ] = None,
) -> None:
    """Check the hash chain, the heads recorded elsewhere, and that every request keeps
    its entries; exit 1 naming each problem. Prints the head to record as SEQ:HASH."""
    from jitaccess.audit_log import verify

    anchors = [_anchor(value) for value in expect or []]
    with _container() as c:
        result = verify(c.db, anchors)
    if result.problems:
        err.print(f"[red]Audit log tampered with[/red] ({result.entries} entries read):")
        for problem in result.problems:
            err.print(f"  - {problem}", highlight=False)
        err.print(f"Head now: {result.head}", highlight=False)
        raise typer.Exit(1)
    checked = f"; contains {', '.join(f'{s}:{h[:12]}…' for s, h in anchors)}" if anchors else ""
    out.print(f"Audit log intact: {result.entries} entries{checked}", highlight=False)
    out.print(f"Head: {result.head}", highlight=False, soft_wrap=True)


@audit_app.command("export")
def audit_export(
    fmt: Annotated[
        ExportFormat, typer.Option("--format", help="jsonl or csv")
    ] = ExportFormat.jsonl,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="File; default stdout")
    ] = None,
) -> None:
    """Write the whole audit log."""
    from jitaccess.audit_log import export_rows

    with _container() as c:
        try:
            handle = output.open("w", newline="") if output else sys.stdout
        except OSError as exc:
            raise typer.BadParameter(f"cannot write {output}: {exc.strerror}") from None
        try:
            count = 0
            # A terminal gets control and bidi characters escaped; a file or a pipe gets
            # the exact data. JSON escapes them all by itself, except DEL.
            terminal = output is None and _stdout_is_terminal()
            if fmt is ExportFormat.jsonl:
                for row in export_rows(c.db):
                    line = json.dumps(row, default=str)
                    handle.write((line.replace("\x7f", "\\u007f") if terminal else line) + "\n")
                    count += 1
            else:
                writer: Any = None
                for row in export_rows(c.db):
                    flat = {**row, "details": json.dumps(row["details"], default=str)}
                    if terminal:
                        flat = {k: v if v is None else visible(str(v)) for k, v in flat.items()}
                    if writer is None:
                        writer = csv.DictWriter(handle, fieldnames=list(flat))
                        writer.writeheader()
                    writer.writerow(flat)
                    count += 1
        finally:
            if output:
                handle.close()
    if output:
        out.print(f"Wrote {count} entries to {output}.")


@app.command("diagram")
def diagram(
    fmt: Annotated[DiagramFormat, typer.Option("--format")] = DiagramFormat.mermaid,
    output: Annotated[Path | None, typer.Option("-o", "--output")] = None,
) -> None:
    """Draw the request lifecycle from the state machine itself."""
    from jitaccess.domain.lifecycle import RequestLifecycle, mermaid

    if fmt is DiagramFormat.mermaid:
        text = mermaid()
        if output:
            output.write_text(text)
        else:
            sys.stdout.write(text)
        return
    from statemachine.contrib.diagram import DotGraphMachine
    from statemachine.contrib.diagram.graphviz import GraphvizError, run_graphviz

    graph = DotGraphMachine(RequestLifecycle).get_graph()  # type: ignore[no-untyped-call]
    source = str(graph.to_string())
    try:
        image = run_graphviz(source, fmt.value)
    except GraphvizError as exc:
        err.print(
            f"[red]error:[/red] {fmt.value} needs Graphviz's `dot` program "
            f"(apt-get install graphviz), or use --format mermaid ({escape(str(exc))})"
        )
        raise typer.Exit(1) from None
    if output:
        output.write_bytes(image)
    else:
        sys.stdout.buffer.write(image)


@app.command("serve")
def serve(
    role: Annotated[
        Role | None,
        typer.Option(
            "--role",
            help="web: answer Slack only; worker: sweep, relay and reconcile only; all: "
            "both (default: JITACCESS_ROLE, else all)",
            case_sensitive=False,
        ),
    ] = None,
    sandbox: Annotated[
        bool,
        typer.Option(
            "--sandbox",
            help="Try it with no Slack workspace: a local Slack stand-in in the browser",
        ),
    ] = False,
    sandbox_reset: Annotated[
        bool,
        typer.Option("--sandbox-reset", help="With --sandbox: start over with fresh demo data"),
    ] = False,
) -> None:
    """Run the service: Slack app, deadline scheduler, notification relay, reconciliation
    (all of them, or one side with --role web|worker)."""
    from jitaccess.server import ConfigurationError, run

    _end_gc_pause()

    try:
        if sandbox or sandbox_reset:
            if role not in (None, Role.ALL):
                err.print("--sandbox is one process: it takes no --role", highlight=False)
                raise typer.Exit(2)
            from jitaccess.sandbox.run import run_sandbox

            run_sandbox(reset=sandbox_reset)
            return
        from jitaccess.settings import Settings

        settings = Settings()
        if role is not None:
            settings = settings.model_copy(update={"role": role})
        run(settings)
    except ConfigurationError as exc:
        err.print(str(exc), highlight=False)
        raise typer.Exit(1) from None


def _end_gc_pause() -> None:
    """Start-up is over (see ``main``): hide what it made from the cyclic GC, resume it."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def main() -> None:
    # Starting a command makes hundreds of thousands of objects that live as long as
    # the process (modules, classes, tables, the engine) and next to no garbage; the
    # cyclic GC would scan them over and over (about 7% of `apps list`). So it pauses
    # until the command's container is built (or serve starts), then gc.freeze() moves
    # those objects out of its sight and it runs as usual for the command's own work.
    gc.disable()
    try:
        app()
    finally:
        _end_gc_pause()
