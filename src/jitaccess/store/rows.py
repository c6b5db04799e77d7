"""Every read and lock of requests and applications the use cases and the sweep need.

Row locks differ by database: PostgreSQL locks with ``FOR UPDATE`` (``SKIP LOCKED``
for the sweep); SQLite serialises writers itself (``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, lazyload, selectinload
from sqlalchemy.orm.attributes import set_committed_value

from jitaccess.domain.errors import NotFound
from jitaccess.domain.lifecycle import FINAL_STATES, RequestState
from jitaccess.domain.policy import OpenWindow, Window
from jitaccess.store.db import Database
from jitaccess.store.models import (
    AccessRequest,
    Application,
    Offer,
    OutboxMessage,
    StandingGrant,
)

#: Request ids are 32-bit integers in the database; larger numbers name nothing.
MAX_ID = 2**31
#: A batch's rows load their applications with one more query, not joined into every
#: row: joined, each row re-decoded its application's JSON columns.
_APPS_ONCE = selectinload(AccessRequest.app)
#: The sweep's batches: their applications once per batch, and no approvals (the sweep
#: never reads them; one touched anyway is loaded then, correct if slower).
_SWEEP_BATCH = (_APPS_ONCE, lazyload(AccessRequest.approvals))


class Rows:
    """Reads and locks on one database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    def find_app(session: Session, name: str, *, removed: bool = False) -> Application | None:
        query = select(Application).where(Application.name == name.strip())
        if not removed:
            query = query.where(Application.removed_at.is_(None))
        return session.execute(query).scalar_one_or_none()

    def app(self, session: Session, name: str, *, include_removed: bool = False) -> Application:
        row = self.find_app(session, name, removed=include_removed)
        if row is None:
            raise NotFound(f"No application named '{name}': see `jitaccess apps list`")
        return row

    @staticmethod
    def get(session: Session, request_id: int) -> AccessRequest:
        if not 0 < request_id < MAX_ID:
            raise NotFound(f"No request {request_id}")
        row = session.get(AccessRequest, request_id)
        if row is None:
            raise NotFound(f"No request {request_id}")
        return row

    def lock_many(self, session: Session, ids: list[int]) -> dict[int, AccessRequest]:
        """Re-read (and on PostgreSQL lock) a batch of rows in one query, in id order."""
        query = (
            select(AccessRequest)
            .where(AccessRequest.id.in_(ids))
            .order_by(AccessRequest.id)
            .options(*_SWEEP_BATCH)
        )
        if self.db.is_postgres:
            query = query.with_for_update(of=AccessRequest)
        return {row.id: row for row in session.execute(query).unique().scalars()}

    def lock(self, session: Session, request_id: int) -> AccessRequest:
        if not 0 < request_id < MAX_ID:
            raise NotFound(f"No request {request_id}")
        query = select(AccessRequest).where(AccessRequest.id == request_id)
        if self.db.is_postgres:
            query = query.with_for_update(of=AccessRequest)
        row = session.execute(query).unique().scalar_one_or_none()
        if row is None:
            raise NotFound(f"No request {request_id}")
        return row

    def due(
        self,
        session: Session,
        now: datetime,
        limit: int,
        ids: list[int] | None,
        *,
        wait_for_locks: bool = False,
    ) -> list[AccessRequest]:
        rows: list[AccessRequest] = []
        # Overdue expiries first; revokes owed by ended requests last.
        for state in (
            RequestState.ACTIVE,
            RequestState.PENDING,
            RequestState.APPROVED,
            RequestState.AUTO_APPROVED,
            *sorted(FINAL_STATES),
        ):
            if len(rows) >= limit:
                break
            query = (
                select(AccessRequest)
                .where(AccessRequest.state == state.value, AccessRequest.next_deadline_at <= now)
                .order_by(AccessRequest.next_deadline_at)
                .limit(limit - len(rows))
                .options(*_SWEEP_BATCH)
            )
            if ids is not None:
                query = query.where(AccessRequest.id.in_(ids))
            if self.db.is_postgres:
                # A person's action waits for a racing sweeper's lock (it is short) so
                # what it made due happens now; the sweep skips locked rows.
                query = query.with_for_update(skip_locked=not wait_for_locks, of=AccessRequest)
            rows.extend(session.execute(query).unique().scalars())
        return rows

    def open_windows(
        self, session: Session, requester: str, scope: str, role: str
    ) -> list[OpenWindow]:
        """``requester``'s requests not yet final for ``role`` at ``scope`` (whatever
        application names that scope), as windows for the overlap rule. A window runs to
        its pending extension's end, if one waits: approving it must not be what makes
        two windows overlap.

        On PostgreSQL a transaction-scoped advisory lock on (requester, scope, role) is
        taken first, so two submissions racing (a double click) are checked one after
        the other and the second sees the first; SQLite serialises writers itself."""
        if self.db.is_postgres:
            key = f"jit-window:{requester}:{scope}:{role.lower()}"
            session.execute(select(func.pg_advisory_xact_lock(func.hashtext(key))))
        query = (
            select(
                AccessRequest.id,
                AccessRequest.starts_at,
                AccessRequest.ends_at,
                AccessRequest.extension_ends_at,
                AccessRequest.end_requested,
            )
            .join(Application, AccessRequest.app_id == Application.id)
            .where(
                AccessRequest.requester == requester,
                Application.scope == scope,
                func.lower(AccessRequest.role) == role.lower(),
                AccessRequest.state.not_in([s.value for s in FINAL_STATES]),
            )
            .order_by(AccessRequest.id)
        )
        return [
            OpenWindow(
                rid,
                Window(starts_at, max(ends_at, extension_ends_at or ends_at)),
                ending=end_requested is not None,
            )
            for rid, starts_at, ends_at, extension_ends_at, end_requested in session.execute(query)
        ]

    def open_requests(self, session: Session, app_ids: list[int]) -> list[AccessRequest]:
        """The applications' requests not yet final, locked (PostgreSQL) in id order."""
        if not app_ids:
            return []
        query = (
            select(AccessRequest)
            .where(
                AccessRequest.app_id.in_(app_ids),
                AccessRequest.state.not_in([s.value for s in FINAL_STATES]),
            )
            .order_by(AccessRequest.id)
        )
        if self.db.is_postgres:
            query = query.with_for_update(of=AccessRequest)
        return list(session.execute(query).unique().scalars())

    @staticmethod
    def native_requests(session: Session) -> list[AccessRequest]:
        """Native requests (a jitRequests resource behind them) not yet final, by id."""
        query = select(AccessRequest).where(
            AccessRequest.native_request_id.is_not(None),
            AccessRequest.state.not_in([str(s) for s in FINAL_STATES]),
        )
        return list(session.execute(query.order_by(AccessRequest.id)).unique().scalars())

    def open_native_requests(self, session: Session) -> list[tuple[int, str]]:
        """(request id, jitRequests resource id) of each open native request."""
        return [(r.id, r.native_request_id or "") for r in self.native_requests(session)]

    @staticmethod
    def native_request_ids(session: Session) -> list[str]:
        """Every jitRequests resource id jitaccess has recorded, final or not."""
        query = select(AccessRequest.native_request_id).where(
            AccessRequest.native_request_id.is_not(None)
        )
        return [value for value in session.execute(query).scalars() if value]

    @staticmethod
    def apps(session: Session) -> list[Application]:
        """Registered applications (not removed), by name."""
        query = select(Application).where(Application.removed_at.is_(None))
        return list(session.execute(query.order_by(Application.name)).scalars())

    @staticmethod
    def requests(
        session: Session,
        *,
        app_id: int | None,
        state: str | None,
        requester: str | None,
        limit: int,
    ) -> list[AccessRequest]:
        """The newest requests first, filtered in SQL."""
        query = select(AccessRequest).order_by(AccessRequest.id.desc()).limit(limit)
        if app_id is not None:
            query = query.where(AccessRequest.app_id == app_id)
        if state is not None:
            query = query.where(AccessRequest.state == state)
        if requester is not None:
            query = query.where(AccessRequest.requester == requester)
        return list(session.execute(query).scalars())

    @staticmethod
    def in_state(
        session: Session, state: RequestState, *, app_id: int | None = None
    ) -> list[AccessRequest]:
        """Requests in ``state``: pending oldest first, active ending soonest first."""
        order = AccessRequest.ends_at if state == RequestState.ACTIVE else AccessRequest.created_at
        query = select(AccessRequest).where(AccessRequest.state == state.value).order_by(order)
        if app_id is not None:
            query = query.where(AccessRequest.app_id == app_id)
        return list(session.execute(query).scalars())

    @staticmethod
    def history(session: Session, app_id: int, *, limit: int, offset: int) -> list[AccessRequest]:
        """An application's requests, newest first, one page."""
        query = (
            select(AccessRequest)
            .where(AccessRequest.app_id == app_id)
            .order_by(AccessRequest.created_at.desc(), AccessRequest.id.desc())
            .offset(offset)
            .limit(limit)
        )
        return list(session.execute(query).scalars())

    @staticmethod
    def next_deadline(session: Session) -> datetime | None:
        """The earliest deadline of any request (the scheduler wakes for it)."""
        value: datetime | None = session.execute(
            select(func.min(AccessRequest.next_deadline_at))
        ).scalar()
        return value

    def renew_leases(
        self, session: Session, ids: Sequence[int], worker_id: str, until: datetime
    ) -> None:
        """Push the leases ``worker_id`` holds on ``ids`` out to ``until``. A Core UPDATE
        leaves each row's version alone, so the sweep's outcome check still holds."""
        session.execute(
            update(AccessRequest)
            .where(
                AccessRequest.id.in_(ids),
                AccessRequest.claimed_by == worker_id,
                AccessRequest.next_deadline_at.is_not(None),
                AccessRequest.next_deadline_at < until,
            )
            .values(next_deadline_at=until)
            .execution_options(synchronize_session=False)
        )

    @staticmethod
    def record_review(
        session: Session, row: AccessRequest, *, actor: str, now: datetime, reason: str
    ) -> None:
        """Store a break-glass review on ``row``. A Core UPDATE leaves the row's version
        alone (a review never races the sweep's outcome check), and the loaded row is
        told the new values as already committed."""
        session.execute(
            update(AccessRequest)
            .where(AccessRequest.id == row.id)
            .values(reviewed_by=actor, reviewed_at=now, review_reason=reason)
            .execution_options(synchronize_session=False)
        )
        for key, value in (("reviewed_by", actor), ("reviewed_at", now), ("review_reason", reason)):
            set_committed_value(row, key, value)

    @staticmethod
    def unreviewed_breakglass(session: Session) -> list[AccessRequest]:
        """Break-glass requests nobody reviewed yet, in id order."""
        return list(
            session.scalars(
                select(AccessRequest)
                .where(AccessRequest.breakglass.is_(True), AccessRequest.reviewed_at.is_(None))
                .order_by(AccessRequest.id)
            ).all()
        )

    # -- reads for the catalog, reconciliation, metrics and the audit check ------------
    @staticmethod
    def offer(session: Session, name: str) -> Offer | None:
        return session.execute(select(Offer).where(Offer.name == name)).scalar_one_or_none()

    @staticmethod
    def offers(session: Session) -> list[Offer]:
        return list(session.execute(select(Offer).order_by(Offer.name)).scalars())

    @staticmethod
    def standing_grants(
        session: Session, *, app: str | None = None, app_id: int | None = None
    ) -> list[StandingGrant]:
        """Standing grants, of one application (by name or id) or of all, in id order."""
        query = select(StandingGrant).join(StandingGrant.app).order_by(StandingGrant.id)
        if app is not None:
            query = query.where(Application.name == app)
        if app_id is not None:
            query = query.where(StandingGrant.app_id == app_id)
        return list(session.execute(query).unique().scalars())

    @staticmethod
    def requests_of(
        session: Session, app: str, *, state: RequestState | None = None
    ) -> list[AccessRequest]:
        """One application's requests (in ``state``, if given)."""
        query = select(AccessRequest).join(AccessRequest.app).where(Application.name == app)
        if state is not None:
            query = query.where(AccessRequest.state == state.value)
        return list(session.execute(query).unique().scalars())

    @staticmethod
    def requests_by_id(session: Session, ids: Sequence[int]) -> list[AccessRequest]:
        query = select(AccessRequest).where(AccessRequest.id.in_(list(ids)))
        return list(session.execute(query).unique().scalars())

    @staticmethod
    def request_states(session: Session) -> list[tuple[int, str]]:
        """(id, state) of every request, in id order (the audit coverage check)."""
        query = select(AccessRequest.id, AccessRequest.state).order_by(AccessRequest.id)
        return [(rid, state) for rid, state in session.execute(query)]

    @staticmethod
    def app_names(session: Session) -> list[str]:
        """Every application ever registered, removed ones too, in id order."""
        return list(session.execute(select(Application.name).order_by(Application.id)).scalars())

    @staticmethod
    def gauges(
        session: Session,
    ) -> tuple[list[tuple[str, str, int]], int, datetime | None, int]:
        """For /metrics: requests by (application, state); the outbox backlog and its
        oldest message's creation time; requests whose revoke keeps failing."""
        by_app = [
            (str(app), str(state), int(n))
            for app, state, n in session.execute(
                select(Application.name, AccessRequest.state, func.count())
                .join(AccessRequest.app)
                .group_by(Application.name, AccessRequest.state)
            ).all()
        ]
        backlog, oldest = session.execute(
            select(func.count(), func.min(OutboxMessage.created_at)).where(
                OutboxMessage.settled_at.is_(None)
            )
        ).one()
        failing = session.execute(
            select(func.count())
            .select_from(AccessRequest)
            .where(AccessRequest.revoke_failing_since.is_not(None))
        ).scalar_one()
        return by_app, int(backlog), oldest, int(failing)
