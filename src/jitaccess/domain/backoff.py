"""The one backoff of every retry: capped exponential, with jitter from an injected rng.

The sweep's provider calls, the activity summary's log reads and the outbox relay's
Slack calls all wait ``base`` after the first failure, doubling after each further
one, never longer than ``cap``. With ``rng`` (a ``random.random``-like function; tests
pass a fixed one) each wait is scaled by a factor in [0.5, 1): "equal jitter", so
retries of many rows spread out yet never come sooner than half the backoff.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta


def backoff(
    attempts: int,
    *,
    base: timedelta,
    cap: timedelta,
    rng: Callable[[], float] | None = None,
) -> timedelta:
    """The wait after ``attempts`` failures: ``base * 2**(attempts - 1)``, at most ``cap``,
    scaled by ``0.5 + rng() * 0.5`` when ``rng`` is given."""
    try:
        raw = min(cap, base * float(2 ** max(attempts - 1, 0)))
    except OverflowError:  # so many doublings that only the cap is left
        raw = cap
    return raw if rng is None else raw * (0.5 + rng() * 0.5)
