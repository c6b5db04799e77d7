"""Read-only use cases: applications, requests, who may do what now, history."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from jitaccess.app import quorum
from jitaccess.app.directory import Directory
from jitaccess.app.requests import already, check_revoker
from jitaccess.app.sweep import grant_spec_of
from jitaccess.app.views import AppView, RequestView, read_app, read_request
from jitaccess.domain import policy as rules
from jitaccess.domain.errors import Conflict, RuleViolation
from jitaccess.domain.lifecycle import FINAL_STATES, RequestState
from jitaccess.providers.base import GrantSpec
from jitaccess.store.db import Database
from jitaccess.store.models import AccessRequest
from jitaccess.store.rows import Rows


def row_approvers(row: AccessRequest) -> list[str]:
    """Who has approved ``row`` so far."""
    return [a.approver for a in row.approvals]


class Queries:
    """Read-only views and lists, each in a read-only transaction."""

    def __init__(
        self,
        db: Database,
        rows: Rows,
        directory: Directory,
        listing_directory: Directory,
    ) -> None:
        self.db = db
        self.rows = rows
        #: Asked afresh by the decision pre-checks, as the decisions do.
        self.directory = directory
        #: For showing who approves, where a short cache is fine.
        self.listing_directory = listing_directory

    def get_app(self, name: str, *, include_removed: bool = False) -> AppView:
        return read_app(self.db, self.rows, name, include_removed=include_removed)

    def list_apps(self) -> list[AppView]:
        with self.db.transaction(readonly=True) as session:
            return [AppView.of(row) for row in self.rows.apps(session)]

    def get_request(self, request_id: int) -> RequestView:
        return read_request(self.db, self.rows, request_id)

    def list_requests(
        self,
        *,
        app: str | None = None,
        state: str | None = None,
        requester: str | None = None,
        limit: int = 200,
    ) -> list[RequestView]:
        if state is not None and state not in {s.value for s in RequestState}:
            raise RuleViolation(
                f"'{state}' is not a state: use one of " + ", ".join(s.value for s in RequestState)
            )
        with self.db.transaction(readonly=True) as session:
            app_id = self.rows.app(session, app).id if app is not None else None
            found = self.rows.requests(
                session, app_id=app_id, state=state, requester=requester, limit=limit
            )
            return [RequestView.of(row) for row in found]

    def pending_for(self, approver: str, *, app: str | None = None) -> list[RequestView]:
        """Requests waiting on ``approver``, across every application (or one)."""
        with self.db.transaction(readonly=True) as session:
            app_id = self.rows.app(session, app).id if app is not None else None
            found = []
            for row in self.rows.in_state(session, RequestState.PENDING, app_id=app_id):
                if approver == row.requester or approver in (a.approver for a in row.approvals):
                    continue  # their own, or one they already approved (waiting on others)
                if approver in self.approvers_of(row.app.approvers):
                    found.append(RequestView.of(row))
            return found

    def approvers_of(self, entries: Sequence[str]) -> tuple[str, ...]:
        """The people approver ``entries`` name (groups expanded), for showing things;
        a group that cannot be read counts as empty here."""
        return quorum.people_or_known(self.listing_directory, tuple(entries))

    def decision_refusal(self, request_id: int, actor: str, verb: str) -> RuleViolation | None:
        """Why ``actor`` cannot ``verb`` the request now, or None if they can.

        A read-only pre-check for buttons; the decision itself checks again."""
        with self.db.transaction(readonly=True) as session:
            row = self.rows.get(session, request_id)
            try:
                if verb == "revoke":
                    check_revoker(row, actor, self.directory)
                    if row.state in FINAL_STATES:
                        return Conflict(*already(row))
                    return None
                if row.state != RequestState.PENDING:
                    return Conflict(*already(row))
                deciders = quorum.people(self.directory, tuple(row.app.approvers))
                rules.check_decider(deciders, row.requester, actor, verb)
                if verb == "approve":
                    rules.check_not_yet_approved(row_approvers(row), actor, row.id)
            except RuleViolation as exc:
                return exc
            return None

    def overseen_active(self, user: str) -> list[RequestView]:
        """Active grants in applications where ``user`` is an approver or admin."""
        with self.db.transaction(readonly=True) as session:
            return [
                RequestView.of(row)
                for row in self.rows.in_state(session, RequestState.ACTIVE)
                if user in row.app.admins or user in self.approvers_of(row.app.approvers)
            ]

    def apps_for_publisher(self, user: str) -> list[AppView]:
        """JIT-enabled applications ``user`` may request access to."""
        return [a for a in self.list_apps() if a.jit_enabled and user in a.publishers]

    def check_can_read(self, app_name: str, user: str) -> AppView:
        """Publishers, approvers and consumer admins may read an application's requests."""
        app = self.get_app(app_name, include_removed=True)
        readers = (*app.publishers, *app.admins, *self.approvers_of(app.policy.approvers))
        if user not in readers:
            raise RuleViolation(
                f"Only {app.name}'s publishers, approvers and consumer admins may see its "
                "requests, and you are none of these"
            )
        return app

    def history(self, app_name: str, *, limit: int = 200, offset: int = 0) -> list[RequestView]:
        with self.db.transaction(readonly=True) as session:
            app = self.rows.app(session, app_name, include_removed=True)
            found = self.rows.history(session, app.id, limit=limit, offset=offset)
            return [RequestView.of(row) for row in found]

    def next_deadline(self) -> datetime | None:
        with self.db.transaction(readonly=True) as session:
            return self.rows.next_deadline(session)

    def grant_spec(self, request_id: int) -> GrantSpec:
        """What the backend is asked to grant or revoke for this request."""
        with self.db.transaction(readonly=True) as session:
            return grant_spec_of(self.rows.get(session, request_id))
