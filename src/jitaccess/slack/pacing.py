"""Paces the relay's Slack calls to Slack's rate limits, per method (and per channel
for ``chat.postMessage``), instead of letting the SDK sleep out each 429.

A method (or a channel) is sent at full speed until Slack answers 429; from then on,
for ``hold`` seconds, its calls are spaced by Slack's published interval (plus a small
margin), so the relay keeps to the limit instead of bouncing off it, and Slack's
``Retry-After`` is waited out once, exactly, per refusal. Waiting on one method never
delays the bookkeeping of another: each key has its own next slot.

The clock and the wait are injectable: tests drive it with a fake clock whose wait
advances time, the relay with the wall clock and the process's stop flag.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from slack_sdk.errors import SlackApiError

T = TypeVar("T")

#: Seconds between calls that Slack's published limits allow (Tier 3: 50 a minute,
#: Tier 4: 100 a minute; chat.postMessage: about one a second per channel).
PUBLISHED_INTERVALS: dict[str, float] = {
    "chat.update": 60 / 50,
    "chat.postMessage": 1.0,
    "conversations.open": 60 / 50,
    "views.publish": 60 / 100,
}
#: Methods whose limit is per channel rather than per workspace.
PER_CHANNEL = frozenset({"chat.postMessage"})


class Stopping(Exception):
    """The process is stopping while a call waited for its turn: it was never sent."""


def real_monotonic() -> float:
    """Seconds on the real monotonic clock. Not ``time.monotonic``: freezegun replaces
    that, and a frozen clock never reaches the next slot nor runs out a budget. Tests
    that want fake time inject a clock instead."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


class SlackPacer:
    def __init__(
        self,
        intervals: dict[str, float] | None = None,
        *,
        speed: float = 1.0,
        margin: float = 0.04,
        hold: float = 600.0,
        max_retries: int = 4,
        clock: Callable[[], float] | None = None,
        wait: Callable[[float], bool] | None = None,
        stopping: threading.Event | None = None,
    ) -> None:
        """``speed``: Slack's limits are this many times faster (benchmarks against a
        sped-up fake). ``wait(seconds)`` returns True when the process is stopping."""
        base = PUBLISHED_INTERVALS if intervals is None else intervals
        self.intervals = {m: s * (1 + margin) / speed for m, s in base.items()}
        self.hold = hold / speed
        self.max_retries = max_retries
        self.clock = clock or real_monotonic
        event = stopping or threading.Event()
        self.wait = wait or event.wait
        self._lock = threading.Lock()
        self._next: dict[tuple[str, str | None], float] = {}
        self._paced_until: dict[tuple[str, str | None], float] = {}
        #: 429s seen, per method (for logs and tests).
        self.refusals: dict[str, int] = {}

    def call(self, method: str, fn: Callable[[], T], *, channel: str | None = None) -> T:
        """Run ``fn`` (one Slack call to ``method``) in its turn; on 429 wait Slack's
        ``Retry-After`` and try again, up to ``max_retries`` times."""
        key = (method, channel if method in PER_CHANNEL else None)
        attempt = 0
        while True:
            self._take_turn(key)
            try:
                return fn()
            except SlackApiError as exc:
                if exc.response.status_code != 429 or attempt >= self.max_retries:
                    raise
                attempt += 1
                self._refused(key, _retry_after(exc))

    def _take_turn(self, key: tuple[str, str | None]) -> None:
        with self._lock:
            now = self.clock()
            start = max(now, self._next.get(key, now))
            if self._paced_until.get(key, now - 1) >= now and key[0] in self.intervals:
                self._next[key] = start + self.intervals[key[0]]
        delay = start - now
        if delay > 0 and self.wait(delay):
            raise Stopping(f"stopping while {key[0]} waited for its turn")

    def _refused(self, key: tuple[str, str | None], retry_after: float) -> None:
        with self._lock:
            now = self.clock()
            self.refusals[key[0]] = self.refusals.get(key[0], 0) + 1
            self._paced_until[key] = now + self.hold
            self._next[key] = max(self._next.get(key, now), now + retry_after)


def _retry_after(exc: SlackApiError) -> float:
    headers = exc.response.headers or {}
    for name, value in headers.items():
        if name.lower() == "retry-after":
            raw = value[0] if isinstance(value, list) else value
            try:
                return max(0.0, float(raw))
            except (TypeError, ValueError):
                break
    return 1.0
