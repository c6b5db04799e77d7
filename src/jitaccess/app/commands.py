"""One table of the things people ask of jitaccess about a request, shared by every
front end: a command is a frozen dataclass, each has one handler, and :func:`handle`
dispatches through :data:`HANDLERS` (a message bus's command table). Slack parses
``/jit`` text into these (``jitaccess.slack.commands``), the CLI's Typer commands build
them from their options; both run them here, so a verb means the same everywhere.
:data:`VERBS` names each by its ``/jit`` verb.

Only the facade's public methods are called (``JitService`` and its ``extensions``);
what each front end says about the outcome stays its own."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, overload

if TYPE_CHECKING:
    from jitaccess.app.extensions import ExtensionOutcome
    from jitaccess.app.service import JitService
    from jitaccess.app.views import RequestView


@dataclass(frozen=True)
class SubmitRequest:
    """Ask for ``role`` on ``app`` for ``duration`` (from ``starts_at``, or now)."""

    app: str
    requester: str
    role: str
    duration: timedelta
    justification: str
    starts_at: datetime | None = None


@dataclass(frozen=True)
class CancelRequest:
    """Withdraw one's own request before it starts."""

    request_id: int
    actor: str


@dataclass(frozen=True)
class ReleaseAccess:
    """End one's own access early ("I'm done")."""

    request_id: int
    actor: str


@dataclass(frozen=True)
class RevokeAccess:
    """End someone's access early (approvers and consumer admins)."""

    request_id: int
    actor: str
    reason: str


@dataclass(frozen=True)
class ApproveRequest:
    request_id: int
    actor: str
    reason: str


@dataclass(frozen=True)
class DenyRequest:
    request_id: int
    actor: str
    reason: str


@dataclass(frozen=True)
class ExtendRequest:
    """Add ``added`` to an approved or active request, on the same grant."""

    request_id: int
    actor: str
    added: timedelta
    reason: str


@dataclass(frozen=True)
class ApproveExtension:
    request_id: int
    actor: str
    reason: str
    #: The end the approver's card showed: a decision on a different extension is refused.
    shown_end: datetime | None = None


@dataclass(frozen=True)
class DenyExtension:
    request_id: int
    actor: str
    reason: str
    #: The end the approver's card showed: a decision on a different extension is refused.
    shown_end: datetime | None = None


@dataclass(frozen=True)
class TakeBreakGlass:
    """Take access at once, without approval (break-glass holders); reviewed afterwards."""

    app: str
    actor: str
    role: str
    duration: timedelta
    incident_ref: str
    reason: str


@dataclass(frozen=True)
class ReviewBreakGlass:
    """Acknowledge a break-glass request afterwards (approvers and consumer admins)."""

    request_id: int
    actor: str
    reason: str


#: The commands whose outcome is the request as it now is.
RequestCommand = (
    SubmitRequest
    | CancelRequest
    | ReleaseAccess
    | RevokeAccess
    | ApproveRequest
    | DenyRequest
    | ApproveExtension
    | DenyExtension
    | TakeBreakGlass
    | ReviewBreakGlass
)
Command = RequestCommand | ExtendRequest


def _submit(service: JitService, c: SubmitRequest, now: datetime) -> RequestView:
    return service.submit(
        c.app,
        requester=c.requester,
        role=c.role,
        duration=c.duration,
        justification=c.justification,
        starts_at=c.starts_at,
        now=now,
    )


def _cancel(service: JitService, c: CancelRequest, now: datetime) -> RequestView:
    return service.cancel(c.request_id, actor=c.actor, now=now)


def _release(service: JitService, c: ReleaseAccess, now: datetime) -> RequestView:
    return service.release(c.request_id, actor=c.actor, now=now)


def _revoke(service: JitService, c: RevokeAccess, now: datetime) -> RequestView:
    return service.revoke(c.request_id, actor=c.actor, reason=c.reason, now=now)


def _approve(service: JitService, c: ApproveRequest, now: datetime) -> RequestView:
    return service.approve(c.request_id, actor=c.actor, reason=c.reason, now=now)


def _deny(service: JitService, c: DenyRequest, now: datetime) -> RequestView:
    return service.deny(c.request_id, actor=c.actor, reason=c.reason, now=now)


def _extend(service: JitService, c: ExtendRequest, now: datetime) -> ExtensionOutcome:
    service.refuse_if_native(c.request_id, "extending it")
    return service.extensions.extend(
        c.request_id, actor=c.actor, added=c.added, reason=c.reason, now=now
    )


def _approve_extension(service: JitService, c: ApproveExtension, now: datetime) -> RequestView:
    return service.extensions.approve(
        c.request_id, actor=c.actor, reason=c.reason, now=now, shown_end=c.shown_end
    )


def _deny_extension(service: JitService, c: DenyExtension, now: datetime) -> RequestView:
    return service.extensions.deny(
        c.request_id, actor=c.actor, reason=c.reason, now=now, shown_end=c.shown_end
    )


def _take_breakglass(service: JitService, c: TakeBreakGlass, now: datetime) -> RequestView:
    return service.breakglass.take(
        c.app,
        actor=c.actor,
        role=c.role,
        duration=c.duration,
        incident_ref=c.incident_ref,
        reason=c.reason,
        now=now,
    )


def _review_breakglass(service: JitService, c: ReviewBreakGlass, now: datetime) -> RequestView:
    return service.breakglass.review(c.request_id, actor=c.actor, reason=c.reason, now=now)


#: Command type -> its one handler.
HANDLERS: dict[type[Any], Callable[[JitService, Any, datetime], RequestView | ExtensionOutcome]]
HANDLERS = {
    SubmitRequest: _submit,
    CancelRequest: _cancel,
    ReleaseAccess: _release,
    RevokeAccess: _revoke,
    ApproveRequest: _approve,
    DenyRequest: _deny,
    ExtendRequest: _extend,
    ApproveExtension: _approve_extension,
    DenyExtension: _deny_extension,
    TakeBreakGlass: _take_breakglass,
    ReviewBreakGlass: _review_breakglass,
}

#: ``/jit`` verb -> the command it is.
VERBS: dict[str, type[Command]] = {
    "request": SubmitRequest,
    "cancel": CancelRequest,
    "release": ReleaseAccess,
    "revoke": RevokeAccess,
    "approve": ApproveRequest,
    "deny": DenyRequest,
    "extend": ExtendRequest,
    "breakglass": TakeBreakGlass,
    "ack": ReviewBreakGlass,
}


@overload
def handle(service: JitService, command: ExtendRequest, now: datetime) -> ExtensionOutcome: ...
@overload
def handle(service: JitService, command: RequestCommand, now: datetime) -> RequestView: ...
def handle(service: JitService, command: Command, now: datetime) -> RequestView | ExtensionOutcome:
    """Run ``command`` with its handler from :data:`HANDLERS`."""
    return HANDLERS[type(command)](service, command, now)
