"""Button clicks: the application picked in the request form, the decision buttons
(approve, deny, revoke, and the extension's), *Cancel*, *I'm done* and *Extend*. Each
acks at once; what it opens or changes follows the ack."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from jitaccess.domain import policy as rules
from jitaccess.domain.errors import JitError
from jitaccess.slack.blocks import cards, ids, modals
from jitaccess.slack.listeners.base import (
    ListenerBase,
    clicked_block_id,
    clicked_request_id,
    form_text,
    guarded,
    log,
    origin_of,
)


class ActionListeners(ListenerBase):
    @guarded
    def on_app_picked(self, ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        try:
            selected = form_text(body["actions"][0]["selected_option"]["value"])
        except (KeyError, IndexError, TypeError):
            log.warning("ignoring an application pick that names no application")
            return

        def work() -> None:
            apps = self.service.apps_for_publisher(body["user"]["id"])
            client.views_update(
                view_id=body["view"]["id"],
                hash=body["view"]["hash"],
                view=modals.request_modal(apps, selected=selected, now=self.clock()),
            )

        self._later("application pick", work, None)

    def _decision_button(self, decision: str) -> Callable[..., None]:
        @guarded
        def on_click(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
            ack()
            user = body["user"]["id"]
            request_id = clicked_request_id(body)
            if request_id is None:
                log.warning("ignoring a %s click that carries no request id", decision)
                return
            origin = origin_of(body)
            if decision.endswith("_extension"):
                # The extension this card showed travels with the form to the decision.
                shown = cards.shown_extension_end(clicked_block_id(body))
                if shown is not None:
                    origin["shown_end"] = str(int(shown.timestamp()))

            self._open_reason_form(
                f"{decision} click",
                client,
                body,
                modals.decision_modal(
                    None, request_id=request_id, decision=decision, origin=origin
                ),
                lambda: (
                    self._refusal(request_id, user, decision)
                    or self.service.sign_in_refusal(request_id, user, decision, now=self.clock())
                ),
                origin,
            )

        on_click.__name__ = f"on_{decision}_clicked"
        return on_click

    @guarded
    def on_extend_clicked(self, ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        """*Extend* on the status card or the reminder: the form, or why not."""
        ack()
        user = body["user"]["id"]
        request_id = clicked_request_id(body)
        if request_id is None:
            log.warning("ignoring an extend click that carries no request id")
            return
        origin = origin_of(body)
        now = self.clock()

        def work() -> None:
            try:
                # Azure's own JIT requests cannot be extended (the service says where).
                self.service.refuse_if_native(request_id, "extending it")
                # Could anything be added at all? (The form then asks how much.)
                view, app = self.service.extensions.precheck(
                    request_id, actor=user, added=rules.MIN_DURATION, reason="-", now=now
                )
                modal = modals.extend_modal(view, app.policy.max_duration, origin=origin)
            except JitError as exc:
                modal = modals.notice_modal("Nothing to extend", exc)
            client.views_open(trigger_id=body["trigger_id"], view=modal)

        self._later("extend click", work, lambda text: self._tell(client, origin, user, text))

    def _own_request_button(self, action: str) -> Callable[..., None]:
        @guarded
        def on_click(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
            ack()
            user = body["user"]["id"]
            request_id = clicked_request_id(body)
            if request_id is None:
                log.warning("ignoring a %s click that carries no request id", action)
                return
            now = self.clock()
            origin = origin_of(body)

            def work() -> None:
                try:
                    if action == "cancel":
                        self.service.cancel(request_id, actor=user, now=now)
                    else:
                        self.service.release(request_id, actor=user, now=now)
                except JitError as exc:
                    if origin:
                        self._tell(client, origin, user, exc, dm=True)
                        return
                    try:
                        client.views_open(
                            trigger_id=body["trigger_id"],
                            view=modals.notice_modal("Nothing changed", exc),
                        )
                    except SlackApiError:  # e.g. the trigger expired: a DM instead
                        self._tell(client, origin, user, exc, dm=True)

            def sorry(text: str) -> None:
                self._tell(client, origin, user, text, dm=True)

            self._later(f"{action} click", work, sorry)

        on_click.__name__ = f"on_{action}_clicked"
        return on_click


def register(app: App, listeners: ActionListeners) -> None:
    """Wire every button."""
    app.action(ids.APP_PICKED)(listeners.on_app_picked)
    for action, decision in (
        (ids.APPROVE, "approve"),
        (ids.DENY, "deny"),
        (ids.REVOKE, "revoke"),
        (ids.APPROVE_EXTENSION, "approve_extension"),
        (ids.DENY_EXTENSION, "deny_extension"),
    ):
        app.action(action)(listeners._decision_button(decision))
    app.action(ids.CANCEL)(listeners._own_request_button("cancel"))
    app.action(ids.RELEASE)(listeners._own_request_button("release"))
    app.action(ids.EXTEND)(listeners.on_extend_clicked)
