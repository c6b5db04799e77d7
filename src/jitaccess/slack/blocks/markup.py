"""The small shared pieces of every message: the one escaping of typed text for mrkdwn
(:func:`escape`) and for plain_text (:func:`plain`), truncation with a visible marker,
mentions, times in a person's zone, quorum progress, Block Kit's text limits, and what
the lifecycle offers on a request (the buttons follow it)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from slack_sdk.models.blocks import (
    Block,
    ButtonElement,
    MarkdownTextObject,
)

from jitaccess.app.views import ApprovalView, RequestView
from jitaccess.domain.durations import format_duration
from jitaccess.domain.errors import JitError, Mention, Moment, WebLink, utc_text
from jitaccess.domain.lifecycle import Action, RequestState, offers
from jitaccess.slack.principals import GROUP_ID, USER_ID, is_group

TRUNCATED = "… (truncated)"
SECTION_TEXT_MAX = 3000
FIELD_TEXT_MAX = 2000
HOME_ITEMS_MAX = 15
#: The quorums /jit config offers (the CLI takes any up to the policy's maximum).


STATE_LABEL = {
    RequestState.PENDING: ":hourglass_flowing_sand: Pending approval",
    RequestState.APPROVED: ":white_check_mark: Approved",
    RequestState.AUTO_APPROVED: ":robot_face: Approved automatically",
    RequestState.ACTIVE: ":large_green_circle: Active",
    RequestState.EXPIRED: ":checkered_flag: Expired",
    RequestState.DENIED: ":no_entry: Denied",
    RequestState.CANCELLED: ":heavy_multiplication_x: Cancelled",
    RequestState.TIMED_OUT: ":alarm_clock: Timed out",
    RequestState.REVOKED: ":lock: Revoked",
    RequestState.FAILED: ":x: Failed",
}


def escape(text: str) -> str:
    """The one escaping of text people typed, for every field Slack renders as mrkdwn.

    Slack parses ``<…>`` in mrkdwn (a message's top-level ``text``, section and
    context blocks, ephemeral replies and ``respond()``, the feed, the App Home) as
    mentions (``<@U…>``, ``<!here>``, ``<!channel>``, ``<!subteam^S…>``) and links
    (``<https://evil|https://good>`` shows ``https://good``). Its documented escaping
    (api.slack.com, "Formatting text for app surfaces", Escaping text) turns ``&``,
    ``<`` and ``>`` into ``&amp;``, ``&lt;`` and ``&gt;``, and nothing else: every
    justification, reason, incident reference, application name, role, scope and
    backend error goes through here before it joins mrkdwn; only the people and
    channels the service itself names (:func:`user`, ``<#C…>``) stay markup.
    Text for ``plain_text`` fields goes through :func:`plain` instead."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


#: Block Kit's limits on plain_text fields that can show what people typed.
OPTION_TEXT_MAX = 75
BUTTON_TEXT_MAX = 75
MODAL_TITLE_MAX = 24
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def plain(text: str, limit: int) -> str:
    """Text people typed, for a ``plain_text`` field (option text, headers, buttons,
    modal titles): Slack parses no markup there and shows the text as given, so it
    is *not* escaped (``&lt;`` would show as ``&lt;``). It is one line (line breaks
    and other control characters become a space), never empty (Slack refuses an
    empty text: ``-``) and at most ``limit`` characters, cut with a visible marker."""
    line = " ".join(_CONTROL.sub(" ", text).split())
    return truncate(line or "-", limit)


def truncate(text: str, limit: int) -> str:
    """Cut ``text`` to ``limit`` characters with a visible marker, never inside an
    ``&amp;``-style entity (which Slack would then show raw)."""
    if len(text) <= limit:
        return text
    cut = text[: limit - len(TRUNCATED)]
    amp = cut.rfind("&", max(0, len(cut) - 5))
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + TRUNCATED


def user(user_id: str | None) -> str:
    """A person or user group the service names, as a mention; anything that is not
    such an id (whatever a directory answered) is shown as escaped text instead."""
    if not user_id:
        return "-"
    if user_id.startswith("policy:"):
        return "the policy (automatic mode)"
    if user_id == "system":
        return "jitaccess"
    # Only the ids Slack mentions: people (U…/W…) and user groups (S…).
    if not (USER_ID.fullmatch(user_id) or GROUP_ID.fullmatch(user_id)):
        return escape(user_id)
    if is_group(user_id):
        return f"<!subteam^{user_id}>"
    return f"<@{user_id}>"


def quorum_progress(view: RequestView) -> str | None:
    """ "1 of 2 approved: <@ava> (reason)", for a request that needs several approvals
    (or already has some); None otherwise."""
    if view.required_approvals <= 1 and not (view.approvals and deciding(view)):
        return None
    given = ", ".join(f"{user(a.approver)} ({escape(a.reason)})" for a in view.approvals)
    line = f"{len(view.approvals)} of {view.required_approvals} approved"
    return f"{line}: {given}" if given else line


def extension_progress(view: RequestView) -> str | None:
    """ "1 of 2 approved: <@ava> (reason)" for a pending extension that needs several
    approvals (or already has some); None otherwise."""
    if view.extension_ends_at is None:
        return None
    if view.required_approvals <= 1 and not view.extension_approvals:
        return None
    return approvals_line(view.extension_approvals, view.required_approvals)


def approvals_line(approvals: Sequence[ApprovalView], required: int) -> str:
    given = ", ".join(f"{user(a.approver)} ({escape(a.reason)})" for a in approvals)
    line = f"{len(approvals)} of {required} approved"
    return f"{line}: {given}" if given else line


#: What may stand between ``<`` and ``|`` of a Slack link: an http(s) address with no
#: space, no control character and none of the characters that would end the link early.
_LINKABLE = re.compile(r"https?://[^\s<>|\x00-\x1f\x7f]+")


def link(url: str, label: str) -> str:
    """A link the service made (a sign-in page, a portal blade) as mrkdwn: ``label``
    shown, ``url`` followed. The address's ``&`` is written ``&amp;``, as Slack escapes
    it everywhere outside control sequences (and decodes it when the link is followed).
    An address that is not a plain http(s) URL is shown as escaped text instead, never
    as markup."""
    if not _LINKABLE.fullmatch(url):
        return escape(f"{label}: {url}")
    return f"<{escape(url)}|{escape(label)}>"


def mention_users(message: str | JitError) -> str:
    """A service message as mrkdwn: its text escaped, and only the people the service
    named (:class:`Mention`, an actor field) shown as mentions, only the links it
    made (:class:`WebLink`) shown as links, and its times (:class:`Moment`) as date
    tokens, in each reader's zone. Words that look like user ids (``UTC``, an
    id typed in a reason) stay text: nobody is pinged by them."""
    parts = message.parts if isinstance(message, JitError) else (message,)
    shown: list[str] = []
    for part in parts:
        if isinstance(part, Mention):
            shown.append(user(part.user_id))
        elif isinstance(part, WebLink):
            shown.append(link(part.url, part.label))
        elif isinstance(part, Moment):
            shown.append(when(part.at))
        else:
            shown.append(escape(part))
    return "".join(shown)


def plain_message(message: str | JitError, now: datetime) -> str:
    """A service message for a plain_text field (a modal input's error), where Slack
    shows no date token and a clock time would be in nobody's zone: each moment in it
    is said as a duration from ``now`` ("in 2h", "15m ago") instead."""
    parts = message.parts if isinstance(message, JitError) else (message,)
    shown: list[str] = []
    for part in parts:
        if isinstance(part, Moment):
            shown.append(relative(part.at, now))
        else:
            shown.append(str(part))
    return "".join(shown)


def relative(moment: datetime, now: datetime) -> str:
    """``moment`` as a duration from ``now``: "in 2h 15m", "15m ago", "now"."""
    delta = moment - now
    if abs(delta) < timedelta(minutes=1):
        return "now"
    if delta > timedelta(0):
        return f"in {format_duration(_whole_minutes(delta))}"
    return f"{format_duration(_whole_minutes(-delta))} ago"


def _whole_minutes(delta: timedelta) -> timedelta:
    return timedelta(minutes=int(delta.total_seconds() // 60))


def zone(name: str | None) -> tzinfo:
    try:
        return ZoneInfo(name) if name else UTC
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


#: How a moment reads: "Dec 7, 2026 18:32", or "today 18:32", in the reader's zone and
#: with their 12/24-hour preference (Slack's date formatting tokens).
MOMENT_TOKENS = "{date_short_pretty} {time}"


def date_token(
    moment: datetime,
    tokens: str = MOMENT_TOKENS,
    *,
    fallback: str | None = None,
    link_url: str | None = None,
) -> str:
    """``moment`` written with Slack's date formatting (api.slack.com, "Formatting
    text for app surfaces", Date formatting): ``<!date^EPOCH^TOKENS|fallback>``, which
    Slack shows in each reader's own time zone and locale, and the fallback (UTC, for
    clients that cannot format it: notifications, email) otherwise. Only for mrkdwn:
    a plain_text field shows the token as written, so it carries no clock time."""
    link_part = f"^{link_url}" if link_url and _LINKABLE.fullmatch(link_url) else ""
    shown = escape(fallback if fallback is not None else utc_text(moment)).replace("|", "/")
    return f"<!date^{int(moment.timestamp())}^{tokens}{link_part}|{shown}>"


def when(moment: datetime) -> str:
    """A moment for mrkdwn, in the reader's own zone (Slack formats the token for each
    reader, so nobody's zone is looked up)."""
    return date_token(moment)


def window(view: RequestView) -> str:
    """A request's window for mrkdwn: ``today 10:00 - 12:00 (2h)`` in the reader's zone;
    an end on another day (in UTC) shows its date too."""
    start, end = view.starts_at.astimezone(UTC), view.ends_at.astimezone(UTC)
    if start.date() == end.date():
        end_text = date_token(end, "{time}", fallback=f"{end:%H:%M} UTC")
    else:
        end_text = date_token(end)
    return f"{date_token(start)} – {end_text} ({format_duration(view.duration)})"


def md(text: str) -> MarkdownTextObject:
    return MarkdownTextObject(text=text)


def button(text: str, action_id: str, request_id: int, style: str | None = None) -> ButtonElement:
    return ButtonElement(
        text=plain(text, BUTTON_TEXT_MAX), action_id=action_id, value=str(request_id), style=style
    )


def dump(blocks: Sequence[Block]) -> list[dict[str, Any]]:
    return [block.to_dict() for block in blocks]  # to_dict() validates Block Kit limits


def offered_actions(view: RequestView) -> frozenset[Action]:
    """What people may do to ``view`` now, as the lifecycle says (the buttons follow it)."""
    return offers(view.state, view.end_requested is not None)


def deciding(view: RequestView) -> bool:
    """Is the request waiting for its approvers' decision (approve or deny offered)?"""
    return Action.APPROVE in offers(view.state)


def extendable(view: RequestView) -> bool:
    """Is the window one that can still be extended (whatever is under way)?"""
    return Action.EXTEND in offers(view.state)
