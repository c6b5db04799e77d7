"""Drive the real Bolt app the way Slack does: correctly signed HTTP bodies for
commands, clicks, modal submissions and events; its WebClient talks to the fake
Slack Web API over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from slack_bolt.request import BoltRequest
from slack_bolt.response import BoltResponse

from conftest import make_service
from jitaccess.app.outbox import OutboxRelay, RelayReport
from jitaccess.app.service import SweepReport
from jitaccess.slack.blocks import ids
from jitaccess.slack.runtime import build_slack, slack_client
from jitaccess.store.db import Database
from jitaccess_sandbox.fake_slack import FakeSlack
from jitaccess_sandbox.page import sign

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TEAM = "T0001"


def now() -> datetime:
    return datetime.now(UTC)


def signed_headers(
    body: str,
    *,
    secret: str = SECRET,
    timestamp: int | None = None,
    content_type: str = "application/x-www-form-urlencoded",
) -> dict[str, str]:
    """Slack's signature headers for ``body`` (the one signing function, shared with the
    sandbox page and the benchmarks: ``jitaccess_sandbox.page.sign``)."""
    signature = sign(secret, body, timestamp)
    return {
        "content-type": content_type,
        "x-slack-request-timestamp": signature["X-Slack-Request-Timestamp"],
        "x-slack-signature": signature["X-Slack-Signature"],
    }


def select(value: str) -> dict[str, Any]:
    return {"type": "static_select", "selected_option": {"value": value}}


def text_value(value: str | None) -> dict[str, Any]:
    return {"type": "plain_text_input", "value": value}


class SlackWorld:
    """The service, the Bolt app and the relay, wired like ``serve`` against a fake Slack."""

    def __init__(self, fake: FakeSlack, db: Database, **service_options: object) -> None:
        self.fake = fake
        self.db = db
        # inline=False, as under serve: clicks never wait on a backend.
        self.service, self.log_provider = make_service(db, inline=False, **service_options)
        client = slack_client("xoxb-test-token", fake.base_url)
        self.runtime = build_slack(
            self.service, client, signing_secret=SECRET, clock=now, process_before_response=True
        )
        self.relay = OutboxRelay(db, self.runtime.notifier)
        self._responses = 0

    # -- time ------------------------------------------------------------------------
    def tick(self) -> tuple[SweepReport, RelayReport]:
        """What the scheduler does at the current (frozen) time: sweep, then deliver."""
        return self.service.sweep(now()), self.relay.drain(now())

    def deliver(self) -> RelayReport:
        return self.relay.drain(now())

    # -- raw -------------------------------------------------------------------------
    def post(self, body: str, headers: dict[str, str]) -> BoltResponse:
        return self.runtime.app.dispatch(BoltRequest(body=body, headers=headers))

    def post_form(self, fields: dict[str, str], **extra_headers: str) -> BoltResponse:
        body = urlencode(fields)
        headers = signed_headers(body)
        headers.update({k.replace("_", "-"): v for k, v in extra_headers.items()})
        return self.post(body, headers)

    def post_payload(self, payload: dict[str, Any]) -> BoltResponse:
        return self.post_form({"payload": json.dumps(payload)})

    # -- what people do --------------------------------------------------------------
    def command(self, user: str, text: str) -> tuple[BoltResponse, str]:
        """Run ``/jit text`` as ``user``; returns the HTTP response and the response_url key."""
        self._responses += 1
        key = f"cmd{self._responses}"
        response = self.post_form(
            {
                "token": "legacy",
                "team_id": TEAM,
                "team_domain": "acme",
                "channel_id": "C0GENERAL",
                "channel_name": "general",
                "user_id": user,
                "user_name": user.lower(),
                "command": "/jit",
                "text": text,
                "api_app_id": "A0001",
                "response_url": self.fake.response_url(key),
                "trigger_id": self.fake.new_trigger_id(user),
            }
        )
        return response, key

    def replies(self, key: str) -> list[str]:
        """Texts posted to a command's response_url (ephemeral replies)."""
        return [r.get("text", "") for r in self.fake.responses.get(key, [])]

    def say(self, user: str, text: str) -> str:
        """Run a command and return its single ephemeral reply (with blocks' text)."""
        response, key = self.command(user, text)
        assert response.status == 200, response.body
        posted = self.fake.responses.get(key, [])
        assert len(posted) == 1, f"expected one reply to /jit {text}, got {posted}"
        return (
            posted[0].get("text", "")
            + "\n"
            + json.dumps(posted[0].get("blocks", []), ensure_ascii=False)
        )

    def click(self, user: str, message: dict[str, Any], action_id: str) -> BoltResponse:
        """Click the button ``action_id`` on a message the bot posted."""
        button, block_id = find_button(message["blocks"], action_id)
        return self.post_payload(
            {
                "type": "block_actions",
                "team": {"id": TEAM},
                "user": {"id": user},
                "api_app_id": "A0001",
                "trigger_id": self.fake.new_trigger_id(user),
                "container": {
                    "type": "message",
                    "message_ts": message["ts"],
                    "channel_id": message["channel"],
                },
                "channel": {"id": message["channel"]},
                "message": {"ts": message["ts"], "blocks": message["blocks"]},
                "response_url": self.fake.response_url(f"click-{message['ts']}"),
                "actions": [
                    {
                        "type": "button",
                        "action_id": action_id,
                        "block_id": block_id,
                        "value": button["value"],
                        "action_ts": str(time.time()),
                    }
                ],
            }
        )

    def click_home(self, user: str, action_id: str, request_id: int) -> BoltResponse:
        home = self.fake.current_home(user)
        assert home is not None, "no home tab published"
        button, block_id = find_button(home["blocks"], action_id, value=str(request_id))
        return self.post_payload(
            {
                "type": "block_actions",
                "team": {"id": TEAM},
                "user": {"id": user},
                "api_app_id": "A0001",
                "trigger_id": self.fake.new_trigger_id(user),
                "container": {"type": "view", "view_id": "VHOME"},
                "view": {"id": "VHOME", "type": "home"},
                "actions": [
                    {
                        "type": "button",
                        "action_id": action_id,
                        "block_id": block_id,
                        "value": button["value"],
                        "action_ts": str(time.time()),
                    }
                ],
            }
        )

    def last_modal(self, user: str) -> dict[str, Any]:
        views = self.fake.opened_views(user)
        assert views, f"no modal was opened for {user}"
        return views[-1]

    def submit(self, user: str, modal: dict[str, Any], values: dict[str, Any]) -> BoltResponse:
        view = modal["view"]
        return self.post_payload(
            {
                "type": "view_submission",
                "team": {"id": TEAM},
                "user": {"id": user},
                "api_app_id": "A0001",
                "trigger_id": self.fake.new_trigger_id(user),
                "view": {
                    "id": modal["id"],
                    "type": "modal",
                    "hash": modal["hash"],
                    "callback_id": view.get("callback_id", ""),
                    "private_metadata": view.get("private_metadata", ""),
                    "state": {"values": values},
                },
            }
        )

    def submit_request(
        self,
        user: str,
        *,
        app: str,
        role: str,
        duration: str,
        justification: str | None,
        start: int | None = None,
    ) -> BoltResponse:
        modal = self.last_modal(user)
        assert modal["view"].get("callback_id") == ids.REQUEST_MODAL, modal["view"]
        initial = next(
            b["element"]["initial_date_time"]
            for b in modal["view"]["blocks"]
            if b.get("block_id") == "start"
        )
        values = {
            "app": {ids.APP_PICKED: select(app)},
            "role": {"role": select(role)},
            "start": {
                "start": {
                    "type": "datetimepicker",
                    "selected_date_time": initial if start is None else start,
                }
            },
            "duration": {"duration": select(duration)},
            "justification": {"justification": text_value(justification)},
        }
        return self.submit(user, modal, values)

    def submit_reason(self, user: str, reason: str | None) -> BoltResponse:
        modal = self.last_modal(user)
        assert modal["view"].get("callback_id") == ids.DECISION_MODAL, modal["view"]
        return self.submit(user, modal, {"reason": {"reason": text_value(reason)}})

    def home_opened(self, user: str, event_id: str, **headers: str) -> BoltResponse:
        body = json.dumps(
            {
                "token": "legacy",
                "team_id": TEAM,
                "api_app_id": "A0001",
                "type": "event_callback",
                "event_id": event_id,
                "event_time": int(time.time()),
                "event": {
                    "type": "app_home_opened",
                    "user": user,
                    "channel": f"D{user}",
                    "tab": "home",
                    "event_ts": str(time.time()),
                },
            }
        )
        all_headers = signed_headers(body, content_type="application/json")
        all_headers.update(headers)
        return self.post(body, all_headers)

    # -- reading Slack -----------------------------------------------------------------
    def card_for(self, approver: str, request_id: int) -> dict[str, Any]:
        cards = [
            m
            for m in self.fake.cards_to(approver)
            if json.dumps(m.get("blocks")).find(f"Access request #{request_id}") >= 0
        ]
        assert len(cards) == 1, f"expected one card for #{request_id}, got {len(cards)}"
        return cards[0]

    def requester_cards(self, user: str, request_id: int) -> list[dict[str, Any]]:
        """The top-level messages in ``user``'s DM about the request (replies aside)."""
        return [m for m in self.fake.cards_to(user) if f"#{request_id}" in m.get("text", "")]

    def requester_card(self, user: str, request_id: int) -> dict[str, Any]:
        """``user``'s one card for their request, as it is now."""
        cards = self.requester_cards(user, request_id)
        assert len(cards) == 1, f"expected one card for #{request_id}, got {len(cards)}"
        return cards[0]

    def thread(self, user: str, card: dict[str, Any]) -> list[dict[str, Any]]:
        """The replies in the thread of ``card`` in ``user``'s DM, oldest first."""
        return self.fake.thread_to(user, card["ts"])


def find_button(
    block_list: list[dict[str, Any]], action_id: str, value: str | None = None
) -> tuple[dict[str, Any], str]:
    for block in block_list:
        elements = list(block.get("elements", []))
        if block.get("accessory"):
            elements.append(block["accessory"])
        for element in elements:
            if element.get("action_id") == action_id and (
                value is None or element.get("value") == value
            ):
                return element, block.get("block_id", "")
    raise AssertionError(f"no {action_id} button in {json.dumps(block_list)[:500]}")


def first_line(message: dict[str, Any]) -> str:
    """The first line a person reads on a card: its first block's text."""
    block = message["blocks"][0]
    return str((block.get("text") or {}).get("text", "")).split("\n")[0]


def broadcast(message: dict[str, Any]) -> bool:
    """Whether a thread reply was also sent to the conversation (it notifies)."""
    return message.get("subtype") == "thread_broadcast"


def texts(message: dict[str, Any]) -> str:
    """All the text a person would read in a message or view."""
    return message.get("text", "") + " " + json.dumps(message.get("blocks", []), ensure_ascii=False)


def button_click(
    fake: FakeSlack, user: str, message: dict[str, Any], action_id: str
) -> dict[str, Any]:
    """The ``block_actions`` payload Slack sends when ``user`` presses ``action_id`` on
    ``message`` (a message the fake Slack holds)."""
    button, block_id = find_button(message["blocks"], action_id)
    return {
        "type": "block_actions",
        "user": {"id": user},
        "team": {"id": "T0001"},
        "trigger_id": fake.new_trigger_id(user),
        "channel": {"id": message["channel"]},
        "container": {
            "type": "message",
            "channel_id": message["channel"],
            "message_ts": message["ts"],
        },
        "actions": [
            {
                "action_id": action_id,
                "block_id": block_id,
                "value": button["value"],
                "type": "button",
            }
        ],
    }


def reason_submission(user: str, modal: dict[str, Any], reason: str) -> dict[str, Any]:
    """The ``view_submission`` payload of the reason modal ``modal`` (as the fake Slack
    opened it), submitted by ``user`` with ``reason``."""
    return {
        "type": "view_submission",
        "user": {"id": user},
        "team": {"id": "T0001"},
        "view": {
            "id": modal["id"],
            "type": "modal",
            "callback_id": modal["view"]["callback_id"],
            "private_metadata": modal["view"]["private_metadata"],
            "hash": modal["hash"],
            "state": {
                "values": {"reason": {"reason": {"type": "plain_text_input", "value": reason}}}
            },
        },
    }


# -- talking to a `serve` over HTTP (tests/test_serve.py, test_web_worker.py, …) ---------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(
    method: str, url: str, body: str = "", headers: dict[str, str] | None = None
) -> tuple[int, str]:
    request = urllib.request.Request(
        url, data=body.encode() if body else None, headers=headers or {}, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def post_signed(base: str, fields: dict[str, str], *, secret: str = SECRET) -> tuple[int, str]:
    body = urlencode(fields)
    return http("POST", f"{base}/slack/events", body, signed_headers(body, secret=secret))


def command_fields(fake: FakeSlack, user: str, text: str, key: str) -> dict[str, str]:
    return {
        "command": "/jit",
        "text": text,
        "user_id": user,
        "team_id": "T0001",
        "channel_id": "C1",
        "response_url": fake.response_url(key),
        "trigger_id": fake.new_trigger_id(user),
    }


def serving(base: str) -> bool:
    try:
        return http("GET", f"{base}/healthz")[0] == 200
    except OSError:
        return False


def wait_until(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


# -- one kind of listener, called directly (tests/slack/listeners/) ------------------


class Recorder:
    """Stands for Bolt's ``ack`` or ``respond``: records what each call said."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, text: str | None = None, **kwargs: Any) -> None:
        self.calls.append({"text": text, **kwargs} if text is not None else kwargs)


def listener_parts(fake: FakeSlack, db: Database) -> tuple[Any, Any, Any]:
    """The service, a real WebClient on the fake Slack and the notifier: what a kind of
    listener (``CommandListeners(service, notifier, now)``...) is made of. Work after
    the ack runs at once, in the call."""
    from jitaccess.slack.notifier import SlackNotifier

    service, _ = make_service(db, inline=False)
    client = slack_client("xoxb-test-token", fake.base_url)
    return service, client, SlackNotifier(client, service)


# -- times in what Slack was sent (issue 19: every time in the reader's own zone) ------
#: A date token the service wrote (``markup.date_token``): Slack formats it for each
#: reader, in their own zone; its fallback (UTC) is shown only where it cannot.
DATE_TOKEN = re.compile(r"<!date\^\d{1,12}\^[^|<>]*\|[^<>]*>")
#: What reads as a time of day or a timestamp: a clock time (18:32, 6:32 PM,
#: 18:32:05), an ISO date or timestamp (2026-12-07, 2026-12-07T18:32), or a zone
#: label (UTC, GMT, CET, EST…, +01:00). Durations (2h 15m) are not times.
BARE_TIME = re.compile(
    r"\b\d{1,2}:\d{2}(?::\d{2})?(?:\s?[AaPp][Mm])?\b"
    r"|\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2})?"
    r"|\b(?:UTC|GMT|CET|CEST|EST|EDT|PST|PDT)\b"
    r"|[+-]\d{2}:\d{2}\b"
)
#: The Slack calls whose arguments carry what people read.
SHOWN_METHODS = {
    "chat.postMessage",
    "chat.update",
    "chat.postEphemeral",
    "views.open",
    "views.update",
    "views.push",
    "views.publish",
}


def bare_times(text: str, *, mrkdwn: bool) -> list[str]:
    """The clock times and timestamps in one piece of text that a reader would see as
    written, in nobody's zone: in mrkdwn, anything outside a date token; in
    plain_text (where Slack formats no token), any time at all, and any token."""
    shown = DATE_TOKEN.sub(" ", text) if mrkdwn else text
    found = [match.group(0) for match in BARE_TIME.finditer(shown)]
    if not mrkdwn and "<!date^" in text:
        found.append("<!date^…> in plain_text (Slack shows it as written)")
    return found


def _walk(node: Any, where: str, out: list[tuple[str, str, bool]]) -> None:
    """Every text object under ``node`` as (where, text, is_mrkdwn)."""
    if isinstance(node, dict):
        kind = node.get("type")
        if kind in ("mrkdwn", "plain_text") and isinstance(node.get("text"), str):
            out.append((f"{where} ({kind})", node["text"], kind == "mrkdwn"))
        for key, value in node.items():
            if key == "errors" and isinstance(value, dict):
                # A modal's inline errors (response_action "errors") are plain text.
                out += [(f"{where}.errors.{k}", str(v), False) for k, v in value.items()]
            else:
                _walk(value, f"{where}.{key}", out)
    elif isinstance(node, list):
        for item in node:
            _walk(item, where, out)


def shown_texts(fake: FakeSlack, acks: Sequence[str] = ()) -> list[tuple[str, str, bool]]:
    """Every text a person could read in what Slack was sent: the API calls that post,
    edit or open something (a message's top-level ``text`` is mrkdwn), every body
    posted to a response_url, and every ack body (a modal's errors, an update)."""
    out: list[tuple[str, str, bool]] = []
    for call in fake.calls:
        if call.method not in SHOWN_METHODS:
            continue
        if isinstance(call.args.get("text"), str):
            out.append((f"{call.method} text", call.args["text"], True))
        _walk({k: v for k, v in call.args.items() if k != "text"}, call.method, out)
    for key, bodies in fake.responses.items():
        for body in bodies:
            if isinstance(body.get("text"), str):
                out.append((f"respond {key} text", body["text"], True))
            _walk({k: v for k, v in body.items() if k != "text"}, f"respond {key}", out)
    for body in acks:
        if body and body.lstrip().startswith("{"):
            _walk(json.loads(body), "ack", out)
    return out


def time_problems(fake: FakeSlack, acks: Sequence[str] = ()) -> list[str]:
    """Each bare time in what Slack was sent, with where it was and the text."""
    return [
        f"{where}: {found} in {text!r}"
        for where, text, mrkdwn in shown_texts(fake, acks)
        for found in bare_times(text, mrkdwn=mrkdwn)
    ]
