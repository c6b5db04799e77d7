"""The App Home, and the lists of requests it shares with ``/jit list`` and
``/jit pending`` (the break-glass reviews owed among them). Pure."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    SectionBlock,
)
from slack_sdk.models.views import View

from jitaccess.app.views import RequestView
from jitaccess.domain.lifecycle import Action
from jitaccess.slack.blocks.cards import breakglass_tag
from jitaccess.slack.blocks.ids import APPROVE, BREAKGLASS_ACK, CANCEL, DENY, RELEASE, REVOKE
from jitaccess.slack.blocks.markup import (
    HOME_ITEMS_MAX,
    SECTION_TEXT_MAX,
    button,
    deciding,
    dump,
    escape,
    md,
    offered_actions,
    truncate,
    user,
    when,
    window,
)


def request_list(
    title: str, views: Sequence[RequestView], now: datetime, *, empty: str
) -> list[dict[str, Any]]:
    """A listing under ``title``, which is mrkdwn: the caller escaped what people typed
    in it (the same title is the reply's ``text``)."""
    blocks: list[Block] = [SectionBlock(text=md(f"*{title}*"))]
    if not views:
        blocks.append(SectionBlock(text=md(empty)))
    for view in views[:HOME_ITEMS_MAX]:
        blocks.append(
            SectionBlock(
                text=md(
                    truncate(
                        f"*#{view.id}* {user(view.requester)} · {escape(view.role)} on "
                        f"*{escape(view.app)}* · "
                        f"{view.status_line(now, at=when)}{breakglass_tag(view)}"
                        f"\n{window(view)}" + _progress_suffix(view) + _decided(view),
                        SECTION_TEXT_MAX,
                    )
                )
            )
        )
    if len(views) > HOME_ITEMS_MAX:
        blocks.append(ContextBlock(elements=[md(f"…and {len(views) - HOME_ITEMS_MAX} more")]))
    return dump(blocks)


def _decided(view: RequestView) -> str:
    """ " · decided by <@U…>: why"; nothing for break-glass, which nobody approved (its
    tag says whether it was reviewed)."""
    if not view.decided_by or view.breakglass:
        return ""
    why = (
        f": {escape(view.decision_reason)}"
        if view.decision_reason and not view.decided_by.startswith("policy:")
        else ""
    )
    return f" · decided by {user(view.decided_by)}{why}"


def _progress_suffix(view: RequestView) -> str:
    """ " · 1 of 2 approved" on a pending request that needs several approvals."""
    if not deciding(view) or view.required_approvals <= 1:
        return ""
    return f" · {len(view.approvals)} of {view.required_approvals} approved"


def home_view(
    *,
    pending: Sequence[RequestView],
    mine: Sequence[RequestView],
    overseen: Sequence[RequestView] | None,
    now: datetime,
    unreviewed: Sequence[RequestView] = (),
) -> dict[str, Any]:
    """The App Home: break-glass access waiting for review, the approval inbox across
    applications, your requests, and (for approvers and admins) the access active now."""
    blocks: list[Block] = []
    if unreviewed:
        blocks += [
            HeaderBlock(text="Break-glass, needs review"),
            *review_items(unreviewed, now),
        ]
        blocks.append(DividerBlock())
    blocks.append(HeaderBlock(text="Waiting for your approval"))
    if not pending:
        blocks.append(SectionBlock(text=md("Nothing waits for you.")))
    by_app: dict[str, list[RequestView]] = {}
    for view in pending:
        by_app.setdefault(view.app, []).append(view)
    shown = 0
    for app_name, items in sorted(by_app.items()):
        blocks.append(ContextBlock(elements=[md(f"*{escape(app_name)}* · {len(items)} waiting")]))
        for view in items:
            if shown >= HOME_ITEMS_MAX:
                break
            shown += 1
            blocks.append(
                SectionBlock(
                    text=md(
                        truncate(
                            f"*#{view.id}* {user(view.requester)} asks for *{escape(view.role)}* · "
                            f"{window(view)}{_progress_suffix(view)}\n"
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
                        button("Approve", APPROVE, view.id, "primary"),
                        button("Deny", DENY, view.id, "danger"),
                    ],
                )
            )
    if len(pending) > shown:
        blocks.append(
            ContextBlock(elements=[md(f"…and {len(pending) - shown} more: `/jit pending`")])
        )
    blocks += [DividerBlock(), HeaderBlock(text="Your requests")]
    if not mine:
        blocks.append(SectionBlock(text=md("No requests yet. Ask with `/jit request`.")))
    for view in mine[:HOME_ITEMS_MAX]:
        accessory = None
        offered = offered_actions(view)
        if Action.RELEASE in offered:
            accessory = button("I'm done", RELEASE, view.id)
        elif Action.CANCEL in offered:
            accessory = button("Cancel", CANCEL, view.id)
        blocks.append(
            SectionBlock(
                text=md(
                    f"*#{view.id}* {escape(view.role)} on *{escape(view.app)}* · "
                    f"{view.status_line(now, at=when)}\n{window(view)}"
                ),
                accessory=accessory,
            )
        )
    if overseen is not None:
        blocks += [DividerBlock(), HeaderBlock(text="Active access")]
        if not overseen:
            blocks.append(SectionBlock(text=md("No access is active in your applications.")))
        for view in overseen[:HOME_ITEMS_MAX]:
            blocks.append(
                SectionBlock(
                    text=md(
                        f"*#{view.id}* {user(view.requester)} · {escape(view.role)} on "
                        f"*{escape(view.app)}* until {when(view.ends_at)}"
                    ),
                    accessory=button("Revoke", REVOKE, view.id, "danger"),
                )
            )
    return View(type="home", blocks=blocks[:100]).to_dict()


def review_items(views: Sequence[RequestView], now: datetime) -> list[Block]:
    """Unreviewed break-glass requests, each with *Acknowledge*."""
    items: list[Block] = []
    for view in views[:HOME_ITEMS_MAX]:
        items.append(
            SectionBlock(
                text=md(
                    truncate(
                        f"*#{view.id}* {user(view.requester)} · {escape(view.role)} on "
                        f"*{escape(view.app)}* · {view.status_line(now, at=when)} · "
                        f":rotating_light: break-glass, needs review "
                        f"({escape(view.incident_ref or '-')})\n{window(view)}"
                        f"\n>{escape(view.justification)}",
                        SECTION_TEXT_MAX,
                    )
                ),
                accessory=button("Acknowledge", BREAKGLASS_ACK, view.id, "primary"),
            )
        )
    if len(views) > HOME_ITEMS_MAX:
        items.append(ContextBlock(elements=[md(f"…and {len(views) - HOME_ITEMS_MAX} more")]))
    return items


def review_list(views: Sequence[RequestView], now: datetime) -> list[dict[str, Any]]:
    """The ``/jit pending`` section for break-glass access waiting for review."""
    title: list[Block] = [SectionBlock(text=md("*Break-glass, needs review*"))]
    return dump([*title, *review_items(views, now)])
