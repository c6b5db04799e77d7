"""The gate in front of Bolt for Slack's HTTP requests: the signature, the body's shape
and replays, checked before Bolt (or any listener) reads a thing; and the one shape
check Socket Mode envelopes go through too (:func:`slack_payload_problem`)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from slack_sdk.signature import SignatureVerifier

from jitaccess.wsgi_json import json_response

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

# The gate logged as the HTTP front door before it moved here; the logger keeps its name.
log = logging.getLogger("jitaccess.web")


#: Types Bolt's request parsing and listener matching rely on, field by field; a body
#: that breaks one of them made Bolt raise (a 500) before any listener of ours ran.
_NONE = type(None)
_ID = (dict, str, _NONE)  # an object with an ``id``, or the id itself
_FIELDS: dict[str, tuple[type, ...]] = {
    "type": (str,),
    "subtype": (str, _NONE),
    "user": _ID,
    "user_id": (str, _NONE),
    "user_team": _ID,
    "team": _ID,
    "team_id": (str, _NONE),
    "enterprise": _ID,
    "enterprise_id": (str, _NONE),
    "channel": _ID,
    "channel_id": (str, _NONE),
    "container": (dict, _NONE),
    "view": (dict, _NONE),
    "message": (dict, _NONE),
    "previous_message": (dict, _NONE),
    "item": (dict, _NONE),
    "assistant_thread": (dict, _NONE),
    "state": (dict, _NONE),
    "actions": (list,),
    "response_url": (str, _NONE),
    "response_urls": (list,),
    "authorizations": (list, _NONE),
    "trigger_id": (str, _NONE),
    "callback_id": (str, _NONE),
    "block_id": (str, _NONE),
    "action_id": (str, _NONE),
    "api_app_id": (str, _NONE),
    "is_enterprise_install": (bool, str, _NONE),
    "is_ext_shared_channel": (bool, _NONE),
    "context_team_id": (str, _NONE),
    "context_enterprise_id": (str, _NONE),
    "app_installed_team_id": (str, _NONE),
    "function_data": (dict, _NONE),
    "function_execution_id": (str, _NONE),
    "execution_id": (str, _NONE),
    "inputs": (dict, _NONE),
    "bot_access_token": (str, _NONE),
    "event": (dict,),
    "event_id": (str, _NONE),
    "challenge": (str,),
    "thread_ts": (str, _NONE),
    "private_metadata": (str, _NONE),
    "id": (str, _NONE),
    "values": (dict,),
}
#: Objects whose own fields Bolt reads too.
_NESTED = (
    "user",
    "user_team",
    "team",
    "enterprise",
    "channel",
    "container",
    "view",
    "message",
    "previous_message",
    "item",
    "assistant_thread",
    "state",
    "event",
    "function_data",
)
_MAX_BODY = 1 << 20  # Slack's requests are far smaller; refuse to buffer more

ReplayCheck = Callable[[str], bool]
"""Called with a verified request's signature: ``True`` the first time it is seen."""


def slack_gate(
    bolt_app: WSGIApplication, *, signing_secret: str, replay: ReplayCheck | None = None
) -> WSGIApplication:
    """The only way Slack's HTTP requests reach Bolt. In order: the signature (401),
    the body's shape (400 with what is wrong, instead of Bolt raising: a 500), a replay
    of a request already handled (200 that does nothing), then Bolt. Bolt checks the
    signature again: two independent locks on one door."""
    if not signing_secret:
        raise ValueError("a Slack endpoint needs the signing secret to verify requests")
    verifier = SignatureVerifier(signing_secret)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST":
            return json_response(
                start_response, "405 Method Not Allowed", {"error": "Slack sends POST requests"}
            )
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= _MAX_BODY:
            return bad_request(start_response, "the body length is missing or too large")
        raw = environ["wsgi.input"].read(length) if length else b""
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError:
            return bad_request(start_response, "the body is not UTF-8")
        timestamp = str(environ.get("HTTP_X_SLACK_REQUEST_TIMESTAMP") or "")
        signature = str(environ.get("HTTP_X_SLACK_SIGNATURE") or "")
        # The SDK's check raises on a timestamp that is not a number: that is unsigned.
        if not (timestamp.isascii() and timestamp.isdigit()) or not verifier.is_valid(
            body, timestamp, signature
        ):
            return json_response(
                start_response, "401 Unauthorized", {"error": "invalid Slack signature"}
            )
        problem, data = slack_body_problem(body, str(environ.get("CONTENT_TYPE") or ""))
        if problem:
            return bad_request(start_response, problem)
        if data.get("type") != "url_verification" and replay and not replay(signature):
            log.info("ignored a replayed Slack request (signature already seen)")
            answer = {"text": "This command was already handled."} if "command" in data else {}
            return json_response(start_response, "200 OK", answer)
        environ["wsgi.input"] = io.BytesIO(raw)
        try:
            return bolt_app(environ, start_response)
        except Exception:
            log.exception("the Slack request could not be handled")
            return bad_request(start_response, "malformed Slack request")

    return app


def bad_request(start_response: StartResponse, problem: str) -> Iterable[bytes]:
    return json_response(start_response, "400 Bad Request", {"error": problem})


#: What Slack sends, by the name a Socket Mode envelope gives it: an Events API body
#: (JSON over HTTP), an interaction payload (the ``payload`` form field), a slash
#: command's fields (the form itself).
EVENTS_API, INTERACTIVE, SLASH_COMMANDS = "events_api", "interactive", "slash_commands"
_WHAT = {EVENTS_API: "the body", INTERACTIVE: "the payload", SLASH_COMMANDS: "the slash command"}


def slack_body_problem(body: str, content_type: str) -> tuple[str | None, dict[str, Any]]:
    """What makes a (verified) HTTP body something Bolt cannot handle, or ``None``; and
    the body as Bolt will see it (the interaction payload, the command's fields, the event)."""
    data: Any
    if content_type.startswith("application/json"):
        kind = EVENTS_API
        try:
            data = json.loads(body)
        except ValueError:
            return "the body is not JSON", {}
    else:
        form = parse_qs(body, keep_blank_values=True)
        if "payload" in form:
            kind = INTERACTIVE
            try:
                data = json.loads(form["payload"][0])
            except ValueError:
                return "the payload is not JSON", {}
        else:
            kind = SLASH_COMMANDS
            data = {key: values[0] for key, values in form.items()}
            if "ssl_check" in data:
                return None, data
    return slack_payload_problem(kind, data), data if isinstance(data, dict) else {}


def slack_payload_problem(kind: str, data: Any) -> str | None:
    """What makes ``data``, of one ``kind`` (:data:`EVENTS_API`, :data:`INTERACTIVE` or
    :data:`SLASH_COMMANDS`), something Bolt cannot handle, or ``None``. The one shape
    check for both ways Slack's requests arrive: HTTP bodies and Socket Mode envelopes."""
    if kind not in _WHAT:
        return "it is not an event, an interaction or a slash command"
    if not isinstance(data, dict):
        return f"{_WHAT[kind]} is not a JSON object"
    if kind == EVENTS_API:
        if not isinstance(data.get("type"), str):
            return "the event has no type"
        if data["type"] == "event_callback" and not isinstance(data.get("event"), dict):
            return "the event_callback has no event"
        if isinstance(data.get("event"), dict) and not isinstance(data["event"].get("type"), str):
            return "the event has no type"
        if data["type"] == "url_verification" and not isinstance(data.get("challenge"), str):
            return "the url_verification has no challenge"
        return _field_problem(data)
    if kind == INTERACTIVE:
        for key in ("type", "user", "team"):
            if key not in data:
                return f"the payload has no {key}"
        problem = _field_problem(data)
        if problem:
            return problem
        if data["type"] == "block_actions" and not (
            data.get("actions")
            and all(isinstance(a.get("action_id"), str) for a in data["actions"])
        ):
            return "the block_actions payload has no actions with an action_id"
        if data["type"] in ("view_submission", "view_closed") and not (
            isinstance(data.get("view"), dict)
            and isinstance(data["view"].get("callback_id"), str)
            and isinstance(data["view"].get("type"), str)
        ):
            return f"the {data['type']} payload has no view with a type and callback_id"
        return None
    for key in ("command", "user_id"):
        if not data.get(key):
            return f"the slash command has no {key}"
    # Form fields are text; a Socket Mode envelope's JSON could hold anything.
    for key, value in data.items():
        if not isinstance(value, str):
            return f"the slash command's {str(key)[:40]!r} is not text"
    return None


def _field_problem(data: dict[str, Any], where: str = "") -> str | None:
    for key, value in data.items():
        kinds = _FIELDS.get(key)
        if kinds is not None and not isinstance(value, kinds):
            return f"{where}{key} has the wrong type"
        if key in ("actions", "response_urls", "authorizations") and value is not None:
            for item in value:
                if not isinstance(item, dict):
                    return f"{where}{key} holds something other than objects"
                problem = _field_problem(item, f"{where}{key}[].")
                if problem:
                    return problem
        if key in _NESTED and isinstance(value, dict):
            problem = _field_problem(value, f"{where}{key}.")
            if problem:
                return problem
    return None
