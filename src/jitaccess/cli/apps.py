"""``jitaccess apps``: register (deploy), remove, change the policy of, apply from a
file, list and show managed applications."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.markup import escape

from jitaccess.cli.context import container, now
from jitaccess.cli.output import (
    EXIT_REFUSED,
    EXIT_USAGE,
    Table,
    emit_json,
    err,
    out,
    print_lines,
)
from jitaccess.cli.params import AsUser, Json, parse_provider_config, to_duration, to_duration_or

if TYPE_CHECKING:
    from jitaccess.app.catalog import StandingView
    from jitaccess.app.views import AppView
    from jitaccess.cli.apps_file import FileProblem
    from jitaccess.domain.policy import Policy

app = typer.Typer(help="Managed applications and their JIT policies.", no_args_is_help=True)


class Mode(StrEnum):
    automatic = "automatic"
    manual = "manual"


def _policy(
    mode: Mode | None,
    max_duration: str | None,
    approvers: list[str] | None,
    approval_timeout: str | None,
    breakglass: list[str] | None = None,
    breakglass_max: str | None = None,
    required_approvals: int | None = None,
    feed_channel: str | None = None,
) -> Policy:
    from jitaccess.domain.policy import (
        DEFAULT_APPROVAL_TIMEOUT,
        DEFAULT_BREAKGLASS_MAX,
        DEFAULT_MAX_DURATION,
        ApprovalMode,
        Policy,
    )

    return Policy(
        mode=ApprovalMode(mode.value) if mode else ApprovalMode.AUTOMATIC,
        max_duration=to_duration_or(max_duration, DEFAULT_MAX_DURATION),
        approvers=tuple(approvers or ()),
        approval_timeout=to_duration_or(approval_timeout, DEFAULT_APPROVAL_TIMEOUT),
        breakglass=tuple(breakglass or ()),
        breakglass_max=to_duration_or(breakglass_max, DEFAULT_BREAKGLASS_MAX),
        required_approvals=1 if required_approvals is None else required_approvals,
        feed_channel=feed_channel,
    )


BreakGlass = Annotated[
    list[str] | None,
    typer.Option(
        "--breakglass",
        help="May take access at once, without approval: a user U… or user group S… (repeat)",
    ),
]
BreakGlassMax = Annotated[
    str | None, typer.Option("--breakglass-max", help="Longest break-glass access (1h)")
]


@app.command("register")
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
    approver: Annotated[
        list[str] | None, typer.Option(help="Approver: a person U… or a user group S… (repeat)")
    ] = None,
    approval_timeout: Annotated[str | None, typer.Option(help="e.g. 24h")] = None,
    breakglass: BreakGlass = None,
    breakglass_max: BreakGlassMax = None,
    required_approvals: Annotated[
        int | None, typer.Option(help="How many approvers must approve (default 1)")
    ] = None,
    feed_channel: Annotated[
        str | None,
        typer.Option(help='Slack channel ID (C…) to post every request to; "" turns it off'),
    ] = None,
    provider: Annotated[str, typer.Option(help="Access provider: log, azure, webhook, …")] = "log",
    provider_config: Annotated[
        str | None, typer.Option(help="Provider settings as JSON, or @FILE (JSON or YAML)")
    ] = None,
    as_json: Json = False,
) -> None:
    """Register (deploy) a managed application, and grant the publishers standing access."""
    from jitaccess.app.service import AppSpec
    from jitaccess.domain.policy import DEFAULT_ROLES

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
        provider_config=parse_provider_config(provider_config),
        policy=_policy(
            mode,
            max_duration,
            approver,
            approval_timeout,
            breakglass,
            breakglass_max,
            required_approvals,
            feed_channel,
        ),
    )
    with container() as c:
        catalog = c.service.catalog
        view = catalog.deploy(spec, offer=offer, jit=jit, actor="cli", now=now())
        standing = catalog.standing(view.name)
    if as_json:
        emit_json({**view.to_json(), "standing": [vars(s) for s in standing]})
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


@app.command("remove")
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

    with container() as c:
        report = c.service.catalog.remove(
            name, actor=as_user, now=now(), force=force, reason=reason
        )
    if as_json:
        emit_json(
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
    raise typer.Exit(EXIT_REFUSED)


@app.command("policy")
def apps_policy(
    name: str,
    as_user: AsUser,
    mode: Annotated[Mode | None, typer.Option(help="automatic or manual")] = None,
    max_duration: Annotated[str | None, typer.Option(help="Longest window, e.g. 8h")] = None,
    approver: Annotated[
        list[str] | None,
        typer.Option(help="Approver: a person U… or a user group S… (repeat); replaces the list"),
    ] = None,
    approval_timeout: Annotated[str | None, typer.Option(help="e.g. 24h")] = None,
    breakglass: BreakGlass = None,
    breakglass_max: BreakGlassMax = None,
    required_approvals: Annotated[
        int | None, typer.Option(help="How many approvers must approve (a quorum)")
    ] = None,
    feed_channel: Annotated[
        str | None,
        typer.Option(help='Slack channel ID (C…) to post every request to; "" turns it off'),
    ] = None,
    require_mfa: Annotated[
        bool | None,
        typer.Option(
            "--require-mfa/--no-require-mfa",
            help="Approvals count only after a recent multi-factor sign-in with Microsoft",
        ),
    ] = None,
    as_json: Json = False,
) -> None:
    """Change an application's JIT policy (consumer admins). Applies to new requests.
    On a native application the change is written to Azure's jitAccessPolicy."""
    from jitaccess.domain.policy import ApprovalMode

    options: tuple[object, ...] = (
        mode,
        max_duration,
        approver,
        approval_timeout,
        breakglass,
        breakglass_max,
        required_approvals,
        feed_channel,
    )
    with container() as c:
        view = c.service.get_app(name)
        # The policy first: a refused change (a portal change racing it, an option a
        # native application does not have) leaves require_mfa as it was too. Only
        # --require-mfa given: Azure is not asked.
        if any(value is not None for value in options):
            view = c.service.set_policy(
                name,
                actor=as_user,
                now=now(),
                mode=ApprovalMode(mode.value) if mode else None,
                max_duration=to_duration(max_duration),
                approvers=approver,
                approval_timeout=to_duration(approval_timeout),
                breakglass=breakglass,
                breakglass_max=to_duration(breakglass_max),
                required_approvals=required_approvals,
                feed_channel=feed_channel,
            )
        if require_mfa is not None:
            view = c.service.set_require_mfa(name, require_mfa, actor=as_user, now=now())
            if require_mfa and not c.service.signins.available:
                err.print(
                    "note: Sign in with Microsoft is not set up on this jitaccess, so approvals "
                    f"of {escape(name)} cannot count until it is (see `jitaccess signins --help`)"
                )
    if as_json:
        emit_json(view.to_json())
    else:
        _print_app(view)


@app.command("import")
def apps_import(
    subscription: Annotated[str, typer.Option(help="Subscription ID to list managed apps in")],
    as_user: AsUser,
    publisher: Annotated[
        list[str] | None,
        typer.Option(help="The publisher's people who may request: U… (repeat)"),
    ] = None,
    resource_group: Annotated[
        str | None, typer.Option(help="Only this resource group's managed applications")
    ] = None,
    requests_resource_group: Annotated[
        str | None,
        typer.Option(
            help="Where publishers' jitRequests are created: /subscriptions/…/resourceGroups/… "
            "(default: the application's resource group)"
        ),
    ] = None,
) -> None:
    """Register Azure managed applications in native mode: Azure's own JIT, from Slack.
    Their policy is each application's jitAccessPolicy; Entra approvers are mapped to
    Slack people by e-mail, and whatever cannot be mapped is listed, never guessed."""
    from jitaccess.cli.params import as_person

    publishers = [p for p in (as_person(v) for v in publisher or ()) if p]
    with container() as c:
        report = c.service.native.import_apps(
            subscription,
            resource_group,
            publishers=publishers,
            admins=[as_user],
            requests_resource_group=requests_resource_group,
            actor=as_user,
            now=now(),
        )
    for label, names in (("registered", report.registered), ("updated", report.updated)):
        if names:
            out.print(f"{label}: {', '.join(escape(n) for n in names)}")
    if not report.registered and not report.updated:
        out.print("No managed applications found there.")
    for line in report.unmapped:
        err.print(f"not mapped: {escape(line)}")
    for line in report.refused:
        err.print(f"note: {escape(line)}")


@app.command("apply")
def apps_apply(
    file: Annotated[
        Path, typer.Option("-f", "--file", help="YAML with `offers:` and `apps:` lists")
    ],
) -> None:
    """Create or update offers and applications from a YAML file (config as code).
    Every problem of the file is reported in one run, and then nothing is applied."""
    from jitaccess.cli.apps_file import load_apps
    from jitaccess.domain.errors import Problems, RuleViolation

    loaded = load_apps(file)
    with container() as c:
        catalog = c.service.catalog
        problems = list(loaded.problems)
        try:
            catalog.check(loaded.offers, loaded.apps)
        except RuleViolation as exc:
            found = exc.problems if isinstance(exc, Problems) else ((None, exc),)
            problems += [loaded.locate(subject, v.field, str(v)) for subject, v in found]
        if problems:
            _report_file_problems(file, problems)
        created_offers, result = catalog.apply(
            loaded.offers, loaded.apps, actor="cli:apply", now=now()
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


def _report_file_problems(file: Path, problems: list[FileProblem]) -> NoReturn:
    """Every problem of an apps file, one per line; exit 2 if the file is malformed,
    else 1 (refused by the rules). Nothing was applied."""
    shape = any(p.shape for p in problems)
    count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
    head = "is not a valid apps file" if shape else "was refused"
    print_lines(
        [f"error: {file} {head} ({count}; nothing was applied):"]
        + [f"  - {problem}" for problem in problems]
    )
    raise typer.Exit(EXIT_USAGE if shape else EXIT_REFUSED)


@app.command("list")
def apps_list(as_json: Json = False) -> None:
    """List the registered applications."""
    from jitaccess.domain.durations import format_duration

    with container() as c:
        views = c.service.list_apps()
    if as_json:
        emit_json([v.to_json() for v in views])
        return
    table = Table("Name", "JIT", "Mode", "Max", "Approvers", "Roles", "Scope")
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

    table = Table(show_header=False)
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
        (
            "Break-glass",
            f"{', '.join(v.policy.breakglass)}, up to {format_duration(v.policy.breakglass_max)}"
            if v.policy.breakglass
            else "-",
        ),
        ("Required approvals", str(v.policy.required_approvals)),
        ("Feed channel", v.policy.feed_channel or "-"),
        ("Multi-factor sign-in", "required for approvals" if v.require_mfa else "-"),
        ("Provider", v.provider),
    ):
        table.add_row(key, value)
    out.print(table)


@app.command("show")
def apps_show(name: str, as_json: Json = False) -> None:
    """Show one application and its policy."""

    with container() as c:
        view = c.service.get_app(name)
        standing = c.service.catalog.standing(name)
    if as_json:
        emit_json({**view.to_json(), "standing": [vars(g) for g in standing]})
    else:
        _print_app(view)
        _print_standing(standing)
