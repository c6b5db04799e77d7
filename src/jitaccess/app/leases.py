"""Keep claimed rows' leases alive while slow work on them is in flight.

The sweep and the outbox relay claim rows by pushing a deadline ahead by a lease,
then work outside any transaction (a backend call, a Slack call). If that work
outlives the lease, another worker claims the same rows and does it again: a second
grant, a revoke racing a grant still landing, a Slack message sent twice. A
``LeaseKeeper`` renews the leases of the rows still in flight every third of a lease.
It is a thread of the process, so a crash still lets the leases lapse and another
worker take over, as the design intends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import timedelta

log = logging.getLogger("jitaccess.leases")


class LeaseKeeper:
    """``renew(ids, elapsed)`` is called every ``lease / 3`` with the ids not yet
    ``done`` and the time since the claim; it extends their leases past it."""

    def __init__(
        self,
        renew: Callable[[list[int], timedelta], None],
        ids: Iterable[int],
        lease: timedelta,
    ) -> None:
        self._renew = renew
        self._waiting = set(ids)
        self._interval = lease.total_seconds() / 3
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="jitaccess-lease", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def done(self, ids: Iterable[int]) -> None:
        """These rows' outcomes are recorded: their leases are no longer ours to keep."""
        with self._lock:
            self._waiting.difference_update(ids)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                waiting = sorted(self._waiting)
            if not waiting:
                continue
            try:
                self._renew(waiting, timedelta(seconds=time.monotonic() - self._started))
            except Exception:  # the next round tries again; the lease may lapse meanwhile
                log.exception("could not renew the leases of %d claimed rows", len(waiting))
