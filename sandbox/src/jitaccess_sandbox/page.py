"""The sandbox page: a Slack stand-in in the browser, mounted at ``/sandbox``.

It shows, for the person you act as, only what the app really sent to the fake Slack
Web API: their DMs from the bot (``chat.postMessage``/``chat.update``), ephemeral
replies (``response_url`` posts, ``chat.postEphemeral`` and acks with text), their
App Home (``views.publish``) and their open modal (``views.open``/``views.update``,
or a ``response_action: update``). Nothing is read from the database. Threads show
as Slack shows them: under a message with replies, "N replies" and the replies (shown
expanded, as in an open thread panel); a reply broadcast to the conversation
(``reply_broadcast``) also in the DM itself, under "replied to a thread".

What a person does becomes what Slack would send: a slash command's form body, a
``block_actions`` or ``view_submission`` payload, an ``app_home_opened`` event,
signed with the signing secret (and the real time, which Bolt checks) and POSTed to
the app's own ``/slack/events`` over real HTTP.

Routes (``POST`` bodies are JSON; every one names the ``user`` acting):

* ``GET /sandbox``: the page: ``static/page.html`` with ``page.css`` and ``page.js``
  inlined and the people and URL prefix as JSON (see :func:`render_page`);
* ``GET /sandbox/state?user=U…&since=N``: that person's timeline, App Home and open
  modal as rendered HTML, with a version number (``{"unchanged": true}`` while it
  is still ``N``): the page polls it;
* ``GET /sandbox/azure?user=U…``: what the fake Azure Resource Manager holds (role
  assignments with their end, PIM schedule requests), times in that person's zone:
  the page's Azure panel polls it;
* ``POST /sandbox/command`` ``{text}``, ``/click`` ``{source, channel, ts, view_id,
  block_id, action_id, value, selected, values}``, ``/submit`` ``{view_id, values}``,
  ``/close`` ``{view_id}``, ``/home-opened``, ``/time`` ``{minutes}``.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import string
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from html import escape as html_escape
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode

from jitaccess.slack.blocks.markup import zone
from jitaccess_sandbox import render
from jitaccess_sandbox.demo import DemoUser
from jitaccess_sandbox.fake_slack import FakeSlack

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIEnvironment

log = logging.getLogger("jitaccess.sandbox")

REQUIRED = "Please complete this required field."
MAX_BODY = 1_000_000
MAX_ADVANCE = timedelta(days=31)
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")


class SandboxClock:
    """The sandbox's "now": the real time plus an offset the time control increases.

    With a ``path`` the offset is kept in that file, so a restarted sandbox carries
    on at the time its data was made at."""

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._offset = timedelta(0)
        if path is not None and path.exists():
            try:
                seconds = float(json.loads(path.read_text())["offset_seconds"])
            except (OSError, ValueError, KeyError, TypeError):
                log.warning("ignoring unreadable sandbox clock file %s", path)
            else:
                self._offset = timedelta(seconds=max(0.0, seconds))

    def __call__(self) -> datetime:
        with self._lock:
            offset = self._offset
        return datetime.now(UTC) + offset

    @property
    def offset(self) -> timedelta:
        with self._lock:
            return self._offset

    def advance(self, delta: timedelta) -> datetime:
        """Move the sandbox time forward by ``delta``; returns the new now."""
        if delta <= timedelta(0):
            raise ValueError("the sandbox clock only moves forward")
        with self._lock:
            self._offset += delta
            offset = self._offset
        if self._path is not None:
            self._path.write_text(json.dumps({"offset_seconds": offset.total_seconds()}))
        return self()


def sign(secret: str, body: str, timestamp: int | None = None) -> dict[str, str]:
    """Slack's request signature headers for ``body`` (v0, HMAC-SHA256)."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


class PageError(Exception):
    """A request the page refuses; the message is shown to the person."""

    def __init__(self, message: str, status: str = "400 Bad Request") -> None:
        super().__init__(message)
        self.status = status


@dataclass
class _Item:
    """One entry of a person's conversation with the bot, in display order."""

    seq: int
    user: str
    kind: str  # "message", "ephemeral" or "command" (what the person typed)
    channel: str = ""
    ts: str = ""
    text: str = ""
    content: dict[str, Any] | None = None  # what the page itself recorded


class SandboxPage:
    """The WSGI app behind ``/sandbox``. See the module docstring."""

    def __init__(
        self,
        *,
        fake: FakeSlack,
        signing_secret: str,
        app_url: Callable[[], str],
        clock: SandboxClock,
        people: Sequence[DemoUser],
        on_time: Callable[[], None] | None = None,
        prefix: str = "/sandbox",
        db_label: str = "",
        azure: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        """``app_url`` returns the app's root URL (``http://127.0.0.1:PORT``) once it is
        listening; ``on_time`` runs after the clock moved (the sandbox sweeps then);
        ``azure`` returns what the fake ARM holds (:meth:`FakeArm.snapshot`), if any."""
        self.fake = fake
        self.secret = signing_secret
        self.app_url = app_url
        self.clock = clock
        self.people = list(people)
        self.on_time = on_time
        self.prefix = prefix.rstrip("/")
        self.db_label = db_label
        self.azure = azure
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._version = 0
        self._fingerprint: tuple[int, int, int] = (-1, -1, -1)
        self._seq = 0
        self._order: dict[str, int] = {}  # key of an item the fake holds -> display order
        self._local: list[_Item] = []  # commands typed and acks with text
        self._owners: dict[str, str] = {}  # response_url key -> the person it answers
        self._closed: set[str] = set()  # modal view ids the person closed
        self._errors: dict[str, tuple[str, dict[str, str]]] = {}  # view id -> (hash, errors)
        self._replaced: dict[str, tuple[str, dict[str, Any]]] = {}  # response_action update
        self._counter = 0
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Watch the fake Slack so items are ordered as they arrive, even unseen."""
        if self._watcher is None:
            self._stop.clear()
            self._watcher = threading.Thread(
                target=self._watch, name="sandbox-page-watch", daemon=True
            )
            self._watcher.start()

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
            self._watcher = None

    def _watch(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self.refresh()
            except Exception:  # never let the watcher die; the next tick retries
                log.exception("sandbox page: watching the fake Slack failed")

    # -- what the fake holds -----------------------------------------------------------
    @property
    def names(self) -> dict[str, str]:
        """Everyone's display name (the bot too), and each channel's name, for mentions."""
        users = dict(self.fake.users)
        names = {
            uid: str(info.get("real_name") or info.get("name") or uid)
            for uid, info in users.items()
        }
        names.update({cid: str(c["name"]) for cid, c in dict(self.fake.channels).items()})
        return names

    def _person(self, user: str) -> DemoUser:
        for person in self.people:
            if person.id == user:
                return person
        raise PageError(f"{user!r} is not one of the sandbox's people")

    def _tz(self, user: str) -> tzinfo:
        return zone(str((self.fake.users.get(user) or {}).get("tz") or ""))

    def _responses(self) -> dict[str, list[dict[str, Any]]]:
        return {key: list(posts) for key, posts in dict(self.fake.responses).items()}

    def refresh(self) -> int:
        """Notice what changed in the fake Slack; returns the current version."""
        fingerprint = (
            len(self.fake.calls),
            sum(len(posts) for posts in self._responses().values()),
            len(self.fake.ephemerals),
        )
        with self._lock:
            if fingerprint == self._fingerprint:
                return self._version
            self._fingerprint = fingerprint
            responses = self._responses()
            for person in self.people:
                fresh: list[tuple[str, str]] = []
                for msg in self.fake.dms_to(person.id):
                    fresh.append((str(msg["ts"]), f"m:{msg['channel']}:{msg['ts']}"))
                for eph in self.fake.ephemerals_to(person.id):
                    fresh.append((str(eph["ts"]), f"e:{eph['ts']}"))
                for _ts, key in sorted(fresh):
                    if key not in self._order:
                        self._order[key] = self._next_seq()
                for rkey, owner in self._owners.items():
                    if owner != person.id:
                        continue
                    for i in range(len(responses.get(rkey, []))):
                        key = f"r:{rkey}:{i}"
                        if key not in self._order:
                            self._order[key] = self._next_seq()
            self._bump()
            return self._version

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _bump(self) -> None:
        with self._lock:
            self._version += 1
            self._changed.notify_all()

    # -- the state a person sees -------------------------------------------------------
    def state(self, user: str, since: int | None = None) -> dict[str, Any]:
        self._person(user)
        version = self.refresh()
        if since is not None and since == version:
            return {"version": version, "unchanged": True}
        names = self.names
        people = [p.id for p in self.people]
        tz = self._tz(user)
        now = self.clock()
        with self._lock:
            timeline = self._timeline(user, names, tz, now)
            modal = self._modal_state(user, names, people, tz, now)
            counts = {
                p.id: len(self.fake.conversation_in(self.fake.dm_channel_for(p.id)))
                for p in self.people
            }
            channels = self._channels(names, tz, now)
        home = self.fake.current_home(user)
        return {
            "version": version,
            "user": user,
            "now": now.isoformat(),
            "now_label": render.local_time(now, tz),
            "offset_minutes": int(self.clock.offset.total_seconds() // 60),
            "timeline": timeline,
            "home": render.render_blocks(home.get("blocks") or [], users=names, tz=tz, now=now)
            if home
            else None,
            "modal": modal,
            "counts": counts,
            "channels": channels,
        }

    def _channels(
        self, names: Mapping[str, str], tz: tzinfo, now: datetime
    ) -> list[dict[str, Any]]:
        """The workspace's channels (an application's feed), as anyone in them sees
        them: each message in its current, edited-in-place version."""
        return [
            {
                "id": channel["id"],
                "name": channel["name"],
                "member": bool(channel["bot_member"]),
                "messages": [
                    {"ts": m["ts"], "html": render.render_message(m, users=names, tz=tz, now=now)}
                    for m in self.fake.messages_in(channel["id"])
                ],
            }
            for channel in list(self.fake.channels.values())
        ]

    def _timeline(
        self, user: str, names: Mapping[str, str], tz: tzinfo, now: datetime
    ) -> list[dict[str, Any]]:
        items: list[tuple[int, dict[str, Any]]] = []
        dm = self.fake.dm_channel_for(user)
        everything = self.fake.dms_to(user)
        by_ts = {m["ts"]: m for m in everything}
        for msg in self.fake.conversation_in(dm):
            key = f"m:{msg['channel']}:{msg['ts']}"
            parent = by_ts.get(str(msg.get("thread_ts") or ""))
            if msg.get("subtype") == "thread_broadcast":
                html = _replied_to(parent, names, tz, now) + render.render_message(
                    msg, users=names, tz=tz, now=now
                )
            else:
                html = render.render_message(msg, users=names, tz=tz, now=now)
                html += _thread_html(msg, self.fake.thread_in(dm, msg["ts"]), names, tz, now)
            items.append(
                (
                    self._order.get(key, 1 << 60),
                    {
                        "key": key,
                        "kind": "message",
                        "channel": msg["channel"],
                        "ts": msg["ts"],
                        "html": html,
                    },
                )
            )
        for eph in self.fake.ephemerals_to(user):
            key = f"e:{eph['ts']}"
            items.append(
                (
                    self._order.get(key, 1 << 60),
                    {
                        "key": key,
                        "kind": "ephemeral",
                        "channel": eph["channel"],
                        "ts": eph["ts"],
                        "html": render.render_message(eph, users=names, tz=tz, now=now),
                    },
                )
            )
        responses = self._responses()
        for rkey, owner in self._owners.items():
            if owner != user:
                continue
            for i, post in enumerate(responses.get(rkey, [])):
                key = f"r:{rkey}:{i}"
                items.append(
                    (
                        self._order.get(key, 1 << 60),
                        {
                            "key": key,
                            "kind": "ephemeral",
                            "channel": self.fake.dm_channel_for(user),
                            "ts": "",
                            "html": render.render_message(post, users=names, tz=tz, now=now),
                        },
                    )
                )
        for item in self._local:
            if item.user != user:
                continue
            if item.kind == "command":
                html_ = f'<div class="cmd">{render.plain_text(item.text)}</div>'
            else:
                html_ = render.render_message(item.content or {}, users=names, tz=tz, now=now)
            items.append(
                (
                    item.seq,
                    {
                        "key": f"l:{item.seq}",
                        "kind": item.kind,
                        "channel": "",
                        "ts": "",
                        "html": html_,
                    },
                )
            )
        items.sort(key=lambda pair: pair[0])
        return [entry for _, entry in items]

    def _modal_record(self, user: str) -> dict[str, Any] | None:
        """The person's open modal: the newest of the latest stack not closed."""
        records = self.fake.opened_views(user)
        if not records:
            return None
        root = records[-1]["root_view_id"]
        for rec in reversed(records):
            if rec["root_view_id"] != root:
                break
            if rec["id"] not in self._closed:
                found: dict[str, Any] = dict(rec)
                replaced = self._replaced.get(rec["id"])
                if replaced is not None and replaced[0] == rec["hash"]:
                    found["view"] = replaced[1]
                return found
        return None

    def _modal_state(
        self,
        user: str,
        names: Mapping[str, str],
        people: Sequence[str],
        tz: tzinfo,
        now: datetime | None = None,
    ) -> dict[str, Any] | None:
        rec = self._modal_record(user)
        if rec is None:
            return None
        stored = self._errors.get(rec["id"])
        errors = stored[1] if stored is not None and stored[0] == rec["hash"] else {}
        view = rec["view"]
        return {
            "id": rec["id"],
            "hash": rec["hash"],
            "callback_id": view.get("callback_id", ""),
            "errors": errors,
            "html": render.render_view(
                view, users=names, people=people, tz=tz, errors=errors, now=now
            ),
        }

    # -- talking to the app ------------------------------------------------------------
    def _post(self, body: str, content_type: str) -> tuple[int, str]:
        """POST a signed body to the app's /slack/events, as Slack does."""
        headers = {"Content-Type": content_type, **sign(self.secret, body)}
        request = urllib.request.Request(
            self.app_url().rstrip("/") + "/slack/events",
            data=body.encode(),
            headers=headers,
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                return int(response.status), response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode("utf-8", "replace")
        except OSError as exc:
            raise PageError(f"could not reach the app: {exc}", "502 Bad Gateway") from exc

    def _post_payload(self, payload: dict[str, Any]) -> tuple[int, str]:
        return self._post(
            urlencode({"payload": json.dumps(payload)}), "application/x-www-form-urlencoded"
        )

    def _response_url(self, user: str) -> str:
        with self._lock:
            self._counter += 1
            key = f"sandbox-{self._counter}-{user.lower()}"
            self._owners[key] = user
        return self.fake.response_url(key)

    def _user_obj(self, user: str) -> dict[str, Any]:
        info = self.fake.users.get(user) or {}
        name = str(info.get("name") or user.lower())
        return {"id": user, "username": name, "name": name, "team_id": self.fake.team_id}

    def _envelope(self, kind: str, user: str) -> dict[str, Any]:
        return {
            "type": kind,
            "token": "sandbox-verification-token",
            "api_app_id": self.fake.app_id,
            "team": {"id": self.fake.team_id, "domain": "jitaccess-sandbox"},
            "user": self._user_obj(user),
            "is_enterprise_install": False,
            "enterprise": None,
        }

    @staticmethod
    def _outcome(status: int, body: str) -> dict[str, Any]:
        if status != 200:
            return {"ok": False, "status": status, "error": f"the app answered HTTP {status}"}
        return {"ok": True, "status": status}

    def _ack_reply(self, user: str, body: str) -> None:
        """An ack with text or blocks is shown as an ephemeral reply, as Slack does."""
        try:
            parsed = json.loads(body) if body.strip() else None
        except ValueError:
            parsed = {"text": body}
        if isinstance(parsed, dict) and (parsed.get("text") or parsed.get("blocks")):
            with self._lock:
                self._local.append(_Item(self._next_seq(), user, "ephemeral", content=parsed))
            self._bump()

    def command(self, user: str, text: str) -> dict[str, Any]:
        person = self._person(user)
        line = text.strip()
        if not line:
            raise PageError("Type a command, e.g. /jit help")
        word, _, rest = line.partition(" ")
        if word.startswith("/"):
            if word != "/jit":
                raise PageError(f"{word} is not a command here: this workspace only has /jit")
            args = rest.strip()
        else:
            args = line
        with self._lock:
            self._local.append(
                _Item(self._next_seq(), user, "command", text=f"/jit {args}".strip())
            )
        self._bump()
        channel = self.fake.dm_channel_for(user)
        fields = {
            "token": "sandbox-verification-token",
            "team_id": self.fake.team_id,
            "team_domain": "jitaccess-sandbox",
            "channel_id": channel,
            "channel_name": "directmessage",
            "user_id": user,
            "user_name": person.name,
            "command": "/jit",
            "text": args,
            "api_app_id": self.fake.app_id,
            "is_enterprise_install": "false",
            "response_url": self._response_url(user),
            "trigger_id": self.fake.new_trigger_id(user),
        }
        status, body = self._post(urlencode(fields), "application/x-www-form-urlencoded")
        if status == 200:
            self._ack_reply(user, body)
        return self._outcome(status, body)

    def home_opened(self, user: str) -> dict[str, Any]:
        self._person(user)
        event_id = "Ev" + uuid.uuid4().hex[:16].upper()
        body = json.dumps(
            {
                "token": "sandbox-verification-token",
                "team_id": self.fake.team_id,
                "api_app_id": self.fake.app_id,
                "type": "event_callback",
                "event_id": event_id,
                "event_time": int(time.time()),
                "authorizations": [
                    {"team_id": self.fake.team_id, "user_id": self.fake.bot_user_id, "is_bot": True}
                ],
                "event": {
                    "type": "app_home_opened",
                    "user": user,
                    "channel": self.fake.dm_channel_for(user),
                    "tab": "home",
                    "event_ts": f"{time.time():.6f}",
                },
            }
        )
        status, answer = self._post(body, "application/json")
        return self._outcome(status, answer)

    def _find_element(
        self, blocks: Sequence[Any], block_id: str, action_id: str, value: str | None
    ) -> dict[str, Any]:
        for index, block in enumerate(blocks):
            if not isinstance(block, Mapping) or render.block_id_of(block, index) != block_id:
                continue
            elements = list(block.get("elements") or [])
            if isinstance(block.get("accessory"), Mapping):
                elements.append(block["accessory"])
            if isinstance(block.get("element"), Mapping):
                elements.append(block["element"])
            for i, element in enumerate(elements):
                if not isinstance(element, Mapping):
                    continue
                if render.action_id_of(element, i) != action_id:
                    continue
                if value is not None and element.get("value") not in (None, value):
                    continue
                return dict(element)
        raise PageError(
            "That button is no longer there: the app changed the message. Try again.",
            "409 Conflict",
        )

    def _view_payload(self, rec: Mapping[str, Any], values: dict[str, Any]) -> dict[str, Any]:
        view = dict(rec["view"])
        view.update(
            {
                "id": rec["id"],
                "team_id": self.fake.team_id,
                "type": view.get("type", "modal"),
                "private_metadata": view.get("private_metadata", ""),
                "callback_id": view.get("callback_id", ""),
                "state": {"values": values},
                "hash": rec["hash"],
                "external_id": rec.get("external_id", ""),
                "root_view_id": rec.get("root_view_id") or rec["id"],
                "previous_view_id": rec.get("previous_view_id"),
                "app_id": self.fake.app_id,
                "app_installed_team_id": self.fake.team_id,
                "bot_id": self.fake.bot_id,
            }
        )
        return view

    def _home_record(self, user: str) -> dict[str, Any] | None:
        for rec in dict(self.fake.views).values():
            if rec.get("kind") == "home" and rec.get("user") == user:
                return dict(rec)
        return None

    def click(self, user: str, data: Mapping[str, Any]) -> dict[str, Any]:
        """A button click (or a select with ``dispatch_action``) as ``block_actions``."""
        self._person(user)
        source = str(data.get("source") or "message")
        block_id = str(data.get("block_id") or "")
        action_id = str(data.get("action_id") or "")
        value = data.get("value")
        payload = self._envelope("block_actions", user)
        payload["trigger_id"] = self.fake.new_trigger_id(user)
        if source in ("message", "ephemeral"):
            channel = str(data.get("channel") or self.fake.dm_channel_for(user))
            ts = str(data.get("ts") or "")
            if source == "message":
                message = next((m for m in self.fake.dms_to(user) if m["ts"] == ts), None)
            else:
                message = next((e for e in self.fake.ephemerals_to(user) if e["ts"] == ts), None)
            if message is None:
                raise PageError("That message is gone.", "404 Not Found")
            element = self._find_element(
                message.get("blocks") or [], block_id, action_id, _opt_str(value)
            )
            payload["container"] = {
                "type": "message",
                "message_ts": ts,
                "channel_id": channel,
                "is_ephemeral": source == "ephemeral",
            }
            payload["channel"] = {"id": channel, "name": "directmessage"}
            if source == "message":
                payload["message"] = {
                    "type": "message",
                    "user": self.fake.bot_user_id,
                    "bot_id": self.fake.bot_id,
                    "app_id": self.fake.app_id,
                    "team": self.fake.team_id,
                    "ts": ts,
                    "text": message.get("text", ""),
                    "blocks": message.get("blocks") or [],
                }
            payload["response_url"] = self._response_url(user)
            payload["state"] = {"values": {}}
        elif source == "home":
            rec = self._home_record(user)
            if rec is None:
                raise PageError("No App Home is published for you yet.", "404 Not Found")
            element = self._find_element(
                rec["view"].get("blocks") or [], block_id, action_id, _opt_str(value)
            )
            payload["container"] = {"type": "view", "view_id": rec["id"]}
            payload["view"] = self._view_payload(rec, {})
        elif source == "modal":
            with self._lock:
                rec = self._modal_record(user)
            if rec is None or rec["id"] != data.get("view_id"):
                raise PageError("That form is no longer open.", "409 Conflict")
            element = self._find_element(rec["view"].get("blocks") or [], block_id, action_id, None)
            values, _ = self._state_values(rec["view"], data.get("values") or {}, self._tz(user))
            payload["container"] = {"type": "view", "view_id": rec["id"]}
            payload["view"] = self._view_payload(rec, values)
        else:
            raise PageError(f"unknown source {source!r}")
        payload["actions"] = [self._action(element, block_id, action_id, data)]
        status, body = self._post_payload(payload)
        return self._outcome(status, body)

    @staticmethod
    def _action(
        element: Mapping[str, Any], block_id: str, action_id: str, data: Mapping[str, Any]
    ) -> dict[str, Any]:
        kind = str(element.get("type", "button"))
        action: dict[str, Any] = {
            "type": kind,
            "action_id": action_id,
            "block_id": block_id,
            "action_ts": f"{time.time():.6f}",
        }
        if kind == "button":
            action["text"] = element.get("text")
            if element.get("value") is not None:
                action["value"] = element["value"]
            if element.get("style"):
                action["style"] = element["style"]
        elif kind == "static_select":
            action["selected_option"] = _option(element, _opt_str(data.get("selected")))
        return action

    def _state_values(
        self, view: Mapping[str, Any], raw: Mapping[str, Any], tz: tzinfo
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """``view.state.values`` from the form's raw values (by block id), and the
        errors Slack's own client shows for required inputs left empty."""
        values: dict[str, Any] = {}
        missing: dict[str, str] = {}
        for index, block in enumerate(view.get("blocks") or []):
            if not isinstance(block, Mapping) or block.get("type") != "input":
                continue
            element = block.get("element")
            if not isinstance(element, Mapping):
                continue
            block_id = render.block_id_of(block, index)
            action_id = render.action_id_of(element, 0)
            kind = str(element.get("type", ""))
            given = raw.get(block_id)
            state: dict[str, Any] = {"type": kind}
            empty = False
            if kind == "plain_text_input":
                text = "" if given is None else str(given)
                state["value"] = text or None
                empty = not text
            elif kind == "static_select":
                option = _option(element, _opt_str(given))
                state["selected_option"] = option
                empty = option is None
            elif kind == "multi_users_select":
                chosen = given if isinstance(given, list) else ([given] if given else [])
                state["selected_users"] = [str(u) for u in chosen if u]
                empty = not state["selected_users"]
            elif kind == "users_select":
                state["selected_user"] = _opt_str(given) or None
                empty = state["selected_user"] is None
            elif kind == "datetimepicker":
                state["selected_date_time"] = _picked_time(element, _opt_str(given), tz)
                empty = state["selected_date_time"] is None
            elif kind == "datepicker":
                state["selected_date"] = _opt_str(given) or None
                empty = state["selected_date"] is None
            elif kind == "timepicker":
                state["selected_time"] = _opt_str(given) or None
                empty = state["selected_time"] is None
            else:
                continue
            if empty and not block.get("optional"):
                missing[block_id] = REQUIRED
            values[block_id] = {action_id: state}
        return values, missing

    def submit(self, user: str, view_id: str, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Submit the open modal as ``view_submission``; apply the app's answer."""
        self._person(user)
        with self._lock:
            rec = self._modal_record(user)
        if rec is None or rec["id"] != view_id:
            raise PageError("That form is no longer open.", "409 Conflict")
        if not rec["view"].get("submit"):
            raise PageError("This view has no submit button.")
        values, missing = self._state_values(rec["view"], raw, self._tz(user))
        if missing:  # Slack's client refuses before anything is sent
            with self._lock:
                self._errors[view_id] = (rec["hash"], missing)
            self._bump()
            return {"ok": True, "response_action": "errors", "errors": missing, "sent": False}
        payload = self._envelope("view_submission", user)
        payload["trigger_id"] = self.fake.new_trigger_id(user)
        payload["view"] = self._view_payload(rec, values)
        payload["response_urls"] = []
        status, body = self._post_payload(payload)
        if status != 200:
            return self._outcome(status, body)
        try:
            answer = json.loads(body) if body.strip() else {}
        except ValueError:
            answer = {}
        action = answer.get("response_action") if isinstance(answer, dict) else None
        with self._lock:
            if action == "errors":
                errors = {str(k): str(v) for k, v in (answer.get("errors") or {}).items()}
                self._errors[view_id] = (rec["hash"], errors)
                result = {"ok": True, "response_action": "errors", "errors": errors}
            elif action in ("update", "push") and isinstance(answer.get("view"), dict):
                # The sandbox shows a pushed view in place of the current one.
                self._replaced[view_id] = (rec["hash"], answer["view"])
                self._errors.pop(view_id, None)
                result = {"ok": True, "response_action": action}
            elif action == "clear":
                self._close_stack(user, rec)
                result = {"ok": True, "response_action": "clear"}
            else:
                self._closed.add(view_id)
                result = {"ok": True, "response_action": None}
        self._bump()
        return result

    def _close_stack(self, user: str, rec: Mapping[str, Any]) -> None:
        for other in self.fake.opened_views(user):
            if other["root_view_id"] == rec["root_view_id"]:
                self._closed.add(other["id"])

    def close_modal(self, user: str, view_id: str) -> dict[str, Any]:
        """The person closed the modal (Cancel, the close button or Escape); the app
        gets ``view_closed`` when the view asked for it."""
        self._person(user)
        with self._lock:
            rec = self._modal_record(user)
            if rec is None or rec["id"] != view_id:
                return {"ok": True}
            self._close_stack(user, rec)
        self._bump()
        if rec["view"].get("notify_on_close"):
            payload = self._envelope("view_closed", user)
            payload["view"] = self._view_payload(rec, {})
            payload["is_cleared"] = True
            status, body = self._post_payload(payload)
            return self._outcome(status, body)
        return {"ok": True}

    def advance(self, minutes: int) -> dict[str, Any]:
        delta = timedelta(minutes=minutes)
        if delta <= timedelta(0) or delta > MAX_ADVANCE:
            raise PageError("Move the clock forward by 1 minute to 31 days.")
        now = self.clock.advance(delta)
        self._bump()
        if self.on_time is not None:
            self.on_time()
        return {"ok": True, "now": now.isoformat()}

    def azure_state(self, user: str) -> dict[str, Any]:
        """The Azure panel: the fake ARM's role assignments and PIM schedule requests,
        with their times labelled in ``user``'s zone (``enabled`` False: no fake ARM)."""
        self._person(user)
        if self.azure is None:
            return {"enabled": False}
        tz = self._tz(user)
        names = {p.azure_object_id: p.real_name for p in self.people if p.azure_object_id}

        def label(value: Any) -> str | None:
            if not value:
                return None
            return render.local_time(datetime.fromisoformat(str(value).replace("Z", "+00:00")), tz)

        held = self.azure()
        return {
            "enabled": True,
            "now_label": label(held["now"]),
            "assignments": [
                {
                    **a,
                    "who": names.get(a["principal_id"], a["principal_id"]),
                    "ends_label": label(a["ends_at"]),
                }
                for a in held["assignments"]
            ],
            "schedule_requests": [
                {
                    **r,
                    "who": names.get(str(r["principal_id"]), r["principal_id"]),
                    "created_label": label(r["created_on"]),
                    "ends_label": label(r["ends_at"]),
                }
                for r in held["schedule_requests"]
            ],
            "activity_events": held["activity_events"],
        }

    # -- WSGI --------------------------------------------------------------------------
    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO") or "/")
        route = path[len(self.prefix) :] if path.startswith(self.prefix) else path
        route = route.rstrip("/") or "/"
        method = str(environ.get("REQUEST_METHOD") or "GET")
        try:
            if not _local_host(str(environ.get("HTTP_HOST") or "")):
                raise PageError("The sandbox answers on 127.0.0.1 only.", "403 Forbidden")
            if route == "/" and method in ("GET", "HEAD"):
                return _respond(start_response, "200 OK", "text/html; charset=utf-8", self.html())
            if route == "/state" and method == "GET":
                query = parse_qs(str(environ.get("QUERY_STRING") or ""))
                user = (query.get("user") or [""])[0]
                since_raw = (query.get("since") or [""])[0]
                since = int(since_raw) if since_raw.lstrip("-").isdigit() else None
                return _json(start_response, "200 OK", self.state(user, since))
            if route == "/azure" and method == "GET":
                query = parse_qs(str(environ.get("QUERY_STRING") or ""))
                user = (query.get("user") or [""])[0]
                return _json(start_response, "200 OK", self.azure_state(user))
            handlers: dict[str, Callable[[str, dict[str, Any]], dict[str, Any]]] = {
                "/command": lambda u, d: self.command(u, str(d.get("text") or "")),
                "/click": self.click,
                "/submit": lambda u, d: self.submit(
                    u, str(d.get("view_id") or ""), d.get("values") or {}
                ),
                "/close": lambda u, d: self.close_modal(u, str(d.get("view_id") or "")),
                "/home-opened": lambda u, d: self.home_opened(u),
                "/time": lambda u, d: self.advance(_int(d.get("minutes"))),
            }
            handler = handlers.get(route)
            if handler is None:
                raise PageError(f"no sandbox route {path}", "404 Not Found")
            if method != "POST":
                raise PageError("use POST", "405 Method Not Allowed")
            data = _read_json(environ)
            user = str(data.get("user") or "")
            if route != "/time":
                self._person(user)
            return _json(start_response, "200 OK", handler(user, data))
        except PageError as exc:
            return _json(start_response, exc.status, {"ok": False, "error": str(exc)})
        except Exception:
            log.exception("sandbox page %s %s failed", method, path)
            return _json(
                start_response,
                "500 Internal Server Error",
                {"ok": False, "error": "the sandbox page failed; see the server log"},
            )

    def html(self) -> bytes:
        config = {
            "prefix": self.prefix,
            "users": [
                {"id": p.id, "name": p.real_name, "role": p.role, "tz": p.tz} for p in self.people
            ],
            "db": self.db_label,
        }
        return render_page(config).encode("utf-8")


# -- helpers -------------------------------------------------------------------------------
def _thread_html(
    parent: Mapping[str, Any],
    replies: Sequence[Mapping[str, Any]],
    names: Mapping[str, str],
    tz: tzinfo,
    now: datetime,
) -> str:
    """Under a message with replies, as Slack shows it: "N replies", then the replies
    (shown expanded, as in an open thread panel). A reply with buttons keeps its own
    ``.msg`` (its channel and ts), so a click acts on that reply. A broadcast reply
    says it was also sent to the conversation."""
    if not replies:
        return ""
    count = int(parent.get("reply_count") or len(replies))
    label = f"{count} repl{'y' if count == 1 else 'ies'}"
    shown = []
    for reply in replies:
        also = (
            '<div class="also-sent">Also sent as direct message</div>'
            if reply.get("subtype") == "thread_broadcast"
            else ""
        )
        shown.append(
            f'<div class="msg reply" data-source="message" '
            f'data-channel="{_attr(reply["channel"])}" data-ts="{_attr(reply["ts"])}">'
            '<span class="avatar bot small">J</span><div class="msg-main">'
            '<div class="msg-head"><b>jitaccess</b><span class="app-tag">APP</span></div>'
            f'<div class="msg-body">{render.render_message(reply, users=names, tz=tz, now=now)}'
            "</div>"
            f"{also}</div></div>"
        )
    return (
        f'<div class="thread" data-thread-ts="{_attr(parent["ts"])}">'
        f'<div class="thread-count">{label}</div>'
        f'<div class="thread-replies">{"".join(shown)}</div></div>'
    )


def _replied_to(
    parent: Mapping[str, Any] | None, names: Mapping[str, str], tz: tzinfo, now: datetime
) -> str:
    """What Slack shows above a broadcast reply in the conversation."""
    about = ""
    if parent is not None:
        about = f": {render.mrkdwn(str(parent.get('text') or ''), names, tz=tz, now=now)}"
    return f'<div class="replied-to">replied to a thread{about}</div>'


def _attr(value: Any) -> str:
    return html_escape(str(value), quote=True)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise PageError("minutes must be a whole number") from None


def _option(element: Mapping[str, Any], value: str | None) -> dict[str, Any] | None:
    """The option object Slack sends back for ``value`` (``None``: nothing chosen)."""
    if not value:
        return None
    options = list(element.get("options") or [])
    for group in element.get("option_groups") or []:
        options.extend(group.get("options") or [])
    for option in options:
        if isinstance(option, Mapping) and option.get("value") == value:
            return dict(option)
    raise PageError(f"{value!r} is not one of the choices")


def _picked_time(element: Mapping[str, Any], given: str | None, tz: tzinfo) -> int | None:
    if not given:
        return None
    initial = element.get("initial_date_time")
    if initial is not None and given == render.datetime_local(initial, tz):
        return int(initial)  # unchanged: Slack sends the initial value back as it was
    try:
        return render.parse_datetime_local(given, tz)
    except ValueError:
        raise PageError(f"{given!r} is not a date and time") from None


def _local_host(host: str) -> bool:
    if not host:
        return True
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
    return name in _LOCAL_HOSTS


def _read_json(environ: WSGIEnvironment) -> dict[str, Any]:
    content_type = str(environ.get("CONTENT_TYPE") or "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise PageError("send application/json", "415 Unsupported Media Type")
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > MAX_BODY:
        raise PageError("request too large", "413 Content Too Large")
    raw = environ["wsgi.input"].read(length) if length > 0 else b""
    try:
        data = json.loads(raw.decode("utf-8") or "{}")
    except ValueError:
        raise PageError("the body is not JSON") from None
    if not isinstance(data, dict):
        raise PageError("the body must be a JSON object")
    return data


def _respond(
    start_response: StartResponse, status: str, content_type: str, body: bytes
) -> list[bytes]:
    start_response(
        status,
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
            ("X-Frame-Options", "DENY"),
            (
                "Content-Security-Policy",
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                "connect-src 'self'; img-src 'self' data:; form-action 'none'; "
                "base-uri 'none'; frame-ancestors 'none'",
            ),
        ],
    )
    return [body]


def _json(start_response: StartResponse, status: str, data: dict[str, Any]) -> list[bytes]:
    return _respond(start_response, status, "application/json", json.dumps(data).encode())


# -- the page's files ----------------------------------------------------------------------
#: The page's files in ``jitaccess_sandbox/static/``, shipped as package data: the HTML
#: shell (a :class:`string.Template` with ``${style}``, ``${config}`` and ``${script}``),
#: its CSS and its script. They are read once, on the first page served.
STATIC = "static"
STATIC_FILES = ("page.html", "page.css", "page.js")
_SLOTS = frozenset({"style", "config", "script"})


@functools.cache
def _static() -> tuple[string.Template, str, str]:
    """The page template, CSS and script, read from the package (once, on first use).

    Refuses files that could end their own element early: the CSS and the script are
    inlined into ``<style>`` and ``<script>``, so a ``</style`` or ``</script`` (or a
    ``<!--``, which changes how a script is parsed) in them would break out.
    """
    folder = resources.files("jitaccess_sandbox").joinpath(STATIC)
    html, css, js = (folder.joinpath(n).read_text(encoding="utf-8") for n in STATIC_FILES)
    template = string.Template(html)
    if not template.is_valid() or set(template.get_identifiers()) != _SLOTS:
        raise RuntimeError(
            f"{STATIC}/page.html must use exactly ${{style}} ${{config}} ${{script}}"
        )
    if "</style" in css.lower():
        raise RuntimeError(f"{STATIC}/page.css must not contain </style")
    if "</script" in js.lower() or "<!--" in js:
        raise RuntimeError(f"{STATIC}/page.js must not contain </script or <!--")
    return template, css, js


def script_json(data: Any) -> str:
    """``data`` as JSON safe inside ``<script type="application/json">``: ``<``, ``>``
    and ``&`` are written as ``\\u`` escapes, so no text in it can end the element or
    become markup; ``JSON.parse`` reads them back as the same characters."""
    text = json.dumps(data)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(config: Mapping[str, Any]) -> str:
    """The page with its CSS and script inlined and ``config`` as its JSON element.

    The only values substituted are the two package files and ``config`` through
    :func:`script_json`; people's names and the database label reach the page only
    there, and the script shows them with ``textContent`` or escapes them.
    """
    template, css, js = _static()
    return template.substitute(style=css, config=script_json(dict(config)), script=js)
