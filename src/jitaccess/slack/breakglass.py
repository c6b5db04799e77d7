"""Break-glass in Slack: ``/jit breakglass …``, ``/jit ack ID reason…``, and the
*Acknowledge* button with its reason modal. Same rules as every listener: ack first,
then write; a refusal is ephemeral (or a DM) and says what to change."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient

from jitaccess import breakglass
from jitaccess.domain import policy as rules
from jitaccess.domain.errors import JitError, NotFound, RuleViolation
from jitaccess.slack import blocks
from jitaccess.slack.commands import Command
from jitaccess.slack.listeners import (
    MAX_REQUEST_ID,
    OUT_OF_DATE,
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
            view = breakglass.take(
                service,
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
                f":rotating_light: Break-glass request #{view.id}: {view.role} on {view.app}, "
                f"{blocks.window(view, tz)}, for {blocks.escape(view.incident_ref or '')}. "
                f"{granted} Every approver and admin was alerted; one of them will review it."
            )
        assert cmd.request_id is not None
        view = breakglass.review(
            service, cmd.request_id, actor=user, reason=cmd.reason or "", now=now
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

        def work() -> None:
            # The modal first: its trigger id expires three seconds after the click.
            opened = client.views_open(
                trigger_id=body["trigger_id"],
                view=blocks.review_modal(request_id, origin=origin),
            )
            refusal: JitError | None
            try:
                refusal = breakglass.review_refusal(self.front.service, request_id, user)
            except NotFound as exc:
                refusal = exc
            if refusal is not None:
                client.views_update(
                    view_id=opened["view"]["id"],
                    view=blocks.notice_modal("Nothing to do", refusal),
                )
                self.front._tell(client, origin, user, refusal)

        self.front._later("acknowledge click", work, None)

    def on_review_submitted(
        self, ack: Ack, body: dict[str, Any], view: dict[str, Any], client: WebClient
    ) -> None:
        user = body["user"]["id"]
        try:
            meta = json.loads(view.get("private_metadata") or "{}")
            typed = view["state"]["values"].get("reason", {}).get("reason", {}).get("value")
            reason = typed if isinstance(typed, str) else ""
            request_id = int(meta["request_id"])
            if not 0 < request_id <= MAX_REQUEST_ID:
                raise ValueError(f"no request {request_id}")
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
            ack(
                response_action="errors",
                errors={"reason": OUT_OF_DATE.format(again="click the button again")},
            )
            return
        now = self.front.clock()
        try:
            rules.check_reason(reason, "acknowledge break-glass access")
        except RuleViolation as exc:
            ack(response_action="errors", errors={"reason": str(exc)})
            return
        refusal: JitError | None
        try:
            refusal = breakglass.review_refusal(self.front.service, request_id, user)
        except NotFound as exc:
            refusal = exc
        if refusal is not None:
            ack(response_action="update", view=blocks.notice_modal("Nothing changed", refusal))
            return
        ack()

        def work() -> None:
            try:
                breakglass.review(
                    self.front.service, request_id, actor=user, reason=reason, now=now
                )
            except JitError as exc:  # e.g. another approver reviewed it since the check
                self.front._tell(client, meta, user, exc, dm=True)

        self.front._later(
            "review submission",
            work,
            lambda text: self.front._tell(client, meta, user, text, dm=True),
        )
