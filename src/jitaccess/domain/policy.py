"""The product rules, as pure functions over plain values.

Every refusal raises :class:`RuleViolation` with a message that says what to
change. Times are arguments: nothing here reads a clock.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from jitaccess.domain.durations import format_duration
from jitaccess.domain.errors import RuleViolation
from jitaccess.domain.text import check_text, check_texts, is_blank, shown

DEFAULT_MAX_DURATION = timedelta(hours=8)
DEFAULT_APPROVAL_TIMEOUT = timedelta(hours=24)
DEFAULT_ROLES = ("Contributor",)
#: A start this far in the past is accepted as "now" (clocks disagree a little).
CLOCK_SKEW = timedelta(minutes=1)
#: Requests may be scheduled at most this far ahead.
MAX_START_AHEAD = timedelta(days=30)
#: Upper bound for any policy duration, so a typo cannot grant for a year.
MAX_POLICY_DURATION = timedelta(days=30)
MAX_JUSTIFICATION = 2000
#: The shortest access (and policy duration) there is: the sweep works in minutes.
MIN_DURATION = timedelta(minutes=1)

_SLACK_USER_ID = re.compile(r"^[UW][A-Z0-9]{1,20}$")


class ApprovalMode(StrEnum):
    AUTOMATIC = "automatic"
    MANUAL = "manual"


def check_user_id(value: str, what: str) -> str:
    """Return ``value`` if it looks like a Slack user ID (``U…``/``W…``)."""
    check_text(value, f"{what} ID '{shown(value)}'", field=what.lower() + "s")
    cleaned = value.strip()
    if not _SLACK_USER_ID.fullmatch(cleaned):
        raise RuleViolation(
            f"{what} '{shown(value)}' is not a Slack user ID: use the member ID (like U0123ABCD), "
            "found in the user's Slack profile under 'Copy member ID'",
            field=what.lower() + "s",
        )
    return cleaned


def check_definition(what: str, **parts: object) -> None:
    """Refuse text that cannot be stored anywhere in a definition (CLI flags, YAML)."""
    for key, value in parts.items():
        check_texts(value, f"{what}'s {key.replace('_', ' ')}", field=key)


def check_user_ids(values: Iterable[str], what: str) -> tuple[str, ...]:
    """Validate and de-duplicate a list of Slack user IDs, keeping their order."""
    seen: dict[str, None] = {}
    for value in values:
        seen[check_user_id(value, what)] = None
    return tuple(seen)


@dataclass(frozen=True)
class Policy:
    """An application's JIT policy. Changes apply to requests submitted afterwards."""

    mode: ApprovalMode = ApprovalMode.AUTOMATIC
    max_duration: timedelta = DEFAULT_MAX_DURATION
    approvers: tuple[str, ...] = ()
    approval_timeout: timedelta = DEFAULT_APPROVAL_TIMEOUT

    def validated(self) -> Policy:
        approvers = check_user_ids(self.approvers, "Approver")
        if self.mode is ApprovalMode.MANUAL and not approvers:
            raise RuleViolation(
                "Manual approval needs at least one approver: add one (--approver U…) "
                "or use automatic mode",
                field="approvers",
            )
        for name, key, value in (
            ("Maximum duration", "max_duration", self.max_duration),
            ("Approval timeout", "approval_timeout", self.approval_timeout),
        ):
            if value <= timedelta(0):
                raise RuleViolation(
                    f"{name} must be positive, not {format_duration(value)}", field=key
                )
            if value < MIN_DURATION:
                raise RuleViolation(
                    f"{name} {format_duration(value)} is too short: at least 1m", field=key
                )
            if value > MAX_POLICY_DURATION:
                raise RuleViolation(
                    f"{name} {format_duration(value)} is too long: "
                    f"at most {format_duration(MAX_POLICY_DURATION)}",
                    field=key,
                )
        return Policy(self.mode, self.max_duration, approvers, self.approval_timeout)


@dataclass(frozen=True)
class AppRules:
    """What the rules need to know about a managed application."""

    name: str
    jit_enabled: bool
    publishers: tuple[str, ...]
    eligible_roles: tuple[str, ...]
    admins: tuple[str, ...] = ()
    policy: Policy = field(default_factory=Policy)


@dataclass(frozen=True)
class Window:
    starts_at: datetime
    ends_at: datetime


def disabled_message(app_name: str) -> str:
    return (
        f"JIT is disabled for {app_name}: the publisher already has permanent access; "
        "JIT cannot be enabled after registration"
    )


def resolve_role(app: AppRules, role: str) -> str:
    """The application's spelling of ``role`` (matched without regard to case)."""
    check_text(role, "The role", field="role")
    wanted = role.strip().casefold()
    for eligible in app.eligible_roles:
        if eligible.casefold() == wanted:
            return eligible
    raise RuleViolation(
        f"'{shown(role)}' is not an eligible role for {app.name}: choose one of "
        + ", ".join(app.eligible_roles),
        field="role",
    )


def check_submission(
    app: AppRules,
    requester: str,
    role: str,
    duration: timedelta,
    starts_at: datetime | None,
    justification: str,
    now: datetime,
) -> tuple[str, Window, str]:
    """Check a new request; return (canonical role, window, cleaned justification)."""
    check_text(requester, "Your user ID")
    check_text(justification, "The justification", field="justification")
    if not app.jit_enabled:
        raise RuleViolation(disabled_message(app.name), field="app")
    if requester not in app.publishers:
        raise RuleViolation(
            f"Only {app.name}'s publishers may request access, and you are not one: "
            "ask a consumer admin to add you as a publisher",
            field="app",
        )
    canonical_role = resolve_role(app, role)
    if duration <= timedelta(0):
        raise RuleViolation(
            "Duration must be positive: ask for at least a minute", field="duration"
        )
    if duration < MIN_DURATION:
        raise RuleViolation(
            f"Duration {format_duration(duration)} is too short: ask for at least a minute",
            field="duration",
        )
    if duration > app.policy.max_duration:
        raise RuleViolation(
            f"Duration {format_duration(duration)} is longer than {app.name}'s maximum of "
            f"{format_duration(app.policy.max_duration)}: ask for "
            f"{format_duration(app.policy.max_duration)} or less",
            field="duration",
        )
    start = now if starts_at is None else starts_at
    if start < now - CLOCK_SKEW:
        raise RuleViolation(
            "The start time is in the past: leave it empty to start now, or pick a later time",
            field="start",
        )
    if start > now + MAX_START_AHEAD:
        raise RuleViolation(
            f"The start time is more than {MAX_START_AHEAD.days} days ahead: pick an earlier time",
            field="start",
        )
    start = max(start, now)
    cleaned = " ".join(justification.split())
    if is_blank(cleaned):
        raise RuleViolation(
            "A justification is required: say why you need this access", field="justification"
        )
    if len(cleaned) > MAX_JUSTIFICATION:
        raise RuleViolation(
            f"The justification is {len(cleaned)} characters long: keep it under "
            f"{MAX_JUSTIFICATION}",
            field="justification",
        )
    return canonical_role, Window(start, start + duration), cleaned


def approval_deadline(created_at: datetime, timeout: timedelta, window: Window) -> datetime:
    """A request still pending at this moment times out."""
    return min(created_at + timeout, window.ends_at)


def check_decider(approvers: Sequence[str], requester: str, actor: str, verb: str) -> None:
    """Only a listed approver may decide, and never on their own request."""
    if actor not in approvers:
        raise RuleViolation(
            f"Only this application's approvers may {verb} requests, and you are not one"
        )
    if actor == requester:
        raise RuleViolation(f"You cannot {verb} your own request: another approver must decide")


def check_reason(reason: str | None, verb: str) -> str:
    check_text(reason or "", "The reason", field="reason")
    cleaned = " ".join((reason or "").split())
    if is_blank(cleaned):
        raise RuleViolation(f"A reason is required to {verb}: say why", field="reason")
    if len(cleaned) > MAX_JUSTIFICATION:
        raise RuleViolation(
            f"The reason is too long: keep it under {MAX_JUSTIFICATION} characters", field="reason"
        )
    return cleaned


def check_revoker(app: AppRules, actor: str) -> None:
    """Approvers and consumer admins may end someone's active grant early."""
    if actor not in app.policy.approvers and actor not in app.admins:
        raise RuleViolation(
            f"Only {app.name}'s approvers and consumer admins may revoke access; "
            "the requester can end their own access with release"
        )


def check_admin(app: AppRules, actor: str) -> None:
    if actor not in app.admins:
        raise RuleViolation(
            f"Only {app.name}'s consumer admins may change its policy, and you are not one"
        )


#: When approvers and admins hear that a revoke keeps failing, measured from the
#: first failure: at once, then after 15 minutes, 1 hour, 4 hours, 1 day, and daily.
REVOKE_ALERT_SCHEDULE = (
    timedelta(0),
    timedelta(minutes=15),
    timedelta(hours=1),
    timedelta(hours=4),
    timedelta(days=1),
)


def revoke_alert_due(failing_since: datetime, now: datetime, alerts_sent: int) -> bool:
    """Is the next "revoke failing" alert due?"""
    schedule = REVOKE_ALERT_SCHEDULE
    if alerts_sent < len(schedule):
        threshold = schedule[alerts_sent]
    else:
        threshold = schedule[-1] + timedelta(days=alerts_sent - len(schedule) + 1)
    return now - failing_since >= threshold


#: States in which a request's window can still be extended.
EXTENDABLE_STATES = frozenset({"approved", "auto_approved", "active"})


def check_extension(
    app: AppRules,
    *,
    request_id: int,
    requester: str,
    actor: str,
    state: str,
    window: Window,
    added: timedelta,
    reason: str,
    ending: bool,
    now: datetime,
) -> tuple[datetime, str]:
    """Check an extension of ``window`` by ``added``; return (new end, cleaned reason).

    The whole window, from the original start to the new end, must stay within the
    application's maximum duration: an extension is not a way around the policy."""
    if actor != requester:
        raise RuleViolation(
            f"Only the requester may extend request {request_id}; approvers and admins can "
            "revoke it instead"
        )
    if state not in EXTENDABLE_STATES or ending:
        what = "being ended" if ending else state
        raise RuleViolation(
            f"Request {request_id} is {what}: only an approved or active request can be "
            "extended; submit a new request instead",
            field="duration",
        )
    if window.ends_at <= now:
        raise RuleViolation(
            f"Request {request_id}'s window already ended: submit a new request instead",
            field="duration",
        )
    if added < MIN_DURATION:
        raise RuleViolation(
            "An extension must add at least a minute: ask for 15m, 1h, …", field="duration"
        )
    maximum = app.policy.max_duration
    new_end = window.ends_at + added
    if new_end - window.starts_at > maximum:
        room = maximum - (window.ends_at - window.starts_at)
        most = (
            f"at most {format_duration(room)} can still be added"
            if room >= MIN_DURATION
            else "nothing more can be added: submit a new request when this one ends"
        )
        raise RuleViolation(
            f"Extending request {request_id} by {format_duration(added)} would make its window "
            f"{format_duration(new_end - window.starts_at)} long, more than {app.name}'s maximum "
            f"of {format_duration(maximum)} counted from the original start: {most}",
            field="duration",
        )
    check_text(reason, "The reason", field="reason")
    cleaned = " ".join(reason.split())
    if is_blank(cleaned):
        raise RuleViolation("A reason is required to extend: say why", field="reason")
    if len(cleaned) > MAX_JUSTIFICATION:
        raise RuleViolation(
            f"The reason is too long: keep it under {MAX_JUSTIFICATION} characters",
            field="reason",
        )
    return new_end, cleaned


def extension_deadline(requested_at: datetime, timeout: timedelta, ends_at: datetime) -> datetime:
    """A pending extension no approver decided times out at this moment: never after
    the current end, since an extension decided later would reopen a closed window."""
    return min(requested_at + timeout, ends_at)


@dataclass(frozen=True)
class OpenWindow:
    """Another open request of the same requester for the same scope and role."""

    request_id: int
    window: Window


def check_no_overlap(window: Window, others: Iterable[OpenWindow]) -> None:
    """Two requests for the same person, role and scope must not overlap: the first to
    end would revoke the grant both rely on. Back-to-back windows are fine."""
    for other in others:
        if window.starts_at < other.window.ends_at and other.window.starts_at < window.ends_at:
            raise RuleViolation(
                f"Request {other.request_id} already gives you this role here until "
                f"{other.window.ends_at:%Y-%m-%d %H:%M} UTC and overlaps this window: extend it "
                f"instead (`/jit extend {other.request_id} DURATION reason…` or its Extend "
                "button), or start after it ends",
                field="start",
            )
