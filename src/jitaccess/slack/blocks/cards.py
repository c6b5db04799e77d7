"""The messages: a request's cards (the approver's, the requester's status card, the
application's feed), the extension card, break-glass alerts, reminders and the
activity summary. Built with ``slack_sdk.models`` so Block Kit's limits are checked
before anything is sent. Pure: views in, JSON-able dicts out."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    HeaderBlock,
    SectionBlock,
)

from jitaccess.app.native import PORTAL_APPROVALS, portal_link
from jitaccess.app.views import ApprovalView, RequestView
from jitaccess.domain.activity import ActivitySummary
from jitaccess.domain.durations import format_duration
from jitaccess.domain.lifecycle import Action, RequestState, state_words
from jitaccess.domain.policy import mode_words
from jitaccess.slack.blocks.ids import (
    APPROVE,
    APPROVE_EXTENSION,
    BREAKGLASS_ACK,
    CANCEL,
    DENY,
    DENY_EXTENSION,
    EXTEND,
    RELEASE,
    REVOKE,
)
from jitaccess.slack.blocks.markup import (
    SECTION_TEXT_MAX,
    STATE_LABEL,
    approvals_line,
    button,
    deciding,
    dump,
    escape,
    extendable,
    extension_progress,
    link,
    md,
    offered_actions,
    quorum_progress,
    truncate,
    user,
    when,
    window,
)


def request_fields(view: RequestView) -> SectionBlock:
    return SectionBlock(
        fields=[
            md(f"*Requester*\n{user(view.requester)}"),
            md(f"*Application*\n{escape(view.app)}"),
            md(f"*Role*\n{escape(view.role)}"),
            md(f"*Window*\n{window(view)}"),
            md(f"*Resource group*\n`{truncate(escape(view.scope), 300)}`"),
            md(f"*Approval*\n{mode_words(view.approval_mode).capitalize()}"),
        ]
    )


def justification(view: RequestView) -> SectionBlock:
    return SectionBlock(
        text=md(truncate(f"*Justification*\n>{escape(view.justification)}", SECTION_TEXT_MAX))
    )


def native_note(view: RequestView, *, approver: bool) -> ContextBlock | None:
    """What a native request's card adds: it is Azure's own JIT request, decided in
    Azure PIM as the approver themselves, and where the portal offers the same."""
    if not view.native:
        return None
    places = [link(PORTAL_APPROVALS, "PIM, Approve requests, Azure managed applications")]
    if view.native_application_id:
        places.append(link(portal_link(view.native_application_id), "the application's JIT Access"))
    if approver:
        text = (
            ":large_blue_diamond: Azure managed-application JIT: decided in Azure PIM as you "
            "(your own Microsoft sign-in, `/jit signin`). You can also decide it in the "
            f"Azure portal: {' or '.join(places)}."
        )
    else:
        text = (
            ":large_blue_diamond: Azure managed-application JIT: Azure grants and ends this "
            f"access; see it in the Azure portal: {' or '.join(places)}."
        )
    return ContextBlock(elements=[md(truncate(text, SECTION_TEXT_MAX))])


def outcome_blocks(view: RequestView, *, with_state: bool = False) -> list[SectionBlock]:
    """:func:`outcome_lines` as a card's section; ``with_state`` puts the state first,
    for the feed, whose message has no :func:`first_line_block` (the DM cards do).
    Nothing when there is nothing to say yet (a request waiting for its first approval):
    Slack refuses a section with empty text (Block Kit, section block: "Minimum length
    for the text in this field is 1")."""
    lines = outcome_lines(view)
    if with_state:
        lines.insert(0, f"*{STATE_LABEL.get(RequestState(view.state), view.state)}*")
    if not lines:
        return []
    return [SectionBlock(text=md(truncate("\n".join(lines), SECTION_TEXT_MAX)))]


def outcome_lines(view: RequestView) -> list[str]:
    """Who decided and why, and how access began and ended."""
    lines: list[str] = []
    if view.breakglass:
        # Nobody approved a break-glass request: its requester took it, and someone reviews it.
        review = (
            f"reviewed by {user(view.reviewed_by)}: {escape(view.review_reason or '')}"
            if view.reviewed_at is not None
            else "to be reviewed"
        )
        lines.append(f"Break-glass by {user(view.requester)} · {review}")
    elif view.decided_by and not deciding(view):
        verb = "Denied" if view.state == RequestState.DENIED else "Approved"
        reason = (
            f": {escape(view.decision_reason)}"
            if view.decision_reason and not view.decided_by.startswith("policy:")
            else ""
        )
        lines.append(f"{verb} by {user(view.decided_by)}{reason}")
    progress = quorum_progress(view)
    if progress is not None and (view.approvals or deciding(view)):
        lines.append(progress)
    if view.activated_at:
        lines.append(f"Access granted {when(view.activated_at)}")
    if view.ended_at and view.state != RequestState.DENIED:
        by = f" by {user(view.ended_by)}" if view.ended_by and view.ended_by != "system" else ""
        why = f": {escape(view.end_reason)}" if view.end_reason else ""
        lines.append(f"Ended {when(view.ended_at)}{by}{why}")
    if view.revoke_failing_since:
        lines.append(
            f":warning: Revoke failing since {when(view.revoke_failing_since)} "
            f"({view.attempts} attempts): {escape(view.last_error or '')}"
        )
    elif view.attempts and view.last_error:
        lines.append(
            f":warning: Backend failing ({view.attempts} attempts): {escape(view.last_error)}"
        )
    return lines


def card_first_line(view: RequestView) -> str:
    """The first line of every person's card for a request: its state now (the
    label the cards already use), then which request it is. The card is edited in
    place at every step, so this line is always current."""
    label = STATE_LABEL.get(RequestState(view.state), view.state)
    kind = "Break-glass access" if view.breakglass else "Request"
    return f"*{label}* · {kind} #{view.id}: {escape(view.role)} on *{escape(view.app)}*"


def first_line_block(view: RequestView) -> SectionBlock:
    """:func:`card_first_line` as the block every DM card for a request starts with."""
    return SectionBlock(text=md(truncate(card_first_line(view), SECTION_TEXT_MAX)))


def step_reply(text: str) -> tuple[str, list[dict[str, Any]]]:
    """A short reply in a card's thread telling one step (text and one section)."""
    blocks = dump([SectionBlock(text=md(truncate(text, SECTION_TEXT_MAX)))])
    return truncate(text, 300), blocks


def no_longer_approver_text(view: RequestView) -> str:
    text = f"You are no longer an approver of {escape(view.app)}"
    if deciding(view):
        return text + "; this request is decided by the current approvers."
    return text + "."


def approver_card(
    view: RequestView, *, current: bool = True, viewer: str | None = None
) -> tuple[str, list[dict[str, Any]]]:
    """The approver's DM card: the request, then buttons or the outcome. An approver
    no longer on the policy (``current`` False) is told so and gets no buttons; one
    who already approved (``viewer``) sees the quorum's progress without buttons."""
    blocks: list[Block] = [
        first_line_block(view),
        HeaderBlock(text=f"Access request #{view.id}"),
        request_fields(view),
        justification(view),
    ]
    note = native_note(view, approver=True)
    if note is not None:
        blocks.append(note)
    text = f"{view.requester} asks for {escape(view.role)} on {escape(view.app)}"
    if not current:
        if not deciding(view):
            blocks.extend(outcome_blocks(view))
        blocks.append(
            ContextBlock(elements=[md(f":information_source: {no_longer_approver_text(view)}")])
        )
        return truncate(f"{no_longer_approver_text(view)} ({text})", 300), dump(blocks)
    offered = offered_actions(view)
    if Action.APPROVE in offered:
        progress = quorum_progress(view)
        if progress is not None:
            blocks.append(SectionBlock(text=md(truncate(progress, SECTION_TEXT_MAX))))
        if viewer is not None and viewer in view.approved_by:
            how = "You approved; the other approvers decide the rest."
        else:
            blocks.append(
                ActionsBlock(
                    block_id=f"decide:{view.id}",
                    elements=[
                        button("Approve", APPROVE, view.id, "primary"),
                        button("Deny", DENY, view.id, "danger"),
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
            ContextBlock(elements=[md(f"{how} Times out {when(view.approval_deadline_at)}.")])
        )
    else:
        blocks.extend(outcome_blocks(view))
        if Action.REVOKE in offered:
            blocks.append(
                ActionsBlock(
                    block_id=f"oversee:{view.id}",
                    elements=[button("Revoke", REVOKE, view.id, "danger")],
                )
            )
    return truncate(text, 300), dump(blocks)


def feed_card(view: RequestView) -> tuple[str, list[dict[str, Any]]]:
    """The request's message in the application's feed channel: the approver card's
    facts without its buttons (decisions stay in the approvers' DMs). A channel has
    no one time zone: its times are Slack date tokens, which each reader sees in their
    own zone."""
    kind = "Break-glass access" if view.breakglass else "Access request"
    blocks: list[Block] = [
        HeaderBlock(text=f"{kind} #{view.id}"),
        request_fields(view),
        justification(view),
        *outcome_blocks(view, with_state=True),
    ]
    azure = native_note(view, approver=False)
    if azure is not None:
        blocks.append(azure)
    if view.breakglass:
        blocks.append(
            SectionBlock(
                text=md(
                    truncate(
                        f":rotating_light: Break-glass for *{escape(view.incident_ref or '-')}*"
                        f"{breakglass_tag(view).split(')', 1)[-1]}",
                        SECTION_TEXT_MAX,
                    )
                )
            )
        )
    if view.extension_ends_at is not None and extendable(view):
        blocks.append(
            SectionBlock(
                text=md(f"Extension to {when(view.extension_ends_at)} waiting for the approvers")
            )
        )
    if deciding(view):
        approvers = ", ".join(user(a) for a in view.notified_approvers) or "the approvers"
        note = (
            f"Waiting for {approvers}, who decide in their DMs. Times out "
            f"{when(view.approval_deadline_at)}."
        )
    else:
        note = "Decisions and revokes are made in the approvers' DMs."
    blocks.append(ContextBlock(elements=[md(note)]))
    label = STATE_LABEL.get(RequestState(view.state), view.state)
    text = (
        f"#{view.id}: {view.requester} asks for {escape(view.role)} on {escape(view.app)}: "
        f"{label.split(': ')[-1]}"
    )
    return truncate(text, 300), dump(blocks)


def requester_card(view: RequestView) -> tuple[str, list[dict[str, Any]]]:
    """The requester's one card for the request: its first line (state and request),
    the window, who decided, how access began and ended, and the buttons offered now."""
    label = STATE_LABEL.get(RequestState(view.state), view.state)
    text = (
        f"Your request #{view.id} for {escape(view.role)} on {escape(view.app)}: "
        f"{label.split(': ')[-1]}"
    )
    blocks: list[Block] = [
        first_line_block(view),
        SectionBlock(text=md(window(view))),
        *outcome_blocks(view),
    ]
    note = native_note(view, approver=False)
    if note is not None:
        blocks.append(note)
    if deciding(view):
        waiting_on = [
            a for a in view.notified_approvers if a not in view.approved_by and a != view.requester
        ]
        remaining = view.required_approvals - len(view.approvals)
        head = "Waiting for one of: " if remaining <= 1 else f"Waiting for {remaining} of: "
        blocks.append(
            ContextBlock(
                elements=[md(truncate(head + ", ".join(user(a) for a in waiting_on), 2000))]
            )
        )
    if view.extension_ends_at is not None and extendable(view):
        progress = extension_progress(view)
        waiting = f"Extension to {when(view.extension_ends_at)} waiting for the approvers"
        blocks.append(
            ContextBlock(
                elements=[md(truncate(waiting + (f" · {progress}" if progress else ""), 2000))]
            )
        )
    buttons = _requester_buttons(view)
    if buttons:
        blocks.append(ActionsBlock(block_id=f"mine:{view.id}", elements=buttons))
    return truncate(text, 300), dump(blocks)


def _requester_buttons(view: RequestView) -> list[ButtonElement]:
    """The requester's own actions the lifecycle offers: Extend (the primary one while
    access is held), then I'm done or Cancel request."""
    offered = offered_actions(view)
    buttons: list[ButtonElement] = []
    if Action.EXTEND in offered:
        style = "primary" if Action.RELEASE in offered else None
        buttons.append(button("Extend", EXTEND, view.id, style))
    if Action.RELEASE in offered:
        buttons.append(button("I'm done", RELEASE, view.id))
    if Action.CANCEL in offered:
        buttons.append(button("Cancel request", CANCEL, view.id))
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
    view: RequestView, details: dict[str, Any], *, viewer: str | None = None
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
                md(f"*Requester*\n{user(view.requester)}"),
                md(f"*Application*\n{escape(view.app)}"),
                md(f"*Role*\n{escape(view.role)}"),
                md(
                    f"*Ends*\n{when(old_end)} → *{when(new_end)}* "
                    f"(+{format_duration(new_end - old_end)})"
                ),
            ]
        ),
    ]
    if reason:
        blocks.append(
            SectionBlock(text=md(truncate(f"*Why*\n>{escape(str(reason))}", SECTION_TEXT_MAX)))
        )
    waiting = (
        view.extension_ends_at is not None
        and view.extension_ends_at == new_end
        and Action.EXTEND in offered_actions(view)
    )
    if waiting and event in ("extension_requested", "extension_approval_recorded"):
        progress = extension_progress(view)
        if progress:
            blocks.append(SectionBlock(text=md(truncate(progress, SECTION_TEXT_MAX))))
        approved = viewer is not None and viewer in {a.approver for a in view.extension_approvals}
        if not approved:
            blocks.append(
                ActionsBlock(
                    block_id=extension_block_id(view.id, new_end),
                    elements=[
                        button("Approve", APPROVE_EXTENSION, view.id, "primary"),
                        button("Deny", DENY_EXTENSION, view.id, "danger"),
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
                        md(
                            f"{who} Times out {when(view.extension_deadline_at)}; until "
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
            line += f" · {approvals_line(approvals, len(approvals))}"
        elif event != "extension_timed_out":
            why = details.get("reason")
            decided = f": {escape(str(why))}" if why and not actor.startswith("policy:") else ""
            line += f" by {by}{decided}"
        blocks.append(SectionBlock(text=md(truncate(line, SECTION_TEXT_MAX))))
    else:
        blocks.append(
            SectionBlock(
                text=md(f"No longer waiting: request #{view.id} is {state_words(view.state)}.")
            )
        )
    return truncate(text, 300), dump(blocks)


def ending_soon_text(view: RequestView) -> str:
    return (
        f":hourglass: Your {escape(view.role)} access to *{escape(view.app)}* ends "
        f"{when(view.ends_at)} (request #{view.id}). Need longer? *Extend* it."
    )


def revoke_failing(view: RequestView) -> tuple[str, list[dict[str, Any]]]:
    text = (
        f"Revoking {view.requester}'s {escape(view.role)} on {escape(view.app)} is failing: "
        f"{escape(view.last_error or 'unknown error')}"
    )
    blocks: list[Block] = [
        SectionBlock(
            text=md(
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
    return truncate(text, 300), dump(blocks)


# -- break-glass -------------------------------------------------------------------
def breakglass_tag(view: RequestView) -> str:
    """What a listing adds for a break-glass request: the incident and its review."""
    if not view.breakglass:
        return ""
    tag = f" · :rotating_light: break-glass ({escape(view.incident_ref or '-')})"
    return tag + (", needs review" if view.needs_review else ", reviewed")


def review_lines(view: RequestView) -> str:
    if view.reviewed_at is None:
        return (
            ":warning: *Needs review*: an approver or admin acknowledges it with a reason. "
            "It stays on your Home tab and in `/jit pending` until then."
        )
    return (
        f":white_check_mark: Reviewed by {user(view.reviewed_by)} {when(view.reviewed_at)}: "
        f"{escape(view.review_reason or '')}"
    )


def breakglass_alert(
    view: RequestView, *, current: bool = True
) -> tuple[str, list[dict[str, Any]]]:
    """The alert every approver and admin gets when someone breaks glass, edited in
    place as the request moves; *Acknowledge* until someone reviewed it (only for
    those who still may), *Revoke* while access is held or about to be."""
    blocks: list[Block] = [
        first_line_block(view),
        HeaderBlock(text=f"Break-glass access #{view.id}"),
        SectionBlock(
            text=md(
                truncate(
                    f":rotating_light: {user(view.requester)} broke glass: "
                    f"*{escape(view.role)}* on *{escape(view.app)}* without approval, for "
                    f"incident *{escape(view.incident_ref or '-')}*.",
                    SECTION_TEXT_MAX,
                )
            )
        ),
        request_fields(view),
        justification(view),
        *outcome_blocks(view),
        SectionBlock(text=md(truncate(review_lines(view), SECTION_TEXT_MAX))),
    ]
    buttons: list[ButtonElement] = []
    if current and view.needs_review:
        buttons.append(button("Acknowledge", BREAKGLASS_ACK, view.id, "primary"))
    if current and Action.REVOKE in offered_actions(view):
        buttons.append(button("Revoke", REVOKE, view.id, "danger"))
    if buttons:
        blocks.append(ActionsBlock(block_id=f"breakglass:{view.id}", elements=buttons))
    if not current:
        blocks.append(
            ContextBlock(
                elements=[
                    md(
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
    return truncate(text, 300), dump(blocks)


def activity_summary(
    view: RequestView, summary: ActivitySummary, digest: str
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
        f"*{escape(view.app)}* (request #{view.id}), {when(start)} – {when(end)}"
    )
    blocks: list[Block] = [SectionBlock(text=md(truncate(head, SECTION_TEXT_MAX)))]
    if summary.empty:
        blocks.append(SectionBlock(text=md("No operations by them in the managed resource group.")))
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
                f"• {when(datetime.fromisoformat(f.at))} `{escape(f.operation)}` on "
                f"`{escape(f.resource)}`"
                for f in summary.failures
            ]
            if summary.failures_total > len(summary.failures):
                lines.append(f"…and {summary.failures_total - len(summary.failures)} more")
        else:
            lines.append("*Failures*: none")
        blocks.append(SectionBlock(text=md(truncate("\n".join(lines), SECTION_TEXT_MAX))))
    blocks.append(
        ContextBlock(
            elements=[
                md(
                    f"From the Azure Activity Log · audited as `activity_summary`, "
                    f"sha256 `{digest[:12]}…`"
                )
            ]
        )
    )
    return truncate(text, 300), dump(blocks)
