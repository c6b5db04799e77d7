"""Slack's requests over Socket Mode, with the same shape checks as over HTTP.

Bolt's own handler turns every envelope into a Bolt request. One Bolt cannot read (an
interaction without a user, a click without an ``action_id``, an event without its
event...) made it raise inside the socket client's worker thread: a traceback in the
log and no ack, so Slack sent it again. Here an envelope is checked first
(:func:`jitaccess.slack.signature.slack_payload_problem`, as the HTTP gate does); a malformed one
is acked, so Slack does not retry it, logged on one line, and goes no further.

The connection itself is :class:`jitaccess.slack.socket_client.SocketModeClient`
(on ``websockets``), not slack_sdk's builtin client: that one stops reading for about
3 s each time Slack refreshes the connection, so acks arrived past Slack's 3 s."""

from __future__ import annotations

import logging
import time
from typing import Any

from slack_bolt import App
from slack_bolt.adapter.socket_mode.base_handler import BaseSocketModeHandler
from slack_bolt.adapter.socket_mode.internals import run_bolt_app, send_response
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.client import BaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from jitaccess.slack.signature import slack_payload_problem
from jitaccess.slack.socket_client import SocketModeClient

log = logging.getLogger("jitaccess.slack")


def envelope_problem(message: dict[str, Any]) -> str | None:
    """What makes a Socket Mode envelope something Bolt cannot handle, or ``None``."""
    if not isinstance(message.get("envelope_id"), str):
        return "the envelope_id is not text"
    if not isinstance(message.get("type"), str):
        return "the envelope has no type"
    if "payload" not in message:
        return "the envelope has no payload"
    # Bolt passes it on as a header value, which must be text.
    if not isinstance(message.get("retry_reason", ""), str | None):
        return "the envelope's retry_reason is not text"
    return slack_payload_problem(message["type"], message["payload"])


class GuardedSocketModeHandler(BaseSocketModeHandler):
    """Bolt's Socket Mode handler on :class:`SocketModeClient`, whose entry point
    checks each envelope before Bolt sees it. The check is a message listener, which
    the socket client runs before it builds a request from the envelope (which alone
    can raise); there is no request listener."""

    client: SocketModeClient

    def __init__(self, app: App, app_token: str, **client_options: Any) -> None:
        self.app = app
        self.app_token = app_token
        self.client = SocketModeClient(app_token, web_client=app.client, **client_options)
        self.client.message_listeners.append(self.guard)

    def connect(self) -> None:
        """Open the connection. Refused by Slack (a wrong token): raises. Slack out of
        reach: logged on one line, and the client keeps trying in the background."""
        try:
            self.client.connect()
        except SlackApiError:
            raise
        except Exception as error:
            log.warning(
                "could not open the Socket Mode connection (%s: %s); retrying in the background",
                type(error).__name__,
                error,
            )
            self.client.reconnect_in_background()

    def handle(self, client: BaseSocketModeClient, req: SocketModeRequest) -> None:
        start = time.time()
        response = run_bolt_app(self.app, req)
        if response.status != 200:
            # No listener acknowledged it (none matched, or one failed before its ack):
            # Slack tells the person it failed. One warning line, on jitaccess's own logger
            # (slack_sdk's client said it at INFO on Bolt's, where nobody saw it).
            log.warning(
                "Unsuccessful Bolt execution for a %.40r envelope (id %.60r): status %s, "
                "not acknowledged",
                req.type,
                req.envelope_id,
                response.status,
            )
        send_response(client, req, response, start)

    def guard(self, client: BaseSocketModeClient, message: dict[Any, Any], raw: str | None) -> None:
        if "envelope_id" not in message:
            return  # hello and the like: not a request, nothing to ack
        problem = envelope_problem(message)
        if problem is None:
            request = SocketModeRequest.from_dict(message)
            if request is not None:  # always: the envelope has all it needs
                self.handle(self.client, request)
            return
        envelope_id = message["envelope_id"]
        log.warning(
            "acked and ignored a malformed Socket Mode envelope (%.40r, id %.60r): %s",
            message.get("type"),
            envelope_id,
            problem,
        )
        if isinstance(envelope_id, str):
            # Acked, so Slack does not deliver it again: a retry would be as malformed.
            client.send_socket_mode_response(SocketModeResponse(envelope_id=envelope_id))
