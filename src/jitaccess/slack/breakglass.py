"""Break-glass in Slack: ``/jit breakglass …``, ``/jit ack ID reason…``, and the
*Acknowledge* button with its reason modal. Same rules as every listener: ack first,
then write; a refusal is ephemeral (or a DM) and says what to change."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient

from jitaccess.slack import blocks
from jitaccess.slack.commands import Command
from jitaccess.slack.listeners import (
    SlackFrontEnd,
    _clicked_request_id,
    _origin,
    guarded,
)

log = logging.getLogger("jitaccess.slack")


class BreakGlassListeners:
    def __init__(self, front: SlackFrontEnd) -> None:
        self.front = front

    def register(self, app: App) -> None:
        app.action(blocks.BREAKGLASS_ACK)(guarded(self.on_ack_clicked))
        app.view(blocks.REVIEW_MODAL)(guarded(self.on_review_submitted))

    # -- commands --------------------------------------------------------------------
    def run(self, cmd: Command, user: str, now: datetime) -> str:
        """``/jit breakglass`` and ``/jit ack``: the ephemeral reply."""
        service = self.front.service
        if cmd.name == "breakglass":
            assert cmd.app and cmd.role and cmd.duration is not None and cmd.reason is not None
            view = service.breakglass.take(
                cmd.app,
                actor=user,
                role=cmd.role,
                duration=cmd.duration,
                incident_ref=cmd.extra.get("incident", ""),
                reason=cmd.reason,
                now=now,
            )
            tz = self.front.notifier.zones.of(user)
            granted = (
                "Your access is active."
                if view.state == "active"
                else "Access is being granted now."
            )
            return (
                f":rotating_light: Break-glass request #{view.id}: {blocks.escape(view.role)} on "
                f"{blocks.escape(view.app)}, "
                f"{blocks.window(view, tz)}, for {blocks.escape(view.incident_ref or '')}. "
                f"{granted} Every approver and admin was alerted; one of them will review it."
            )
        assert cmd.request_id is not None
        view = service.breakglass.review(
            cmd.request_id, actor=user, reason=cmd.reason or "", now=now
        )
        return f"Break-glass request #{view.id} is reviewed. Thank you."

    # -- the Acknowledge button ------------------------------------------------------
    def on_ack_clicked(self, ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        user = body["user"]["id"]
        request_id = _clicked_request_id(body)
        if request_id is None:
            log.warning("ignoring an acknowledge click that carries no request id")
            return
        origin = _origin(body)

        self.front._open_reason_form(
            "acknowledge click",
            client,
            body,
            blocks.review_modal(request_id, origin=origin),
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
            service.breakglass.review(request_id, actor=user, reason=reason, now=now)

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
