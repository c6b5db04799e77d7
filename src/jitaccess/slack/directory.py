"""The Slack adapter of the ``Directory`` port: who is in a user group, from
``usergroups.users.list`` (scope ``usergroups:read``).

Two uses, two instances: decisions ask Slack every time (``cache_seconds=0``), so a
person removed from a group is refused at their next click; cards and lists may use
a short cache, so an App Home with many requests costs one call per group.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from jitaccess.directory import DirectoryError

log = logging.getLogger("jitaccess.slack.directory")

#: What Slack's errors mean to the person whose action was refused.
_EXPLAINED = {
    "no_such_subteam": "Slack knows no such user group",
    "missing_scope": "the Slack app lacks the usergroups:read scope: reinstall it",
    "paid_teams_only": "user groups need a paid Slack plan",
}


class SlackDirectory:
    def __init__(
        self,
        client: WebClient,
        *,
        cache_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, tuple[str, ...]]] = {}
        self._lock = threading.Lock()
        #: Slack calls made, for the benchmark and the closing note.
        self.calls = 0

    def forget(self, group_id: str) -> None:
        """Drop what the cache holds for ``group_id`` (Slack said its members changed)."""
        with self._lock:
            self._cache.pop(group_id, None)

    def members(self, group_id: str) -> tuple[str, ...]:
        if self._cache_seconds > 0:
            with self._lock:
                hit = self._cache.get(group_id)
            if hit is not None and self._clock() - hit[0] < self._cache_seconds:
                return hit[1]
        try:
            self.calls += 1
            response = self._client.usergroups_users_list(usergroup=group_id)
        except SlackApiError as exc:
            error = str(exc.response.get("error", ""))
            raise DirectoryError(_EXPLAINED.get(error, f"Slack said {error}")) from None
        except (SlackClientError, OSError) as exc:
            log.warning("usergroups.users.list failed for %s: %s", group_id, exc)
            raise DirectoryError("Slack could not be reached") from None
        people = tuple(str(u) for u in response.get("users") or ())
        if self._cache_seconds > 0:
            with self._lock:
                self._cache[group_id] = (self._clock(), people)
        return people
