"""``jitaccess requests``: submit, decide, cancel, revoke, release, show and list access
requests, and an application's request history."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from jitaccess.cli.context import container, now
from jitaccess.cli.output import Table, emit_json, fmt_time, out
from jitaccess.cli.params import (
    AsUser,
    Json,
    Reason,
    Utc,
    as_person,
    to_duration,
    to_instant,
)

# The command table is imported by the commands that use it, not when the CLI loads
# (`--help` and the commands of other groups never pay for it).
if TYPE_CHECKING:
    from jitaccess.app.views import RequestView

app = typer.Typer(help="Access requests.", no_args_is_help=True)


@app.command("submit")
def requests_submit(
    app_name: Annotated[str, typer.Argument(metavar="APP")],
    as_user: AsUser,
    role: Annotated[str, typer.Option(help="An eligible role, e.g. Contributor")],
    duration: Annotated[str, typer.Option(help="e.g. 2h, 90m, PT8H")],
    reason: Annotated[str, typer.Option(help="Justification, recorded in the audit log")],
    start: Annotated[str | None, typer.Option(help="ISO 8601 start; default now")] = None,
    as_json: Json = False,
    utc: Utc = False,
) -> None:
    """Ask for elevated access; prints the request id."""
    from jitaccess.app.commands import SubmitRequest, handle
    from jitaccess.domain.lifecycle import state_words

    length = to_duration(duration)
    assert length is not None
    starts_at = to_instant(start)
    with container() as c:
        command = SubmitRequest(
            app_name,
            requester=as_user,
            role=role,
            duration=length,
            justification=reason,
            starts_at=starts_at,
        )
        view = handle(c.service, command, now())
    if as_json:
        emit_json(view.to_json())
        return
    out.print(
        f"Request {view.id} is {state_words(view.state)}: {view.role} on {view.app} from "
        f"{fmt_time(view.starts_at)} to {fmt_time(view.ends_at)}.",
        highlight=False,
    )
    if view.state == "pending":
        out.print(f"Waiting for one of: {', '.join(view.notified_approvers)}.")


@app.command("breakglass")
def requests_breakglass(
    app_name: Annotated[str, typer.Argument(metavar="APP")],
    as_user: AsUser,
    role: Annotated[str, typer.Option(help="An eligible role, e.g. Owner")],
    duration: Annotated[str, typer.Option(help="At most the policy's break-glass cap (1h)")],
    incident: Annotated[str, typer.Option(help="Incident reference: INC-4711 or its URL")],
    reason: Annotated[str, typer.Option(help="Why, recorded in the audit log")],
    as_json: Json = False,
    utc: Utc = False,
) -> None:
    """Take access at once, without approval (break-glass holders); reviewed afterwards."""
    from jitaccess.app.commands import TakeBreakGlass, handle

    length = to_duration(duration)
    assert length is not None
    command = TakeBreakGlass(
        app_name,
        actor=as_user,
        role=role,
        duration=length,
        incident_ref=incident,
        reason=reason,
    )
    with container() as c:
        view = handle(c.service, command, now())
    _print_outcome(view, as_json)


@app.command("review")
def requests_review(
    request_id: int, as_user: AsUser, reason: Reason, as_json: Json = False, utc: Utc = False
) -> None:
    """Acknowledge a break-glass request afterwards (approvers and consumer admins)."""
    from jitaccess.app.commands import ReviewBreakGlass, handle

    with container() as c:
        command = ReviewBreakGlass(request_id, actor=as_user, reason=reason)
        view = handle(c.service, command, now())
    _print_outcome(view, as_json)
    if not as_json:
        _confirm_review(view)


def _decision(command: str) -> Any:
    def run(
        request_id: int, as_user: AsUser, reason: Reason, as_json: Json = False, utc: Utc = False
    ) -> None:
        from jitaccess.app.commands import ApproveRequest, DenyRequest, handle

        kind = ApproveRequest if command == "approve" else DenyRequest
        with container() as c:
            view = handle(c.service, kind(request_id, actor=as_user, reason=reason), now())
        _print_outcome(view, as_json)

    run.__doc__ = f"{command.capitalize()} a pending request (approvers)."
    return run


app.command("approve")(_decision("approve"))
app.command("deny")(_decision("deny"))


@app.command("cancel")
def requests_cancel(
    request_id: int, as_user: AsUser, as_json: Json = False, utc: Utc = False
) -> None:
    """Withdraw your own request before it starts."""
    from jitaccess.app.commands import CancelRequest, handle

    with container() as c:
        view = handle(c.service, CancelRequest(request_id, actor=as_user), now())
    _print_outcome(view, as_json)


@app.command("revoke")
def requests_revoke(
    request_id: int, as_user: AsUser, reason: Reason, as_json: Json = False, utc: Utc = False
) -> None:
    """End someone's access early (approvers and consumer admins)."""
    from jitaccess.app.commands import RevokeAccess, handle

    with container() as c:
        view = handle(c.service, RevokeAccess(request_id, actor=as_user, reason=reason), now())
    _print_outcome(view, as_json)


@app.command("release")
def requests_release(
    request_id: int, as_user: AsUser, as_json: Json = False, utc: Utc = False
) -> None:
    """End your own access early ("I'm done")."""
    from jitaccess.app.commands import ReleaseAccess, handle

    with container() as c:
        view = handle(c.service, ReleaseAccess(request_id, actor=as_user), now())
    _print_outcome(view, as_json)


@app.command("extend")
def requests_extend(
    request_id: int,
    as_user: AsUser,
    duration: Annotated[str, typer.Option(help="How much to add to the end, e.g. 1h")],
    reason: Reason,
    as_json: Json = False,
    utc: Utc = False,
) -> None:
    """Add time to your approved or active request, on the same grant (no gap)."""
    from jitaccess.app.commands import ExtendRequest, handle

    added = to_duration(duration)
    assert added is not None
    with container() as c:
        command = ExtendRequest(request_id, actor=as_user, added=added, reason=reason)
        outcome = handle(c.service, command, now())
    view = outcome.request
    if as_json:
        emit_json({**view.to_json(), "extension": outcome.status})
        return
    if outcome.status == "extended":
        out.print(f"Request {view.id} extended: it now ends {fmt_time(view.ends_at)}.")
    else:
        out.print(
            f"Request {view.id}: the extension to {fmt_time(view.extension_ends_at)} waits for "
            "the approvers (`requests approve-extension` / `deny-extension`).",
            highlight=False,
        )


def _extension_decision(command: str) -> Any:
    def run(
        request_id: int, as_user: AsUser, reason: Reason, as_json: Json = False, utc: Utc = False
    ) -> None:
        from jitaccess.app.commands import ApproveExtension, DenyExtension, handle

        kind = ApproveExtension if command == "approve" else DenyExtension
        with container() as c:
            view = handle(c.service, kind(request_id, actor=as_user, reason=reason), now())
        _print_outcome(view, as_json)
        if not as_json:
            _confirm_extension(view, approved=command == "approve")

    run.__doc__ = f"{command.capitalize()} a request's pending extension (approvers)."
    return run


app.command("approve-extension")(_extension_decision("approve"))
app.command("deny-extension")(_extension_decision("deny"))


def _access_end(view: RequestView) -> str:
    """When access ends (or ended, and how), in the operator's zone."""
    if view.ended_at is not None:
        return f"Access ended {fmt_time(view.ended_at)}: {how_it_ended(view)}."
    return f"Access ends {fmt_time(view.ends_at)}."


def _confirm_extension(view: RequestView, *, approved: bool) -> None:
    """After an extension decision: the end now in force, and who is next."""
    if view.extension_ends_at is not None:  # the quorum is not reached yet
        given = {a.approver for a in view.extension_approvals}
        missing = view.required_approvals - len(given)
        others = [p for p in view.notified_approvers if p not in given and p != view.requester]
        out.print(
            f"Approval recorded ({len(given)} of {view.required_approvals}): the extension "
            f"to {fmt_time(view.extension_ends_at)} still needs {missing} more, from one of: "
            f"{', '.join(others) or 'the approvers'}. {_access_end(view)}",
            highlight=False,
        )
    elif approved:
        out.print(
            f"Extension approved: {_access_end(view)} Nothing else is needed.", highlight=False
        )
    else:
        out.print(f"Extension denied: {_access_end(view)} The requester is told.", highlight=False)


def _confirm_review(view: RequestView) -> None:
    """After a break-glass review: who reviewed, when access ends, and that it is done."""
    out.print(
        f"Break-glass {view.incident_ref or ''} reviewed by {view.reviewed_by} "
        f"{fmt_time(view.reviewed_at)}: the review is done. {_access_end(view)}",
        highlight=False,
    )


def how_it_ended(view: RequestView) -> str:
    """Why access ended, from the request's record of its end (who, why): expired,
    revoked by whom, released, denied, timed out, failed…; "" while it has not."""
    state = str(view.state)
    if view.ended_at is None:
        return ""
    if state == "expired":
        return "expired at the end of its window"
    if state == "revoked":
        if view.ended_by == view.requester:
            return f"released by {view.requester}"
        return f"revoked by {view.ended_by or 'jitaccess'}: {view.end_reason or '-'}"
    if state == "denied":
        return f"denied by {view.decided_by or '-'}: {view.decision_reason or '-'}"
    if state == "cancelled":
        who = view.ended_by if view.ended_by and view.ended_by != "system" else None
        return f"cancelled by {who}" if who else f"cancelled: {view.end_reason or '-'}"
    if state == "timed_out":
        return "timed out: no approver decided in time"
    if state == "failed":
        return f"failed: {view.end_reason or view.last_error or '-'}"
    return f"{state}: {view.end_reason or '-'}"


def _print_outcome(view: RequestView, as_json: bool) -> None:
    if as_json:
        emit_json(view.to_json())
        return
    out.print(f"Request {view.id} is {view.status_line(now(), at=fmt_time)}.", highlight=False)
    if view.state == "pending" and view.approvals:
        out.print(
            f"{len(view.approvals)} of {view.required_approvals} approved: "
            + ", ".join(f"{a.approver} ({a.reason})" for a in view.approvals),
            highlight=False,
        )
    if view.last_error:
        out.print(
            f"Last backend error ({view.attempts} attempts): {view.last_error}", highlight=False
        )


@app.command("show")
def requests_show(request_id: int, as_json: Json = False, utc: Utc = False) -> None:
    """Show one request in full."""
    from jitaccess.app.activity_reports import status_line
    from jitaccess.domain.durations import format_duration

    with container() as c:
        view = c.service.get_request(request_id)
        activity = status_line(c.db, request_id, at=fmt_time)
    if as_json:
        emit_json(view.to_json())
        return
    table = Table(show_header=False)
    rows: list[tuple[str, str]] = [
        ("Request", str(view.id)),
        ("Application", f"{view.app} ({view.scope})"),
        ("Requester", view.requester),
        ("Role", view.role),
        ("State", view.status_line(now(), at=fmt_time)),
        (
            "Window",
            f"{fmt_time(view.starts_at)} → {fmt_time(view.ends_at)} "
            f"({format_duration(view.duration)})",
        ),
        ("Justification", view.justification),
        ("Mode", view.approval_mode),
        ("Decided by", view.decided_by or "-"),
        ("Decision reason", view.decision_reason or "-"),
        (
            "Approvals",
            f"{len(view.approvals)} of {view.required_approvals}: "
            + (", ".join(f"{a.approver} ({a.reason})" for a in view.approvals) or "-"),
        ),
        ("Activated", fmt_time(view.activated_at) or "-"),
        ("Ended", f"{fmt_time(view.ended_at)} {how_it_ended(view)}" if view.ended_at else "-"),
        ("Ended by", view.ended_by or "-"),
        ("End reason", view.end_reason or "-"),
    ]
    if view.breakglass:
        review = (
            f"by {view.reviewed_by} at {fmt_time(view.reviewed_at)}: {view.review_reason}"
            if view.reviewed_at
            else "NEEDS REVIEW"
        )
        rows += [("Break-glass", view.incident_ref or "-"), ("Review", review)]
    if view.extension_ends_at is not None:
        rows.append(
            (
                "Extension asked",
                f"to {fmt_time(view.extension_ends_at)}: {view.extension_reason or '-'} "
                f"(times out {fmt_time(view.extension_deadline_at)})",
            )
        )
    if view.attempts or view.last_error:
        rows.append(("Backend attempts", str(view.attempts)))
        rows.append(("Last error", view.last_error or "-"))
    if activity is not None:
        rows.append(("Activity summary", activity))
    for key, value in rows:
        table.add_row(key, value)
    out.print(table)


def _request_table(views: list[RequestView]) -> Table:
    """Requests, one a row: the window asked for, and when access really ended and why
    (a revoked request's scheduled end is not when its access ended)."""
    table = Table(
        "ID", "App", "Requester", "Role", "State", "Start", "Scheduled end", "Ended",
        "Decided by", "Reason",
    )  # fmt: skip
    moment = now()
    for v in views:
        ended = f"{fmt_time(v.ended_at)} {how_it_ended(v)}" if v.ended_at else "-"
        table.add_row(
            str(v.id),
            v.app,
            v.requester,
            v.role,
            v.status_line(moment, at=fmt_time),
            fmt_time(v.starts_at),
            fmt_time(v.ends_at),
            ended,
            v.decided_by or "-",
            v.decision_reason or "-",
        )
    return table


@app.command("list")
def requests_list(
    app_name: Annotated[str | None, typer.Option("--app", help="Only this application")] = None,
    state: Annotated[str | None, typer.Option(help="Only this state, e.g. pending")] = None,
    mine: Annotated[bool, typer.Option("--mine", help="Only requests made --as you")] = False,
    as_user: Annotated[
        str | None, typer.Option("--as", help="Slack user ID (with --mine)", callback=as_person)
    ] = None,
    as_json: Json = False,
    utc: Utc = False,
) -> None:
    """List requests, newest first."""
    if mine and not as_user:
        raise typer.BadParameter("--mine needs --as U… to know who you are")
    with container() as c:
        views = c.service.list_requests(
            app=app_name, state=state, requester=as_user if mine else None
        )
    if as_json:
        emit_json([v.to_json() for v in views])
    else:
        out.print(_request_table(views) if views else "No requests match.")


@app.command("history")
def requests_history(
    app_name: Annotated[str, typer.Argument(metavar="APP")], as_json: Json = False, utc: Utc = False
) -> None:
    """An application's request history: who asked, who decided, when access began and ended."""
    with container() as c:
        views = c.service.history(app_name)
    if as_json:
        emit_json([v.to_json() for v in views])
    else:
        out.print(_request_table(views) if views else f"No requests for {app_name} yet.")
