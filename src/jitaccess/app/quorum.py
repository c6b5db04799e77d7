"""Quorum and approver groups: who may decide a request now, and approvals that count
toward a quorum without deciding it yet.

Approver entries are people (``U…``/``W…``) and Slack user groups (``S…``). A group
is expanded through the :class:`~jitaccess.app.directory.Directory` port when cards are
sent and again, fresh, when someone clicks: a person who left the group can no longer
decide. If the directory cannot answer, the action is refused and nothing changes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TypeVar

from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from jitaccess.app import journal
from jitaccess.app.directory import Directory, DirectoryError, expand, is_group
from jitaccess.app.outbox import OutboxKind
from jitaccess.domain import policy as rules
from jitaccess.domain.errors import Conflict, RuleViolation
from jitaccess.domain.lifecycle import RequestState
from jitaccess.store import audit
from jitaccess.store.db import Database
from jitaccess.store.models import AccessRequest, Approval
from jitaccess.store.rows import Rows

log = logging.getLogger("jitaccess.quorum")
T = TypeVar("T")

#: The audited action of an approval that does not reach the quorum yet.
APPROVAL_RECORDED = "approval_recorded"


def people(directory: Directory, entries: Sequence[str]) -> tuple[str, ...]:
    """The people the approver ``entries`` name now; refuses (nothing changes) when a
    group's members cannot be read."""
    try:
        return expand(directory, entries)
    except DirectoryError as exc:
        groups = ", ".join(e for e in entries if is_group(e))
        raise RuleViolation(
            f"Couldn't check who is in the approver group{'s' if ',' in groups else ''} "
            f"{groups} ({exc}): nothing was recorded; try again"
        ) from None


class GroupsUnknown(Exception):
    """Raised inside a transaction that met approver entries naming a group whose
    members were not looked up yet: the caller leaves the transaction (nothing is
    written), asks ``resolve()`` (Slack, outside any lock) and tries again. Policies
    without groups never pay for it: their people are known without asking."""

    def __init__(self, entries: tuple[str, ...], resolve: Callable[[], tuple[str, ...]]) -> None:
        super().__init__(f"members of {', '.join(e for e in entries if is_group(e))} not known")
        self.entries = entries
        self.resolve = resolve


def known_people(
    known: Mapping[tuple[str, ...], tuple[str, ...]],
    entries: Sequence[str],
    resolve: Callable[[], tuple[str, ...]],
) -> tuple[str, ...]:
    """The people ``entries`` name, without asking the directory here: people as they
    are, groups from ``known``; raises :class:`GroupsUnknown` with ``resolve`` otherwise."""
    key = tuple(entries)
    if key in known:
        return known[key]
    if not any(is_group(e) for e in key):
        return tuple(dict.fromkeys(key))
    raise GroupsUnknown(key, resolve)


def with_groups_resolved(attempt: Callable[[dict[tuple[str, ...], tuple[str, ...]]], T]) -> T:
    """Run ``attempt(known)`` (one transaction), resolving the groups it asks for
    between attempts; the approver list changing every time is refused."""
    known: dict[tuple[str, ...], tuple[str, ...]] = {}
    for _ in range(3):
        try:
            return attempt(known)
        except GroupsUnknown as unknown:
            known[unknown.entries] = unknown.resolve()
    raise Conflict("The approvers kept changing while this was being recorded: try again")


def people_or_known(directory: Directory, entries: Sequence[str]) -> tuple[str, ...]:
    """Like :func:`people` for what only shows things (lists, App Home): a group that
    cannot be read counts as empty there, and is logged."""
    found: dict[str, None] = {}
    for entry in entries:
        if not is_group(entry):
            found[entry] = None
            continue
        try:
            found.update(dict.fromkeys(directory.members(entry)))
        except DirectoryError as exc:
            log.warning("approver group %s could not be read: %s", entry, exc)
    return tuple(found)


def alert_recipients(row: AccessRequest) -> list[str]:
    """Who hears that a revoke keeps failing: the approvers and admins. The sweep asks
    no directory inside its transaction, so a group stands for the people it named
    when the request was made (its cards' recipients)."""
    entries = list(row.app.approvers)
    people = [e for e in entries if not is_group(e)]
    if len(people) < len(entries):
        people += row.notified_approvers
    return list(dict.fromkeys([*people, *row.app.admins]))


def record_approval(
    session: Session,
    row: AccessRequest,
    *,
    actor: str,
    reason: str,
    now: datetime,
    deciders: Sequence[str],
) -> bool:
    """Record ``actor``'s approval of the locked pending ``row``; True when it reaches
    the quorum (the caller then makes the ``approve`` transition).

    An approval short of the quorum is audited and every approver's card and the
    requester's status are updated ("1 of 2 approved: @ava (reason)")."""
    rules.check_not_yet_approved([a.approver for a in row.approvals], actor, row.id)
    approval = Approval(request_id=row.id, approver=actor, reason=reason, at=now)
    session.add(approval)
    session.flush()  # the unique (request, approver) constraint speaks here, not at commit
    # Shown on the row without dirtying it: appending to the collection would cost the
    # request an UPDATE of its version alone, on top of the decision's own.
    set_committed_value(row, "approvals", [*row.approvals, approval])
    # Only approvals of people who are approvers now count: one who left the group (or
    # the list) since approving no longer does.
    given = sum(1 for a in row.approvals if a.approver in deciders)
    if given >= row.required_approvals:
        return True
    journal.record_step(
        session,
        row,
        APPROVAL_RECORDED,
        actor=actor,
        now=now,
        reason=reason,
        details={"approvals": given, "required_approvals": row.required_approvals},
    )
    step = f"approval{len(row.approvals)}"  # every approval is its own news
    journal.enqueue(
        session,
        row,
        step,
        OutboxKind.REQUESTER_UPDATE,
        row.requester,
        now,
        actor=actor,
        reason=reason,
        event=APPROVAL_RECORDED,
        before=row.state,
        # "Ava approved (1 of 2)": the count as it was at this step.
        details={"approvals": given, "required_approvals": row.required_approvals},
    )
    journal.enqueue_each(
        session,
        row,
        step,
        OutboxKind.APPROVER_CARD,
        row.notified_approvers,
        now,
        actor=actor,
        reason=reason,
        event=APPROVAL_RECORDED,
        before=row.state,
    )
    return False


#: The audited action when a user group's members changed under open requests.
GROUP_CHANGED = "approver_group_changed"


def group_members_changed(
    db: Database, rows: Rows, listing_directory: Directory, group_id: str, *, now: datetime
) -> int:
    """Slack says ``group_id``'s members changed (the ``subteam_members_changed``
    event): every pending request of an application naming the group gets cards for
    its new members, and members who left see their cards say they no longer decide
    (decisions already ask Slack at every click; this makes the cards follow). Returns
    how many requests were touched. One transaction per application; Slack is asked
    before each."""
    forget = getattr(listing_directory, "forget", None)
    if callable(forget):
        forget(group_id)  # the card cache must not answer with the old members
    with db.transaction(readonly=True) as session:
        naming = [
            (app.id, tuple(app.approvers))
            for app in rows.apps(session)
            if group_id in app.approvers
        ]
    touched = 0
    for app_id, entries in naming:
        try:
            now_people = people(listing_directory, entries)
        except RuleViolation as exc:
            log.warning("group %s changed but could not be read: %s", group_id, exc)
            continue
        with db.transaction() as session:
            open_rows = rows.open_requests(session, [app_id])
            pending = [r for r in open_rows if r.state == RequestState.PENDING]
            if not pending or tuple(pending[0].app.approvers) != entries:
                continue  # nothing waits, or the policy changed (that change told people)
            app = pending[0].app
            entry = audit.append(
                session,
                at=now,
                actor="slack",
                action=GROUP_CHANGED,
                app=app.name,
                details={"group": group_id, "members": list(now_people)},
            )
            for row in pending:
                added = [p for p in now_people if p not in row.notified_approvers]
                added = [p for p in added if p != row.requester]
                left = [p for p in row.notified_approvers if p not in now_people]
                if not added and not left:
                    continue
                touched += 1
                tell_approver_changes(
                    session, row, added, left, step=f"group:{entry.seq}", actor="slack", now=now
                )
    return touched


def tell_approver_changes(
    session: Session,
    row: AccessRequest,
    added: Sequence[str],
    removed: Sequence[str],
    *,
    step: str,
    actor: str,
    now: datetime,
) -> None:
    """Cards for people who became approvers of a pending ``row`` (now among its
    notified approvers), and card updates for those who no longer are: they lose the
    buttons. Approved or active rows only tell those who left (the sweep may hold them,
    and bumping their version would make it drop its outcome); people added then see
    the request, with Revoke, in their App Home."""
    pending = row.state == RequestState.PENDING
    if pending:
        missing = [a for a in added if a not in row.notified_approvers]
        if missing:
            row.notified_approvers = [*row.notified_approvers, *missing]
    for person in [*added, *removed] if pending else removed:
        if person in removed and person not in row.notified_approvers:
            continue  # never had a card for this request
        journal.enqueue(
            session,
            row,
            step,
            OutboxKind.APPROVER_CARD,
            person,
            now,
            actor=actor,
            reason=None,
            event="approver_added" if person in added else "approver_removed",
            before=row.state,
        )
