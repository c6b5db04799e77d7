"""A local, in-process fake of the Slack Web API.

``FakeSlack`` runs a small HTTP server on ``127.0.0.1`` (the standard library's
``http.server.ThreadingHTTPServer`` in a daemon thread, on a port the OS picks) that
answers the handful of Web API methods jitaccess uses, with the same ``{"ok": ...}``
response shapes as the real API.  The real ``slack_sdk.WebClient`` talks to it over
real HTTP when pointed at :attr:`FakeSlack.base_url`::

    with FakeSlack(users={"U1": {"name": "alice", "tz": "Europe/Paris"}}) as slack:
        client = WebClient(token="xoxb-test", base_url=slack.base_url)
        client.chat_postMessage(channel="U1", text="hello")
        assert slack.dms_to("U1")[0]["text"] == "hello"

It exists for two reasons:

* the test suite drives the real SDK (and slack_bolt) against it, so that request
  encoding, retries and error handling are exercised end to end without Slack;
* the browser "sandbox" feature uses it as a stand-in workspace, so jitaccess can be
  tried out without installing a Slack app.

Besides answering API calls it keeps the state of the fake workspace (messages per
channel, ephemeral messages, modal and App Home views, posts to ``response_url``\\ s),
records every call (:attr:`FakeSlack.calls`) and can inject failures
(:meth:`FakeSlack.fail_next`, :meth:`FakeSlack.set_down`), slow answers (``delay=``)
and answers of any shape (:meth:`FakeSlack.answer_next`: any JSON body, for the
shape tests of the app's strict reading of Slack's answers).

Rate limits (opt-in): ``FakeSlack(rate_limits=SlackRateLimiter())`` (or
:meth:`FakeSlack.set_rate_limits`) enforces Slack's published limits: ``chat.update``
about 50 a minute per workspace (Tier 3), ``chat.postMessage`` about one a second per
channel, and so on (:data:`PUBLISHED_LIMITS`).  A call beyond them answers HTTP 429
``{"ok": false, "error": "ratelimited"}`` with a ``Retry-After`` header, as Slack does.
The limiter runs on its own clock (``clock=``, default ``time.monotonic``), so tests
can drive it with a fake clock and benchmarks with the wall clock; ``speed=10`` makes
every limit ten times faster (``Retry-After`` is then in tenths of a second).

Supported methods: ``auth.test``, ``chat.postMessage``, ``chat.update``,
``chat.postEphemeral``, ``conversations.replies``, ``views.open``, ``views.push``, ``views.update``,
``views.publish``, ``conversations.open``, ``users.info``, ``users.lookupByEmail``,
``usergroups.users.list`` (groups set with :meth:`FakeSlack.set_group`) and
``apps.connections.open``.  Anything else answers ``{"ok": false, "error":
"unknown_method"}`` (HTTP 200).

Socket Mode: ``apps.connections.open`` (app-level ``xapp-`` token only) returns a
``ws://127.0.0.1:<port>/socket/<ticket>`` URL served by the same HTTP server, which
checks the opening handshake and upgrades the connection to a WebSocket (plain TCP, no
extensions) run by the ``websockets`` library (its framing, not a hand-written one).  The
fake greets each client with a ``hello`` message, answers pings, pings the client
every ``socket_ping_interval`` seconds (as Slack does; it also keeps the SDK's blocking
``recv`` from stalling ``SocketModeClient.close()``) and closes every session with a
close frame (1001) on :meth:`FakeSlack.stop`.  Tests push envelopes with
:meth:`FakeSlack.send_envelope` and get the client's ack back::

    handler = SocketModeHandler(app, "xapp-1-test")  # app.client points at the fake
    handler.connect()
    assert slack.socket_connected()
    ack = slack.send_envelope("slash_commands", {"command": "/jit", "text": "help", ...})

With :attr:`FakeSlack.socket_mode_url` set, ``apps.connections.open`` hands out that
URL instead (a test's own Socket Mode server, e.g. one that sends ``disconnect``).

Threads, as Slack documents them (``chat.postMessage``'s ``thread_ts`` and
``reply_broadcast`` arguments, https://docs.slack.dev/reference/methods/chat.postMessage;
the ``thread_broadcast`` message subtype and its ``root``,
https://docs.slack.dev/reference/events/message/thread_broadcast;
``conversations.replies``, https://docs.slack.dev/reference/methods/conversations.replies):
a message posted with ``thread_ts`` is a reply in the thread of that parent; the parent
then carries ``thread_ts`` (its own ts), ``reply_count``, ``reply_users_count``,
``latest_reply`` and ``reply_users``. A reply posted with ``reply_broadcast`` true is
also shown in the conversation: it has ``subtype: thread_broadcast`` and a ``root``
(the parent as it is then). ``conversations.replies`` answers ``thread_not_found`` for a
``ts`` naming no message; what ``chat.postMessage`` does with such a ``thread_ts`` is not
documented, so the fake keeps the reply under it without a parent.
:meth:`FakeSlack.conversation_in` is what the conversation shows (top-level messages
and broadcast replies), :meth:`FakeSlack.thread_in` a thread's replies;
:meth:`FakeSlack.messages_in` stays every message, replies included.

Channels: ``chat.*`` accept any channel id, like a bot with every permission.
:meth:`FakeSlack.add_channel` declares a channel with a name and whether the bot is a
member; posting to or editing in a declared channel the bot is not in answers
``not_in_channel`` (public) or ``channel_not_found`` (private, which a non-member
cannot see), as Slack does for a bot without ``chat:write.public``;
:meth:`FakeSlack.invite_bot` is ``/invite @jitaccess``.

Requests may be form-encoded (``application/x-www-form-urlencoded``, what the SDK
sends for e.g. ``conversations.open`` and ``users.info``), JSON (``application/json``,
what it sends for ``chat.*`` and ``views.*``) or carry parameters in the query string.
Nothing happens at import time; the server only exists between :meth:`FakeSlack.start`
and :meth:`FakeSlack.stop`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import hashlib
import json
import math
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

from websockets.exceptions import ConnectionClosed
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.sync.connection import Connection
from websockets.utils import accept_key

__all__ = [
    "PUBLISHED_LIMITS",
    "RESPONSE_URL_METHOD",
    "FakeSlack",
    "RateLimit",
    "RecordedCall",
    "SlackRateLimiter",
]

_API_PREFIX = "/api/"
_RESPONSE_PREFIX = "/response/"
_SOCKET_PREFIX = "/socket/"
#: Pseudo method name under which ``response_url`` posts can be targeted by ``fail_next``.
RESPONSE_URL_METHOD = "response_url"
#: Parameters that Slack accepts as JSON-encoded strings; decoded to Python objects.
_JSON_PARAMS = ("blocks", "view", "attachments", "metadata")
_BASE_TS = 1_700_000_000

#: status, body (any JSON value: a dict, except where a test asks for another shape), headers
_Reply = tuple[int, Any, dict[str, str]]
_MethodHandler = Callable[[dict[str, Any]], dict[str, Any]]
_TokenMethodHandler = Callable[[dict[str, Any], str], dict[str, Any]]

_CLOSE_GOING_AWAY = 1001
_MAX_SOCKET_MESSAGE = 16 * 1024 * 1024
#: How long :meth:`FakeSlack.stop` waits for clients to hang up after the close frame.
_SOCKET_CLOSE_WAIT = 1.0


@dataclass
class RecordedCall:
    """One request the fake received on ``/api/<method>``."""

    method: str
    """Web API method name, e.g. ``"chat.postMessage"``."""
    args: dict[str, Any]
    """Parsed parameters (query string + form or JSON body), without ``token``.

    JSON-string values of ``blocks``, ``view``, ``attachments`` and ``metadata`` are
    decoded to Python objects."""
    token: str | None
    """From ``Authorization: Bearer ...`` or the ``token`` parameter."""
    at: float
    """``time.monotonic()`` when the request was received."""
    content_type: str = ""
    """Media type of the request body (``""`` when there was none)."""
    status: int = 200
    """The HTTP status the fake answered with (429 when rate-limited)."""


@dataclass(frozen=True)
class RateLimit:
    """At most ``per_minute`` calls a minute to a method, per workspace (or, with
    ``per_channel``, per channel), with bursts of up to ``burst`` calls."""

    per_minute: float
    per_channel: bool = False
    burst: int = 1


#: Slack's published Web API limits for the methods jitaccess calls most
#: (https://api.slack.com/docs/rate-limits): Tier 3 is 50+ a minute, Tier 4 100+;
#: ``chat.postMessage`` has its own "about one message a second per channel".
PUBLISHED_LIMITS: dict[str, RateLimit] = {
    "chat.update": RateLimit(50),
    "chat.postMessage": RateLimit(60, per_channel=True),
    "conversations.open": RateLimit(50),
    "views.publish": RateLimit(100),
    "users.info": RateLimit(100),
}


class SlackRateLimiter:
    """Enforces :class:`RateLimit` s as a generic cell rate algorithm (a call is
    accepted when at least ``60 / per_minute`` seconds passed since the previous
    accepted one, less the burst allowance) on its own clock. Thread-safe."""

    def __init__(
        self,
        limits: dict[str, RateLimit] | None = None,
        *,
        speed: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = dict(PUBLISHED_LIMITS if limits is None else limits)
        self.speed = speed
        self.clock = clock
        self._tat: dict[tuple[str, str | None], float] = {}
        self._lock = threading.Lock()
        #: Calls refused with 429, per method.
        self.refused: dict[str, int] = {}

    def interval(self, method: str) -> float:
        """Seconds between two accepted calls to ``method`` (on the limiter's clock)."""
        return 60.0 / self.limits[method].per_minute / self.speed

    def check(self, method: str, channel: str | None = None) -> float | None:
        """Accept a call (``None``) or say how many seconds to wait (``Retry-After``)."""
        limit = self.limits.get(method)
        if limit is None:
            return None
        key = (method, channel or "" if limit.per_channel else None)
        interval = self.interval(method)
        tolerance = (max(1, limit.burst) - 1) * interval
        with self._lock:
            now = self.clock()
            tat = self._tat.get(key, now)
            if now < tat - tolerance:
                self.refused[method] = self.refused.get(method, 0) + 1
                return tat - tolerance - now
            self._tat[key] = max(tat, now) + interval
            return None

    def retry_after(self, wait: float) -> str:
        """The header: whole seconds as Slack sends them, scaled by ``speed``."""
        units = max(1, math.ceil(wait * self.speed - 1e-9))
        return str(units) if self.speed == 1 else f"{units / self.speed:g}"


@dataclass
class _Failure:
    method: str | None
    remaining: int
    status: int
    retry_after: int | None
    error: str | None
    #: Seconds the fake waits before it answers (a slow Slack).
    delay: float = 0.0
    #: With ``raw`` (``answer_next``): the whole body to answer, as given.
    body: Any = None
    raw: bool = False


class _ApiError(Exception):
    """Raised by method handlers to answer ``{"ok": false, "error": ...}``."""

    def __init__(self, error: str, status: int = 200) -> None:
        super().__init__(error)
        self.error = error
        self.status = status


@dataclass
class _Request:
    path: str
    query: str
    body: bytes
    content_type: str
    authorization: str | None
    verb: str = "POST"


class FakeSlack:
    """A fake Slack workspace + Web API server. See the module docstring."""

    def __init__(
        self,
        *,
        users: dict[str, dict[str, Any]] | None = None,
        bot_user_id: str = "UBOT",
        team_id: str = "T0001",
        socket_ping_interval: float | None = 0.25,
        rate_limits: SlackRateLimiter | None = None,
    ) -> None:
        """``socket_ping_interval``: seconds between the pings the fake sends to each
        Socket Mode client (``None``: never ping, only answer the client's pings).
        ``rate_limits``: enforce Slack's rate limits (off by default)."""
        self.bot_user_id = bot_user_id
        self.bot_id = "B0001"
        self.app_id = "A0001"
        self.team_id = team_id
        self.team_name = "jitaccess sandbox"
        self.team_url = "https://jitaccess-sandbox.slack.com/"

        self._lock = threading.RLock()
        #: Every ``/api/*`` request received, in arrival order (failed ones included).
        self.calls: list[RecordedCall] = []
        #: Workspace users by id, in ``users.info`` shape.
        self.users: dict[str, dict[str, Any]] = {}
        #: User groups (``S…``) and their members, for ``usergroups.users.list``.
        self.usergroups: dict[str, list[str]] = {}
        #: Messages per channel id, current (post-update) version, in post order.
        self.messages: dict[str, list[dict[str, Any]]] = {}
        #: Ephemeral messages: ``channel``, ``user``, ``text``, ``blocks``, ``ts``.
        self.ephemerals: list[dict[str, Any]] = []
        #: Views by view id: ``id``, ``view`` (as submitted), ``user``, ``hash``, ...
        self.views: dict[str, dict[str, Any]] = {}
        #: JSON bodies POSTed to :meth:`response_url` endpoints, by key.
        self.responses: dict[str, list[dict[str, Any]]] = {}
        #: Declared channels by id: ``name``, ``is_private``, ``bot_member``.
        self.channels: dict[str, dict[str, Any]] = {}
        #: Tracebacks of unexpected exceptions inside the fake (should stay empty).
        self.server_errors: list[str] = []

        self._homes: dict[str, str] = {}  # user id -> view id of their App Home
        self._triggers: dict[str, str] = {}  # trigger id -> user id
        self._failures: list[_Failure] = []
        #: Seconds the answer being made on this server thread waits before it is sent.
        self._delay = threading.local()
        self._down = False
        self.rate_limits = rate_limits
        self._ts_counter = 0
        self._id_counter = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

        # Socket Mode state, guarded by _socket_cond (never nested with _lock).
        self._socket_cond = threading.Condition()
        self._socket_ping_interval = socket_ping_interval
        self._sockets: list[_SocketConnection] = []  # open sessions, oldest first
        self._socket_stopping = False
        self._socket_count = 0
        self._acks: dict[str, dict[str, Any]] = {}  # envelope id -> ack message
        #: Every message Socket Mode clients sent (acks included), parsed; text that is
        #: not a JSON object is recorded as ``{"unparsed": text}``.
        self.socket_messages: list[dict[str, Any]] = []
        self._tickets: set[str] = set()  # issued by apps.connections.open (under _lock)
        #: Where ``apps.connections.open`` sends clients instead of this fake's own
        #: WebSocket server (a test's Socket Mode server), or ``None``.
        self.socket_mode_url: str | None = None
        self._token_methods: dict[str, _TokenMethodHandler] = {
            "apps.connections.open": self._apps_connections_open,
        }
        self._methods: dict[str, _MethodHandler] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "views.open": self._views_open,
            "views.push": self._views_push,
            "views.update": self._views_update,
            "views.publish": self._views_publish,
            "conversations.open": self._conversations_open,
            "conversations.replies": self._conversations_replies,
            "users.info": self._users_info,
            "users.lookupByEmail": self._users_lookup_by_email,
            "usergroups.users.list": self._usergroups_users_list,
        }

        self.add_user(bot_user_id, name="jitaccess", real_name="jitaccess", is_bot=True)
        for user_id, info in (users or {}).items():
            self._add_user_from_dict(user_id, info)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Bind ``127.0.0.1`` on a free port and serve in a daemon thread."""
        if self._server is not None:
            raise RuntimeError("FakeSlack is already started")
        server = _Server(self)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-slack-{server.server_address[1]}",
            daemon=True,
        )
        self._server = server
        self._thread = thread
        self._port = server.server_address[1]
        with self._socket_cond:
            self._socket_stopping = False
        thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port. Safe to call twice.

        Socket Mode sessions get a close frame (1001, "going away"); the fake then waits
        briefly for each client to hang up (slack_sdk's builtin client does so at once
        and, its connection being inactive, stops reading) before cutting the rest off.
        """
        server, thread = self._server, self._thread
        self._server = None
        self._thread = None
        if server is None:
            return
        with self._socket_cond:
            self._socket_stopping = True
            sessions = list(self._sockets)
        server.shutdown()  # no new connections from here on
        for conn in sessions:
            conn.close_soon(_CLOSE_GOING_AWAY, "server stopping")
        deadline = time.monotonic() + _SOCKET_CLOSE_WAIT
        for conn in sessions:
            conn.finished.wait(max(0.0, deadline - time.monotonic()))
        for conn in sessions:
            if not conn.finished.is_set():
                conn.abort()
                conn.finished.wait(1.0)
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        with self._socket_cond:
            self._sockets.clear()
            self._socket_cond.notify_all()

    def __enter__(self) -> Self:
        if self._server is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Root URL of the running server, e.g. ``http://127.0.0.1:54321``."""
        if self._server is None:
            raise RuntimeError("FakeSlack is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def base_url(self) -> str:
        """What ``WebClient(base_url=...)`` takes, e.g. ``http://127.0.0.1:54321/api/``."""
        return self.url + _API_PREFIX

    def response_url(self, key: str) -> str:
        """A ``response_url`` whose JSON posts are recorded in ``responses[key]``."""
        return f"{self.url}{_RESPONSE_PREFIX}{key}"

    # ------------------------------------------------------------ configuration

    def add_user(
        self,
        user_id: str,
        *,
        name: str,
        real_name: str | None = None,
        tz: str = "UTC",
        tz_offset: int = 0,
        is_bot: bool = False,
        email: str | None = None,
    ) -> None:
        """Add (or replace) a workspace user, as ``users.info`` will report it."""
        real = real_name if real_name is not None else name
        profile: dict[str, Any] = {
            "real_name": real,
            "real_name_normalized": real,
            "display_name": name,
            "display_name_normalized": name,
            "team": self.team_id,
        }
        if email is not None:
            profile["email"] = email
        if is_bot:
            profile["bot_id"] = self.bot_id
        user: dict[str, Any] = {
            "id": user_id,
            "team_id": self.team_id,
            "name": name,
            "deleted": False,
            "real_name": real,
            "tz": tz,
            "tz_label": tz,
            "tz_offset": tz_offset,
            "is_bot": is_bot,
            "is_admin": False,
            "is_owner": False,
            "is_app_user": False,
            "profile": profile,
        }
        with self._lock:
            self.users[user_id] = user

    def set_group(self, group_id: str, members: list[str]) -> None:
        """Create a user group or replace its members (what an admin does in Slack)."""
        with self._lock:
            self.usergroups[group_id] = list(members)

    def _add_user_from_dict(self, user_id: str, info: dict[str, Any]) -> None:
        profile = info.get("profile") or {}
        self.add_user(
            user_id,
            name=str(info.get("name") or profile.get("display_name") or user_id.lower()),
            real_name=info.get("real_name") or profile.get("real_name"),
            tz=str(info.get("tz", "UTC")),
            tz_offset=int(info.get("tz_offset", 0)),
            is_bot=bool(info.get("is_bot", False)),
            email=info.get("email") or profile.get("email"),
        )
        with self._lock:
            user = self.users[user_id]
            user["profile"].update(profile)
            user.update({k: v for k, v in info.items() if k not in ("profile", "email")})

    def add_channel(
        self, channel_id: str, name: str, *, private: bool = False, bot_member: bool = True
    ) -> None:
        """Declare a channel (``C…`` public, ``G…`` or ``private=True`` private); the bot
        can post there only while it is a member (see the module docstring)."""
        with self._lock:
            self.channels[channel_id] = {
                "id": channel_id,
                "name": name,
                "is_private": private or channel_id.startswith("G"),
                "bot_member": bot_member,
            }

    def invite_bot(self, channel_id: str) -> None:
        """``/invite @jitaccess`` in a declared channel."""
        with self._lock:
            self.channels[channel_id]["bot_member"] = True

    def fail_next(
        self,
        method: str | None,
        *,
        times: int = 1,
        status: int = 500,
        retry_after: int | None = None,
        error: str | None = None,
        delay: float = 0.0,
    ) -> None:
        """Make the next ``times`` calls to ``method`` (``None``: any API method) fail.

        * ``status=429``: body ``{"ok": false, "error": "ratelimited"}`` and a
          ``Retry-After`` header (``retry_after``, default 1).
        * ``status=200`` with ``error="channel_not_found"`` etc.: ``{"ok": false, "error": ...}``.
        * other statuses: that HTTP status with ``{"ok": false, "error": error or
          "internal_error"}``.

        Posts to :meth:`response_url` endpoints can be targeted with
        ``method="response_url"`` (``None`` does not match them).  Rules are consumed in
        the order they were added.  ``delay``: seconds the fake waits before answering.
        """
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._failures.append(_Failure(method, times, status, retry_after, error, delay))

    def answer_next(
        self,
        method: str,
        body: Any,
        *,
        times: int = 1,
        status: int = 200,
        delay: float = 0.0,
        retry_after: int | None = None,
    ) -> None:
        """Answer the next ``times`` calls to ``method`` with ``body`` as it is (any JSON
        value: ``{"ok": True, "users": {"U1": True}}``, a list, a string, ``None``), after
        ``delay`` seconds, with HTTP ``status`` (and ``Retry-After`` if given). What a
        Slack that changed, broke or was impersonated might send."""
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._failures.append(
                _Failure(method, times, status, retry_after, None, delay, body, raw=True)
            )

    def set_rate_limits(self, limiter: SlackRateLimiter | None) -> None:
        """Enforce (or, with ``None``, stop enforcing) rate limits from now on."""
        with self._lock:
            self.rate_limits = limiter

    def set_down(self, down: bool) -> None:
        """While down, every API call (and response_url post) answers HTTP 503."""
        with self._lock:
            self._down = down

    def new_trigger_id(self, user_id: str) -> str:
        """A trigger id that ``views.open``/``views.push`` will attribute to ``user_id``.

        Any non-empty trigger id is accepted; views opened with an unknown one have
        ``user`` ``None``.
        """
        with self._lock:
            trigger = f"{self._next_id_number()}.{_BASE_TS}.{user_id.lower()}trigger"
            self._triggers[trigger] = user_id
            return trigger

    # ------------------------------------------------------------------ queries

    def calls_to(self, method: str) -> list[RecordedCall]:
        """Recorded calls to ``method``, in arrival order."""
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def dm_channel_for(self, user_id: str) -> str:
        """The IM channel id ``conversations.open`` returns for ``user_id``."""
        return "D" + user_id

    def messages_in(self, channel: str) -> list[dict[str, Any]]:
        """Current version of each message in ``channel`` (a user id means their DM).

        Each has ``channel``, ``ts``, ``text``, ``blocks``, ``user`` (the bot user), and
        ``thread_ts``/``attachments``/``metadata`` when they were given.
        """
        with self._lock:
            return copy.deepcopy(self.messages.get(self._channel_id(channel), []))

    def dms_to(self, user_id: str) -> list[dict[str, Any]]:
        """Messages in the bot's DM with ``user_id`` (thread replies included)."""
        return self.messages_in(self.dm_channel_for(user_id))

    def conversation_in(self, channel: str) -> list[dict[str, Any]]:
        """What the conversation itself shows, in post order: its top-level messages
        and the thread replies broadcast to it (``subtype: thread_broadcast``)."""
        return [
            m
            for m in self.messages_in(channel)
            if not _is_reply(m) or m.get("subtype") == "thread_broadcast"
        ]

    def cards_in(self, channel: str) -> list[dict[str, Any]]:
        """The top-level messages of ``channel`` (no replies, broadcast or not)."""
        return [m for m in self.messages_in(channel) if not _is_reply(m)]

    def cards_to(self, user_id: str) -> list[dict[str, Any]]:
        """The top-level messages in the bot's DM with ``user_id``."""
        return self.cards_in(self.dm_channel_for(user_id))

    def thread_in(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        """The replies in the thread of message ``thread_ts``, oldest first."""
        return [
            m for m in self.messages_in(channel) if _is_reply(m) and m.get("thread_ts") == thread_ts
        ]

    def thread_to(self, user_id: str, thread_ts: str) -> list[dict[str, Any]]:
        """The replies in the thread of message ``thread_ts`` in the DM with ``user_id``."""
        return self.thread_in(self.dm_channel_for(user_id), thread_ts)

    def ephemerals_to(self, user_id: str) -> list[dict[str, Any]]:
        """Ephemeral messages shown to ``user_id``, in post order."""
        with self._lock:
            return copy.deepcopy([e for e in self.ephemerals if e["user"] == user_id])

    def opened_views(self, user_id: str) -> list[dict[str, Any]]:
        """View records (``id``, ``view``, ``user``, ``hash``, ...) of the modals opened
        or pushed for ``user_id`` (trigger from :meth:`new_trigger_id`), oldest first.
        ``view`` reflects later ``views.update`` calls."""
        with self._lock:
            return copy.deepcopy(
                [
                    rec
                    for rec in self.views.values()
                    if rec["user"] == user_id and rec["kind"] != "home"
                ]
            )

    def current_home(self, user_id: str) -> dict[str, Any] | None:
        """The view JSON last published (or updated) as ``user_id``'s App Home."""
        with self._lock:
            view_id = self._homes.get(user_id)
            if view_id is None:
                return None
            view: dict[str, Any] = copy.deepcopy(self.views[view_id]["view"])
            return view

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Poll ``predicate`` until it is true (``True``) or ``timeout`` passes (``False``)."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    # -------------------------------------------------------------- Socket Mode

    def socket_connected(self, timeout: float = 5.0) -> bool:
        """Wait until a Socket Mode client is connected (and greeted with ``hello``)."""
        with self._socket_cond:
            return self._socket_cond.wait_for(lambda: self._open_socket() is not None, timeout)

    def send_envelope(
        self,
        type_: str,
        payload: dict[str, Any],
        *,
        timeout: float = 5.0,
        accepts_response_payload: bool | None = None,
        envelope_id: str | None = None,
        wait: bool = True,
    ) -> dict[str, Any] | None:
        """Send a Socket Mode envelope to the newest connected client and wait for its ack.

        ``type_`` is ``"slash_commands"``, ``"interactive"`` or ``"events_api"``;
        ``payload`` what Slack would POST in HTTP mode (the command's form fields as a
        dict, the interactive ``payload`` JSON, the event callback).  Returns the ack
        message, e.g. ``{"envelope_id": "...", "payload": {"text": "..."}}`` when the app
        acked with a response (``None`` with ``wait=False``, which does not wait; the ack
        then still lands in :attr:`socket_messages`).

        ``accepts_response_payload`` defaults to ``True`` except for ``events_api``
        (which also gets ``retry_attempt`` 0 / ``retry_reason`` ""), like Slack.

        Raises ``TimeoutError`` if no client is connected or no ack arrives within
        ``timeout`` seconds, ``ConnectionError`` if the envelope cannot be sent.
        """
        eid = envelope_id or str(uuid.uuid4())
        accepts = accepts_response_payload
        if accepts is None:
            accepts = type_ != "events_api"
        envelope: dict[str, Any] = {
            "envelope_id": eid,
            "type": type_,
            "payload": copy.deepcopy(payload),
            "accepts_response_payload": accepts,
        }
        if type_ == "events_api":
            envelope.update(retry_attempt=0, retry_reason="")
        deadline = time.monotonic() + timeout
        with self._socket_cond:
            if not self._socket_cond.wait_for(lambda: self._open_socket() is not None, timeout):
                raise TimeoutError(f"no Socket Mode client connected within {timeout}s")
            conn = self._open_socket()
            assert conn is not None
            self._acks.pop(eid, None)
        try:
            conn.send_json(envelope)
        except (_SocketClosed, ConnectionClosed, OSError) as e:
            raise ConnectionError(f"could not send envelope {eid}: {e}") from e
        if not wait:
            return None
        with self._socket_cond:
            remaining = max(0.0, deadline - time.monotonic())
            if not self._socket_cond.wait_for(lambda: eid in self._acks, remaining):
                raise TimeoutError(f"no ack for {type_} envelope {eid} within {timeout}s")
            return copy.deepcopy(self._acks.pop(eid))

    def _open_socket(self) -> _SocketConnection | None:
        """The newest session that can still be sent to (caller holds _socket_cond)."""
        return next((c for c in reversed(self._sockets) if c.is_open), None)

    def _hello(self, num_connections: int) -> dict[str, Any]:
        return {
            "type": "hello",
            "num_connections": num_connections,
            "debug_info": {
                "host": "fake-slack",
                "build_number": 1,
                "approximate_connection_time": 18060,
            },
            "connection_info": {"app_id": self.app_id},
        }

    def _socket_refusal(self, ticket: str) -> _Reply | None:
        """Why an upgrade to ``/socket/<ticket>`` is refused, or ``None``."""
        with self._lock:
            if self._down:
                return 503, {"ok": False, "error": "service_unavailable"}, {}
            if ticket not in self._tickets:
                return 404, {"ok": False, "error": "invalid_ticket"}, {}
        return None

    def _socket_session(self, conn: _SocketConnection) -> None:
        """Serve one upgraded connection until it ends (in its HTTP handler thread)."""
        try:
            with self._socket_cond:
                # Under the condition so that stop() either sees this session or makes
                # it refuse, and no envelope can overtake the hello.
                if self._socket_stopping:
                    conn.close(_CLOSE_GOING_AWAY, "server stopping")
                    conn.abort()
                    return
                self._socket_count += 1
                conn.number = self._socket_count
                conn.send_json(self._hello(len(self._sockets) + 1))
                self._sockets.append(conn)
                self._socket_cond.notify_all()
            if self._socket_ping_interval is not None:
                threading.Thread(
                    target=conn.keepalive,
                    args=(self._socket_ping_interval,),
                    name=f"fake-slack-socket-ping-{conn.number}",
                    daemon=True,
                ).start()
            conn.serve(self._on_socket_text)
        except (_SocketClosed, ConnectionClosed, OSError):
            pass
        except Exception:
            self._record_server_error()
        finally:
            with self._socket_cond:
                if conn in self._sockets:
                    self._sockets.remove(conn)
                self._socket_cond.notify_all()
            conn.finished.set()

    def _on_socket_text(self, text: str) -> None:
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        message: dict[str, Any] = parsed if isinstance(parsed, dict) else {"unparsed": text}
        with self._socket_cond:
            self.socket_messages.append(message)
            envelope_id = message.get("envelope_id")
            if isinstance(envelope_id, str):
                self._acks[envelope_id] = message
            self._socket_cond.notify_all()

    # -------------------------------------------------------- request handling

    def _handle(self, request: _Request) -> _Reply:
        path = unquote(request.path)
        if path.startswith(_API_PREFIX):
            return self._handle_api(path[len(_API_PREFIX) :], request)
        if path.startswith(_RESPONSE_PREFIX):
            return self._handle_response(path[len(_RESPONSE_PREFIX) :], request)
        if path in ("", "/") and request.verb == "GET":
            return 200, {"ok": True, "service": "fake-slack", "api": self.base_url}, {}
        return 404, {"ok": False, "error": "not_found"}, {}

    def _handle_api(self, method: str, request: _Request) -> _Reply:
        parse_error = False
        try:
            args = _parse_params(request.query, request.body, request.content_type)
        except ValueError:
            args, parse_error = {}, True
        token: str | None = None
        auth = request.authorization or ""
        if auth[:7].lower() == "bearer ":
            token = auth[7:].strip() or None
        param_token = args.pop("token", None)
        if token is None and isinstance(param_token, str) and param_token:
            token = param_token
        with self._lock:
            call = RecordedCall(
                method=method,
                args=args,
                token=token,
                at=time.monotonic(),
                content_type=_media_type(request.content_type) if request.body else "",
            )
            self.calls.append(call)
            reply = self._answer_api(method, args, token, parse_error)
            call.status = reply[0]
            return reply

    def _answer_api(
        self, method: str, args: dict[str, Any], token: str | None, parse_error: bool
    ) -> _Reply:
        with self._lock:
            if self._down:
                return 503, {"ok": False, "error": "service_unavailable"}, {}
            failure = self._take_failure(method, api=True)
            if failure is not None:
                self._delay.seconds = failure.delay
                return _failure_reply(failure)
            if parse_error:
                return 200, {"ok": False, "error": "invalid_json"}, {}
            if token is None:
                return 200, {"ok": False, "error": "not_authed"}, {}
            limiter = self.rate_limits
            if limiter is not None and (method in self._methods or method in self._token_methods):
                wait = limiter.check(method, self._channel_id(str(args.get("channel") or "")))
                if wait is not None:
                    headers = {"Retry-After": limiter.retry_after(wait)}
                    return 429, {"ok": False, "error": "ratelimited"}, headers
            handler = self._methods.get(method)
            token_handler = self._token_methods.get(method)
            if handler is None and token_handler is None:
                return 200, {"ok": False, "error": "unknown_method"}, {}
            try:
                if token_handler is not None:
                    data = token_handler(copy.deepcopy(args), token)
                else:
                    assert handler is not None
                    data = handler(copy.deepcopy(args))
            except _ApiError as e:
                return e.status, {"ok": False, "error": e.error}, {}
            return 200, {"ok": True, **data}, {}

    def _handle_response(self, key: str, request: _Request) -> _Reply:
        if request.verb != "POST":
            return 405, {"ok": False, "error": "method_not_allowed"}, {}
        with self._lock:
            if self._down:
                return 503, {"ok": False, "error": "service_unavailable"}, {}
            failure = self._take_failure(RESPONSE_URL_METHOD, api=False)
            if failure is not None:
                return _failure_reply(failure)
            try:
                payload = json.loads(request.body.decode("utf-8"))
            except ValueError:
                payload = None
            if not isinstance(payload, dict):
                return 400, {"ok": False, "error": "invalid_payload"}, {}
            self.responses.setdefault(key, []).append(payload)
            return 200, {"ok": True}, {}

    def _take_failure(self, method: str, *, api: bool) -> _Failure | None:
        for rule in self._failures:
            if rule.method == method or (rule.method is None and api):
                rule.remaining -= 1
                if rule.remaining <= 0:
                    self._failures.remove(rule)
                return rule
        return None

    def _record_server_error(self) -> None:
        with self._lock:
            self.server_errors.append(traceback.format_exc())

    # ------------------------------------------------------------- id helpers

    def _next_id_number(self) -> int:
        self._id_counter += 1
        return self._id_counter

    def _next_ts(self) -> str:
        self._ts_counter += 1
        micros = self._ts_counter * 100
        return f"{_BASE_TS + micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _next_hash(self) -> str:
        return f"{_BASE_TS}.{self._next_id_number():08x}"

    def _channel_id(self, channel: str) -> str:
        # Slack accepts a user id as channel for chat.* and posts to the bot's DM.
        if channel[:1] in ("U", "W"):
            return self.dm_channel_for(channel)
        return channel

    def _require_channel(self, args: dict[str, Any]) -> str:
        channel = args.get("channel")
        if not isinstance(channel, str) or not channel:
            raise _ApiError("channel_not_found")
        return self._channel_id(channel)

    def _require_membership(self, channel: str) -> None:
        """The bot may write only in declared channels it is a member of."""
        declared = self.channels.get(channel)
        if declared is not None and not declared["bot_member"]:
            raise _ApiError("channel_not_found" if declared["is_private"] else "not_in_channel")

    # ------------------------------------------------------------ API methods

    def _apps_connections_open(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        if not token.startswith("xapp-"):
            # Slack: a bot/user token is the wrong type, anything else is not a token.
            raise _ApiError("not_allowed_token_type" if token.startswith("xox") else "invalid_auth")
        ticket = uuid.uuid4().hex
        if self.socket_mode_url is not None:
            return {"url": f"{self.socket_mode_url}?ticket={ticket}"}
        self._tickets.add(ticket)
        return {"url": f"ws://127.0.0.1:{self._port}{_SOCKET_PREFIX}{ticket}"}

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": self.team_url,
            "team": self.team_name,
            "user": "jitaccess",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _message_payload(self, msg: dict[str, Any]) -> dict[str, Any]:
        payload = {
            "type": "message",
            "user": msg["user"],
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "team": self.team_id,
            **{k: v for k, v in msg.items() if k not in ("channel", "user")},
        }
        return copy.deepcopy(payload)

    @staticmethod
    def _check_content(args: dict[str, Any]) -> None:
        if not (args.get("text") or args.get("blocks") or args.get("attachments")):
            raise _ApiError("no_text")
        if "blocks" in args and not isinstance(args["blocks"], list):
            raise _ApiError("invalid_blocks")
        if any(_empty_section(block) for block in args.get("blocks") or []):
            raise _ApiError("invalid_blocks")
        if "attachments" in args and not isinstance(args["attachments"], list):
            raise _ApiError("invalid_attachments")

    def _chat_post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._require_channel(args)
        self._require_membership(channel)
        self._check_content(args)
        parent = None
        thread_ts = str(args.get("thread_ts") or "")
        if thread_ts:
            with contextlib.suppress(_ApiError):
                parent = self._thread_parent(channel, thread_ts)
        ts = self._next_ts()
        msg: dict[str, Any] = {
            "channel": channel,
            "ts": ts,
            "text": str(args.get("text") or ""),
            "blocks": args.get("blocks") or [],
            "user": self.bot_user_id,
        }
        if thread_ts:
            msg["thread_ts"] = thread_ts
        if parent is not None:
            msg["thread_ts"] = parent["ts"]
            parent["thread_ts"] = parent["ts"]
            parent["reply_count"] = int(parent.get("reply_count", 0)) + 1
            parent["latest_reply"] = ts
            users = list(parent.get("reply_users", []))
            if self.bot_user_id not in users:
                users.append(self.bot_user_id)
            parent["reply_users"] = users
            parent["reply_users_count"] = len(users)
        if thread_ts and _flag(args.get("reply_broadcast")):
            msg["subtype"] = "thread_broadcast"
            if parent is not None:
                root = {k: v for k, v in parent.items() if k != "channel"}
                msg["root"] = {"type": "message", **copy.deepcopy(root)}
        for key in ("attachments", "metadata"):
            if key in args:
                msg[key] = args[key]
        self.messages.setdefault(channel, []).append(msg)
        return {"channel": channel, "ts": ts, "message": self._message_payload(msg)}

    def _thread_parent(self, channel: str, thread_ts: str) -> dict[str, Any]:
        """The message a reply goes under: ``thread_ts`` itself, or, when it names a
        reply, that reply's parent (Slack asks for the parent's ts, and threads are one
        level deep)."""
        msg = next((m for m in self.messages.get(channel, []) if m["ts"] == thread_ts), None)
        if msg is None:
            raise _ApiError("thread_not_found")
        if _is_reply(msg):
            return self._thread_parent(channel, str(msg["thread_ts"]))
        return msg

    def _conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._require_channel(args)
        ts = str(args.get("ts") or "")
        msg = next((m for m in self.messages.get(channel, []) if m["ts"] == ts), None)
        if msg is None:
            raise _ApiError("thread_not_found")
        parent = self._thread_parent(channel, ts)
        thread = [parent, *self.thread_in(channel, parent["ts"])]
        return {
            "messages": [self._message_payload(m) for m in thread],
            "has_more": False,
            "response_metadata": {"next_cursor": ""},
        }

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._require_channel(args)
        self._require_membership(channel)
        ts = str(args.get("ts") or "")
        msg = next((m for m in self.messages.get(channel, []) if m["ts"] == ts), None)
        if msg is None:
            raise _ApiError("message_not_found")
        self._check_content(args)
        # Like Slack: omitted blocks/attachments are kept, an empty list removes them.
        if "text" in args:
            msg["text"] = str(args["text"] or "")
        for key in ("blocks", "attachments", "metadata"):
            if key in args:
                msg[key] = args[key]
        return {
            "channel": channel,
            "ts": ts,
            "text": msg["text"],
            "message": self._message_payload(msg),
        }

    def _chat_post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._require_channel(args)
        user = args.get("user")
        if not isinstance(user, str) or not user:
            raise _ApiError("user_not_found")
        self._check_content(args)
        ts = self._next_ts()
        eph: dict[str, Any] = {
            "channel": channel,
            "user": user,
            "text": str(args.get("text") or ""),
            "blocks": args.get("blocks") or [],
            "ts": ts,
        }
        if args.get("thread_ts"):
            eph["thread_ts"] = str(args["thread_ts"])
        if "attachments" in args:
            eph["attachments"] = args["attachments"]
        self.ephemerals.append(eph)
        return {"message_ts": ts}

    @staticmethod
    def _require_view(args: dict[str, Any]) -> dict[str, Any]:
        view = args.get("view")
        if not isinstance(view, dict):
            raise _ApiError("invalid_arguments")
        return view

    def _find_view(self, *, view_id: str | None, external_id: str | None) -> dict[str, Any]:
        if view_id:
            rec = self.views.get(view_id)
        elif external_id:
            rec = next((r for r in self.views.values() if r["external_id"] == external_id), None)
        else:
            raise _ApiError("invalid_arguments")
        if rec is None:
            raise _ApiError("not_found")
        return rec

    def _new_view(
        self,
        view: dict[str, Any],
        *,
        user: str | None,
        kind: str,
        previous: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        external_id = str(view.get("external_id") or "")
        if external_id and any(r["external_id"] == external_id for r in self.views.values()):
            raise _ApiError("duplicate_external_id")
        view_id = f"V{self._next_id_number():08d}"
        rec: dict[str, Any] = {
            "id": view_id,
            "view": view,
            "user": user,
            "hash": self._next_hash(),
            "kind": kind,
            "external_id": external_id,
            "root_view_id": previous["root_view_id"] if previous else view_id,
            "previous_view_id": previous["id"] if previous else None,
        }
        self.views[view_id] = rec
        return rec

    def _view_payload(self, rec: dict[str, Any]) -> dict[str, Any]:
        view: dict[str, Any] = copy.deepcopy(rec["view"])
        view.update(
            {
                "id": rec["id"],
                "team_id": self.team_id,
                "type": view.get("type", "modal"),
                "private_metadata": view.get("private_metadata", ""),
                "callback_id": view.get("callback_id", ""),
                "state": {"values": {}},
                "hash": rec["hash"],
                "external_id": rec["external_id"],
                "root_view_id": rec["root_view_id"],
                "previous_view_id": rec["previous_view_id"],
                "app_id": self.app_id,
                "app_installed_team_id": self.team_id,
                "bot_id": self.bot_id,
            }
        )
        return view

    def _trigger_user(self, args: dict[str, Any]) -> str | None:
        trigger = args.get("trigger_id") or args.get("interactivity_pointer")
        if not isinstance(trigger, str) or not trigger:
            raise _ApiError("invalid_trigger_id")
        return self._triggers.get(trigger)

    def _views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        user = self._trigger_user(args)
        view = self._require_view(args)
        rec = self._new_view(view, user=user, kind="modal")
        return {"view": self._view_payload(rec)}

    def _views_push(self, args: dict[str, Any]) -> dict[str, Any]:
        user = self._trigger_user(args)
        view = self._require_view(args)
        previous = None
        if user is not None:
            modals = [r for r in self.views.values() if r["user"] == user and r["kind"] != "home"]
            previous = modals[-1] if modals else None
        rec = self._new_view(view, user=user, kind="modal", previous=previous)
        return {"view": self._view_payload(rec)}

    def _update_view(self, rec: dict[str, Any], view: dict[str, Any], hash_: Any) -> None:
        if hash_ and hash_ != rec["hash"]:
            raise _ApiError("hash_conflict")
        rec["view"] = view
        rec["hash"] = self._next_hash()
        if view.get("external_id"):
            rec["external_id"] = str(view["external_id"])

    def _views_update(self, args: dict[str, Any]) -> dict[str, Any]:
        view = self._require_view(args)
        rec = self._find_view(view_id=args.get("view_id"), external_id=args.get("external_id"))
        self._update_view(rec, view, args.get("hash"))
        return {"view": self._view_payload(rec)}

    def _views_publish(self, args: dict[str, Any]) -> dict[str, Any]:
        user = args.get("user_id")
        if not isinstance(user, str) or not user:
            raise _ApiError("invalid_arguments")
        view = self._require_view(args)
        home_id = self._homes.get(user)
        if home_id is None:
            rec = self._new_view(view, user=user, kind="home")
            self._homes[user] = rec["id"]
        else:
            rec = self.views[home_id]
            self._update_view(rec, view, args.get("hash"))
        return {"view": self._view_payload(rec)}

    def _conversations_open(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = args.get("channel")
        if isinstance(channel, str) and channel:
            return {"channel": {"id": channel}, "no_op": True, "already_open": True}
        raw = args.get("users") or ""
        users = raw if isinstance(raw, list) else str(raw).split(",")
        users = [str(u).strip() for u in users if str(u).strip()]
        if not users:
            raise _ApiError("users_list_not_supplied")
        if len(users) == 1:
            info: dict[str, Any] = {
                "id": self.dm_channel_for(users[0]),
                "is_im": True,
                "user": users[0],
            }
        else:
            digest = hashlib.sha1(",".join(sorted(users)).encode()).hexdigest()[:10]
            info = {"id": "G" + digest.upper(), "is_mpim": True}
        return {"channel": info, "no_op": False, "already_open": False}

    def _users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(str(args.get("user") or ""))
        if user is None:
            raise _ApiError("user_not_found")
        return {"user": copy.deepcopy(user)}

    def _usergroups_users_list(self, args: dict[str, Any]) -> dict[str, Any]:
        members = self.usergroups.get(str(args.get("usergroup") or ""))
        if members is None:
            raise _ApiError("no_such_subteam")
        return {"users": list(members)}

    def _users_lookup_by_email(self, args: dict[str, Any]) -> dict[str, Any]:
        email = str(args.get("email") or "").lower()
        for user in self.users.values():
            if email and str(user["profile"].get("email", "")).lower() == email:
                return {"user": copy.deepcopy(user)}
        raise _ApiError("users_not_found")


# ---------------------------------------------------------------- HTTP plumbing


def _empty_section(block: Any) -> bool:
    """A section block Slack refuses (``invalid_blocks``): its ``text`` must be a text
    object of at least one character, unless it has ``fields`` instead (Block Kit
    reference, section block: "Minimum length for the text in this field is 1")."""
    if not isinstance(block, dict) or block.get("type") != "section":
        return False
    text = block.get("text")
    if isinstance(text, dict) and isinstance(text.get("text"), str) and text["text"]:
        return False
    return not (text is None and block.get("fields"))


def _is_reply(msg: dict[str, Any]) -> bool:
    """A thread reply: its ``thread_ts`` names another message (a parent's is its own)."""
    return bool(msg.get("thread_ts")) and msg.get("thread_ts") != msg.get("ts")


def _flag(value: Any) -> bool:
    """A boolean argument as JSON (``true``) or form-encoded (``"true"``, ``"1"``)."""
    if isinstance(value, bool):
        return value
    return str(value).lower() in ("true", "1")


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _parse_params(query: str, body: bytes, content_type: str) -> dict[str, Any]:
    """Merge query-string and body parameters; raise ``ValueError`` on a bad body."""
    args: dict[str, Any] = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    if body:
        if _media_type(content_type) == "application/json":
            parsed = json.loads(body.decode("utf-8"))
            if not isinstance(parsed, dict):
                raise ValueError("JSON body must be an object")
            args.update(parsed)
        else:  # application/x-www-form-urlencoded (also the SDK's default)
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True)
            args.update({k: v[-1] for k, v in form.items()})
    for key in _JSON_PARAMS:
        value = args.get(key)
        if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
            # If it does not parse it is left as a string; the method reports it as invalid.
            with contextlib.suppress(ValueError):
                args[key] = json.loads(value)
    return args


def _failure_reply(rule: _Failure) -> _Reply:
    headers: dict[str, str] = {}
    if rule.raw:
        if rule.retry_after is not None:
            headers["Retry-After"] = str(rule.retry_after)
        return rule.status, copy.deepcopy(rule.body), headers
    if rule.status == 429:
        error = rule.error or "ratelimited"
        headers["Retry-After"] = str(rule.retry_after if rule.retry_after is not None else 1)
    else:
        error = rule.error or "internal_error"
        if rule.retry_after is not None:
            headers["Retry-After"] = str(rule.retry_after)
    return rule.status, {"ok": False, "error": error}, headers


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeSlack) -> None:
        self.fake = fake
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "FakeSlack/1.0"

    def do_GET(self) -> None:
        if urlsplit(self.path).path.startswith(_SOCKET_PREFIX):
            self._serve_socket()
        else:
            self._serve()

    def do_POST(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet

    def _serve(self) -> None:
        fake = self.server.fake
        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length > 0 else b""
            parts = urlsplit(self.path)
            request = _Request(
                path=parts.path,
                query=parts.query,
                body=body,
                content_type=self.headers.get("Content-Type") or "",
                authorization=self.headers.get("Authorization"),
                verb=self.command,
            )
            fake._delay.seconds = 0.0
            status, payload, headers = fake._handle(request)
        except Exception:
            fake._record_server_error()
            status, payload, headers = 500, {"ok": False, "error": "fatal_error"}, {}
        delay = getattr(fake._delay, "seconds", 0.0)
        if delay > 0:
            time.sleep(delay)  # a slow Slack: this server thread only, never the lock
            self.close_connection = True
            with contextlib.suppress(OSError):  # the client may have given up meanwhile
                self._reply(status, payload, headers)
            return
        self._reply(status, payload, headers)

    def _reply(self, status: int, payload: Any, headers: dict[str, str]) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _serve_socket(self) -> None:
        """Upgrade ``GET /socket/<ticket>`` to a WebSocket and run the session."""
        fake = self.server.fake
        self.close_connection = True
        ticket = unquote(urlsplit(self.path).path)[len(_SOCKET_PREFIX) :]
        refusal = fake._socket_refusal(ticket)
        if refusal is None:
            refusal = _check_upgrade(
                upgrade=self.headers.get("Upgrade") or "",
                connection=self.headers.get("Connection") or "",
                version=self.headers.get("Sec-WebSocket-Version") or "",
                key=self.headers.get("Sec-WebSocket-Key") or "",
            )
        if refusal is not None:
            self._reply(*refusal)
            return
        accept = accept_key((self.headers.get("Sec-WebSocket-Key") or "").strip())
        self.wfile.write(
            (
                "HTTP/1.1 101 Switching Protocols\r\n"
                "Upgrade: websocket\r\n"
                "Connection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept}\r\n"
                "\r\n"
            ).encode("ascii")
        )
        self.wfile.flush()
        sock: socket.socket = self.connection
        fake._socket_session(_SocketConnection(sock, ticket=ticket))


def _check_upgrade(*, upgrade: str, connection: str, version: str, key: str) -> _Reply | None:
    """Validate a WebSocket opening handshake (RFC 6455 section 4.2.1)."""
    tokens = {t.strip().lower() for t in connection.split(",")}
    if upgrade.strip().lower() != "websocket" or "upgrade" not in tokens:
        return 426, {"ok": False, "error": "upgrade_required"}, {"Upgrade": "websocket"}
    if version.strip() != "13":
        return 426, {"ok": False, "error": "unsupported_version"}, {"Sec-WebSocket-Version": "13"}
    try:
        raw = base64.b64decode(key.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 16:
        return 400, {"ok": False, "error": "invalid_websocket_key"}, {}
    return None


# ------------------------------------------------------------ WebSocket plumbing


class _SocketClosed(Exception):
    """The WebSocket session is over (or closing): nothing more can be sent."""


class _SocketConnection:
    """Server side of one Socket Mode WebSocket: the ``websockets`` library's connection
    (its framing, fragments, control frames, close handshake and protocol errors) on the
    socket this fake's HTTP server upgraded; the opening handshake is already done, so
    its protocol starts OPEN."""

    def __init__(self, sock: socket.socket, *, ticket: str) -> None:
        self.ticket = ticket
        self.number = 0
        self.finished = threading.Event()
        self._closing = False
        self._ws = Connection(
            sock,
            ServerProtocol(state=State.OPEN, max_size=_MAX_SOCKET_MESSAGE),
            ping_interval=None,  # the fake's own keepalive, which never times out
            ping_timeout=None,
            close_timeout=_SOCKET_CLOSE_WAIT,
        )

    @property
    def is_open(self) -> bool:
        return (
            not self._closing
            and not self.finished.is_set()
            and self._ws.protocol.state is State.OPEN
        )

    # -- sending (any thread)

    def send_json(self, message: dict[str, Any]) -> None:
        """One text message (never fragmented: the SDK's client cannot reassemble)."""
        if self._closing:
            raise _SocketClosed("closing")
        try:
            self._ws.send(json.dumps(message))
        except ConnectionClosed as exc:
            raise _SocketClosed(str(exc)) from exc

    def close(self, code: int = 1000, reason: str = "") -> None:
        """The closing handshake: waits up to ``_SOCKET_CLOSE_WAIT`` for the peer, then
        drops the TCP connection (errors ignored)."""
        self._closing = True
        with contextlib.suppress(OSError):
            self._ws.close(code, reason)

    def close_soon(self, code: int, reason: str) -> None:
        """:meth:`close` on a thread of its own, so that many sessions close at once."""
        self._closing = True
        threading.Thread(
            target=self.close,
            args=(code, reason),
            name=f"fake-slack-socket-close-{self.number}",
            daemon=True,
        ).start()

    def abort(self) -> None:
        """Cut the TCP connection off; the reading side sees EOF."""
        self._closing = True
        with contextlib.suppress(OSError):
            self._ws.socket.shutdown(socket.SHUT_RDWR)

    def keepalive(self, interval: float) -> None:
        """Ping the client every ``interval`` seconds until the session ends."""
        while not self.finished.wait(interval):
            try:
                self._ws.ping()
            except (ConnectionClosed, RuntimeError, OSError):
                return

    # -- receiving (the session's own thread only)

    def serve(self, on_text: Callable[[str], None]) -> None:
        """Hand each text message to ``on_text`` until the session ends (a close from
        either side, or a protocol error, which ``websockets`` answers with its code)."""
        try:
            for message in self._ws:
                if isinstance(message, str):  # binary messages are not part of Socket Mode
                    on_text(message)
        finally:
            self._closing = True
            self._ws.wait_closed(_SOCKET_CLOSE_WAIT)
