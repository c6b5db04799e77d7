"""Slack's Web API answers, read strictly: the one parsing layer for every Slack read.

Every call whose answer the app reads goes through :func:`call` (``ok`` must be exactly
``true``, the body a JSON object) and then one reader here that checks each field it
returns has the type api.slack.com documents: ``usergroups.users.list``'s ``users`` is a
list of user ids, ``conversations.open``'s ``channel.id`` a channel id, a
``chat.postMessage``'s ``channel`` and ``ts`` strings, a ``views.open``'s ``view.id`` and
``view.hash`` strings. Anything else is a failed lookup
(:class:`~jitaccess.answers.AnswerRejected`, logged and counted), never data: nothing
here iterates over whatever came back. Slack's own refusals (``ok: false`` with an
``error``) stay :class:`~slack_sdk.errors.SlackApiError`, as the SDK raises them. A
later Slack read adds its reader here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web import SlackResponse

from jitaccess.answers import describe, rejected
from jitaccess.slack.principals import CHANNEL_ID, MESSAGE_TS, USER_ID

SERVICE = "slack"
Answer = dict[str, Any]


def call(method: str, fn: Callable[[], SlackResponse]) -> Answer:
    """Make one Web API call (``fn``) and return its body, checked: a JSON object whose
    ``ok`` is exactly ``true``. Slack's refusals (``ok: false`` with an ``error``, HTTP
    errors, 429s) are raised as the SDK raises them; any other shape is rejected."""
    try:
        response = fn()
    except SlackApiError as exc:
        data = exc.response.data
        refusal = (
            isinstance(data, dict)
            and data.get("ok") is False
            and isinstance(data.get("error"), str)
            and bool(data["error"])
        )
        if exc.response.status_code == 200 and not refusal:
            what = "a body that is not a JSON object" if not isinstance(data, dict) else None
            if what is None:
                ok = data.get("ok")
                what = "no ok field" if "ok" not in data else f"ok {describe(ok)} and no error"
            raise rejected(SERVICE, method, what) from None
        raise
    except (AttributeError, TypeError, ValueError):
        # The SDK assumes a JSON object: a list, a string or a number breaks it here.
        raise rejected(SERVICE, method, "a body that is not a JSON object") from None
    data = response.data
    if not isinstance(data, dict):
        raise rejected(SERVICE, method, "a body that is not a JSON object")
    if data.get("ok") is not True:
        ok = data.get("ok")
        raise rejected(SERVICE, method, f"ok {describe(ok)} instead of true")
    return data


def _field(method: str, data: Answer, path: tuple[str, ...]) -> Any:
    value: Any = data
    for depth, key in enumerate(path):
        if not isinstance(value, dict):
            where = ".".join(path[:depth])
            raise rejected(SERVICE, method, f"{where} as {describe(value)}, not an object")
        if key not in value:
            raise rejected(SERVICE, method, f"no {'.'.join(path[: depth + 1])}")
        value = value[key]
    return value


def text(method: str, data: Answer, *path: str, pattern: re.Pattern[str] | None = None) -> str:
    """The string at ``path`` (matching ``pattern``), or a rejection."""
    value = _field(method, data, path)
    name = ".".join(path)
    if not isinstance(value, str):
        raise rejected(SERVICE, method, f"{name} as {describe(value)}, not a string")
    if pattern is not None and not pattern.fullmatch(value):
        raise rejected(SERVICE, method, f"{name} that is not a Slack id or timestamp")
    return value


def user_ids(method: str, data: Answer, field: str = "users") -> tuple[str, ...]:
    """A list of user ids, or a rejection (an object, a string, null, numbers, objects
    in the list: none of them is who is in a group)."""
    value = _field(method, data, (field,))
    if not isinstance(value, list):
        raise rejected(SERVICE, method, f"{field} as {describe(value)}, not a list of user ids")
    for item in value:
        if not isinstance(item, str):
            raise rejected(SERVICE, method, f"{describe(item)} among the {field}, not a user id")
        if not USER_ID.fullmatch(item):
            raise rejected(SERVICE, method, f"a string among the {field} that is not a user id")
    return tuple(value)


# -- one reader per method the app reads from ---------------------------------------------


def group_members(data: Answer) -> tuple[str, ...]:
    """``usergroups.users.list``: the group's members."""
    return user_ids("usergroups.users.list", data)


def dm_channel(data: Answer) -> str:
    """``conversations.open``: the DM's channel id."""
    return text("conversations.open", data, "channel", "id", pattern=CHANNEL_ID)


def posted(data: Answer) -> tuple[str, str]:
    """``chat.postMessage``: where the message went and its ts (to edit it later)."""
    channel = text("chat.postMessage", data, "channel", pattern=CHANNEL_ID)
    return channel, text("chat.postMessage", data, "ts", pattern=MESSAGE_TS)


def opened_view(method: str, data: Answer) -> tuple[str, str]:
    """``views.open``/``views.update``: the view's id and hash (to update it later)."""
    return text(method, data, "view", "id"), text(method, data, "view", "hash")


def user_by_email(data: Answer) -> str | None:
    """``users.lookupByEmail``: the person's user id; None for a deactivated account or a
    bot (nobody to map an approver to)."""
    method = "users.lookupByEmail"
    user_id = text(method, data, "user", "id", pattern=USER_ID)
    for flag in ("deleted", "is_bot"):
        value = data["user"].get(flag, False)
        if not isinstance(value, bool):
            raise rejected(SERVICE, method, f"user.{flag} as {describe(value)}, not a boolean")
        if value:
            return None
    return user_id
