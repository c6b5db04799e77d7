"""Socket Mode end to end: slack_bolt's ``SocketModeHandler`` (slack_sdk's builtin
WebSocket client) and ours (``GuardedSocketModeHandler`` on
``jitaccess.slack.socket_client``) against the fake Slack's ``apps.connections.open`` +
WebSocket server; Slack's connection refresh against a ``websockets`` server that
behaves as Slack's does (``tests/socket_mode_server.py``); plus the fake's RFC 6455
handling checked with a hand-rolled client."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import pytest
from slack_bolt import Ack, App, Respond
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_bolt.adapter.socket_mode.base_handler import BaseSocketModeHandler
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from jitaccess.slack.socket_mode import GuardedSocketModeHandler
from jitaccess_sandbox.fake_slack import FakeSlack
from socket_mode_server import SocketModeServer

APP_TOKEN = "xapp-1-A0001-1-test"
USER = "U1"
CHANNEL = "C0123"


@pytest.fixture(autouse=True)
def no_thread_left_behind() -> Iterator[None]:
    """Nothing the test started may outlive it (non-daemon threads would block exit)."""
    before = set(threading.enumerate())
    yield

    def leftovers() -> list[threading.Thread]:
        return [
            t
            for t in threading.enumerate()
            if t not in before and t.is_alive() and (not t.daemon or t.name.startswith("fake"))
        ]

    deadline = time.monotonic() + 2
    while leftovers() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert leftovers() == []


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSlack]:
    # slack_sdk's WebSocket client tunnels through HTTP(S)_PROXY (it ignores NO_PROXY).
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(var, raising=False)
    with FakeSlack(users={USER: {"name": "alice"}}) as f:
        yield f


def close_handler(handler: BaseSocketModeHandler) -> None:
    """``handler.close()``, without its up-to-1-s stall: the SDK client's message
    processor blocks in ``message_queue.get(timeout=1)`` and ``close()`` joins it, so
    once ``close()`` has flagged the client closed, wake it with a ``None`` (which the
    processor skips; ours has no such processor and never reads that queue)."""
    client = handler.client
    closer = threading.Thread(target=handler.close, name="close-socket-mode-handler")
    closer.start()
    while closer.is_alive():
        if client.closed:
            client.message_queue.put(None)
        closer.join(0.01)


class Bolt:
    """A real Bolt app in Socket Mode, connected to the fake."""

    def __init__(
        self,
        fake: FakeSlack,
        handler: type[BaseSocketModeHandler] = SocketModeHandler,
        **handler_options: Any,
    ) -> None:
        self.executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="bolt-listener")
        self.app = App(
            client=WebClient(token="xoxb-test", base_url=fake.base_url, timeout=5),
            token_verification_enabled=False,
            request_verification_enabled=False,
            listener_executor=self.executor,
        )
        self.clicks: list[dict[str, Any]] = []

        @self.app.command("/jit")
        def jit(ack: Ack, command: dict[str, Any], client: WebClient) -> None:
            ack(text=f"Working on `{command['text']}`…")
            client.chat_postMessage(channel=command["user_id"], text="Usage: /jit request <app>")

        @self.app.action("approve")
        def approve(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
            ack()
            self.clicks.append(body)
            respond(text=f"Approved {body['actions'][0]['value']}", replace_original=True)

        # The handler's socket client issues apps.connections.open through app.client
        # (its default web_client), which already points at the fake.
        self.handler = handler(self.app, APP_TOKEN, **handler_options)

    def close(self) -> None:
        close_handler(self.handler)
        self.executor.shutdown(wait=True)


@pytest.fixture(params=[SocketModeHandler, GuardedSocketModeHandler], ids=["bolt", "guarded"])
def bolt(fake: FakeSlack, request: pytest.FixtureRequest) -> Iterator[Bolt]:
    """Bolt's own handler, and ours, which must behave the same for well-formed envelopes."""
    b = Bolt(fake, request.param)
    try:
        b.handler.connect()
        assert fake.socket_connected(timeout=5)
        yield b
    finally:
        started = time.monotonic()
        b.close()
        assert time.monotonic() - started < 1, "SocketModeHandler.close() stalled"


def slash_payload(fake: FakeSlack, text: str) -> dict[str, Any]:
    """What Slack puts in a ``slash_commands`` envelope: the command's form fields."""
    return {
        "token": "legacy-verification-token",
        "team_id": fake.team_id,
        "team_domain": "jitaccess-sandbox",
        "channel_id": CHANNEL,
        "channel_name": "ops",
        "user_id": USER,
        "user_name": "alice",
        "command": "/jit",
        "text": text,
        "api_app_id": fake.app_id,
        "is_enterprise_install": "false",
        "response_url": fake.response_url("cmd"),
        "trigger_id": fake.new_trigger_id(USER),
    }


def block_actions_payload(fake: FakeSlack) -> dict[str, Any]:
    return {
        "type": "block_actions",
        "user": {"id": USER, "username": "alice", "name": "alice", "team_id": fake.team_id},
        "api_app_id": fake.app_id,
        "token": "legacy-verification-token",
        "container": {
            "type": "message",
            "message_ts": "1700000000.000100",
            "channel_id": CHANNEL,
            "is_ephemeral": False,
        },
        "trigger_id": fake.new_trigger_id(USER),
        "team": {"id": fake.team_id, "domain": "jitaccess-sandbox"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": CHANNEL, "name": "ops"},
        "message": {"type": "message", "ts": "1700000000.000100", "text": "Access request"},
        "state": {"values": {}},
        "response_url": fake.response_url("click"),
        "actions": [
            {
                "type": "button",
                "action_id": "approve",
                "block_id": "decision",
                "text": {"type": "plain_text", "text": "Approve"},
                "value": "req-42",
                "style": "primary",
                "action_ts": "1700000001.000200",
            }
        ],
    }


# ------------------------------------------------------------------ apps.connections.open


def test_apps_connections_open_wants_an_app_level_token(fake: FakeSlack) -> None:
    client = WebClient(base_url=fake.base_url, timeout=5)
    for token, error in (("xoxb-test", "not_allowed_token_type"), ("bogus", "invalid_auth")):
        with pytest.raises(SlackApiError) as exc:
            client.apps_connections_open(app_token=token)
        assert exc.value.response["error"] == error

    url = client.apps_connections_open(app_token=APP_TOKEN)["url"]
    parts = urlsplit(url)
    assert (parts.scheme, parts.hostname) == ("ws", "127.0.0.1")
    assert parts.port == urlsplit(fake.url).port
    assert parts.path.startswith("/socket/")
    assert [c.token for c in fake.calls_to("apps.connections.open")] == [
        "xoxb-test",
        "bogus",
        APP_TOKEN,
    ]
    assert not fake.socket_connected(timeout=0)
    with pytest.raises(TimeoutError):
        fake.send_envelope("events_api", {}, timeout=0.05)


def test_socket_mode_handler_with_a_bot_token_fails_to_connect(fake: FakeSlack) -> None:
    app = App(
        client=WebClient(token="xoxb-test", base_url=fake.base_url, timeout=5),
        token_verification_enabled=False,
        request_verification_enabled=False,
    )
    handler = SocketModeHandler(app, "xoxb-test")
    try:
        with pytest.raises(SlackApiError) as exc:
            handler.connect()
        assert exc.value.response["error"] == "not_allowed_token_type"
        assert not fake.socket_connected(timeout=0)
    finally:
        close_handler(handler)


# ------------------------------------------------------------------ through slack_bolt


def test_slash_command_is_acked_with_its_response_and_the_listener_posts(
    fake: FakeSlack, bolt: Bolt
) -> None:
    (call,) = fake.calls_to("apps.connections.open")
    assert call.token == APP_TOKEN

    ack = fake.send_envelope("slash_commands", slash_payload(fake, "help"))

    assert ack is not None
    assert set(ack) == {"envelope_id", "payload"}
    assert ack["payload"] == {"text": "Working on `help`…"}
    assert fake.wait_for(lambda: len(fake.dms_to(USER)) == 1)
    assert fake.dms_to(USER)[0]["text"] == "Usage: /jit request <app>"
    assert fake.socket_messages[-1] == ack
    assert fake.server_errors == []


def test_block_actions_click_is_acked_and_responds(fake: FakeSlack, bolt: Bolt) -> None:
    ack = fake.send_envelope("interactive", block_actions_payload(fake))

    assert ack is not None
    assert set(ack) == {"envelope_id"}  # ack() without a body: nothing to send back
    assert fake.wait_for(lambda: bool(fake.responses.get("click")))
    assert fake.responses["click"] == [{"text": "Approved req-42", "replace_original": True}]
    assert [c["actions"][0]["action_id"] for c in bolt.clicks] == ["approve"]
    # Envelopes are independent: a second one on the same connection works too.
    again = fake.send_envelope("slash_commands", slash_payload(fake, "list"))
    assert again is not None and again["payload"] == {"text": "Working on `list`…"}
    assert fake.server_errors == []


@pytest.fixture
def guarded(fake: FakeSlack) -> Iterator[Bolt]:
    b = Bolt(fake, GuardedSocketModeHandler)
    try:
        b.handler.connect()
        assert fake.socket_connected(timeout=5)
        yield b
    finally:
        b.close()


def test_guarded_handler_acks_malformed_envelopes_without_a_traceback(
    fake: FakeSlack, guarded: Bolt, caplog: pytest.LogCaptureFixture
) -> None:
    """Envelopes Bolt cannot read are acked, reach no listener, and log one warning each."""
    click = block_actions_payload(fake)
    envelopes: list[tuple[str, Any]] = [
        ("interactive", {k: v for k, v in click.items() if k != "user"}),
        ("interactive", click | {"actions": [{"value": "req-42"}]}),
        ("interactive", [click]),
        ("slash_commands", slash_payload(fake, "help") | {"command": None}),
        ("events_api", {"type": "event_callback"}),
        ("bogus_kind", click),
    ]
    for n, (kind, payload) in enumerate(envelopes):
        ack = fake.send_envelope(kind, payload, envelope_id=f"bad-{n}")
        assert ack == {"envelope_id": f"bad-{n}"}, kind
    assert guarded.clicks == [] and fake.responses == {} and fake.dms_to(USER) == []
    warnings = [r for r in caplog.records if r.name == "jitaccess.slack"]
    assert [r.levelname for r in warnings] == ["WARNING"] * len(envelopes)
    assert not [r for r in caplog.records if r.exc_info or r.levelname == "ERROR"]

    again = fake.send_envelope("interactive", click)
    assert again is not None and set(again) == {"envelope_id"}
    assert fake.wait_for(lambda: bool(fake.responses.get("click")))
    assert [c["actions"][0]["value"] for c in guarded.clicks] == ["req-42"]


def test_stop_closes_the_session_and_the_client_stops_reading(fake: FakeSlack, bolt: Bolt) -> None:
    client = bolt.handler.client
    assert client.is_connected()
    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 1
    # The builtin client got the close frame: its session is inactive, nothing spins.
    assert fake.wait_for(lambda: not client.is_connected(), timeout=2)
    assert not fake.socket_connected(timeout=0)


# ------------------------------------------------------------------ Slack's refresh

#: Slack wants an ack within 3 s; an ack that waits on a reconnect is a failure.
ACK_WITHIN = 1.0


@pytest.fixture
def slack_socket(fake: FakeSlack) -> Iterator[SocketModeServer]:
    """A Socket Mode server that behaves as Slack's; ``apps.connections.open`` points to it."""
    with SocketModeServer(app_id=fake.app_id) as server:
        fake.socket_mode_url = server.url
        yield server


@pytest.fixture
def on_slack_socket(fake: FakeSlack, slack_socket: SocketModeServer) -> Iterator[Bolt]:
    b = Bolt(fake, GuardedSocketModeHandler)
    try:
        b.handler.connect()
        slack_socket.wait_connection(1)
        yield b
    finally:
        started = time.monotonic()
        b.close()
        assert time.monotonic() - started < 1.5, "closing the Socket Mode handler stalled"


def test_acks_never_wait_on_slacks_connection_refresh(
    fake: FakeSlack, slack_socket: SocketModeServer, on_slack_socket: Bolt
) -> None:
    """Slack retires a connection with ``disconnect``/``refresh_requested`` every few
    hours. A command sent on the old connection just after it, and one sent on the new
    connection as soon as it is greeted, are both acked well within Slack's 3 s (with
    slack_sdk's builtin client: 3.0 s and 3.1 s), each on the connection it came on.
    Twice in a row; the retired connections are closed by the app."""
    server = slack_socket
    warm_up = server.send_envelope(1, "slash_commands", slash_payload(fake, "help"))
    assert server.wait_ack(warm_up).seconds < ACK_WITHIN

    for old, new in ((1, 2), (2, 3)):
        server.disconnect(old)
        before_switch = server.send_envelope(old, "slash_commands", slash_payload(fake, "list"))
        server.wait_connection(new)
        after_hello = server.send_envelope(new, "slash_commands", slash_payload(fake, "help"))

        ack = server.wait_ack(before_switch)
        assert ack.seconds < ACK_WITHIN, f"ack on the old connection after {ack.seconds:.2f}s"
        assert ack.connection == old
        assert ack.message["payload"] == {"text": "Working on `list`…"}
        ack = server.wait_ack(after_hello)
        assert ack.seconds < ACK_WITHIN, f"ack on the new connection after {ack.seconds:.2f}s"
        assert ack.connection == new
        assert ack.message["payload"] == {"text": "Working on `help`…"}
        # The app closes the connection Slack retired (once its acks are sent); the new stays.
        assert server.wait_closed(old, timeout=5)
        assert server.is_open(new)

    assert fake.wait_for(lambda: len(fake.dms_to(USER)) == 5)  # the listeners ran, once each
    assert server.other_messages == []


def test_a_connection_slack_drops_without_notice_is_replaced(
    fake: FakeSlack, slack_socket: SocketModeServer, on_slack_socket: Bolt
) -> None:
    server = slack_socket
    server.drop(1)
    server.wait_connection(2)
    ack = server.wait_ack(server.send_envelope(2, "slash_commands", slash_payload(fake, "help")))
    assert ack.seconds < ACK_WITHIN and ack.connection == 2
    assert len(fake.calls_to("apps.connections.open")) == 2


def test_a_socket_out_of_reach_at_start_is_retried_in_the_background(
    fake: FakeSlack, slack_socket: SocketModeServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The WebSocket cannot be opened when serve starts: one warning line, no
    exception, and the connection is opened as soon as it can be."""
    with socket.socket() as closed_port:
        closed_port.bind(("127.0.0.1", 0))
        unreachable = f"ws://127.0.0.1:{closed_port.getsockname()[1]}/link"
    fake.socket_mode_url = unreachable
    b = Bolt(fake, GuardedSocketModeHandler, reconnect_delays=(0.05,))
    try:
        b.handler.connect()
        assert fake.wait_for(lambda: len(fake.calls_to("apps.connections.open")) >= 2)
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert warnings and all(r.exc_info is None for r in warnings)
        assert "could not open the Socket Mode connection" in warnings[0].getMessage()
        fake.socket_mode_url = slack_socket.url
        slack_socket.wait_connection(1)
        ack = slack_socket.wait_ack(
            slack_socket.send_envelope(1, "slash_commands", slash_payload(fake, "help"))
        )
        assert ack.seconds < ACK_WITHIN
    finally:
        b.close()


def test_a_frame_that_is_not_json_is_logged_on_one_line(
    fake: FakeSlack,
    slack_socket: SocketModeServer,
    on_slack_socket: Bolt,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each frame that is not a JSON object: one warning line that shows it, no
    traceback, nothing acked or run; the connection goes on working."""
    server = slack_socket
    frames = ["not json", '{"envelope_id": "e1", "type": ', "[1, 2]", '"hello"']
    caplog.set_level(logging.WARNING)
    for frame in frames:
        server.send_text(1, frame)
    ack = server.wait_ack(server.send_envelope(1, "slash_commands", slash_payload(fake, "help")))
    assert ack.seconds < ACK_WITHIN

    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(records) == len(frames), [r.getMessage() for r in records]
    for record, frame in zip(records, frames, strict=True):
        assert record.exc_info is None and record.levelname == "WARNING"
        assert "\n" not in record.getMessage()
        assert (
            "not a JSON object" in record.getMessage() and repr(frame)[:40] in record.getMessage()
        )
    assert fake.wait_for(lambda: len(fake.dms_to(USER)) == 1)  # only the real command ran
    assert server.other_messages == []
    assert list(server.acks) == [ack.message["envelope_id"]]


# ------------------------------------------------------------------ raw RFC 6455


class RawWebSocket:
    """A minimal client that does what slack_sdk's does not: fragments, closes politely."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=5)
        key = base64.b64encode(os.urandom(16)).decode()
        fields = {
            "Host": f"{parts.hostname}:{parts.port}",
            "Upgrade": "websocket",
            "Connection": "keep-alive, Upgrade",
            "Sec-WebSocket-Key": key,
            "Sec-WebSocket-Version": "13",
            **(headers or {}),
        }
        request = f"GET {parts.path} HTTP/1.1\r\n"
        request += "".join(f"{k}: {v}\r\n" for k, v in fields.items() if v) + "\r\n"
        self.sock.sendall(request.encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            assert chunk, "connection closed during the handshake"
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:])}
        digest = hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
        self.expected_accept = base64.b64encode(digest).decode()

    def _read(self, size: int) -> bytes:
        while len(self.buffer) < size:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise EOFError
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def recv_frame(self) -> tuple[bool, int, bytes]:
        b1, b2 = self._read(2)
        assert not b2 & 0x80, "server frames are never masked"
        size = b2 & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", self._read(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", self._read(8))
        return bool(b1 & 0x80), b1 & 0x0F, self._read(size)

    def recv_json(self) -> dict[str, Any]:
        fin, opcode, data = self.recv_frame()
        assert (fin, opcode) == (True, 0x1)
        message: dict[str, Any] = json.loads(data)
        return message

    def send_frame(self, opcode: int, data: bytes, *, fin: bool = True, mask: bool = True) -> None:
        head = bytes([(0x80 if fin else 0) | opcode])
        flag = 0x80 if mask else 0
        if len(data) < 126:
            head += bytes([flag | len(data)])
        else:
            head += struct.pack("!BH", flag | 126, len(data))
        if mask:
            key = os.urandom(4)
            data = bytes(b ^ key[i % 4] for i, b in enumerate(data))
            head += key
        self.sock.sendall(head + data)

    def at_eof(self) -> bool:
        return self.buffer == b"" and self.sock.recv(1) == b""


@pytest.fixture
def quiet_fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSlack]:
    """No unsolicited server pings, so a raw client sees exactly what it provoked."""
    with FakeSlack(socket_ping_interval=None) as f:
        yield f


def open_url(fake: FakeSlack) -> str:
    url: str = WebClient(base_url=fake.base_url).apps_connections_open(app_token=APP_TOKEN)["url"]
    return url


def test_raw_handshake_hello_ping_fragmented_ack_and_close(quiet_fake: FakeSlack) -> None:
    fake = quiet_fake
    ws = RawWebSocket(open_url(fake))
    try:
        assert ws.status == 101
        assert ws.headers["upgrade"].lower() == "websocket"
        assert ws.headers["sec-websocket-accept"] == ws.expected_accept
        hello = ws.recv_json()
        assert hello["type"] == "hello"
        assert hello["num_connections"] == 1
        assert hello["connection_info"] == {"app_id": fake.app_id}
        assert fake.socket_connected(timeout=1)

        ws.send_frame(0x9, b"are you there")
        assert ws.recv_frame() == (True, 0xA, b"are you there")

        assert fake.send_envelope("events_api", {"type": "event_callback"}, wait=False) is None
        envelope = ws.recv_json()
        assert envelope["type"] == "events_api"
        assert envelope["accepts_response_payload"] is False
        assert envelope["retry_attempt"] == 0
        assert envelope["payload"] == {"type": "event_callback"}

        # A fragmented ack (>125 bytes, so a 16-bit length too) with a ping in between.
        ack = json.dumps({"envelope_id": envelope["envelope_id"], "payload": {"x": "y" * 300}})
        raw = ack.encode()
        ws.send_frame(0x1, raw[:10], fin=False)
        ws.send_frame(0x9, b"mid", fin=True)
        ws.send_frame(0x0, raw[10:200], fin=False)
        ws.send_frame(0x0, raw[200:], fin=True)
        assert ws.recv_frame() == (True, 0xA, b"mid")
        assert fake.wait_for(lambda: json.loads(ack) in fake.socket_messages, timeout=2)

        ws.send_frame(0x8, struct.pack("!H", 1000) + b"bye")
        # The close is echoed with its status code (websockets echoes the reason too).
        fin, opcode, data = ws.recv_frame()
        assert (fin, opcode, data[:2]) == (True, 0x8, struct.pack("!H", 1000))
        assert ws.at_eof()
        assert fake.wait_for(lambda: not fake.socket_connected(timeout=0), timeout=2)
    finally:
        ws.sock.close()
    assert fake.server_errors == []


def test_raw_unmasked_frame_is_a_protocol_error(quiet_fake: FakeSlack) -> None:
    ws = RawWebSocket(open_url(quiet_fake))
    try:
        assert ws.recv_json()["type"] == "hello"
        ws.send_frame(0x1, b"{}", mask=False)
        fin, opcode, data = ws.recv_frame()
        assert (fin, opcode) == (True, 0x8)
        assert struct.unpack("!H", data[:2])[0] == 1002
        assert ws.at_eof()
    finally:
        ws.sock.close()


def test_raw_upgrade_refusals(quiet_fake: FakeSlack) -> None:
    fake = quiet_fake
    url = open_url(fake)
    unknown = RawWebSocket(url.rsplit("/", 1)[0] + "/not-a-ticket")
    assert unknown.status == 404
    plain_get = RawWebSocket(url, headers={"Upgrade": "", "Connection": "close"})
    assert plain_get.status == 426
    old_version = RawWebSocket(url, headers={"Sec-WebSocket-Version": "8"})
    assert (old_version.status, old_version.headers["sec-websocket-version"]) == (426, "13")
    bad_key = RawWebSocket(url, headers={"Sec-WebSocket-Key": "c2hvcnQ="})
    assert bad_key.status == 400
    fake.set_down(True)
    down = RawWebSocket(url)
    assert down.status == 503
    for ws in (unknown, plain_get, old_version, bad_key, down):
        ws.sock.close()
    assert not fake.socket_connected(timeout=0)
