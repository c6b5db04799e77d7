"""Parsing ``/jit`` command text into a command, or a usage message. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from jitaccess.app import commands as app_commands
from jitaccess.domain.durations import parse_duration

HELP = """*jitaccess*: just-in-time access to managed applications.
• `/jit request`: open the request form
• `/jit request APP ROLE DURATION reason…`: request in one line,
  e.g. `/jit request crm Contributor 2h deploy hotfix`
• `/jit list`: your requests
• `/jit pending [APP]`: requests waiting for your approval (all applications, or one)
• `/jit approve ID reason…` · `/jit deny ID reason…`: decide (approvers)
• `/jit cancel ID`: withdraw your request before it starts
• `/jit release ID`: end your access early ("I'm done")
• `/jit extend ID DURATION reason…`: more time on the same grant, e.g. `/jit extend 12 1h tests`
• `/jit revoke ID reason…`: end someone's access early (approvers and admins)
• `/jit breakglass APP ROLE DURATION INCIDENT reason…`: take access at once, without
  approval, in an emergency (if the policy names you), e.g.
  `/jit breakglass crm Owner 1h INC-4711 database down`
• `/jit ack ID reason…`: review break-glass access afterwards (approvers and admins)
• `/jit apps`: the applications and their policies
• `/jit history APP [PAGE]`: who asked, who decided, when access began and ended
• `/jit config APP`: change an application's JIT policy (consumer admins)
• `/jit signin`: link your Microsoft (Entra) account, so jitaccess acts in Azure as you
• `/jit signout`: forget that link
• `/jit help`: this message"""


class UsageError(ValueError):
    """The text is not a command; the message says how to write it."""


@dataclass(frozen=True)
class Command:
    name: str
    app: str | None = None
    request_id: int | None = None
    role: str | None = None
    duration: timedelta | None = None
    reason: str | None = None
    page: int = 1
    extra: dict[str, str] = field(default_factory=dict)


USAGE = {
    "request": "`/jit request` or `/jit request APP ROLE DURATION reason…`",
    "cancel": "`/jit cancel ID`",
    "release": "`/jit release ID`",
    "extend": "`/jit extend ID DURATION reason…`",
    "revoke": "`/jit revoke ID reason…`",
    "approve": "`/jit approve ID reason…`",
    "deny": "`/jit deny ID reason…`",
    "config": "`/jit config APP`",
    "history": "`/jit history APP [PAGE]`",
    "pending": "`/jit pending [APP]`",
    "breakglass": "`/jit breakglass APP ROLE DURATION INCIDENT reason…` "
    "(INCIDENT: a ticket like INC-4711 or its URL)",
    "ack": "`/jit ack ID reason…`",
}


#: Request ids are INTEGER primary keys (PostgreSQL refuses to compare with larger ones).
MAX_REQUEST_ID = 2**31 - 1


def _request_id(token: str, name: str) -> int:
    cleaned = token.lstrip("#")
    # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
    valid = cleaned.isascii() and cleaned.isdigit() and len(cleaned) <= 10
    if not valid or int(cleaned) > MAX_REQUEST_ID:
        raise UsageError(f"'{token[:50]}' is not a request number. Usage: {USAGE[name]}")
    return int(cleaned)


def _duration(token: str, name: str) -> timedelta:
    try:
        if len(token) > 40:
            raise OverflowError(token)
        return parse_duration(token)
    except ValueError as exc:
        raise UsageError(f"{exc}. Usage: {USAGE[name]}") from None
    except OverflowError:  # more than a timedelta (or int()) holds
        raise UsageError(
            f"'{token[:50]}' is far too long a duration. Usage: {USAGE[name]}"
        ) from None


def parse(text: str) -> Command:
    words = text.split()
    if not words or words[0].lower() == "help":
        return Command("help")
    name, args = words[0].lower(), words[1:]
    if name in ("list", "apps", "signin", "signout"):
        if args and name in ("signin", "signout"):
            raise UsageError(f"Usage: `/jit {name}` (nothing after it)")
        return Command(name)
    if name == "pending":
        if len(args) > 1:
            raise UsageError(f"Usage: {USAGE['pending']}")
        return Command(name, app=args[0] if args else None)
    if name == "request":
        if not args:
            return Command("request_form")
        if len(args) < 4:
            raise UsageError(
                "A one-line request needs an application, a role, a duration and a reason. "
                f"Usage: {USAGE['request']}"
            )
        return Command(
            "request",
            app=args[0],
            role=args[1],
            duration=_duration(args[2], "request"),
            reason=" ".join(args[3:]),
        )
    if name == "breakglass":
        if len(args) < 5:
            raise UsageError(
                "Break-glass needs an application, a role, a duration, an incident reference "
                f"and a reason. Usage: {USAGE['breakglass']}"
            )
        return Command(
            name,
            app=args[0],
            role=args[1],
            duration=_duration(args[2], name),
            reason=" ".join(args[4:]),
            extra={"incident": args[3]},
        )
    if name == "extend":
        if len(args) < 3:
            raise UsageError(
                f"A request number, how much longer and a reason are needed. Usage: {USAGE[name]}"
            )
        return Command(
            name,
            request_id=_request_id(args[0], name),
            duration=_duration(args[1], name),
            reason=" ".join(args[2:]),
        )
    if name in ("cancel", "release"):
        if len(args) != 1:
            raise UsageError(f"Usage: {USAGE[name]}")
        return Command(name, request_id=_request_id(args[0], name))
    if name in ("revoke", "approve", "deny", "ack"):
        if len(args) < 2:
            raise UsageError(f"A request number and a reason are needed. Usage: {USAGE[name]}")
        return Command(name, request_id=_request_id(args[0], name), reason=" ".join(args[1:]))
    if name == "config":
        if len(args) != 1:
            raise UsageError(f"Usage: {USAGE['config']}")
        return Command(name, app=args[0])
    if name == "history":
        if not 1 <= len(args) <= 2:
            raise UsageError(f"Usage: {USAGE['history']}")
        page = 1
        if len(args) == 2:
            # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
            digits = args[1].isascii() and args[1].isdigit() and len(args[1]) <= 6
            if not digits or int(args[1]) < 1:
                raise UsageError(
                    f"'{args[1][:50]}' is not a page number. Usage: {USAGE['history']}"
                )
            page = int(args[1])
        return Command(name, app=args[0], page=page)
    raise UsageError(f"Unknown command '{words[0][:50]}'. Try `/jit help`.")


def app_command(cmd: Command, user: str) -> app_commands.Command | None:
    """The application's command (:data:`jitaccess.app.commands.VERBS`) a parsed ``/jit``
    verb is, asked by ``user``; ``None`` for the verbs Slack answers itself (help, lists,
    forms)."""
    kind = app_commands.VERBS.get(cmd.name)
    if kind is None:
        return None
    if kind is app_commands.SubmitRequest:
        # A zero duration is falsy but is the service's to refuse, with its message.
        assert cmd.app and cmd.role and cmd.duration is not None and cmd.reason is not None
        return app_commands.SubmitRequest(
            cmd.app, requester=user, role=cmd.role, duration=cmd.duration, justification=cmd.reason
        )
    if kind is app_commands.TakeBreakGlass:
        assert cmd.app and cmd.role and cmd.duration is not None and cmd.reason is not None
        return app_commands.TakeBreakGlass(
            cmd.app,
            actor=user,
            role=cmd.role,
            duration=cmd.duration,
            incident_ref=cmd.extra.get("incident", ""),
            reason=cmd.reason,
        )
    assert cmd.request_id is not None
    rid, reason = cmd.request_id, cmd.reason or ""
    if kind is app_commands.ExtendRequest:
        assert cmd.duration is not None
        return app_commands.ExtendRequest(rid, actor=user, added=cmd.duration, reason=reason)
    if kind is app_commands.CancelRequest:
        return app_commands.CancelRequest(rid, actor=user)
    if kind is app_commands.ReleaseAccess:
        return app_commands.ReleaseAccess(rid, actor=user)
    if kind is app_commands.RevokeAccess:
        return app_commands.RevokeAccess(rid, actor=user, reason=reason)
    if kind is app_commands.ApproveRequest:
        return app_commands.ApproveRequest(rid, actor=user, reason=reason)
    if kind is app_commands.ReviewBreakGlass:
        return app_commands.ReviewBreakGlass(rid, actor=user, reason=reason)
    assert kind is app_commands.DenyRequest, kind
    return app_commands.DenyRequest(rid, actor=user, reason=reason)
