"""The modals: the request form, the reason form of a decision, the extend form, the
policy form, the break-glass review, and the loading and notice modals. Pure."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from slack_sdk.models.blocks import (
    Block,
    ContextBlock,
    DateTimePickerElement,
    InputBlock,
    Option,
    PlainTextInputElement,
    SectionBlock,
    StaticSelectElement,
    UserMultiSelectElement,
)
from slack_sdk.models.views import View

from jitaccess.app.views import AppView, RequestView
from jitaccess.domain.durations import format_duration
from jitaccess.domain.errors import JitError
from jitaccess.slack.blocks.ids import (
    APP_PICKED,
    CONFIG_MODAL,
    DECISION_MODAL,
    EXTEND_MODAL,
    REQUEST_MODAL,
    REVIEW_MODAL,
)
from jitaccess.slack.blocks.markup import (
    MODAL_TITLE_MAX,
    OPTION_TEXT_MAX,
    SECTION_TEXT_MAX,
    escape,
    md,
    mention_users,
    plain,
    truncate,
    user,
    window,
)
from jitaccess.slack.principals import is_group

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


def extend_modal(
    view: RequestView, maximum: timedelta, *, origin: dict[str, str]
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
            text=md(f"*#{view.id}* {escape(view.role)} on *{escape(view.app)}*\n{window(view)}")
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
                text=md(
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
                md(
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
        blocks=[SectionBlock(text=md(":hourglass_flowing_sand: Loading…"))],
    ).to_dict()


def notice_modal(title: str, message: str | JitError) -> dict[str, Any]:
    return View(
        type="modal",
        title=plain(title, MODAL_TITLE_MAX),
        close="Close",
        blocks=[SectionBlock(text=md(truncate(mention_users(message), SECTION_TEXT_MAX)))],
    ).to_dict()


def decision_modal(
    view: RequestView | None,
    *,
    request_id: int,
    decision: str,
    origin: dict[str, str],
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
                text=md(
                    f"*#{view.id}* {user(view.requester)} · {escape(view.role)} on "
                    f"*{escape(view.app)}*"
                    f"\n{window(view)}"
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
            text=md(f"JIT policy for *{escape(app.name)}*. Changes apply to new requests only.")
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
