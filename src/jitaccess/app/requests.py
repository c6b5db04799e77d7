"""The request use cases: submit, approve, deny, cancel, revoke, release.

Each public method is one use case in one transaction. Times are arguments (``now``);
nothing here reads a clock or calls a backend: a person's action records what must
happen, and the sweep (``sweep.Sweeper``) does what is due, calling the backends
outside any transaction; ``AfterChange`` decides whether it runs at once or is woken.
Every transition goes through the journal (state, audit entry, outbox rows in one
transaction); every read and lock through ``store.rows``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from jitaccess.app import journal, quorum
from jitaccess.app.after_change import AfterChange
from jitaccess.app.directory import Directory, unreadable_groups
from jitaccess.app.journal import POLICY_ACTOR
from jitaccess.app.views import AppView, RequestView
from jitaccess.domain import policy as rules
from jitaccess.domain.errors import Conflict, Mention, Moment, Part, RuleViolation
from jitaccess.domain.lifecycle import (
    APPROVED_STATES,
    FINAL_STATES,
    Event,
    RequestState,
    ending_words,
    initial_state,
    state_words,
)
from jitaccess.domain.policy import ApprovalMode, Policy
from jitaccess.store.db import Database
from jitaccess.store.models import AccessRequest
from jitaccess.store.rows import Rows


def _timed_out(request_id: int, deadline: datetime) -> tuple[Part, ...]:
    return (
        f"Request {request_id} timed out at ",
        Moment(deadline),
        " before anyone decided; it is now timed out: the requester must submit a new request",
    )


def _approvals_detail(row: AccessRequest) -> dict[str, Any] | None:
    """The approvals behind a quorum decision, for its audit entry."""
    if row.required_approvals <= 1:
        return None
    return {"approvals": [{"approver": a.approver, "reason": a.reason} for a in row.approvals]}


class Requests:
    """The request use cases: submit, decide, cancel, revoke, release."""

    def __init__(
        self,
        db: Database,
        rows: Rows,
        directory: Directory,
        listing_directory: Directory,
        after_change: AfterChange,
    ) -> None:
        self.db = db
        self.rows = rows
        #: Asked afresh for every decision (see ``Deps.directory``).
        self.directory = directory
        #: For sending cards, where a short cache is fine.
        self.listing_directory = listing_directory
        self.after_change = after_change

    def submit(
        self,
        app_name: str,
        *,
        requester: str,
        role: str,
        duration: timedelta,
        justification: str,
        now: datetime,
        starts_at: datetime | None = None,
    ) -> RequestView:
        # Slack is asked who is in the groups between transactions, never inside one.
        return self.after_change.settled(
            quorum.with_groups_resolved(
                lambda known: self._submit(
                    known,
                    app_name,
                    requester=requester,
                    role=role,
                    duration=duration,
                    justification=justification,
                    now=now,
                    starts_at=starts_at,
                )
            ),
            now,
        )

    def _submit(
        self,
        known: dict[tuple[str, ...], tuple[str, ...]],
        app_name: str,
        *,
        requester: str,
        role: str,
        duration: timedelta,
        justification: str,
        now: datetime,
        starts_at: datetime | None,
    ) -> RequestView:
        with self.db.transaction() as session:
            app = self.rows.app(session, app_name)
            view = AppView.of(app)
            role, window, justification = rules.check_submission(
                view.rules(), requester, role, duration, starts_at, justification, now
            )
            # Cards go to the people the approver entries name now (groups expanded).
            policy = view.policy
            deciders = quorum.known_people(
                known,
                policy.approvers,
                lambda: self._deciders(self.listing_directory, policy),
            )
            if view.policy.mode is ApprovalMode.MANUAL:
                try:
                    rules.check_enough_deciders(
                        view.name, deciders, requester, view.policy.required_approvals
                    )
                except RuleViolation as refused:
                    # A group that cannot be read counts as nobody: say so, and what to do.
                    hint = unreadable_groups(self.listing_directory, policy.approvers)
                    if hint is None:
                        raise
                    raise RuleViolation(*refused.parts, f". {hint}", field=refused.field) from None
            rules.check_no_overlap(
                window, self.rows.open_windows(session, requester, app.scope, role)
            )
            row = AccessRequest(
                app=app,
                requester=requester,
                role=role,
                justification=justification,
                # Stored in UTC, and the view returned shows them as they are stored.
                starts_at=window.starts_at.astimezone(UTC),
                ends_at=window.ends_at.astimezone(UTC),
                approval_deadline_at=rules.approval_deadline(
                    now, view.policy.approval_timeout, window
                ).astimezone(UTC),
                approval_mode=view.policy.mode.value,
                notified_approvers=list(deciders),
                required_approvals=view.policy.required_approvals,
                created_at=now,
                feed_channel=app.feed_channel,
                attempts=0,
                state=initial_state(),  # the machine's initial state
            )
            # Pending until a decision or the time-out (an automatic approval moves it).
            row.next_deadline_at = row.approval_deadline_at
            session.add(row)
            session.flush()
            journal.record(
                session, row, "submit", None, actor=requester, now=now, reason=justification
            )
            if view.policy.mode is ApprovalMode.AUTOMATIC:
                record_decision(
                    session,
                    row,
                    Event.AUTO_APPROVE,
                    actor=POLICY_ACTOR,
                    now=now,
                    reason="approved automatically by policy",
                )
            return RequestView.of(row)

    def approve(self, request_id: int, *, actor: str, reason: str, now: datetime) -> RequestView:
        return self._decide(request_id, actor=actor, reason=reason, now=now, approve=True)

    def deny(self, request_id: int, *, actor: str, reason: str, now: datetime) -> RequestView:
        return self._decide(request_id, actor=actor, reason=reason, now=now, approve=False)

    def cancel(
        self, request_id: int, *, actor: str, now: datetime, reason: str | None = None
    ) -> RequestView:
        """The requester withdraws a request that has not started (pending or approved)."""
        with self.db.transaction() as session:
            row = self.rows.lock(session, request_id)
            if actor != row.requester:
                raise RuleViolation(
                    "Only the requester (",
                    Mention(row.requester),
                    f") may cancel request {row.id}; approvers can deny or revoke it instead",
                )
            if row.state == RequestState.ACTIVE:
                raise RuleViolation(
                    f"Request {row.id} is already active: use release to end your access now"
                )
            if row.state in FINAL_STATES:
                raise Conflict(*already(row))
            owed = self._end_before_start(
                session,
                row,
                Event.CANCEL,
                actor=actor,
                now=now,
                reason=reason or "cancelled by the requester",
            )
            result = RequestView.of(row)
        return self.after_change.ending(request_id, now) if owed else result

    def close_for_removal(
        self, request_id: int, *, actor: str, reason: str, now: datetime
    ) -> RequestView:
        """Cancel a request that has not started because its application is being
        removed (the consumer admin acts, not the requester)."""
        with self.db.transaction() as session:
            row = self.rows.lock(session, request_id)
            if row.state != RequestState.PENDING and row.state not in APPROVED_STATES:
                raise Conflict(*already(row))
            owed = self._end_before_start(
                session, row, Event.CANCEL, actor=actor, now=now, reason=reason
            )
            result = RequestView.of(row)
        return self.after_change.ending(request_id, now) if owed else result

    def revoke(self, request_id: int, *, actor: str, reason: str, now: datetime) -> RequestView:
        """An approver or consumer admin ends a grant early (or stops an approved one)."""
        with self.db.transaction() as session:
            row = self.rows.lock(session, request_id)
            check_revoker(row, actor, self.directory)
            reason = rules.check_reason(reason, "revoke")
            if row.state in APPROVED_STATES:
                owed = self._end_before_start(
                    session, row, Event.CANCEL, actor=actor, now=now, reason=reason
                )
                result = RequestView.of(row)
            else:
                self._request_end(row, Event.REVOKE, actor=actor, reason=reason, now=now)
                owed = True
        return self.after_change.ending(request_id, now) if owed else result

    def release(self, request_id: int, *, actor: str, now: datetime) -> RequestView:
        """The requester is done early ("I'm done")."""
        with self.db.transaction() as session:
            row = self.rows.lock(session, request_id)
            if actor != row.requester:
                raise RuleViolation(
                    "Only the requester (",
                    Mention(row.requester),
                    f") may release request {row.id}; approvers and admins can revoke it",
                )
            self._request_end(
                row, Event.RELEASE, actor=actor, reason="released early by the requester", now=now
            )
        return self.after_change.ending(request_id, now)

    def _deciders(self, directory: Directory, policy: Policy) -> tuple[str, ...]:
        """The people a policy's approvers name now; a group that cannot be read refuses
        the submission, in either mode (nothing is recorded). In automatic mode every
        approver must be told of the access the policy grants: granting it while a group
        could not be read would grant it with nobody told."""
        return quorum.people(directory, policy.approvers)

    def _decide(
        self, request_id: int, *, actor: str, reason: str, now: datetime, approve: bool
    ) -> RequestView:
        # A fresh look at the groups (someone who left one can no longer decide), taken
        # between transactions so no lock is held while Slack answers.
        result, timed_out = quorum.with_groups_resolved(
            lambda known: self._record_decision(
                known, request_id, actor=actor, reason=reason, now=now, approve=approve
            )
        )
        if timed_out:
            raise Conflict(*_timed_out(request_id, result.approval_deadline_at))
        return self.after_change.settled(result, now)

    def _record_decision(
        self,
        known: dict[tuple[str, ...], tuple[str, ...]],
        request_id: int,
        *,
        actor: str,
        reason: str,
        now: datetime,
        approve: bool,
    ) -> tuple[RequestView, bool]:
        verb = Event.APPROVE if approve else Event.DENY
        timed_out = False
        with self.db.transaction() as session:
            row = self.rows.lock(session, request_id)
            if row.state != RequestState.PENDING:
                raise Conflict(*already(row))
            entries = tuple(row.app.approvers)
            deciders = quorum.known_people(
                known, entries, lambda: quorum.people(self.directory, entries)
            )
            rules.check_decider(deciders, row.requester, actor, verb)
            reason = rules.check_reason(reason, verb)
            if row.approval_deadline_at <= now:
                journal.end_by_system(session, row, Event.TIME_OUT, journal.TIMED_OUT, now)
                timed_out = True
            elif approve and not quorum.record_approval(
                session, row, actor=actor, reason=reason, now=now, deciders=deciders
            ):
                pass  # recorded; the request stays pending until the quorum is reached
            else:
                record_decision(
                    session,
                    row,
                    verb,
                    actor=actor,
                    now=now,
                    reason=reason,
                    details=_approvals_detail(row) if approve else None,
                )
            return RequestView.of(row), timed_out

    def _request_end(
        self, row: AccessRequest, kind: Event, *, actor: str, reason: str, now: datetime
    ) -> None:
        if row.state == RequestState.PENDING:
            raise RuleViolation(
                f"Request {row.id} is pending, not active: approvers can deny it, and the "
                "requester can cancel it"
            )
        if row.state in APPROVED_STATES:
            raise RuleViolation(
                f"Request {row.id} is {state_words(row.state)}, not active: cancel it instead"
            )
        if row.state in FINAL_STATES:
            raise Conflict(*already(row))
        self._ask_sweep_to_end(row, kind, actor=actor, reason=reason, now=now)

    def _ask_sweep_to_end(
        self, row: AccessRequest, event: Event, *, actor: str, reason: str, now: datetime
    ) -> None:
        """Record that the request must end with ``event`` once its grant is revoked;
        the sweep revokes, then makes the transition."""
        if row.end_requested == Event.EXPIRE:
            raise Conflict(
                f"Request {row.id} is already ending: its window ended at ",
                Moment(row.ends_at),
                " and its access is being revoked"
                + (f"; the backend keeps failing: {row.last_error}" if row.last_error else ""),
            )
        if row.end_requested:
            raise Conflict(
                f"Request {row.id} is already being ended ({ending_words(row.end_requested)} by ",
                Mention(row.end_requested_by or ""),
                *((" at ", Moment(row.end_requested_at)) if row.end_requested_at else ()),
                ")" + (f"; the backend keeps failing: {row.last_error}" if row.last_error else ""),
            )
        row.end_requested = event
        row.end_requested_by = actor
        row.end_requested_at = now
        row.end_requested_reason = reason
        row.attempts = 0
        if row.claimed_by is None or row.next_deadline_at is None or row.next_deadline_at <= now:
            row.next_deadline_at = now

    def _end_before_start(
        self,
        session: Session,
        row: AccessRequest,
        event: Event,
        *,
        actor: str,
        now: datetime,
        reason: str,
    ) -> bool:
        """End a pending or approved request. Returns True when it cannot end yet:
        a grant call was started for it (maybe in flight, maybe landed before a crash),
        so the backend may hold access and the sweep must revoke it first."""
        if row.grant_started_at is None:
            self._end_without_grant(session, row, event, actor=actor, now=now, reason=reason)
            return False
        self._ask_sweep_to_end(row, event, actor=actor, reason=reason, now=now)
        return True

    def _end_without_grant(
        self,
        session: Session,
        row: AccessRequest,
        event: Event,
        *,
        actor: str,
        now: datetime,
        reason: str,
    ) -> None:
        """End a request for which no grant call was ever started."""
        journal.transition(session, row, event, actor=actor, now=now, reason=reason)
        row.ended_at = now
        row.ended_by = actor
        row.end_reason = reason
        row.next_deadline_at = None


def record_decision(
    session: Session,
    row: AccessRequest,
    event: Event,
    *,
    actor: str,
    now: datetime,
    reason: str,
    details: dict[str, Any] | None = None,
) -> None:
    """Decide a pending request (approve, auto-approve or deny) and record it: who,
    when and why, then the transition. An approval is next due at its start; a denial
    ends the request. The decision's columns come first, so the row is written in one
    UPDATE when the journal's audit append flushes it."""
    row.decided_by = actor
    row.decided_at = now
    row.decision_reason = reason
    if event is Event.DENY:
        row.ended_at = now
        row.next_deadline_at = None
    else:
        row.next_deadline_at = row.starts_at
    journal.transition(session, row, event, actor=actor, now=now, reason=reason, details=details)


def check_revoker(row: AccessRequest, actor: str, directory: Directory) -> None:
    """Refuse ``actor`` unless they may revoke ``row`` (its approvers, groups read
    fresh from ``directory``, and consumer admins)."""
    app = AppView.of(row.app).rules()
    if actor in app.admins or actor in app.policy.approvers:
        return
    rules.check_revoker(app, actor, quorum.people(directory, app.policy.approvers))


def already(row: AccessRequest) -> tuple[Part, ...]:
    """Who got there first, as message parts (the people in it are mentions)."""
    state = row.state
    if state in (RequestState.APPROVED, RequestState.DENIED, RequestState.AUTO_APPROVED):
        who: Part = (
            "policy (automatic mode)"
            if state == RequestState.AUTO_APPROVED
            else Mention(row.decided_by or "")
        )
        verb = "approved" if state != RequestState.DENIED else "denied"
        at: tuple[Part, ...] = (" at ", Moment(row.decided_at)) if row.decided_at else ()
        text = ""
        if row.decision_reason and state != RequestState.AUTO_APPROVED:
            text += f": {row.decision_reason}"
        return (f"Request {row.id} was already {verb} by ", who, *at, text)
    if state == RequestState.ACTIVE:
        return (
            f"Request {row.id} was already approved by ",
            Mention(row.decided_by or ""),
            " and is active until ",
            Moment(row.ends_at),
        )
    if state == RequestState.TIMED_OUT:
        return (
            f"Request {row.id} has already timed out: it timed out at ",
            Moment(row.approval_deadline_at),
            " before anyone decided; the requester must submit a new request",
        )
    if row.ended_by:
        return (f"Request {row.id} is already {state_words(state)} by ", Mention(row.ended_by))
    return (f"Request {row.id} is already {state_words(state)}",)
