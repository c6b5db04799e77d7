"""Break-glass rules: taking access at once, without approval, and its review. Pure.

A policy names people or Slack user groups who may break glass. The caller expands
the groups (the ``Directory`` port) at the moment of use and passes the people here,
so someone who left a group is refused at once.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from jitaccess.domain.durations import format_duration
from jitaccess.domain.errors import Moment, RuleViolation
from jitaccess.domain.policy import (
    MIN_DURATION,
    AppRules,
    OpenWindow,
    Window,
    check_reason,
    disabled_message,
    resolve_role,
)
from jitaccess.domain.text import check_text, shown

#: Longest incident reference kept (a ticket number or a URL).
MAX_INCIDENT_REF = 200
#: An incident reference names a ticket (it has a digit, like INC-4711) or is a link.
_INCIDENT = re.compile(r"^(?=.*[0-9])\S+$|^https?://\S+$")
USAGE = "`/jit breakglass APP ROLE DURATION INCIDENT reason…`"


@dataclass(frozen=True)
class BreakGlassTake:
    """A checked break-glass request: canonical role, window, incident, reason."""

    role: str
    window: Window
    incident_ref: str
    reason: str


def check_incident(incident_ref: str) -> str:
    """The incident reference, cleaned, or a refusal that says what to give."""
    check_text(incident_ref, "The incident reference", field="incident")
    cleaned = incident_ref.strip()
    if not cleaned:
        raise RuleViolation(
            f"An incident reference is required (like INC-4711 or its URL). Usage: {USAGE}",
            field="incident",
        )
    if len(cleaned) > MAX_INCIDENT_REF:
        raise RuleViolation(
            f"The incident reference is {len(cleaned)} characters long: keep it under "
            f"{MAX_INCIDENT_REF}",
            field="incident",
        )
    if not _INCIDENT.match(cleaned):
        raise RuleViolation(
            f"'{shown(cleaned)}' does not look like an incident reference: give the ticket "
            f"(like INC-4711) or its URL before the reason. Usage: {USAGE}",
            field="incident",
        )
    return cleaned


def check_take(
    app: AppRules,
    holders: Collection[str],
    actor: str,
    role: str,
    duration: timedelta,
    incident_ref: str,
    reason: str,
    now: datetime,
) -> BreakGlassTake:
    """May ``actor`` break glass now? ``holders`` are the people the policy names,
    groups already expanded. Returns what to grant, starting now."""
    check_text(actor, "Your user ID")
    if not app.jit_enabled:
        raise RuleViolation(disabled_message(app.name), field="app")
    if not app.policy.breakglass:
        raise RuleViolation(
            f"{app.name} allows no break-glass access: use `/jit request`, or ask a consumer "
            f"admin to name break-glass holders (apps policy {app.name} --breakglass U…)",
            field="app",
        )
    if actor not in app.publishers or actor not in holders:
        raise RuleViolation(
            f"You are not named for break-glass on {app.name} (as a publisher, or in a named "
            "group): use `/jit request`, or ask a consumer admin to add you",
            field="app",
        )
    canonical_role = resolve_role(app, role)
    cap = app.policy.breakglass_max
    if duration < MIN_DURATION:
        raise RuleViolation(
            f"Duration {format_duration(duration)} is too short: ask for at least a minute",
            field="duration",
        )
    if duration > cap:
        raise RuleViolation(
            f"Break-glass on {app.name} lasts at most {format_duration(cap)}, not "
            f"{format_duration(duration)}: ask for {format_duration(cap)} or less (and "
            "`/jit request` for anything longer)",
            field="duration",
        )
    incident = check_incident(incident_ref)
    cleaned = check_reason(reason, "break glass")
    return BreakGlassTake(canonical_role, Window(now, now + duration), incident, cleaned)


def check_no_overlap(window: Window, others: Iterable[OpenWindow]) -> None:
    """Break-glass obeys the overlap rule too: its end would revoke the grant another
    request of the same person, role and scope still relies on. In an emergency the
    way out must be one command, so the message names it."""
    for other in others:
        if window.starts_at < other.window.ends_at and other.window.starts_at < window.ends_at:
            if other.ending:
                raise other.ending_refusal("break glass again", field="role")
            raise RuleViolation(
                f"Request {other.request_id} already covers this role here until ",
                Moment(other.window.ends_at),
                ": if it is active, extend it "
                f"(`/jit extend {other.request_id} DURATION reason…`); if it is still waiting, "
                f"cancel it (`/jit cancel {other.request_id}`) and break glass again",
                field="role",
            )


def check_reviewer(reviewers: Collection[str], requester: str, actor: str, app_name: str) -> None:
    """Approvers (groups expanded) and consumer admins review; never the requester."""
    if actor == requester:
        raise RuleViolation(
            "You cannot review your own break-glass access: an approver or admin must"
        )
    if actor not in reviewers:
        raise RuleViolation(
            f"Only {app_name}'s approvers and consumer admins may review break-glass access, "
            "and you are neither"
        )
