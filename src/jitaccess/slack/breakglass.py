"""Break-glass in Slack: ``/jit breakglass …``, ``/jit ack ID reason…``, and the
*Acknowledge* button with its reason modal. Same rules as every listener: ack first,
then write; a refusal is ephemeral (or a DM) and says what to change."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient

from jitaccess.app.commands import ReviewBreakGlass, TakeBreakGlass, handle
from jitaccess.slack.blocks import ids, markup, modals
from jitaccess.slack.commands import Command, app_command
from jitaccess.slack.listeners import SlackFrontEnd
from jitaccess.slack.listeners.base import clicked_request_id, guarded, origin_of

log = logging.getLogger("jitaccess.slack")


class BreakGlassListeners:
    def __init__(self, front: SlackFrontEnd) -> None:
        self.front = front

    def register(self, app: App) -> None:
        app.action(ids.BREAKGLASS_ACK)(guarded(self.on_ack_clicked))
        app.view(ids.REVIEW_MODAL)(guarded(self.on_review_submitted))

    # -- commands --------------------------------------------------------------------
    def run(self, cmd: Command, user: str, now: datetime) -> str:
        """``/jit breakglass`` and ``/jit ack``: the ephemeral reply."""
        action = app_command(cmd, user)
        assert isinstance(action, TakeBreakGlass | ReviewBreakGlass), cmd.name
        view = handle(self.front.service, action, now)
        if isinstance(action, TakeBreakGlass):
            granted = (
                "Your access is active."
                if view.state == "active"
                else "Access is being granted now."
            )
            return (
                f":rotating_light: Break-glass request #{view.id}: {markup.escape(view.role)} on "
                f"{markup.escape(view.app)}, "
                f"{markup.window(view)}, for {markup.escape(view.incident_ref or '')}. "
                f"{granted} Every approver and admin was alerted; one of them will review it."
            )
        return f"Break-glass request #{view.id} is reviewed. Thank you."

    # -- the Acknowledge button ------------------------------------------------------
    def on_ack_clicked(self, ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        user = body["user"]["id"]
        request_id = clicked_request_id(body)
        if request_id is None:
            log.warning("ignoring an acknowledge click that carries no request id")
            return
        origin = origin_of(body)

        self.front._open_reason_form(
            "acknowledge click",
            client,
            body,
            modals.review_modal(request_id, origin=origin),
            lambda: self.front.service.breakglass.review_refusal(request_id, user),
            origin,
        )

    def on_review_submitted(
        self, ack: Ack, body: dict[str, Any], view: dict[str, Any], client: WebClient
    ) -> None:
        form = self.front._read_reason_form(ack, view)
        if form is None:
            return
        user, request_id, service = body["user"]["id"], form.request_id, self.front.service

        def act(reason: str, now: datetime) -> None:
            handle(service, ReviewBreakGlass(request_id, actor=user, reason=reason), now)

        self.front._act_on_reason_form(
            ack,
            client,
            user,
            form,
            what="review",
            verb="acknowledge break-glass access",
            refusal_of=lambda: service.breakglass.review_refusal(request_id, user),
            act=act,
            tell_refusal=False,
        )
