"""What follows a person's action: act on what is due at once, or wake the scheduler.

The use cases record intents in their transaction; this is the one place that
decides, afterwards, whether the backend is called before the action returns (the
CLI) or the scheduler is woken for it (``serve``). The composition root builds one
(see ``deps.build_deps``) and injects it into the use cases that change requests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from jitaccess.app.views import RequestView, read_request
from jitaccess.domain.lifecycle import APPROVED_STATES, FINAL_STATES, RequestState
from jitaccess.store.db import Database
from jitaccess.store.rows import Rows


@dataclass(frozen=True)
class AfterChange:
    """What follows a person's action that made work due or moved a deadline.

    ``inline`` (the CLI): the backend is called before the action returns. Otherwise
    (``serve``) the action only records the intent and wakes the scheduler
    (``wake``; None in a web process, whose intents a worker's next sweep picks up), so
    a Slack click never waits on a backend."""

    db: Database
    rows: Rows
    run_due: Callable[[datetime, Iterable[int]], object]
    inline: bool
    wake: Callable[[datetime], None] | None

    def settled(self, view: RequestView, now: datetime) -> RequestView:
        """Act at once on what is already due (start now), or wake the scheduler; the
        request as it is afterwards (read again only if something ran)."""
        if self.inline and view.state in APPROVED_STATES and view.starts_at <= now:
            self.run_due(now, [view.id])
            return read_request(self.db, self.rows, view.id)
        if self.wake is not None and view.state not in FINAL_STATES:
            self.wake(
                view.starts_at if view.state in APPROVED_STATES else view.approval_deadline_at
            )
        return view

    def ending(self, request_id: int, now: datetime) -> RequestView:
        """A request was asked to end: revoke at once (inline) or wake the scheduler;
        the request as it is afterwards."""
        if self.inline:
            self.run_due(now, [request_id])
        elif self.wake is not None:
            self.wake(now)
        return read_request(self.db, self.rows, request_id)

    def extended(self, view: RequestView, now: datetime) -> None:
        """An active request's end moved: tell an expiry-aware backend at once (inline),
        or wake the scheduler."""
        if self.inline and view.state == RequestState.ACTIVE:
            self.run_due(now, [view.id])
        elif self.wake is not None:
            self.wake(now)
