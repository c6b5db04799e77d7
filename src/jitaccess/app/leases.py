"""Keep claimed rows' leases alive while slow work on them is in flight.

The sweep and the outbox relay claim rows by pushing a deadline ahead by a lease,
then work outside any transaction (a backend call, a Slack call). If that work
outlives the lease, another worker claims the same rows and does it again: a second
grant, a revoke racing a grant still landing, a Slack message sent twice. A
``LeaseKeeper`` renews the leases of the rows still in flight every third of a lease.
It is a thread of the process, so a crash still lets the leases lapse and another
worker take over, as the design intends.

Leases are measured on the clock the claims are compared with (the one every worker
reads), never on this process's own timer: under a clock that runs faster than the
wall (the sandbox's, a test's) a timer-based keeper renews too late, the lease lapses
while the work is still in flight, and a second worker does it again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

log = logging.getLogger("jitaccess.leases")

#: How often (wall seconds, at most) the keeper looks at the clock. Only a due renewal
#: touches the database, so this is cheap; it is short so that a clock running faster
#: than the wall still gets its renewals in time.
_LOOK_EVERY = 0.1


def running_from(now: datetime) -> Callable[[], datetime]:
    """The clock of a worker given only ``now``: ``now`` plus the wall time since."""
    started = time.monotonic()
    return lambda: now + timedelta(seconds=time.monotonic() - started)


class LeaseKeeper:
    """``renew(ids, until)`` is called every third of ``lease`` (as ``clock`` counts,
    from ``claimed_at``) with the ids not yet ``done``; it extends their leases to
    ``until``, a lease from the clock's now."""

    def __init__(
        self,
        renew: Callable[[list[int], datetime], None],
        ids: Iterable[int],
        lease: timedelta,
        clock: Callable[[], datetime],
        *,
        claimed_at: datetime,
    ) -> None:
        self._renew = renew
        self._waiting = set(ids)
        self._lease = lease
        self._clock = clock
        #: The claim set the leases to ``claimed_at + lease``: the first renewal is due a
        #: third of a lease after it, which may be at once if the claim is already old.
        self._renewed_at = claimed_at
        self._look_every = min(lease.total_seconds() / 3, _LOOK_EVERY)
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
        while not self._stop.wait(self._look_every):
            now = self._clock()
            if now - self._renewed_at < self._lease / 3:
                continue
            with self._lock:
                waiting = sorted(self._waiting)
            if not waiting:
                continue
            try:
                self._renew(waiting, now + self._lease)
                self._renewed_at = now
            except Exception:  # the next look tries again; the lease may lapse meanwhile
                log.exception("could not renew the leases of %d claimed rows", len(waiting))
