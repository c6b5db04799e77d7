"""Block Kit for every message, modal and home tab the app shows.

Built with ``slack_sdk.models`` so Block Kit's limits are checked before
anything is sent; long free text is truncated here with a visible marker.
Pure: views in, JSON-able dicts out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    DateTimePickerElement,
    DividerBlock,
    HeaderBlock,
    InputBlock,
    MarkdownTextObject,
    Option,
    PlainTextInputElement,
    SectionBlock,
    StaticSelectElement,
    UserMultiSelectElement,
)
from slack_sdk.models.views import View

from jitaccess.app.views import ApprovalView, AppView, RequestView
from jitaccess.domain.activity import ActivitySummary
from jitaccess.domain.durations import format_duration
from jitaccess.domain.errors import JitError, Mention
from jitaccess.domain.lifecycle import Action, RequestState, offers
from jitaccess.slack import ids
from jitaccess.slack.ids import is_group

# callback ids (modals) and action ids (buttons); listeners route on these.
REQUEST_MODAL = "jit_request"
DECISION_MODAL = "jit_decision"
CONFIG_MODAL = "jit_config"
APPROVE = "jit_approve"
DENY = "jit_deny"
REVOKE = "jit_revoke"
CANCEL = "jit_cancel"
RELEASE = "jit_release"
APP_PICKED = "jit_request_app"
BREAKGLASS_ACK = "jit_breakglass_ack"
REVIEW_MODAL = "jit_breakglass_review"
EXTEND = "jit_extend"
EXTEND_MODAL = "jit_extend_modal"
APPROVE_EXTENSION = "jit_approve_extension"
DENY_EXTENSION = "jit_deny_extension"

TRUNCATED = "… (truncated)"
SECTION_TEXT_MAX = 3000
FIELD_TEXT_MAX = 2000
HOME_ITEMS_MAX = 15
#: The quorums /jit config offers (the CLI takes any up to the policy's maximum).
QUORUM_CHOICES = 5
DURATION_CHOICES = (
    timedelta(minutes=15),
    timedelta(minutes=30),
    timedelta(hours=1),
    timedelta(hours=2),
    timedelta(hours=4),
    timedelta(hours=8),
    timedelta(hours=12),
    timedelta(hours=24),
)
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
    if not (ids.USER_ID.fullmatch(user_id) or ids.GROUP_ID.fullmatch(user_id)):
        return escape(user_id)
    if is_group(user_id):
        return f"<!subteam^{user_id}>"
    return f"<@{user_id}>"


def quorum_progress(view: RequestView) -> str | None:
    """ "1 of 2 approved: <@ava> (reason)", for a request that needs several approvals
    (or already has some); None otherwise."""
    if view.required_approvals <= 1 and not (view.approvals and _deciding(view)):
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
    return _approvals_line(view.extension_approvals, view.required_approvals)


def _approvals_line(approvals: Sequence[ApprovalView], required: int) -> str:
    given = ", ".join(f"{user(a.approver)} ({escape(a.reason)})" for a in approvals)
    line = f"{len(approvals)} of {required} approved"
    return f"{line}: {given}" if given else line


def mention_users(message: str | JitError) -> str:
    """A service message as mrkdwn: its text escaped, and only the people the service
    named (:class:`Mention`, an actor field) shown as mentions. Words that look like
    user ids (``UTC``, an id typed in a reason) stay text: nobody is pinged by them."""
    parts = message.parts if isinstance(message, JitError) else (message,)
    return "".join(
        user(part.user_id) if isinstance(part, Mention) else escape(part) for part in parts
    )


def zone(name: str | None) -> tzinfo:
    try:
        return ZoneInfo(name) if name else UTC
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def when(moment: datetime, tz: tzinfo) -> str:
    local = moment.astimezone(tz)
    return f"{local:%a %d %b %H:%M} {local.tzname() or 'UTC'}"


def window(view: RequestView, tz: tzinfo) -> str:
    start, end = view.starts_at.astimezone(tz), view.ends_at.astimezone(tz)
    end_text = f"{end:%H:%M}" if start.date() == end.date() else f"{end:%a %d %b %H:%M}"
    return (
        f"{start:%a %d %b %H:%M} – {end_text} {end.tzname() or 'UTC'} "
        f"({format_duration(view.duration)})"
    )


def _md(text: str) -> MarkdownTextObject:
    return MarkdownTextObject(text=text)


def _button(text: str, action_id: str, request_id: int, style: str | None = None) -> ButtonElement:
    return ButtonElement(
        text=plain(text, BUTTON_TEXT_MAX), action_id=action_id, value=str(request_id), style=style
    )


def _dump(blocks: Sequence[Block]) -> list[dict[str, Any]]:
    return [block.to_dict() for block in blocks]  # to_dict() validates Block Kit limits


def request_fields(view: RequestView, tz: tzinfo) -> SectionBlock:
    return SectionBlock(
        fields=[
            _md(f"*Requester*\n{user(view.requester)}"),
            _md(f"*Application*\n{escape(view.app)}"),
            _md(f"*Role*\n{escape(view.role)}"),
            _md(f"*Window*\n{window(view, tz)}"),
            _md(f"*Resource group*\n`{truncate(escape(view.scope), 300)}`"),
            _md(f"*Policy*\n{view.approval_mode} approval"),
        ]
    )


def justification(view: RequestView) -> SectionBlock:
    return SectionBlock(
        text=_md(truncate(f"*Justification*\n>{escape(view.justification)}", SECTION_TEXT_MAX))
    )


def outcome_lines(view: RequestView, tz: tzinfo) -> list[str]:
    """Who decided and why, and how access began and ended."""
    lines = [f"*{STATE_LABEL.get(RequestState(view.state), view.state)}*"]
    if view.decided_by and not _deciding(view):
        verb = "Denied" if view.state == RequestState.DENIED else "Approved"
        reason = (
            f": {escape(view.decision_reason)}"
            if view.decision_reason and not view.decided_by.startswith("policy:")
            else ""
        )
        lines.append(f"{verb} by {user(view.decided_by)}{reason}")
    progress = quorum_progress(view)
    if progress is not None and (view.approvals or _deciding(view)):
        lines.append(progress)
    if view.activated_at:
        lines.append(f"Access granted {when(view.activated_at, tz)}")
    if view.ended_at and view.state != RequestState.DENIED:
        by = f" by {user(view.ended_by)}" if view.ended_by and view.ended_by != "system" else ""
        why = f": {escape(view.end_reason)}" if view.end_reason else ""
        lines.append(f"Ended {when(view.ended_at, tz)}{by}{why}")
    if view.revoke_failing_since:
        lines.append(
            f":warning: Revoke failing since {when(view.revoke_failing_since, tz)} "
            f"({view.attempts} attempts): {escape(view.last_error or '')}"
        )
    elif view.attempts and view.last_error:
        lines.append(
            f":warning: Backend failing ({view.attempts} attempts): {escape(view.last_error)}"
        )
    return lines


def _offers(view: RequestView) -> frozenset[Action]:
    """What people may do to ``view`` now, as the lifecycle says (the buttons follow it)."""
    return offers(view.state, view.end_requested is not None)


def _deciding(view: RequestView) -> bool:
    """Is the request waiting for its approvers' decision (approve or deny offered)?"""
    return Action.APPROVE in offers(view.state)


def _extendable(view: RequestView) -> bool:
    """Is the window one that can still be extended (whatever is under way)?"""
    return Action.EXTEND in offers(view.state)


def no_longer_approver_text(view: RequestView) -> str:
    text = f"You are no longer an approver of {escape(view.app)}"
    if _deciding(view):
        return text + "; this request is decided by the current approvers."
    return text + "."


def approver_card(
    view: RequestView, tz: tzinfo, *, current: bool = True, viewer: str | None = None
) -> tuple[str, list[dict[str, Any]]]:
    """The approver's DM card: the request, then buttons or the outcome. An approver
    no longer on the policy (``current`` False) is told so and gets no buttons; one
    who already approved (``viewer``) sees the quorum's progress without buttons."""
    blocks: list[Block] = [
        HeaderBlock(text=f"Access request #{view.id}"),
        request_fields(view, tz),
        justification(view),
    ]
    text = f"{view.requester} asks for {escape(view.role)} on {escape(view.app)}"
    if not current:
        if not _deciding(view):
            blocks.append(
                SectionBlock(
                    text=_md(truncate("\n".join(outcome_lines(view, tz)), SECTION_TEXT_MAX))
                )
            )
        blocks.append(
            ContextBlock(elements=[_md(f":information_source: {no_longer_approver_text(view)}")])
        )
        return truncate(f"{no_longer_approver_text(view)} ({text})", 300), _dump(blocks)
    offered = _offers(view)
    if Action.APPROVE in offered:
        progress = quorum_progress(view)
        if progress is not None:
            blocks.append(SectionBlock(text=_md(truncate(progress, SECTION_TEXT_MAX))))
        if viewer is not None and viewer in view.approved_by:
            how = "You approved; the other approvers decide the rest."
        else:
            blocks.append(
                ActionsBlock(
                    block_id=f"decide:{view.id}",
                    elements=[
                        _button("Approve", APPROVE, view.id, "primary"),
                        _button("Deny", DENY, view.id, "danger"),
                    ],
                )
            )
            how = (
                "One approver decides, giving a reason."
                if view.required_approvals <= 1
                else f"{view.required_approvals} approvers must approve, each giving a reason; "
                "one denial denies."
            )
        blocks.append(
            ContextBlock(elements=[_md(f"{how} Times out {when(view.approval_deadline_at, tz)}.")])
        )
    else:
        blocks.append(
            SectionBlock(text=_md(truncate("\n".join(outcome_lines(view, tz)), SECTION_TEXT_MAX)))
        )
        if Action.REVOKE in offered:
            blocks.append(
                ActionsBlock(
                    block_id=f"oversee:{view.id}",
                    elements=[_button("Revoke", REVOKE, view.id, "danger")],
                )
            )
    return truncate(text, 300), _dump(blocks)


def feed_card(view: RequestView) -> tuple[str, list[dict[str, Any]]]:
    """The request's message in the application's feed channel: the approver card's
    facts without its buttons (decisions stay in the approvers' DMs). A channel has
    no one time zone, so times are in UTC."""
    kind = "Break-glass access" if view.breakglass else "Access request"
    blocks: list[Block] = [
        HeaderBlock(text=f"{kind} #{view.id}"),
        request_fields(view, UTC),
        justification(view),
        SectionBlock(text=_md(truncate("\n".join(outcome_lines(view, UTC)), SECTION_TEXT_MAX))),
    ]
    if view.breakglass:
        blocks.append(
            SectionBlock(
                text=_md(
                    truncate(
                        f":rotating_light: Break-glass for *{escape(view.incident_ref or '-')}*"
                        f"{breakglass_tag(view).split(')', 1)[-1]}",
                        SECTION_TEXT_MAX,
                    )
                )
            )
        )
    if view.extension_ends_at is not None and _extendable(view):
        blocks.append(
            SectionBlock(
                text=_md(
                    f"Extension to {when(view.extension_ends_at, UTC)} waiting for the approvers"
                )
            )
        )
    if _deciding(view):
        approvers = ", ".join(user(a) for a in view.notified_approvers) or "the approvers"
        note = (
            f"Waiting for {approvers}, who decide in their DMs. Times out "
            f"{when(view.approval_deadline_at, UTC)}."
        )
    else:
        note = "Times in UTC. Decisions and revokes are made in the approvers' DMs."
    blocks.append(ContextBlock(elements=[_md(note)]))
    label = STATE_LABEL.get(RequestState(view.state), view.state)
    text = (
        f"#{view.id}: {view.requester} asks for {escape(view.role)} on {escape(view.app)}: "
        f"{label.split(': ')[-1]}"
    )
    return truncate(text, 300), _dump(blocks)


def requester_card(
    view: RequestView, tz: tzinfo, *, with_buttons: bool = True
) -> tuple[str, list[dict[str, Any]]]:
    """The requester's status card; buttons only on the latest one."""
    label = STATE_LABEL.get(RequestState(view.state), view.state)
    text = (
        f"Your request #{view.id} for {escape(view.role)} on {escape(view.app)}: "
        f"{label.split(': ')[-1]}"
    )
    blocks: list[Block] = [
        SectionBlock(
            text=_md(
                f"*Request #{view.id}* · {escape(view.role)} on "
                f"*{escape(view.app)}*\n{window(view, tz)}"
            )
        ),
        SectionBlock(text=_md(truncate("\n".join(outcome_lines(view, tz)), SECTION_TEXT_MAX))),
    ]
    if _deciding(view):
        waiting_on = [
            a for a in view.notified_approvers if a not in view.approved_by and a != view.requester
        ]
        remaining = view.required_approvals - len(view.approvals)
        head = "Waiting for one of: " if remaining <= 1 else f"Waiting for {remaining} of: "
        blocks.append(
            ContextBlock(
                elements=[_md(truncate(head + ", ".join(user(a) for a in waiting_on), 2000))]
            )
        )
    if view.extension_ends_at is not None and _extendable(view):
        progress = extension_progress(view)
        waiting = f"Extension to {when(view.extension_ends_at, tz)} waiting for the approvers"
        blocks.append(
            ContextBlock(
                elements=[_md(truncate(waiting + (f" · {progress}" if progress else ""), 2000))]
            )
        )
    buttons = _requester_buttons(view) if with_buttons else []
    if buttons:
        blocks.append(ActionsBlock(block_id=f"mine:{view.id}", elements=buttons))
    return truncate(text, 300), _dump(blocks)


def _requester_buttons(view: RequestView) -> list[ButtonElement]:
    """The requester's own actions the lifecycle offers: Extend (the primary one while
    access is held), then I'm done or Cancel request."""
    offered = _offers(view)
    buttons: list[ButtonElement] = []
    if Action.EXTEND in offered:
        style = "primary" if Action.RELEASE in offered else None
        buttons.append(_button("Extend", EXTEND, view.id, style))
    if Action.RELEASE in offered:
        buttons.append(_button("I'm done", RELEASE, view.id))
    if Action.CANCEL in offered:
        buttons.append(_button("Cancel request", CANCEL, view.id))
    return buttons


#: What an extension card says once the extension is no longer waiting.
_EXTENSION_OUTCOME = {
    "extend": "Extended",
    "extension_denied": "Denied",
    "extension_timed_out": "Timed out: no approver decided in time",
}


def extension_block_id(request_id: int, new_end: datetime) -> str:
    """The buttons' block on an extension card names the extension it shows, so a
    click on an old card can never decide a later extension."""
    return f"extension:{request_id}:{int(new_end.timestamp())}"


def shown_extension_end(block_id: str) -> datetime | None:
    """The end an extension card's buttons were showing (see :func:`extension_block_id`)."""
    parts = block_id.split(":")
    if len(parts) != 3 or parts[0] != "extension" or not parts[2].isdigit() or len(parts[2]) > 12:
        return None
    return datetime.fromtimestamp(int(parts[2]), UTC)


def extension_card(
    view: RequestView, tz: tzinfo, details: dict[str, Any], *, viewer: str | None = None
) -> tuple[str, list[dict[str, Any]]]:
    """An approver's card for one extension: what is asked and why, then Approve/Deny
    while it waits (with the quorum's progress; no buttons for a ``viewer`` who already
    approved), or the outcome. ``details`` is the extension as queued (its old and new
    end, the actor and reason of the step)."""
    new_end = datetime.fromisoformat(str(details.get("new_ends_at")))
    old_end = datetime.fromisoformat(str(details.get("old_ends_at")))
    event = str(details.get("event") or "")
    reason = details.get("extension_reason") or (
        details.get("reason") if event in ("extend", "extension_requested") else None
    )
    what = f"{escape(view.role)} on {escape(view.app)} (request #{view.id})"
    text = f"{view.requester} asks to extend {what}"
    if event == "extend" and str(details.get("actor", "")).startswith("policy:"):
        text = f"{view.requester} extended {what}"
    blocks: list[Block] = [
        HeaderBlock(text=f"Extension of request #{view.id}"),
        SectionBlock(
            fields=[
                _md(f"*Requester*\n{user(view.requester)}"),
                _md(f"*Application*\n{escape(view.app)}"),
                _md(f"*Role*\n{escape(view.role)}"),
                _md(
                    f"*Ends*\n{when(old_end, tz)} → *{when(new_end, tz)}* "
                    f"(+{format_duration(new_end - old_end)})"
                ),
            ]
        ),
    ]
    if reason:
        blocks.append(
            SectionBlock(text=_md(truncate(f"*Why*\n>{escape(str(reason))}", SECTION_TEXT_MAX)))
        )
    waiting = (
        view.extension_ends_at is not None
        and view.extension_ends_at == new_end
        and Action.EXTEND in _offers(view)
    )
    if waiting and event in ("extension_requested", "extension_approval_recorded"):
        progress = extension_progress(view)
        if progress:
            blocks.append(SectionBlock(text=_md(truncate(progress, SECTION_TEXT_MAX))))
        approved = viewer is not None and viewer in {a.approver for a in view.extension_approvals}
        if not approved:
            blocks.append(
                ActionsBlock(
                    block_id=extension_block_id(view.id, new_end),
                    elements=[
                        _button("Approve", APPROVE_EXTENSION, view.id, "primary"),
                        _button("Deny", DENY_EXTENSION, view.id, "danger"),
                    ],
                )
            )
        if view.extension_deadline_at is not None:
            if approved:
                who = "You approved; waiting for the other approvers."
            elif view.required_approvals > 1:
                who = (
                    f"{view.required_approvals} approvers must approve, each giving a reason; "
                    "one denial denies."
                )
            else:
                who = "One approver decides, giving a reason."
            blocks.append(
                ContextBlock(
                    elements=[
                        _md(
                            f"{who} Times out {when(view.extension_deadline_at, tz)}; until "
                            "then the access ends as before."
                        )
                    ]
                )
            )
    elif event in _EXTENSION_OUTCOME:
        actor = str(details.get("actor") or "")
        by = "the policy (automatic mode)" if actor.startswith("policy:") else user(actor)
        line = f"*{_EXTENSION_OUTCOME[event]}*"
        quorum = details.get("approvals")
        if event == "extend" and isinstance(quorum, list) and quorum:
            approvals = [
                ApprovalView(str(a["approver"]), str(a["reason"]), view.ends_at) for a in quorum
            ]
            line += f" · {_approvals_line(approvals, len(approvals))}"
        elif event != "extension_timed_out":
            why = details.get("reason")
            decided = f": {escape(str(why))}" if why and not actor.startswith("policy:") else ""
            line += f" by {by}{decided}"
        blocks.append(SectionBlock(text=_md(truncate(line, SECTION_TEXT_MAX))))
    else:
        blocks.append(
            SectionBlock(
                text=_md(f"No longer waiting: request #{view.id} is {escape(view.state)}.")
            )
        )
    return truncate(text, 300), _dump(blocks)


def extend_modal(
    view: RequestView, maximum: timedelta, *, origin: dict[str, str], tz: tzinfo = UTC
) -> dict[str, Any]:
    """How much longer, and why: ``/jit extend`` as a form."""
    room = maximum - view.duration
    choices = [d for d in DURATION_CHOICES if d <= room]
    if room >= timedelta(minutes=1) and room not in choices:
        choices.append(room)
    options = [Option(text=format_duration(d), value=format_duration(d)) for d in choices]
    if not options:
        return notice_modal(
            f"Extend #{view.id}",
            f"Request #{view.id} already lasts {format_duration(view.duration)}, the "
            f"maximum for {view.app}: nothing can be added. Submit a new request when it ends.",
        )
    blocks: list[Block] = [
        SectionBlock(
            text=_md(
                f"*#{view.id}* {escape(view.role)} on *{escape(view.app)}*\n{window(view, tz)}"
            )
        ),
        InputBlock(
            block_id="duration",
            label="Add",
            element=StaticSelectElement(
                action_id="duration", options=options, initial_option=options[0]
            ),
            hint=f"Up to {format_duration(room)} more ({format_duration(maximum)} in all).",
        ),
        InputBlock(
            block_id="reason",
            label="Why do you need longer?",
            element=PlainTextInputElement(action_id="reason", multiline=True, max_length=2000),
        ),
    ]
    return View(
        type="modal",
        callback_id=EXTEND_MODAL,
        title=truncate(f"Extend #{view.id}", 24),
        submit="Extend",
        close="Cancel",
        blocks=blocks,
        private_metadata=json.dumps({"request_id": view.id, **origin}),
    ).to_dict()


def ending_soon_text(view: RequestView, tz: tzinfo) -> str:
    return (
        f":hourglass: Your {escape(view.role)} access to *{escape(view.app)}* ends "
        f"{when(view.ends_at, tz)} (request #{view.id}). Need longer? *Extend* it."
    )


def revoke_failing(view: RequestView, tz: tzinfo) -> tuple[str, list[dict[str, Any]]]:
    text = (
        f"Revoking {view.requester}'s {escape(view.role)} on {escape(view.app)} is failing: "
        f"{escape(view.last_error or 'unknown error')}"
    )
    blocks: list[Block] = [
        SectionBlock(
            text=_md(
                truncate(
                    f":rotating_light: *Revoke failing* for request #{view.id} "
                    f"({user(view.requester)}, {escape(view.role)} on *{escape(view.app)}*).\n"
                    f"The grant may still be held. jitaccess keeps retrying.\n"
                    f"Last error: {escape(view.last_error or '-')}",
                    SECTION_TEXT_MAX,
                )
            )
        ),
    ]
    return truncate(text, 300), _dump(blocks)


def request_list(
    title: str, views: Sequence[RequestView], tz: tzinfo, now: datetime, *, empty: str
) -> list[dict[str, Any]]:
    """A listing under ``title``, which is mrkdwn: the caller escaped what people typed
    in it (the same title is the reply's ``text``)."""
    blocks: list[Block] = [SectionBlock(text=_md(f"*{title}*"))]
    if not views:
        blocks.append(SectionBlock(text=_md(empty)))
    for view in views[:HOME_ITEMS_MAX]:
        blocks.append(
            SectionBlock(
                text=_md(
                    truncate(
                        f"*#{view.id}* {user(view.requester)} · {escape(view.role)} on "
                        f"*{escape(view.app)}* · "
                        f"{escape(view.status_line(now))}{breakglass_tag(view)}"
                        f"\n{window(view, tz)}"
                        + _progress_suffix(view)
                        + (f" · decided by {user(view.decided_by)}" if view.decided_by else "")
                        + (
                            f": {escape(view.decision_reason)}"
                            if view.decision_reason
                            and view.decided_by
                            and not view.decided_by.startswith("policy:")
                            else ""
                        ),
                        SECTION_TEXT_MAX,
                    )
                )
            )
        )
    if len(views) > HOME_ITEMS_MAX:
        blocks.append(ContextBlock(elements=[_md(f"…and {len(views) - HOME_ITEMS_MAX} more")]))
    return _dump(blocks)


def _progress_suffix(view: RequestView) -> str:
    """ " · 1 of 2 approved" on a pending request that needs several approvals."""
    if not _deciding(view) or view.required_approvals <= 1:
        return ""
    return f" · {len(view.approvals)} of {view.required_approvals} approved"


def home_view(
    *,
    pending: Sequence[RequestView],
    mine: Sequence[RequestView],
    overseen: Sequence[RequestView] | None,
    tz: tzinfo,
    now: datetime,
    unreviewed: Sequence[RequestView] = (),
) -> dict[str, Any]:
    """The App Home: break-glass access waiting for review, the approval inbox across
    applications, your requests, and (for approvers and admins) the access active now."""
    blocks: list[Block] = []
    if unreviewed:
        blocks += [
            HeaderBlock(text="Break-glass, needs review"),
            *review_items(unreviewed, tz, now),
        ]
        blocks.append(DividerBlock())
    blocks.append(HeaderBlock(text="Waiting for your approval"))
    if not pending:
        blocks.append(SectionBlock(text=_md("Nothing waits for you.")))
    by_app: dict[str, list[RequestView]] = {}
    for view in pending:
        by_app.setdefault(view.app, []).append(view)
    shown = 0
    for app_name, items in sorted(by_app.items()):
        blocks.append(ContextBlock(elements=[_md(f"*{escape(app_name)}* · {len(items)} waiting")]))
        for view in items:
            if shown >= HOME_ITEMS_MAX:
                break
            shown += 1
            blocks.append(
                SectionBlock(
                    text=_md(
                        truncate(
                            f"*#{view.id}* {user(view.requester)} asks for *{escape(view.role)}* · "
                            f"{window(view, tz)}{_progress_suffix(view)}\n"
                            f">{escape(view.justification)}",
                            SECTION_TEXT_MAX,
                        )
                    )
                )
            )
            blocks.append(
                ActionsBlock(
                    block_id=f"home-decide:{view.id}",
                    elements=[
                        _button("Approve", APPROVE, view.id, "primary"),
                        _button("Deny", DENY, view.id, "danger"),
                    ],
                )
            )
    if len(pending) > shown:
        blocks.append(
            ContextBlock(elements=[_md(f"…and {len(pending) - shown} more: `/jit pending`")])
        )
    blocks += [DividerBlock(), HeaderBlock(text="Your requests")]
    if not mine:
        blocks.append(SectionBlock(text=_md("No requests yet. Ask with `/jit request`.")))
    for view in mine[:HOME_ITEMS_MAX]:
        accessory = None
        offered = _offers(view)
        if Action.RELEASE in offered:
            accessory = _button("I'm done", RELEASE, view.id)
        elif Action.CANCEL in offered:
            accessory = _button("Cancel", CANCEL, view.id)
        blocks.append(
            SectionBlock(
                text=_md(
                    f"*#{view.id}* {escape(view.role)} on *{escape(view.app)}* · "
                    f"{escape(view.status_line(now))}\n{window(view, tz)}"
                ),
                accessory=accessory,
            )
        )
    if overseen is not None:
        blocks += [DividerBlock(), HeaderBlock(text="Active access")]
        if not overseen:
            blocks.append(SectionBlock(text=_md("No access is active in your applications.")))
        for view in overseen[:HOME_ITEMS_MAX]:
            blocks.append(
                SectionBlock(
                    text=_md(
                        f"*#{view.id}* {user(view.requester)} · {escape(view.role)} on "
                        f"*{escape(view.app)}* until {when(view.ends_at, tz)}"
                    ),
                    accessory=_button("Revoke", REVOKE, view.id, "danger"),
                )
            )
    return View(type="home", blocks=blocks[:100]).to_dict()


# -- break-glass -------------------------------------------------------------------
def breakglass_tag(view: RequestView) -> str:
    """What a listing adds for a break-glass request: the incident and its review."""
    if not view.breakglass:
        return ""
    tag = f" · :rotating_light: break-glass ({escape(view.incident_ref or '-')})"
    return tag + (", needs review" if view.needs_review else ", reviewed")


def review_lines(view: RequestView, tz: tzinfo) -> str:
    if view.reviewed_at is None:
        return (
            ":warning: *Needs review*: an approver or admin acknowledges it with a reason. "
            "It stays on your Home tab and in `/jit pending` until then."
        )
    return (
        f":white_check_mark: Reviewed by {user(view.reviewed_by)} {when(view.reviewed_at, tz)}: "
        f"{escape(view.review_reason or '')}"
    )


def breakglass_alert(
    view: RequestView, tz: tzinfo, *, current: bool = True
) -> tuple[str, list[dict[str, Any]]]:
    """The alert every approver and admin gets when someone breaks glass, edited in
    place as the request moves; *Acknowledge* until someone reviewed it (only for
    those who still may), *Revoke* while access is held or about to be."""
    blocks: list[Block] = [
        HeaderBlock(text=f"Break-glass access #{view.id}"),
        SectionBlock(
            text=_md(
                truncate(
                    f":rotating_light: {user(view.requester)} broke glass: "
                    f"*{escape(view.role)}* on *{escape(view.app)}* without approval, for "
                    f"incident *{escape(view.incident_ref or '-')}*.",
                    SECTION_TEXT_MAX,
                )
            )
        ),
        request_fields(view, tz),
        justification(view),
        SectionBlock(text=_md(truncate("\n".join(outcome_lines(view, tz)), SECTION_TEXT_MAX))),
        SectionBlock(text=_md(truncate(review_lines(view, tz), SECTION_TEXT_MAX))),
    ]
    buttons: list[ButtonElement] = []
    if current and view.needs_review:
        buttons.append(_button("Acknowledge", BREAKGLASS_ACK, view.id, "primary"))
    if current and Action.REVOKE in _offers(view):
        buttons.append(_button("Revoke", REVOKE, view.id, "danger"))
    if buttons:
        blocks.append(ActionsBlock(block_id=f"breakglass:{view.id}", elements=buttons))
    if not current:
        blocks.append(
            ContextBlock(
                elements=[
                    _md(
                        f":information_source: You are no longer an approver or admin of "
                        f"{escape(view.app)}."
                    )
                ]
            )
        )
    text = (
        f"Break-glass: {view.requester} took {escape(view.role)} on {escape(view.app)} "
        f"for {escape(view.incident_ref or '-')}"
    )
    return truncate(text, 300), _dump(blocks)


def review_items(views: Sequence[RequestView], tz: tzinfo, now: datetime) -> list[Block]:
    """Unreviewed break-glass requests, each with *Acknowledge*."""
    items: list[Block] = []
    for view in views[:HOME_ITEMS_MAX]:
        items.append(
            SectionBlock(
                text=_md(
                    truncate(
                        f"*#{view.id}* {user(view.requester)} · {escape(view.role)} on "
                        f"*{escape(view.app)}* · {escape(view.status_line(now))} · "
                        f":rotating_light: break-glass, needs review "
                        f"({escape(view.incident_ref or '-')})\n{window(view, tz)}"
                        f"\n>{escape(view.justification)}",
                        SECTION_TEXT_MAX,
                    )
                ),
                accessory=_button("Acknowledge", BREAKGLASS_ACK, view.id, "primary"),
            )
        )
    if len(views) > HOME_ITEMS_MAX:
        items.append(ContextBlock(elements=[_md(f"…and {len(views) - HOME_ITEMS_MAX} more")]))
    return items


def review_list(views: Sequence[RequestView], tz: tzinfo, now: datetime) -> list[dict[str, Any]]:
    """The ``/jit pending`` section for break-glass access waiting for review."""
    title: list[Block] = [SectionBlock(text=_md("*Break-glass, needs review*"))]
    return _dump([*title, *review_items(views, tz, now)])


def review_modal(request_id: int, *, origin: dict[str, str]) -> dict[str, Any]:
    """Ask for the reason that acknowledging break-glass access requires."""
    metadata = json.dumps({"request_id": request_id, **origin})
    return View(
        type="modal",
        callback_id=REVIEW_MODAL,
        title=truncate(f"Review #{request_id}", 24),
        submit="Acknowledge",
        close="Cancel",
        blocks=[
            SectionBlock(
                text=_md(
                    f"Acknowledge break-glass access #{request_id}: say what you checked "
                    "(the incident, what was done)."
                )
            ),
            InputBlock(
                block_id="reason",
                label="Review reason",
                element=PlainTextInputElement(action_id="reason", multiline=True, max_length=2000),
            ),
        ],
        private_metadata=metadata,
    ).to_dict()


# -- modals ------------------------------------------------------------------------
def _duration_options(maximum: timedelta) -> list[Option]:
    choices = [d for d in DURATION_CHOICES if d <= maximum]
    if maximum not in choices:
        choices.append(maximum)
    return [Option(text=format_duration(d), value=format_duration(d)) for d in choices]


def request_modal(
    apps: Sequence[AppView], *, selected: str | None, now: datetime
) -> dict[str, Any]:
    """The `/jit request` form. Picking another application refreshes roles and durations."""
    if not apps:
        return notice_modal(
            "Request access",
            "You are not a publisher of any application "
            "with JIT enabled, so there is nothing to request.",
        )
    chosen = next((a for a in apps if a.name == selected), apps[0])
    app_options = [Option(text=plain(a.name, OPTION_TEXT_MAX), value=a.name) for a in apps]
    role_options = [Option(text=plain(r, OPTION_TEXT_MAX), value=r) for r in chosen.eligible_roles]
    durations = _duration_options(chosen.policy.max_duration)
    default_duration = next((o for o in durations if o.value == "1h"), durations[-1])
    blocks: list[Block] = [
        InputBlock(
            block_id="app",
            label="Application",
            dispatch_action=True,
            element=StaticSelectElement(
                action_id=APP_PICKED,
                options=app_options,
                initial_option=next(o for o in app_options if o.value == chosen.name),
            ),
        ),
        ContextBlock(
            elements=[
                _md(
                    f"Resource group `{truncate(escape(chosen.scope), 200)}` · "
                    f"{chosen.policy.mode.value} approval · "
                    f"up to {format_duration(chosen.policy.max_duration)}"
                )
            ]
        ),
        InputBlock(
            block_id="role",
            label="Role",
            element=StaticSelectElement(
                action_id="role", options=role_options, initial_option=role_options[0]
            ),
        ),
        InputBlock(
            block_id="start",
            label="Start",
            optional=True,
            hint="Leave as is to start now.",
            element=DateTimePickerElement(
                action_id="start", initial_date_time=int(now.timestamp())
            ),
        ),
        InputBlock(
            block_id="duration",
            label="Duration",
            element=StaticSelectElement(
                action_id="duration", options=durations, initial_option=default_duration
            ),
        ),
        InputBlock(
            block_id="justification",
            label="Justification",
            element=PlainTextInputElement(
                action_id="justification",
                multiline=True,
                max_length=2000,
                placeholder="Why do you need this access?",
            ),
        ),
    ]
    return View(
        type="modal",
        callback_id=REQUEST_MODAL,
        title="Request access",
        submit="Request",
        close="Cancel",
        blocks=blocks,
        private_metadata=json.dumps({"app": chosen.name, "start": int(now.timestamp())}),
    ).to_dict()


def loading_modal(title: str) -> dict[str, Any]:
    return View(
        type="modal",
        title=plain(title, MODAL_TITLE_MAX),
        close="Close",
        blocks=[SectionBlock(text=_md(":hourglass_flowing_sand: Loading…"))],
    ).to_dict()


def notice_modal(title: str, message: str | JitError) -> dict[str, Any]:
    return View(
        type="modal",
        title=plain(title, MODAL_TITLE_MAX),
        close="Close",
        blocks=[SectionBlock(text=_md(truncate(mention_users(message), SECTION_TEXT_MAX)))],
    ).to_dict()


def decision_modal(
    view: RequestView | None,
    *,
    request_id: int,
    decision: str,
    origin: dict[str, str],
    tz: tzinfo = UTC,
) -> dict[str, Any]:
    """Ask for the reason an approve, deny or revoke requires."""
    verb = {
        "approve": "Approve",
        "deny": "Deny",
        "revoke": "Revoke",
        "approve_extension": "Extend",
        "deny_extension": "Refuse",
    }[decision]
    blocks: list[Block] = []
    if view is not None:
        blocks.append(
            SectionBlock(
                text=_md(
                    f"*#{view.id}* {user(view.requester)} · {escape(view.role)} on "
                    f"*{escape(view.app)}*"
                    f"\n{window(view, tz)}"
                )
            )
        )
    blocks.append(
        InputBlock(
            block_id="reason",
            label=f"Reason to {decision.replace('_', ' the ')}",
            element=PlainTextInputElement(action_id="reason", multiline=True, max_length=2000),
        )
    )
    metadata = json.dumps({"request_id": request_id, "decision": decision, **origin})
    return View(
        type="modal",
        callback_id=DECISION_MODAL,
        title=f"{verb} #{request_id}",
        submit=verb,
        close="Cancel",
        blocks=blocks,
        private_metadata=metadata,
    ).to_dict()


def config_modal(app: AppView) -> dict[str, Any]:
    """Consumer admins edit the JIT policy."""
    modes = [Option(text="Automatic", value="automatic"), Option(text="Manual", value="manual")]
    durations = [
        Option(text=format_duration(d), value=format_duration(d))
        for d in (*DURATION_CHOICES, timedelta(days=2), timedelta(days=7))
    ]
    current_max = format_duration(app.policy.max_duration)
    if current_max not in {o.value for o in durations}:
        durations.append(Option(text=current_max, value=current_max))
    timeouts = [Option(text=v, value=v) for v in ("1h", "4h", "8h", "24h", "2d", "7d")]
    current_timeout = format_duration(app.policy.approval_timeout)
    if current_timeout not in {o.value for o in timeouts}:
        timeouts.append(Option(text=current_timeout, value=current_timeout))
    people = [a for a in app.policy.approvers if not is_group(a)]
    groups = [a for a in app.policy.approvers if is_group(a)]
    approvers_element = UserMultiSelectElement(action_id="approvers", initial_users=people or None)
    quorum = [Option(text=str(n), value=str(n)) for n in range(1, QUORUM_CHOICES + 1)]
    current_quorum = str(app.policy.required_approvals)
    if current_quorum not in {o.value for o in quorum}:
        quorum.append(Option(text=current_quorum, value=current_quorum))
    blocks: list[Block] = [
        SectionBlock(
            text=_md(f"JIT policy for *{escape(app.name)}*. Changes apply to new requests only.")
        ),
        InputBlock(
            block_id="mode",
            label="Approval mode",
            element=StaticSelectElement(
                action_id="mode",
                options=modes,
                initial_option=next(o for o in modes if o.value == app.policy.mode.value),
            ),
        ),
        InputBlock(
            block_id="max_duration",
            label="Maximum duration",
            element=StaticSelectElement(
                action_id="max_duration",
                options=durations,
                initial_option=next(o for o in durations if o.value == current_max),
            ),
        ),
        InputBlock(
            block_id="approvers", label="Approvers", optional=True, element=approvers_element
        ),
        InputBlock(
            block_id="approver_groups",
            label="Approver groups",
            optional=True,
            hint="Slack user group IDs (S…), separated by spaces: their members approve.",
            element=PlainTextInputElement(
                action_id="approver_groups",
                initial_value=" ".join(groups) or None,
                placeholder="S0123ABCD",
            ),
        ),
        InputBlock(
            block_id="required_approvals",
            label="Approvals required",
            hint="How many different approvers must approve. One denial denies.",
            element=StaticSelectElement(
                action_id="required_approvals",
                options=quorum,
                initial_option=next(o for o in quorum if o.value == current_quorum),
            ),
        ),
        InputBlock(
            block_id="approval_timeout",
            label="Approval timeout",
            element=StaticSelectElement(
                action_id="approval_timeout",
                options=timeouts,
                initial_option=next(o for o in timeouts if o.value == current_timeout),
            ),
        ),
        InputBlock(
            block_id="feed_channel",
            label="Feed channel ID",
            optional=True,
            hint="Every request is posted and kept up to date there (channel name → About, "
            "at the bottom: like C0123ABCD). Invite the bot with /invite @jitaccess. "
            "Empty: no feed.",
            element=PlainTextInputElement(
                action_id="feed_channel",
                initial_value=app.policy.feed_channel or None,
                placeholder="C0123ABCD",
            ),
        ),
    ]
    return View(
        type="modal",
        callback_id=CONFIG_MODAL,
        title="JIT policy",
        submit="Save",
        close="Cancel",
        blocks=blocks,
        private_metadata=json.dumps({"app": app.name}),
    ).to_dict()


def activity_summary(
    view: RequestView, summary: ActivitySummary, digest: str, tz: tzinfo
) -> tuple[str, list[dict[str, Any]]]:
    """What the publisher did during the window, from the Azure Activity Log."""
    start = datetime.fromisoformat(summary.window_start)
    end = datetime.fromisoformat(summary.window_end)
    counts = (
        f"{summary.operations_total} operation{'s' * (summary.operations_total != 1)}, "
        f"{summary.failures_total} failed, on {summary.resources_total} "
        f"resource{'s' * (summary.resources_total != 1)}"
    )
    text = f"What {view.requester} did on {escape(view.app)} (request #{view.id}): {counts}"
    head = (
        f":mag: *What {user(view.requester)} did* with {escape(view.role)} on "
        f"*{escape(view.app)}* (request #{view.id}), {when(start, tz)} – {when(end, tz)}"
    )
    blocks: list[Block] = [SectionBlock(text=_md(truncate(head, SECTION_TEXT_MAX)))]
    if summary.empty:
        blocks.append(
            SectionBlock(text=_md("No operations by them in the managed resource group."))
        )
    else:
        operations = [f"• `{escape(name)}` × {count}" for name, count in summary.operations]
        more = summary.operations_total - sum(count for _, count in summary.operations)
        if more:
            operations.append(f"…and {more} more")
        resources = ", ".join(f"`{escape(name)}`" for name in summary.resources)
        if summary.resources_total > len(summary.resources):
            resources += f" …and {summary.resources_total - len(summary.resources)} more"
        lines = [
            f"*Operations* ({summary.operations_total})",
            *operations,
            f"*Resources touched* ({summary.resources_total}): {resources}",
        ]
        if summary.failures_total:
            lines.append(f"*Failures* ({summary.failures_total})")
            lines += [
                f"• {when(datetime.fromisoformat(f.at), tz)} `{escape(f.operation)}` on "
                f"`{escape(f.resource)}`"
                for f in summary.failures
            ]
            if summary.failures_total > len(summary.failures):
                lines.append(f"…and {summary.failures_total - len(summary.failures)} more")
        else:
            lines.append("*Failures*: none")
        blocks.append(SectionBlock(text=_md(truncate("\n".join(lines), SECTION_TEXT_MAX))))
    blocks.append(
        ContextBlock(
            elements=[
                _md(
                    f"From the Azure Activity Log · audited as `activity_summary`, "
                    f"sha256 `{digest[:12]}…`"
                )
            ]
        )
    )
    return truncate(text, 300), _dump(blocks)
