"""Break-glass use cases: take access at once, review it afterwards, list what waits
for review. One transaction each; ``now`` is an argument.

A break-glass request is an ordinary request that skips the wait: it is created
already approved (``auto_approve`` by the holder, so the lifecycle machine's states are
unchanged), starting now, and the sweep grants it at once, like an approval with
start now. Every approver (groups expanded) and admin is alerted at once with a card
that offers *Acknowledge*; until one of them reviews it, with a reason, it stays on
their App Home and in ``/jit pending``, also after the access itself ended.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from jitaccess.app import journal, quorum
from jitaccess.app.after_change import AfterChange
from jitaccess.app.directory import Directory, DirectoryError, expand, is_group
from jitaccess.app.outbox import OutboxKind
from jitaccess.app.views import AppView, RequestView, read_app
from jitaccess.domain import breakglass as rules
from jitaccess.domain.errors import Conflict, Mention, Moment, RuleViolation
from jitaccess.domain.lifecycle import Event, initial_state
from jitaccess.domain.policy import check_reason
from jitaccess.store.db import Database
from jitaccess.store.models import AccessRequest, Application
from jitaccess.store.rows import Rows

#: The audit actions that make break-glass findable (``audit export | grep``).
USED = "breakglass_used"
REVIEWED = "breakglass_reviewed"


class BreakGlass:
    """The break-glass use cases: take access at once, review it afterwards."""

    def __init__(
        self, db: Database, rows: Rows, directory: Directory, after_change: AfterChange
    ) -> None:
        self.db = db
        self.rows = rows
        #: Asked afresh whenever glass is broken or reviewed (see ``Deps.directory``).
        self.directory = directory
        self.after_change = after_change

    def _expanded(self, entries: Iterable[str]) -> tuple[str, ...]:
        """People and the members of groups now, or a refusal saying the directory failed."""
        try:
            return expand(self.directory, entries)
        except DirectoryError as exc:
            raise RuleViolation(
                f"Could not read the Slack user groups ({exc}); nothing was changed: try again"
            ) from None

    def _people(
        self, known: dict[tuple[str, ...], tuple[str, ...]], entries: Iterable[str]
    ) -> tuple[str, ...]:
        """The people ``entries`` name, asking Slack only between transactions (see
        ``quorum.with_groups_resolved``)."""
        key = tuple(entries)
        return quorum.known_people(known, key, lambda: self._expanded(key))

    def reviewers_of(
        self, app: Application, known: dict[tuple[str, ...], tuple[str, ...]]
    ) -> tuple[str, ...]:
        """Who is alerted and may review: approvers (groups expanded) and consumer admins."""
        return self._people(known, [*app.approvers, *app.admins])

    def reviewers_of_app(self, app_name: str) -> tuple[str, ...]:
        """:meth:`reviewers_of` by application name (also a removed application's)."""
        app = read_app(self.db, self.rows, app_name, include_removed=True)
        return self._expanded([*app.policy.approvers, *app.admins])

    def take(
        self,
        app_name: str,
        *,
        actor: str,
        role: str,
        duration: timedelta,
        incident_ref: str,
        reason: str,
        now: datetime,
    ) -> RequestView:
        """Break glass: access granted at once (by the sweep, woken now), everyone alerted."""
        result = quorum.with_groups_resolved(
            lambda known: self._take(
                known,
                app_name,
                actor=actor,
                role=role,
                duration=duration,
                incident_ref=incident_ref,
                reason=reason,
                now=now,
            )
        )
        return self.after_change.settled(result, now)

    def _take(
        self,
        known: dict[tuple[str, ...], tuple[str, ...]],
        app_name: str,
        *,
        actor: str,
        role: str,
        duration: timedelta,
        incident_ref: str,
        reason: str,
        now: datetime,
    ) -> RequestView:
        with self.db.transaction() as session:
            app = self.rows.app(session, app_name)
            view = AppView.of(app)
            holders = self._people(known, view.policy.breakglass)
            taken = rules.check_take(
                view.rules(), holders, actor, role, duration, incident_ref, reason, now
            )
            rules.check_no_overlap(
                taken.window, self.rows.open_windows(session, actor, app.scope, taken.role)
            )
            alerted = [p for p in self.reviewers_of(app, known) if p != actor]
            justification = f"Break-glass for {taken.incident_ref}: {taken.reason}"
            row = AccessRequest(
                app=app,
                requester=actor,
                role=taken.role,
                justification=justification,
                starts_at=taken.window.starts_at.astimezone(UTC),
                ends_at=taken.window.ends_at.astimezone(UTC),
                approval_deadline_at=taken.window.starts_at.astimezone(UTC),
                approval_mode=view.policy.mode.value,
                notified_approvers=alerted,
                created_at=now,
                attempts=0,
                state=initial_state(),
                breakglass=True,
                incident_ref=taken.incident_ref,
                feed_channel=app.feed_channel,
            )
            row.next_deadline_at = row.starts_at
            session.add(row)
            session.flush()
            journal.record(session, row, "submit", None, actor=actor, now=now, reason=justification)
            journal.record_step(
                session,
                row,
                USED,
                actor=actor,
                now=now,
                reason=taken.reason,
                details={
                    "breakglass": True,
                    "incident_ref": taken.incident_ref,
                    "role": taken.role,
                    "duration": int(duration.total_seconds()),
                    "cap": int(view.policy.breakglass_max.total_seconds()),
                    "alerted": alerted,
                },
            )
            decision = f"break-glass for {taken.incident_ref}: {taken.reason}"
            row.decided_by = actor
            row.decided_at = now
            row.decision_reason = decision
            journal.transition(
                session, row, Event.AUTO_APPROVE, actor=actor, now=now, reason=decision
            )
            return RequestView.of(row)

    def review(self, request_id: int, *, actor: str, reason: str, now: datetime) -> RequestView:
        """An approver or admin acknowledges a break-glass request, with a reason.

        The review's columns are written with one UPDATE that leaves the row's version
        alone: a review is no change to the grant, so a sweep granting or revoking the
        request meanwhile keeps its outcome."""
        return quorum.with_groups_resolved(
            lambda known: self._review(known, request_id, actor=actor, reason=reason, now=now)
        )

    def _review(
        self,
        known: dict[tuple[str, ...], tuple[str, ...]],
        request_id: int,
        *,
        actor: str,
        reason: str,
        now: datetime,
    ) -> RequestView:
        with self.db.transaction() as session:
            row = self.rows.lock(session, request_id)
            if not row.breakglass:
                raise RuleViolation(
                    f"Request {row.id} was not taken with break-glass: there is nothing to review"
                )
            if row.reviewed_at is not None:
                raise Conflict(
                    f"Request {row.id} was already reviewed by ",
                    Mention(row.reviewed_by or ""),
                    " at ",
                    Moment(row.reviewed_at),
                    f": {row.review_reason}",
                )
            rules.check_reviewer(
                self.reviewers_of(row.app, known), row.requester, actor, row.app.name
            )
            cleaned = check_reason(reason, "acknowledge break-glass access")
            self.rows.record_review(session, row, actor=actor, now=now, reason=cleaned)
            journal.record_step(
                session,
                row,
                REVIEWED,
                actor=actor,
                now=now,
                reason=cleaned,
                details={"breakglass": True, "incident_ref": row.incident_ref},
            )
            _alert_cards_changed(session, row, actor=actor, reason=cleaned, now=now)
            return RequestView.of(row)

    def needs_review(self, user: str) -> list[RequestView]:
        """Break-glass requests nobody reviewed yet that ``user`` may review, oldest first."""
        with self.db.transaction(readonly=True) as session:
            found = self.rows.unreviewed_breakglass(session)
            reviewers: dict[int, tuple[str, ...]] = {}
            views = []
            for row in found:
                if row.requester == user:
                    continue
                if row.app_id not in reviewers:
                    try:
                        reviewers[row.app_id] = self._expanded(
                            [*row.app.approvers, *row.app.admins]
                        )
                    except RuleViolation:  # the directory failed: the people listed by id
                        listed = [*row.app.approvers, *row.app.admins]
                        reviewers[row.app_id] = tuple(p for p in listed if not is_group(p))
                if user in reviewers[row.app_id]:
                    views.append(RequestView.of(row))
            return views

    def review_refusal(self, request_id: int, actor: str) -> RuleViolation | None:
        """Why ``actor`` cannot review the request now, or None (a read-only pre-check for
        the *Acknowledge* button; the review itself checks again)."""
        with self.db.transaction(readonly=True) as session:
            row = self.rows.get(session, request_id)
            try:
                if not row.breakglass:
                    raise RuleViolation(f"Request {row.id} was not taken with break-glass")
                if row.reviewed_at is not None:
                    return Conflict(
                        f"Request {row.id} was already reviewed by ",
                        Mention(row.reviewed_by or ""),
                        f": {row.review_reason}",
                    )
                reviewers = self._expanded([*row.app.approvers, *row.app.admins])
                rules.check_reviewer(reviewers, row.requester, actor, row.app.name)
            except RuleViolation as exc:
                return exc
            return None


def _alert_cards_changed(
    session: Session, row: AccessRequest, *, actor: str, reason: str, now: datetime
) -> None:
    """Edit every alert card in place (they lose *Acknowledge*) and tell the requester."""
    journal.enqueue_each(
        session,
        row,
        "reviewed",
        OutboxKind.BREAKGLASS_ALERT,
        row.notified_approvers,
        now,
        actor=actor,
        reason=reason,
        event=REVIEWED,
        before=row.state,
    )
    journal.enqueue(
        session,
        row,
        "reviewed",
        OutboxKind.REQUESTER_UPDATE,
        row.requester,
        now,
        actor=actor,
        reason=reason,
        event=REVIEWED,
        before=row.state,
    )
