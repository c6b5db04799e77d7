"""Extend without a gap: move a request's ``ends_at`` later on the same grant.

``/jit extend ID DURATION reason…`` (and the *Extend* buttons) land here. Automatic
mode extends at once; manual mode stores one pending extension on the request (the
``extension_*`` columns) for the approvers to decide with reasons, like a request: it
needs the request's quorum (``required_approvals``) of different approvers, one
denial denies, and the requester never counts. An extension never makes the window
overlap another open request of the same person, role and scope (checked when asked
and again at each approval, since a later request may have been submitted meanwhile).
Either way the grant is never revoked and re-granted: the window's end moves, the
sweep's deadline moves with it, and an expiry-aware backend (``ExpiryAwareProvider``)
is told the new end by the sweep (``backend_ends_at`` lags ``ends_at`` until it
confirmed), with retries, before the old end.

Everything here is one use case in one transaction with ``now`` as an argument; the
helpers at the bottom are shared with the sweep (extension time-outs; the deadline rules
are in ``domain/deadlines.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from jitaccess.app import journal, quorum
from jitaccess.app.after_change import AfterChange
from jitaccess.app.directory import Directory, is_group
from jitaccess.app.journal import POLICY_ACTOR, SYSTEM
from jitaccess.app.outbox import OutboxKind
from jitaccess.app.views import AppView, RequestView, read_app, read_request
from jitaccess.domain import policy as rules
from jitaccess.domain.deadlines import set_next_deadline
from jitaccess.domain.errors import Conflict, Moment, RuleViolation
from jitaccess.domain.lifecycle import Event, RequestState, move, state_words
from jitaccess.domain.policy import ApprovalMode, Window
from jitaccess.store import slack_messages
from jitaccess.store.db import Database
from jitaccess.store.models import AccessRequest
from jitaccess.store.queue import OutboxQueue
from jitaccess.store.rows import Rows

#: Why a pending extension ended without a decision.
EXTENSION_TIMED_OUT = "no approver decided on the extension in time"

#: The audited action of an extension approval that does not reach the quorum yet.
EXTENSION_APPROVAL_RECORDED = "extension_approval_recorded"


@dataclass(frozen=True)
class ExtensionOutcome:
    """What an extension did: ``extended`` (the end moved) or ``pending`` (approvers
    were asked), and the request as it is now."""

    status: str
    request: RequestView


class Extensions:
    """The extension use cases."""

    def __init__(
        self,
        db: Database,
        rows: Rows,
        directory: Directory,
        after_change: AfterChange,
        remind_before: timedelta | None,
    ) -> None:
        self.db = db
        self.rows = rows
        #: Asked afresh for every decision (see ``Deps.directory``).
        self.directory = directory
        self.after_change = after_change
        #: How long before the new end the requester is reminded (None: never).
        self.remind_before = remind_before

    def extend(
        self, request_id: int, *, actor: str, added: timedelta, reason: str, now: datetime
    ) -> ExtensionOutcome:
        """The requester asks for ``added`` more time: extended at once (automatic mode)
        or sent to the approvers (manual mode)."""
        status, result = quorum.with_groups_resolved(
            lambda known: self._extend(
                known, request_id, actor=actor, added=added, reason=reason, now=now
            )
        )
        self.after_change.extended(result, now)
        return ExtensionOutcome(status, result)

    def _extend(
        self,
        known: dict[tuple[str, ...], tuple[str, ...]],
        request_id: int,
        *,
        actor: str,
        added: timedelta,
        reason: str,
        now: datetime,
    ) -> tuple[str, RequestView]:
        with self.db.transaction() as session:
            row = self.rows.lock(session, request_id)
            app = AppView.of(row.app)
            new_end, reason = rules.check_extension(
                app.rules(),
                request_id=row.id,
                requester=row.requester,
                actor=actor,
                state=row.state,
                window=Window(row.starts_at, row.ends_at),
                added=added,
                reason=reason,
                ending=row.end_requested is not None,
                now=now,
            )
            if row.extension_ends_at is not None:
                raise Conflict(
                    f"Request {row.id} already has an extension to ",
                    Moment(row.extension_ends_at),
                    " waiting for the approvers",
                    *(
                        (" (asked ", Moment(row.extension_requested_at), ")")
                        if row.extension_requested_at
                        else ()
                    ),
                    ": wait for their decision, then extend again if you need more",
                )
            self._check_no_overlap(session, row, new_end, asked=True)
            if app.policy.mode is ApprovalMode.AUTOMATIC:
                move_end(
                    session,
                    row,
                    new_end,
                    actor=POLICY_ACTOR,
                    reason=reason,
                    requested_by=actor,
                    now=now,
                    remind_before=self.remind_before,
                )
                status = "extended"
            else:
                row.extension_ends_at = new_end.astimezone(UTC)
                row.extension_reason = reason
                row.extension_requested_at = now
                row.extension_deadline_at = rules.extension_deadline(
                    now, app.policy.approval_timeout, row.ends_at
                )
                row.extension_approvals = []
                set_next_deadline(row, now)
                _record(
                    session,
                    row,
                    "extension_requested",
                    actor=actor,
                    reason=reason,
                    now=now,
                    approvers=self._approvers(row, known),
                    post_cards=True,
                )
                status = "pending"
            return status, RequestView.of(row)

    def approve(
        self,
        request_id: int,
        *,
        actor: str,
        reason: str,
        now: datetime,
        shown_end: datetime | None = None,
    ) -> RequestView:
        """Approve the waiting extension; ``shown_end`` (from the card clicked) refuses
        it if the waiting one is not the one the approver saw."""
        return self._decide(
            request_id, actor=actor, reason=reason, now=now, approve=True, shown_end=shown_end
        )

    def deny(
        self,
        request_id: int,
        *,
        actor: str,
        reason: str,
        now: datetime,
        shown_end: datetime | None = None,
    ) -> RequestView:
        return self._decide(
            request_id, actor=actor, reason=reason, now=now, approve=False, shown_end=shown_end
        )

    def refusal(
        self, request_id: int, actor: str, decision: str = "decide_extension"
    ) -> RuleViolation | None:
        """Why ``actor`` cannot make ``decision`` (``approve_extension``, …) on the
        request's extension now, or None (a read-only pre-check for buttons; the
        decision checks again under the row lock)."""

        def check(known: dict[tuple[str, ...], tuple[str, ...]]) -> RuleViolation | None:
            with self.db.transaction(readonly=True) as session:
                row = self.rows.get(session, request_id)
                try:
                    self._check_decidable(row, actor, "decide on", self._deciders(row, known))
                    if decision == "approve_extension":
                        _check_not_yet_approved(row, actor)
                except RuleViolation as exc:
                    return exc
                return None

        try:
            return quorum.with_groups_resolved(check)
        except RuleViolation as exc:  # Slack could not say who is in a group
            return exc

    def precheck(
        self, request_id: int, *, actor: str, added: timedelta, reason: str, now: datetime
    ) -> tuple[RequestView, AppView]:
        """The extension's own rules on a read of the request (for the Extend button
        and form, so a refusal shows inline); :meth:`extend` checks again under the row
        lock. Returns the request and its application as read."""
        view = read_request(self.db, self.rows, request_id)
        app = read_app(self.db, self.rows, view.app)
        rules.check_extension(
            app.rules(),
            request_id=view.id,
            requester=view.requester,
            actor=actor,
            state=view.state,
            window=Window(view.starts_at, view.ends_at),
            added=added,
            reason=reason,
            ending=view.end_requested is not None,
            now=now,
        )
        return view, app

    def overlap_refusal(self, request_id: int, added: timedelta) -> RuleViolation | None:
        """Why extending the request by ``added`` would overlap another open request of
        the requester, or None (a read-only pre-check for the Extend form, so the
        refusal shows inline; :meth:`extend` checks again under the row lock)."""
        with self.db.transaction(readonly=True) as session:
            row = self.rows.get(session, request_id)
            try:
                self._check_no_overlap(session, row, row.ends_at + added, asked=True)
            except RuleViolation as exc:
                return exc
            return None

    def _decide(
        self,
        request_id: int,
        *,
        actor: str,
        reason: str,
        now: datetime,
        approve: bool,
        shown_end: datetime | None,
    ) -> RequestView:
        """An approval counts toward the extension's quorum and the one reaching it
        moves the end; a denial decides at once. The row lock serialises racing
        clicks, so the end moves exactly once. Groups are asked between transactions."""
        result, timed_out = quorum.with_groups_resolved(
            lambda known: self._decide_tx(
                known,
                request_id,
                actor=actor,
                reason=reason,
                now=now,
                approve=approve,
                shown_end=shown_end,
            )
        )
        if timed_out:
            raise Conflict(
                f"The extension of request {request_id} timed out before anyone decided; "
                "the window is unchanged: the requester can ask again"
            )
        self.after_change.extended(result, now)
        return result

    def _decide_tx(
        self,
        known: dict[tuple[str, ...], tuple[str, ...]],
        request_id: int,
        *,
        actor: str,
        reason: str,
        now: datetime,
        approve: bool,
        shown_end: datetime | None,
    ) -> tuple[RequestView, bool]:
        verb = "approve" if approve else "deny"
        timed_out = False
        with self.db.transaction() as session:
            row = self.rows.lock(session, request_id)
            deciders = self._deciders(row, known)
            self._check_decidable(row, actor, verb, deciders)
            _check_shown(row, shown_end)
            reason = rules.check_reason(reason, f"{verb} the extension")
            assert row.extension_ends_at is not None
            if row.extension_deadline_at is not None and row.extension_deadline_at <= now:
                time_out_extension(session, row, now)
                timed_out = True
            elif approve:
                if self._count_approval(session, row, actor, reason, now, deciders):
                    self._extend_approved(
                        session, row, actor=actor, reason=reason, now=now, deciders=deciders
                    )
            else:
                details = pending_details(row)
                clear_extension(row)
                set_next_deadline(row, now)
                _record(
                    session,
                    row,
                    "extension_denied",
                    actor=actor,
                    reason=reason,
                    now=now,
                    approvers=self._recipients(session, row, deciders),
                    details=details,
                )
            return RequestView.of(row), timed_out

    def _extend_approved(
        self,
        session: Session,
        row: AccessRequest,
        *,
        actor: str,
        reason: str,
        now: datetime,
        deciders: tuple[str, ...],
    ) -> None:
        """The quorum is reached: the end moves, on the same grant. With a quorum above
        one, the audit entry and the cards list every approval that counted."""
        assert row.extension_ends_at is not None
        new_end = row.extension_ends_at
        asked_at = row.extension_requested_at
        asked_why = row.extension_reason
        approvals = [a for a in row.extension_approvals or [] if a["approver"] in deciders]
        approvers = self._recipients(session, row, deciders)
        clear_extension(row)
        move_end(
            session,
            row,
            new_end,
            actor=actor,
            reason=reason,
            requested_by=row.requester,
            now=now,
            approvers=approvers,
            asked_at=asked_at,
            extension_reason=asked_why,
            remind_before=self.remind_before,
            approvals=approvals if row.required_approvals > 1 else None,
        )

    def _count_approval(
        self,
        session: Session,
        row: AccessRequest,
        actor: str,
        reason: str,
        now: datetime,
        deciders: tuple[str, ...],
    ) -> bool:
        """Record ``actor``'s approval of the locked row's pending extension; True when
        it reaches the quorum (the caller then moves the end). Only approvals of people
        who are approvers now count: one who left the group since no longer does.
        Refused, changing nothing, if they already approved it or it now overlaps
        another request."""
        assert row.extension_ends_at is not None
        _check_not_yet_approved(row, actor)
        self._check_no_overlap(session, row, row.extension_ends_at, asked=False)
        given = [
            *(row.extension_approvals or []),
            {"approver": actor, "reason": reason, "at": now.astimezone(UTC).isoformat()},
        ]
        row.extension_approvals = given  # a new list: the JSON column sees the change
        counted = sum(1 for a in given if a["approver"] in deciders)
        if counted >= row.required_approvals:
            return True
        counts = {"approvals": counted, "required_approvals": row.required_approvals}
        _record(
            session,
            row,
            EXTENSION_APPROVAL_RECORDED,
            actor=actor,
            reason=reason,
            now=now,
            approvers=self._recipients(session, row, deciders),
            details={**pending_details(row), **counts},
            step_suffix=str(len(given)),
        )
        return False

    def _check_no_overlap(
        self, session: Session, row: AccessRequest, new_end: datetime, *, asked: bool
    ) -> None:
        """Refuse an end that would run into another open request of the requester for
        the same role and scope (``asked``: the requester is asking; else an approver
        is approving)."""
        others = self.rows.open_windows(session, row.requester, row.app.scope, row.role)
        rules.check_extension_no_overlap(
            row.id, Window(row.starts_at, row.ends_at), new_end, others, asked=asked
        )

    def _check_decidable(
        self, row: AccessRequest, actor: str, verb: str, deciders: tuple[str, ...]
    ) -> None:
        if row.state not in rules.EXTENDABLE_STATES:
            raise Conflict(
                f"Request {row.id} is {state_words(row.state)}: its extension can no longer be "
                "decided"
            )
        if row.end_requested is not None:
            raise Conflict(
                f"Request {row.id} is ending: its access is being revoked, so its extension "
                "can no longer be decided; the requester can submit a new request"
            )
        if row.extension_ends_at is None:
            raise Conflict(
                f"Request {row.id} has no extension waiting: it was already decided or timed "
                f"out (request {row.id} is {state_words(row.state)}, its window ends ",
                Moment(row.ends_at),
                ")",
            )
        if actor not in deciders:
            raise RuleViolation(
                f"Only {row.app.name}'s approvers may {verb} extensions, and you are not one"
            )
        if actor == row.requester:
            raise RuleViolation(
                f"You cannot {verb} the extension of your own request: another approver must"
            )

    def _deciders(
        self, row: AccessRequest, known: dict[tuple[str, ...], tuple[str, ...]]
    ) -> tuple[str, ...]:
        """The people the application's approver entries name now (groups read fresh,
        outside the transaction: see ``quorum.with_groups_resolved``)."""
        entries = tuple(row.app.approvers)
        return quorum.known_people(known, entries, lambda: quorum.people(self.directory, entries))

    def _approvers(
        self, row: AccessRequest, known: dict[tuple[str, ...], tuple[str, ...]]
    ) -> list[str]:
        """Who gets an extension's card: the current approvers (groups expanded), never
        the requester."""
        return [p for p in self._deciders(row, known) if p != row.requester]

    def _recipients(
        self, session: Session, row: AccessRequest, deciders: tuple[str, ...]
    ) -> list[str]:
        """Who hears of a decided extension: today's approvers and everyone whose card
        showed it, so no card keeps live buttons for an extension that is over."""
        return _with_card_holders(session, row, [p for p in deciders if p != row.requester])


# -- shared with the sweep (the deadline rules themselves are in domain/deadlines.py) --


def move_end(
    session: Session,
    row: AccessRequest,
    new_end: datetime,
    *,
    actor: str,
    reason: str,
    requested_by: str,
    now: datetime,
    approvers: list[str] | None = None,
    asked_at: datetime | None = None,
    extension_reason: str | None = None,
    remind_before: timedelta | None = timedelta(minutes=15),
    approvals: list[dict[str, str]] | None = None,
) -> None:
    """The extension itself: ``ends_at`` moves on the same request (and grant), audited
    with the old and new end; the sweep's deadline follows, and a reminder is queued
    for the new end."""
    old_end = row.ends_at
    row.ends_at = new_end.astimezone(UTC)
    before, _ = move(row, Event.EXTEND)
    set_next_deadline(row, now)
    details: dict[str, Any] = {
        "old_ends_at": old_end.isoformat(),
        "new_ends_at": row.ends_at.isoformat(),
        "requested_by": requested_by,
        "asked_at": (asked_at or now).isoformat(),
        "extension_reason": extension_reason or reason,
    }
    if approvals:
        # The approvals that made the quorum (audited, and shown on the cards).
        details["approvals"] = approvals
    session.info.setdefault("jit_transitions", []).append((before, row.state))
    step = _record(
        session,
        row,
        Event.EXTEND,
        actor=actor,
        reason=reason,
        now=now,
        approvers=approvers if approvers is not None else list(row.notified_approvers),
        details=details,
        post_cards=actor == POLICY_ACTOR,
    )
    # The request card shows the window: it is edited to show the new end.
    journal.enqueue_each(
        session,
        row,
        step,
        OutboxKind.APPROVER_CARD,
        row.notified_approvers,
        now,
        actor=actor,
        reason=reason,
        event=Event.EXTEND,
        before=before,
    )
    if (
        remind_before is not None
        and row.state == RequestState.ACTIVE
        and row.ends_at - remind_before > now
    ):
        journal.enqueue(
            session,
            row,
            f"ending_soon:{row.ends_at.isoformat()}",
            OutboxKind.ENDING_SOON,
            row.requester,
            now,
            actor=SYSTEM,
            reason=None,
            available_at=row.ends_at - remind_before,
            details={"ends_at": row.ends_at.isoformat()},
        )


def clear_extension(row: AccessRequest) -> None:
    """The pending extension is gone (decided or timed out): its approvals with it."""
    row.extension_approvals = None
    row.extension_ends_at = None
    row.extension_reason = None
    row.extension_requested_at = None
    row.extension_deadline_at = None


def pending_details(row: AccessRequest) -> dict[str, Any]:
    """The pending extension, for the audit entry and the cards that outlive it."""
    assert row.extension_ends_at is not None
    return {
        "old_ends_at": row.ends_at.isoformat(),
        "new_ends_at": row.extension_ends_at.isoformat(),
        "extension_reason": row.extension_reason,
        "asked_at": (row.extension_requested_at or row.ends_at).isoformat(),
    }


def time_out_extension(session: Session, row: AccessRequest, now: datetime) -> None:
    """A pending extension nobody decided in time: the window stays as it was, and the
    requester and approvers are told (called by the sweep and by a late decision)."""
    details = pending_details(row)
    # The sweep asks no directory: the people listed, and whoever holds a card for it.
    listed = [p for p in row.app.approvers if p != row.requester and not is_group(p)]
    approvers = _with_card_holders(session, row, listed)
    clear_extension(row)
    set_next_deadline(row, now)
    _record(
        session,
        row,
        "extension_timed_out",
        actor=SYSTEM,
        reason=EXTENSION_TIMED_OUT,
        now=now,
        approvers=approvers,
        details=details,
    )


def _record(
    session: Session,
    row: AccessRequest,
    event: str,
    *,
    actor: str,
    reason: str | None,
    now: datetime,
    approvers: list[str],
    details: dict[str, Any] | None = None,
    post_cards: bool = False,
    step_suffix: str = "",
) -> str:
    """Audit an extension step and queue the requester's status card and each
    approver's extension card (posted anew with ``post_cards``, else edited in place).
    The step key carries the audit entry's sequence number, so each step is its own
    news even when two happen in the same instant (and ``step_suffix`` tells apart
    steps of one kind, e.g. the 1st and 2nd approval). Returns the step key."""
    details = details if details is not None else pending_details(row)
    entry = journal.record_step(
        session,
        row,
        event,
        actor=actor,
        now=now,
        reason=reason,
        details={"role": row.role, "requester": row.requester, **details},
    )
    step = f"ext:{entry.seq}:{event}{step_suffix}"
    payload = {**details, "post": post_cards}
    journal.enqueue(
        session,
        row,
        step,
        OutboxKind.REQUESTER_UPDATE,
        row.requester,
        now,
        actor=actor,
        reason=reason,
        event=event,
        before=row.state,
        details=payload,
    )
    journal.enqueue_each(
        session,
        row,
        step,
        OutboxKind.EXTENSION_CARD,
        approvers,
        now,
        actor=actor,
        reason=reason,
        event=event,
        before=row.state,
        details=payload,
    )
    return step


def _check_shown(row: AccessRequest, shown_end: datetime | None) -> None:
    """A card's buttons decide the extension it showed, never a later one."""
    if shown_end is None or row.extension_ends_at is None:
        return
    if int(row.extension_ends_at.timestamp()) != int(shown_end.timestamp()):
        raise Conflict(
            f"That card showed an earlier extension of request {row.id} (to ",
            Moment(shown_end),
            "), which is over; the one waiting now asks for ",
            Moment(row.extension_ends_at),
            ": decide on its own card",
        )


def _with_card_holders(session: Session, row: AccessRequest, people: list[str]) -> list[str]:
    """``people`` and everyone holding an extension card of ``row``: posted (the Slack
    message table) or still queued (the outbox), each once."""
    posted = slack_messages.card_recipients(session, row.id, "extension")
    queued = OutboxQueue.recipients(session, row.id, OutboxKind.EXTENSION_CARD.value)
    holders = [h for h in (*posted, *queued) if h and h != row.requester]
    return list(dict.fromkeys([*people, *holders]))


def _check_not_yet_approved(row: AccessRequest, actor: str) -> None:
    """The same approver never counts twice toward an extension's quorum."""
    if any(a["approver"] == actor for a in row.extension_approvals or ()):
        needed = max(row.required_approvals - len(row.extension_approvals or ()), 1)
        others = "another approver" if needed == 1 else f"{needed} other approvers"
        raise RuleViolation(
            f"You already approved the extension of request {row.id}: {others} must approve it too"
        )
