"""The Socket Mode connection to Slack: a ``slack_sdk`` socket client on ``websockets``
that never stops reading to reconnect.

Slack asks each connection to make way every few hours (``{"type": "disconnect",
"reason": "refresh_requested"}``) and keeps it open a little longer. slack_sdk's
builtin client handles that on its one message thread: it opens the new connection,
then closes the old one, which waits out the old reader's hard-coded 3 s read timeout,
and reads nothing meanwhile; an envelope sent then is acked after 3.0-3.1 s, past
Slack's 3 s limit. Its ``websocket-client`` sibling closes the old connection before
opening the new one, and acks envelopes of the old connection on the new one before
it is open (lost acks). The asyncio clients need an async Bolt app.

Here each connection has its own reader thread, envelopes go to a pool of workers, and
a ``disconnect`` only starts the reconnect in the background: the new connection is
opened first and becomes current; the old one goes on being read, its envelopes are
acked on it, and it is closed once they all are (or after :data:`DRAIN_SECONDS`, as an
ack later than Slack's 3 s is useless anyway). A connection that drops without notice
is replaced with backoff. A frame that is not a JSON object is logged on one line."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from logging import Logger
from queue import Queue
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackClientNotConnectedError
from slack_sdk.socket_mode.client import BaseSocketModeClient
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State
from websockets.sync.client import ClientConnection, connect

log = logging.getLogger("jitaccess.slack.socket_mode")

#: How long a retired connection may wait for its envelopes' acks before it is closed.
DRAIN_SECONDS = 3.0
#: Seconds between attempts to reconnect after a failure (the last one repeats).
RECONNECT_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)
#: Slack's envelopes (a modal's submission with its state) can be large.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class SocketModeClient(BaseSocketModeClient):
    """Drop-in for slack_sdk's ``SocketModeClient`` (same listeners, same
    ``send_socket_mode_response``); see the module docstring for how it differs."""

    def __init__(
        self,
        app_token: str,
        *,
        web_client: WebClient,
        logger: Logger | None = None,
        concurrency: int = 10,
        ping_interval: float = 10.0,
        open_timeout: float = 10.0,
        close_timeout: float = 1.0,
        drain_seconds: float = DRAIN_SECONDS,
        reconnect_delays: tuple[float, ...] = RECONNECT_DELAYS,
    ) -> None:
        self.app_token = app_token
        self.web_client = web_client
        self.logger = logger or log
        self.wss_uri = ""  # set by connect_to_new_endpoint(), used by connect()
        # Part of BaseSocketModeClient's interface; messages are dispatched as they are
        # read here, so nothing is ever queued in it.
        self.message_queue = Queue()
        self.message_listeners = []
        self.socket_mode_request_listeners = []
        self.message_workers = ThreadPoolExecutor(
            concurrency, thread_name_prefix="socket-mode-worker"
        )
        self.closed = False
        self.connect_operation_lock = threading.Lock()
        self.ping_interval = ping_interval
        self.open_timeout = open_timeout
        self.close_timeout = close_timeout
        self.drain_seconds = drain_seconds
        self.reconnect_delays = reconnect_delays

        self._cond = threading.Condition()
        self._current: ClientConnection | None = None
        self._open: dict[ClientConnection, int] = {}  # every connection not yet closed
        self._envelopes: dict[str, ClientConnection] = {}  # not yet acked: where from
        self._numbers = itertools.count(1)
        self._threads: set[threading.Thread] = set()
        self._reconnecting = False
        self._stopping = threading.Event()

    # ------------------------------------------------------------ connections

    def is_connected(self) -> bool:
        with self._cond:
            current = self._current
        return current is not None and current.state is State.OPEN

    def connect(self) -> None:
        """Open a connection and make it the current one; the one it replaces is
        retired (read until its envelopes are acked, then closed). Raises if the
        connection cannot be opened."""
        url = self.wss_uri or self.issue_new_wss_url()
        self.wss_uri = ""  # a Socket Mode URL is good for one connection
        secure = url.startswith("wss:")
        ws = connect(
            url,
            legacy=True,
            ssl=self.web_client.ssl if secure else None,
            open_timeout=self.open_timeout,
            ping_interval=self.ping_interval,
            ping_timeout=2 * self.ping_interval,
            close_timeout=self.close_timeout,
            max_size=MAX_MESSAGE_BYTES,
        )
        with self._cond:
            closed = self.closed
            if not closed:
                number = next(self._numbers)
                old, self._current = self._current, ws
                self._open[ws] = number
        if closed:  # closed while connecting
            ws.close()
            return
        self._spawn(self._read, ws, name=f"socket-mode-read-{number}")
        self.logger.info("Socket Mode connection %d is open", number)
        if old is not None:
            self._spawn(self._retire, old, name="socket-mode-retire")

    def reconnect_in_background(self) -> None:
        """Replace the current connection without blocking: with backoff until a new
        one is open or the client is closed. One attempt at a time."""
        with self._cond:
            if self._reconnecting or self.closed:
                return
            self._reconnecting = True
        # Not joined by close(): it may be inside an HTTP call to Slack, and it stops
        # by itself once it sees the client closed.
        self._spawn(self._reconnect, name="socket-mode-reconnect", joined=False)

    def _reconnect(self) -> None:
        try:
            for delay in self._delays():
                try:
                    self.connect_to_new_endpoint(force=True)
                    return
                except Exception as error:  # network, Slack, handshake: try again
                    if self.closed:
                        return
                    self.logger.warning(
                        "could not open a Socket Mode connection (%s: %s); retrying in %.0fs",
                        type(error).__name__,
                        error,
                        delay,
                    )
                if self._stopping.wait(delay):
                    return
        finally:
            with self._cond:
                self._reconnecting = False

    def _delays(self) -> Iterator[float]:
        yield from self.reconnect_delays
        while True:
            yield self.reconnect_delays[-1]

    def _retire(self, ws: ClientConnection) -> None:
        """Close a replaced connection once every envelope it brought is acked."""
        with self._cond:
            self._cond.wait_for(
                lambda: self.closed or ws not in self._envelopes.values(), self.drain_seconds
            )
        ws.close()

    def _read(self, ws: ClientConnection) -> None:
        try:
            for data in ws:
                self._on_frame(ws, data)
        except ConnectionClosed:
            pass
        except Exception:  # a bug here must not end the reading silently
            self.logger.exception("Socket Mode reader failed")
            ws.close()
        finally:
            with self._cond:
                number = self._open.pop(ws, 0)
                was_current = ws is self._current
                if was_current:
                    self._current = None
                for envelope_id in [e for e, w in self._envelopes.items() if w is ws]:
                    del self._envelopes[envelope_id]
                self._cond.notify_all()
            if was_current and not self.closed:
                self.logger.warning(
                    "Socket Mode connection %d closed (code %s); reconnecting",
                    number,
                    ws.close_code,
                )
                self.reconnect_in_background()

    def _on_frame(self, ws: ClientConnection, data: str | bytes) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            self.logger.warning(
                "ignored a Socket Mode frame that is not a JSON object: %.80r", data
            )
            return
        raw = data if isinstance(data, str) else data.decode("utf-8", "replace")
        if message.get("type") == "disconnect":
            self.logger.info(
                "Slack asked for a new Socket Mode connection (reason: %.40r)",
                message.get("reason"),
            )
            if ws is self._current:
                self.reconnect_in_background()
            return
        envelope_id = message.get("envelope_id")
        if isinstance(envelope_id, str):
            with self._cond:
                self._envelopes[envelope_id] = ws
        # Once closing, the pool takes nothing more: Slack delivers it again elsewhere.
        with contextlib.suppress(RuntimeError):
            self.message_workers.submit(self.run_message_listeners, message, raw)

    # ------------------------------------------------------------ sending

    def send_message(self, message: str) -> None:
        """Send on the connection the acked envelope came on while it is open, else
        on the current one."""
        envelope_id = _envelope_id(message)
        with self._cond:
            ws = self._envelopes.pop(envelope_id, None) if envelope_id else None
            self._cond.notify_all()
            if ws is None or ws.state is not State.OPEN:
                ws = self._current
        if ws is None:
            raise SlackClientNotConnectedError("no Socket Mode connection is open")
        try:
            ws.send(message)
        except ConnectionClosed as error:
            with self._cond:
                current = self._current
            if current is None or current is ws:
                raise SlackClientNotConnectedError(
                    f"the Socket Mode connection closed: {error}"
                ) from error
            try:
                current.send(message)
            except ConnectionClosed as again:
                raise SlackClientNotConnectedError(
                    f"the Socket Mode connection closed: {again}"
                ) from again

    # ------------------------------------------------------------ closing

    def disconnect(self) -> None:
        with self._cond:
            current = self._current
        if current is not None:
            current.close()

    def close(self) -> None:
        """Close every connection (each within ``close_timeout``), stop reconnecting,
        and let the listeners already running finish. A reconnect attempt in flight is
        not waited for: it stops once its call returns."""
        with self._cond:
            self.closed = True
            connections = list(self._open)
            self._cond.notify_all()
        self._stopping.set()
        for ws in connections:
            ws.close()
        self.message_workers.shutdown(wait=True)
        with self._cond:
            threads = list(self._threads)
        for thread in threads:
            thread.join(self.close_timeout)

    def _spawn(self, target: Any, *args: Any, name: str, joined: bool = True) -> None:
        """Run ``target`` in a daemon thread; ``joined``: close() waits for it."""

        def run() -> None:
            try:
                target(*args)
            finally:
                with self._cond:
                    self._threads.discard(thread)

        thread = threading.Thread(target=run, name=name, daemon=True)
        if joined:
            with self._cond:
                self._threads.add(thread)
        thread.start()


def _envelope_id(message: str) -> str | None:
    try:
        parsed = json.loads(message)
    except ValueError:
        return None
    envelope_id = parsed.get("envelope_id") if isinstance(parsed, dict) else None
    return envelope_id if isinstance(envelope_id, str) else None
