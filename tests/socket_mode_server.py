"""Slack's side of Socket Mode as Slack behaves, on the ``websockets`` library (its
framing, not ours): each connection is greeted with ``hello``; on demand a connection
is told ``{"type": "disconnect", "reason": "refresh_requested"}`` and then stays open
(Slack closes it later, or the app does); envelopes go to the connection the test
names, and every ack is recorded with the connection it came on and when.

No pings from this side (Slack pings seldom): nothing here wakes a client that blocks
in a read, so a client that waits out a read timeout shows it.

Point a :class:`~jitaccess_sandbox.fake_slack.FakeSlack` at it (``socket_mode_url``)
so that ``apps.connections.open`` hands out this server's URL."""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Self

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve


@dataclass
class Ack:
    message: dict[str, Any]
    connection: int  # 1 for the first connection the server accepted, 2 for the next...
    seconds: float  # from the envelope's sending to the ack's arrival


@dataclass
class _Sent:
    at: float
    connection: int


@dataclass
class _Session:
    number: int
    ws: ServerConnection
    greeted_at: float
    closed: threading.Event = field(default_factory=threading.Event)


class SocketModeServer:
    def __init__(self, app_id: str = "A0001") -> None:
        self.app_id = app_id
        self._cond = threading.Condition()
        self._sessions: dict[int, _Session] = {}
        self._numbers = itertools.count(1)
        self._sent: dict[str, _Sent] = {}
        self.acks: dict[str, Ack] = {}
        #: Text frames from the app that are not acks (should stay empty).
        self.other_messages: list[str] = []
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        self._server = serve(
            self._session, "127.0.0.1", 0, ping_interval=None, compression=None, close_timeout=1
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="socket-mode-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.socket.getsockname()[:2]
        return f"ws://{host}:{port}/link"

    # ------------------------------------------------------------ what the test does

    def wait_connection(self, number: int, timeout: float = 5.0) -> float:
        """Wait until connection ``number`` is greeted; when (``time.monotonic()``) it was."""
        with self._cond:
            if not self._cond.wait_for(lambda: number in self._sessions, timeout):
                raise TimeoutError(f"no Socket Mode connection #{number} within {timeout}s")
            return self._sessions[number].greeted_at

    def wait_closed(self, number: int, timeout: float = 5.0) -> bool:
        return self._session_of(number).closed.wait(timeout)

    def is_open(self, number: int) -> bool:
        return not self._session_of(number).closed.is_set()

    def disconnect(self, number: int, reason: str = "refresh_requested") -> None:
        """What Slack sends before it retires a connection (which stays open for now)."""
        message = {
            "type": "disconnect",
            "reason": reason,
            "debug_info": {"host": "fake-socket-mode"},
        }
        self._session_of(number).ws.send(json.dumps(message))

    def drop(self, number: int) -> None:
        """Close connection ``number`` without a ``disconnect`` first (Slack restarting)."""
        self._session_of(number).ws.close(1001, "going away")

    def send_text(self, number: int, text: str) -> None:
        self._session_of(number).ws.send(text)

    def send_envelope(self, number: int, type_: str, payload: dict[str, Any]) -> str:
        """Send an envelope on connection ``number``; its envelope id."""
        envelope_id = str(uuid.uuid4())
        envelope = {
            "envelope_id": envelope_id,
            "type": type_,
            "payload": payload,
            "accepts_response_payload": type_ != "events_api",
        }
        session = self._session_of(number)
        with self._cond:
            self._sent[envelope_id] = _Sent(time.monotonic(), number)
        session.ws.send(json.dumps(envelope))
        return envelope_id

    def wait_ack(self, envelope_id: str, timeout: float = 10.0) -> Ack:
        with self._cond:
            if not self._cond.wait_for(lambda: envelope_id in self.acks, timeout):
                raise TimeoutError(f"no ack for envelope {envelope_id} within {timeout}s")
            return self.acks[envelope_id]

    # ------------------------------------------------------------ server side

    def _session_of(self, number: int) -> _Session:
        with self._cond:
            return self._sessions[number]

    def _session(self, ws: ServerConnection) -> None:
        number = next(self._numbers)
        with self._cond:
            open_now = sum(1 for s in self._sessions.values() if not s.closed.is_set())
        hello = {
            "type": "hello",
            "num_connections": open_now + 1,
            "debug_info": {"host": "fake-socket-mode", "approximate_connection_time": 18060},
            "connection_info": {"app_id": self.app_id},
        }
        ws.send(json.dumps(hello))
        session = _Session(number, ws, time.monotonic())
        with self._cond:
            self._sessions[number] = session
            self._cond.notify_all()
        try:
            for text in ws:
                arrived = time.monotonic()
                self._on_text(number, text if isinstance(text, str) else text.decode(), arrived)
        except ConnectionClosed:
            pass
        finally:
            session.closed.set()
            with self._cond:
                self._cond.notify_all()

    def _on_text(self, number: int, text: str, arrived: float) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        with self._cond:
            sent = self._sent.get(message.get("envelope_id")) if isinstance(message, dict) else None
            if sent is None or not isinstance(message, dict):
                self.other_messages.append(text)
            else:
                self.acks[message["envelope_id"]] = Ack(message, number, arrived - sent.at)
            self._cond.notify_all()
