"""The one backoff (domain/backoff.py) and the three retry loops that use it."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from jitaccess.app.activity_reports import ActivityPolicy
from jitaccess.app.sweep import RetryPolicy
from jitaccess.domain.backoff import backoff

S = timedelta(seconds=1)
APP = Path(__file__).resolve().parents[2] / "src" / "jitaccess" / "app"


def test_it_doubles_from_base_up_to_the_cap() -> None:
    waits = [backoff(n, base=5 * S, cap=60 * S) for n in range(0, 7)]
    assert waits == [5 * S, 5 * S, 10 * S, 20 * S, 40 * S, 60 * S, 60 * S]


def test_jitter_scales_into_half_to_whole_with_the_injected_rng() -> None:
    assert backoff(3, base=5 * S, cap=60 * S, rng=lambda: 0.0) == 10 * S
    assert backoff(3, base=5 * S, cap=60 * S, rng=lambda: 0.5) == 15 * S
    assert backoff(9, base=5 * S, cap=60 * S, rng=lambda: 0.999) < 60 * S


def test_so_many_attempts_that_doubling_overflows_wait_the_cap() -> None:
    assert backoff(10_000, base=5 * S, cap=300 * S) == 300 * S
    assert backoff(10_000, base=5 * S, cap=300 * S, rng=lambda: 0.0) == 150 * S


@pytest.mark.parametrize("attempts", range(0, 12))
@pytest.mark.parametrize("r", [0.0, 0.3, 0.999])
def test_the_policies_wait_what_they_waited_before(attempts: int, r: float) -> None:
    """The formula the sweep and the activity summary each had their own copy of."""

    def before(base: timedelta, cap: timedelta) -> timedelta:
        raw: timedelta = min(cap, base * float(2 ** max(attempts - 1, 0)))
        return raw * (0.5 + r * 0.5)

    retry = RetryPolicy(base=10 * S, cap=300 * S)
    assert retry.delay(attempts, lambda: r) == before(retry.base, retry.cap)
    activity = ActivityPolicy()
    assert activity.backoff(attempts, lambda: r) == before(activity.base, activity.cap)


@pytest.mark.parametrize("attempts", range(1, 16))
def test_the_relays_wait_is_what_it_was(attempts: int) -> None:
    """The outbox relay's former inline rule: 2**attempts seconds, at most 2**12 s."""
    for max_backoff in (timedelta(minutes=5), timedelta(hours=3)):
        was = min(max_backoff, timedelta(seconds=2 ** min(attempts, 12)))
        cap = min(max_backoff, timedelta(seconds=2**12))
        assert backoff(attempts, base=2 * S, cap=cap) == was


@pytest.mark.parametrize("module", ["sweep.py", "activity_reports.py", "outbox.py"])
def test_no_retry_loop_keeps_its_own_copy(module: str) -> None:
    """Each retry loop computes its wait with domain/backoff.py, not its own doubling."""
    text = (APP / module).read_text()
    assert "jitaccess.domain" in text and re.search(r"\bbackoff\b", text)
    assert re.findall(r"2 \*\* |2\*\*(?!12)", text) == []
