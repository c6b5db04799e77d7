"""The product rules, as pure functions over plain values.

Every refusal raises :class:`RuleViolation` with a message that says what to
change. Times are arguments: nothing here reads a clock.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from functools import partial

from jitaccess.domain.durations import format_duration
from jitaccess.domain.errors import Findings, Moment, RuleViolation
from jitaccess.domain.principals import PrincipalRules
from jitaccess.domain.text import check_text, check_texts, is_blank, shown

DEFAULT_MAX_DURATION = timedelta(hours=8)
DEFAULT_APPROVAL_TIMEOUT = timedelta(hours=24)
#: The longest break-glass access unless the policy says otherwise.
DEFAULT_BREAKGLASS_MAX = timedelta(hours=1)
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

#: The most approvals a policy may require (a quorum, not a committee).
MAX_REQUIRED_APPROVALS = 10


class ApprovalMode(StrEnum):
    AUTOMATIC = "automatic"
    MANUAL = "manual"


#: Each approval mode as a person reads it (Slack cards, ``/jit apps``, the CLI).
MODE_WORDS: dict[str, str] = {
    ApprovalMode.MANUAL: "approvers decide",
    ApprovalMode.AUTOMATIC: "approved automatically by the policy, approvers are told",
}


def mode_words(mode: str) -> str:
    """``mode`` in plain words; an unknown value is shown as it is."""
    return MODE_WORDS.get(mode, mode)


def check_user_id(value: str, what: str, ids: PrincipalRules) -> str:
    """Return ``value``, trimmed, if it names a person (the front end's ``ids`` decide)."""
    field = what.lower() + "s"
    check_text(value, f"{what} ID '{shown(value)}'", field=field)
    return ids.person(value, what, field)


def check_person_or_group(
    value: str, ids: PrincipalRules, what: str = "Approver", field: str = "approvers"
) -> str:
    """Return ``value``, trimmed, if it names a person or a user group: approvers and
    break-glass holders may be either."""
    check_text(value, f"{what} ID '{shown(value)}'", field=field)
    return ids.person_or_group(value, what, field)


def check_approver_id(value: str, ids: PrincipalRules) -> str:
    return check_person_or_group(value, ids)


def check_feed_channel(value: str | None, ids: PrincipalRules) -> str | None:
    """The channel an application's requests are posted to, or None (no feed).
    Blank turns the feed off."""
    if value is None or is_blank(value):
        return None
    check_text(value, f"Feed channel '{shown(value)}'", field="feed_channel")
    return ids.channel(value, "Feed channel", "feed_channel")


def check_definition(what: str, **parts: object) -> None:
    """Refuse text that cannot be stored anywhere in a definition (CLI flags, YAML)."""
    for key, value in parts.items():
        check_texts(value, f"{what}'s {key.replace('_', ' ')}", field=key)


def check_user_ids(values: Iterable[str], what: str, ids: PrincipalRules) -> tuple[str, ...]:
    """Validate and de-duplicate a list of people's ids, keeping their order; every
    bad one is reported (:class:`Problems`), not just the first."""
    found = Findings()
    seen: dict[str, None] = {}
    for value in values:
        seen[found(partial(check_user_id, value, what, ids), value)] = None
    found.raise_any()
    return tuple(seen)


def _invisible_char(value: str) -> str | None:
    """The first whitespace or control (or other invisible) character in ``value``."""
    for char in value:
        if char.isspace() or unicodedata.category(char) in ("Cc", "Cf", "Zs", "Zl", "Zp"):
            return char
    return None


def check_scope(value: str) -> str:
    """A scope is one identifier (a resource ID): no whitespace or control characters
    anywhere, not even at the ends (a pasted line break would be stored and then sent to
    the backend). What else a scope must look like is the provider's business
    (``validate_scope``)."""
    check_text(value, f"Scope '{shown(value)}'", field="scope")
    if not value:
        raise RuleViolation("A scope is required: the managed resource group's ID", field="scope")
    bad = _invisible_char(value)
    if bad is not None:
        kind = "a space" if bad == " " else f"an invisible or control character (U+{ord(bad):04X})"
        raise RuleViolation(
            f"Scope '{shown(value)}' contains {kind}: a scope is one resource ID with no "
            "spaces, line breaks or control characters, like "
            "/subscriptions/<subscription-id>/resourceGroups/<name>",
            field="scope",
        )
    return value


def check_roles(values: Iterable[str]) -> tuple[str, ...]:
    """Eligible roles, trimmed and de-duplicated in order. A role name may hold spaces
    ("Custom Ops") but no line break, tab or other control character."""
    found = Findings()
    roles: dict[str, None] = {}
    for value in values:
        role = value.strip()
        if not role:
            continue
        bad = next((c for c in role if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")), None)
        if bad is not None:
            found.add(
                RuleViolation(
                    f"Role '{shown(role)}' contains a control character (U+{ord(bad):04X}): "
                    "type the role name on one line, without tabs or line breaks",
                    field="roles",
                )
            )
            continue
        roles[role] = None
    found.raise_any()
    return tuple(roles)


def check_breakglass_holders(values: Iterable[str], ids: PrincipalRules) -> tuple[str, ...]:
    """People or user groups named for break-glass, de-duplicated in order."""
    return tuple(
        dict.fromkeys(
            check_person_or_group(v, ids, "Break-glass holder", "breakglass") for v in values
        )
    )


@dataclass(frozen=True)
class Policy:
    """An application's JIT policy. Changes apply to requests submitted afterwards."""

    mode: ApprovalMode = ApprovalMode.AUTOMATIC
    max_duration: timedelta = DEFAULT_MAX_DURATION
    approvers: tuple[str, ...] = ()
    approval_timeout: timedelta = DEFAULT_APPROVAL_TIMEOUT
    #: People or groups (``S…``) who may take access at once, without approval.
    breakglass: tuple[str, ...] = ()
    #: The longest break-glass access.
    breakglass_max: timedelta = DEFAULT_BREAKGLASS_MAX
    #: How many different approvers must approve (a quorum); one denial denies.
    required_approvals: int = 1
    #: The Slack channel every request is posted to and updated in, alongside the
    #: approvers' DMs (no buttons there: decisions stay in DMs); None: no feed.
    feed_channel: str | None = None

    def validated(self, ids: PrincipalRules) -> Policy:
        """The policy, cleaned; every rule it breaks is reported at once. ``ids`` are
        the front end's rules for the approvers', holders' and feed's ids."""
        found = Findings()
        approvers = found(
            lambda: tuple(dict.fromkeys(check_approver_id(a, ids) for a in self.approvers)),
            self.approvers,
        )
        holders = found(lambda: check_breakglass_holders(self.breakglass, ids), self.breakglass)
        if self.mode is ApprovalMode.MANUAL and not approvers:
            found.add(
                RuleViolation(
                    "Manual approval needs at least one approver: add one (--approver U…) "
                    "or a user group (--approver S…), or use automatic mode",
                    field="approvers",
                )
            )
        if not found:  # without approvers, the quorum has nothing to be checked against
            found(
                lambda: check_required_approvals(
                    self.required_approvals, approvers, self.mode, ids
                ),
                None,
            )
        for name, key, value in (
            ("Maximum duration", "max_duration", self.max_duration),
            ("Approval timeout", "approval_timeout", self.approval_timeout),
            ("Break-glass maximum", "breakglass_max", self.breakglass_max),
        ):
            found(partial(check_policy_duration, name, key, value), None)
        feed_channel = found(lambda: check_feed_channel(self.feed_channel, ids), None)
        found.raise_any()
        return replace(
            self,
            approvers=approvers,
            breakglass=holders,
            feed_channel=feed_channel,
        )


def check_policy_duration(name: str, key: str, value: timedelta) -> None:
    if value <= timedelta(0):
        raise RuleViolation(f"{name} must be positive, not {format_duration(value)}", field=key)
    if value < MIN_DURATION:
        raise RuleViolation(f"{name} {format_duration(value)} is too short: at least 1m", field=key)
    if value > MAX_POLICY_DURATION:
        raise RuleViolation(
            f"{name} {format_duration(value)} is too long: "
            f"at most {format_duration(MAX_POLICY_DURATION)}",
            field=key,
        )


def check_required_approvals(
    required: int, approvers: Sequence[str], mode: ApprovalMode, ids: PrincipalRules
) -> None:
    """At least one approval, and no more than there are approvers. With a group
    among them, how many people that makes is only known when asked: submission
    checks it then (:func:`check_enough_deciders`)."""
    if required < 1:
        raise RuleViolation(
            f"Required approvals must be at least 1, not {required}",
            field="required_approvals",
        )
    if required > MAX_REQUIRED_APPROVALS:
        raise RuleViolation(
            f"Required approvals {required} is too many: at most {MAX_REQUIRED_APPROVALS}",
            field="required_approvals",
        )
    has_group = any(ids.is_group(a) for a in approvers)
    if mode is ApprovalMode.MANUAL and not has_group and required > len(approvers):
        raise RuleViolation(
            f"{required} approvals are required but only {len(approvers)} approver"
            f"{'s are' if len(approvers) != 1 else ' is'} listed: add approvers or "
            f"lower required approvals to {len(approvers)}",
            field="required_approvals",
        )


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


def check_not_yet_approved(approvals: Sequence[str], actor: str, request_id: int) -> None:
    """The same approver never counts twice toward a quorum."""
    if actor in approvals:
        raise RuleViolation(
            f"You already approved request {request_id}: another approver must approve it"
        )


def check_enough_deciders(
    app_name: str, deciders: Sequence[str], requester: str, required: int
) -> None:
    """Refuse a request nobody could approve: the requester never counts."""
    others = [d for d in deciders if d != requester]
    if len(others) < required:
        who = "approver" if len(others) == 1 else "approvers"
        raise RuleViolation(
            f"{app_name} needs {required} approval{'s' if required != 1 else ''} but only "
            f"{len(others)} {who} other than you can decide: ask {app_name}'s consumer "
            "admins to add approvers or lower its required approvals",
            field="app",
        )


def quorum_line(approvals: Sequence[str], required: int) -> str:
    """How far a quorum has come, e.g. "1 of 2 approved"."""
    return f"{len(approvals)} of {required} approved"


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


def check_revoker(app: AppRules, actor: str, approvers: Sequence[str] | None = None) -> None:
    """Approvers (``approvers``: the policy's people and group members, when known)
    and consumer admins may end someone's active grant early."""
    people = app.policy.approvers if approvers is None else approvers
    if actor not in people and actor not in app.admins:
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
    if state not in EXTENDABLE_STATES:
        raise RuleViolation(
            f"Request {request_id} is {state}: only an approved or active request can be "
            "extended; submit a new request instead",
            field="duration",
        )
    if ending:
        raise RuleViolation(
            f"Request {request_id} is ending: its access is being revoked, so it can no "
            "longer be extended; submit a new request if you need more time",
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
    #: Its access is being revoked (an end was asked for, or its window ended and the
    #: sweep is revoking): extending it is no longer a way out, waiting for it is.
    ending: bool = False

    def ending_refusal(self, again: str, field: str = "start") -> RuleViolation:
        """The overlap refusal while this request is ending: wait for it, then ``again``."""
        return RuleViolation(
            f"Request {self.request_id} still holds this role here and is ending: its access "
            "is being revoked. Once it has ended (`/jit list` shows it), "
            f"{again}",
            field=field,
        )


def check_no_overlap(window: Window, others: Iterable[OpenWindow]) -> None:
    """Two requests for the same person, role and scope must not overlap: the first to
    end would revoke the grant both rely on. Back-to-back windows are fine."""
    for other in others:
        if window.starts_at < other.window.ends_at and other.window.starts_at < window.ends_at:
            if other.ending:
                raise other.ending_refusal("submit this request again")
            raise RuleViolation(
                f"Request {other.request_id} already gives you this role here until ",
                Moment(other.window.ends_at),
                " and overlaps this window: extend it "
                f"instead (`/jit extend {other.request_id} DURATION reason…` or its Extend "
                "button), or start after it ends",
                field="start",
            )


def check_extension_no_overlap(
    request_id: int,
    window: Window,
    new_end: datetime,
    others: Iterable[OpenWindow],
    *,
    asked: bool = True,
) -> None:
    """An extension must not run into another open request of the same person, role
    and scope: the first of the two to end would revoke the grant both rely on.
    Checked when the requester asks (``asked``) and again when an approver approves (a
    later request may have been submitted meanwhile). The message names the other
    request and the ways out: cancel it, or extend less."""
    extended = Window(window.starts_at, new_end)
    clashing = [
        o
        for o in others
        if o.request_id != request_id
        and extended.starts_at < o.window.ends_at
        and o.window.starts_at < extended.ends_at
    ]
    if not clashing:
        return
    first = min(clashing, key=lambda o: o.window.starts_at)
    room = first.window.starts_at - window.ends_at
    other = (
        f"request {first.request_id} for the same person, role and scope (from ",
        Moment(first.window.starts_at),
        " to ",
        Moment(first.window.ends_at),
        ")",
    )
    if room >= MIN_DURATION:
        less = f"extend by at most {format_duration(room)}, to end when it starts"
    else:
        less = "extend that request instead, since it starts when this one ends"
    if asked:
        way_out = (
            f"cancel request {first.request_id} first (`/jit cancel {first.request_id}`), or {less}"
        )
    else:
        way_out = (
            f"deny this extension; the requester can cancel request {first.request_id} and "
            f"ask again, or {less}"
        )
    raise RuleViolation(
        f"Extending request {request_id} to ",
        Moment(new_end),
        " would overlap ",
        *other,
        f": {way_out}. Nothing was changed",
        field="duration",
    )
