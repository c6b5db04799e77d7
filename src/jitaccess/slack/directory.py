"""The Slack adapter of the ``Directory`` port: who is in a user group, from
``usergroups.users.list`` (scope ``usergroups:read``).

Two uses, two instances: decisions ask Slack every time (``cache_seconds=0``), so a
person removed from a group is refused at their next click; cards and lists may use
a short cache, so an App Home with many requests costs one call per group.

The answer is read by :mod:`jitaccess.slack.answers`: anything but ``ok: true`` with a
list of user ids is a failed lookup (:class:`~jitaccess.app.directory.DirectoryError`),
never members. A decision's instance is built with :func:`decision_client`: a budget
of :data:`DECISION_BUDGET_SECONDS` and no retries, so a slow or rate-limited Slack
fails the lookup in time for the answer Slack shows the approver.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from jitaccess.answers import AnswerRejected
from jitaccess.app.directory import DirectoryError
from jitaccess.slack import answers

log = logging.getLogger("jitaccess.slack.directory")

#: What Slack's errors mean to the person whose action was refused.
_EXPLAINED = {
    "no_such_subteam": "Slack knows no such user group",
    "missing_scope": "the Slack app lacks the usergroups:read scope: reinstall it",
    "paid_teams_only": "user groups need a paid Slack plan",
}


#: How long a decision waits for ``usergroups.users.list``: Slack shows its answer to a
#: click or a form within 3 s, and the check, the ack and the way back need the rest.
DECISION_BUDGET_SECONDS = 1.5


def decision_client(client: WebClient, budget: float = DECISION_BUDGET_SECONDS) -> WebClient:
    """A copy of ``client`` for lookups a decision waits on: ``budget`` seconds per
    socket operation and no retries (neither the SDK's reconnect nor a 429's
    ``Retry-After`` sleep), so the lookup ends within the budget, answered or failed."""
    copy = WebClient(
        token=client.token,
        base_url=client.base_url,
        ssl=client.ssl,
        proxy=client.proxy,
        headers=dict(client.headers),
        retry_handlers=[],
    )
    # urllib takes seconds as a float; the SDK only annotates its timeout as int.
    copy.timeout = budget  # type: ignore[assignment]
    return copy


def _rate_limited(exc: SlackApiError) -> str:
    headers = exc.response.headers or {}
    wait = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if isinstance(wait, list):
        wait = wait[0] if wait else None
    try:
        seconds = max(1, int(float(str(wait))))
    except ValueError:
        return "Slack is limiting how often the app may ask: try again in a minute"
    return f"Slack is limiting how often the app may ask: try again in {seconds} s"


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
            people = answers.group_members(
                answers.call(
                    "usergroups.users.list",
                    lambda: self._client.usergroups_users_list(usergroup=group_id),
                )
            )
        except AnswerRejected as exc:
            raise DirectoryError(
                f"Slack's answer was not a list of the group's members: {exc.reason}"
            ) from None
        except SlackApiError as exc:
            if exc.response.status_code == 429:
                raise DirectoryError(_rate_limited(exc)) from None
            error = str(exc.response.get("error", ""))
            raise DirectoryError(_EXPLAINED.get(error, f"Slack said {error}")) from None
        except (SlackClientError, OSError) as exc:
            log.warning("usergroups.users.list failed for %s: %s", group_id, exc)
            raise DirectoryError("Slack could not be reached in time") from None
        if self._cache_seconds > 0:
            with self._lock:
                self._cache[group_id] = (self._clock(), people)
        return people


class SlackEmailLookup:
    """Native mode's e-mail → Slack person (``users.lookupByEmail``, scope
    ``users:read.email``). ``users_not_found`` is None (listed as unmapped by the
    import); any other refusal or a malformed answer is a failed lookup."""

    def __init__(self, client: WebClient) -> None:
        self.client = client

    def find(self, email: str) -> str | None:
        from jitaccess.domain.native import ExternalLookupFailed

        try:
            data = answers.call(
                "users.lookupByEmail", lambda: self.client.users_lookupByEmail(email=email)
            )
            return answers.user_by_email(data)
        except SlackApiError as exc:
            error = exc.response.data.get("error") if isinstance(exc.response.data, dict) else None
            if error == "users_not_found":
                return None
            if error == "missing_scope":
                raise ExternalLookupFailed(
                    "the Slack app lacks the users:read.email scope: reinstall it"
                ) from None
            raise ExternalLookupFailed(f"Slack refused users.lookupByEmail ({error})") from None
        except (AnswerRejected, SlackClientError) as exc:
            raise ExternalLookupFailed(f"users.lookupByEmail: {exc}") from None
