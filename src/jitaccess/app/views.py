"""Read-only snapshots the service hands to adapters (safe after the session closes)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from jitaccess.domain.durations import format_duration
from jitaccess.domain.errors import utc_text
from jitaccess.domain.lifecycle import Event, RequestState, state_words
from jitaccess.domain.policy import ApprovalMode, AppRules, Policy
from jitaccess.store.db import Database
from jitaccess.store.models import AccessRequest, Application
from jitaccess.store.rows import Rows


@dataclass(frozen=True)
class AppView:
    name: str
    scope: str
    jit_enabled: bool
    publishers: tuple[str, ...]
    eligible_roles: tuple[str, ...]
    admins: tuple[str, ...]
    policy: Policy
    provider: str
    provider_config: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    #: Approvals count only after a recent multi-factor sign-in with Microsoft.
    require_mfa: bool = False

    @classmethod
    def of(cls, row: Application) -> AppView:
        return cls(
            name=row.name,
            scope=row.scope,
            jit_enabled=row.jit_enabled,
            publishers=tuple(row.publishers),
            eligible_roles=tuple(row.eligible_roles),
            admins=tuple(row.admins),
            policy=Policy(
                mode=ApprovalMode(row.approval_mode),
                max_duration=timedelta(seconds=row.max_duration_s),
                approvers=tuple(row.approvers),
                approval_timeout=timedelta(seconds=row.approval_timeout_s),
                breakglass=tuple(row.breakglass or ()),
                breakglass_max=timedelta(seconds=row.breakglass_max_s),
                required_approvals=row.required_approvals,
                feed_channel=row.feed_channel,
            ),
            provider=row.provider,
            provider_config=dict(row.provider_config or {}),
            created_at=row.created_at,
            require_mfa=bool(row.require_mfa),
        )

    def rules(self) -> AppRules:
        return AppRules(
            name=self.name,
            jit_enabled=self.jit_enabled,
            publishers=self.publishers,
            eligible_roles=self.eligible_roles,
            admins=self.admins,
            policy=self.policy,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "scope": self.scope,
            "jit_enabled": self.jit_enabled,
            "publishers": list(self.publishers),
            "roles": list(self.eligible_roles),
            "admins": list(self.admins),
            "policy": {
                "mode": self.policy.mode.value,
                "max_duration": format_duration(self.policy.max_duration),
                "approvers": list(self.policy.approvers),
                "approval_timeout": format_duration(self.policy.approval_timeout),
                "breakglass": list(self.policy.breakglass),
                "breakglass_max": format_duration(self.policy.breakglass_max),
                "required_approvals": self.policy.required_approvals,
                "feed_channel": self.policy.feed_channel,
            },
            "provider": self.provider,
            "require_mfa": self.require_mfa,
        }


@dataclass(frozen=True)
class ApprovalView:
    """One approval toward a request's quorum."""

    approver: str
    reason: str
    at: datetime


#: How a pending end reads ("being cancelled"), by the event that will end the request.
_ENDING: dict[str, str] = {Event.CANCEL: "cancelled", Event.EXPIRE: "expired", Event.FAIL: "failed"}


@dataclass(frozen=True)
class RequestView:
    id: int
    app: str
    scope: str
    requester: str
    role: str
    state: str
    justification: str
    starts_at: datetime
    ends_at: datetime
    approval_deadline_at: datetime
    approval_mode: str
    notified_approvers: tuple[str, ...]
    created_at: datetime
    decided_by: str | None
    decision_reason: str | None
    decided_at: datetime | None
    activated_at: datetime | None
    ended_at: datetime | None
    ended_by: str | None
    end_reason: str | None
    end_requested: str | None
    attempts: int
    last_error: str | None
    revoke_failing_since: datetime | None
    version: int
    breakglass: bool = False
    incident_ref: str | None = None
    reviewed_by: str | None = None
    reviewed_at: datetime | None = None
    review_reason: str | None = None
    #: The quorum snapshotted at submission, and the approvals given so far.
    required_approvals: int = 1
    approvals: tuple[ApprovalView, ...] = ()
    #: A pending extension (manual mode): the end asked for, why, and its time-out.
    extension_ends_at: datetime | None = None
    extension_reason: str | None = None
    extension_deadline_at: datetime | None = None
    #: The pending extension's approvals so far (its quorum is ``required_approvals``).
    extension_approvals: tuple[ApprovalView, ...] = ()
    #: Native mode: the ``Microsoft.Solutions/jitRequests`` resource this request is
    #: (None for jitaccess's own requests), and its managed application's resource id.
    native_request_id: str | None = None
    native_application_id: str | None = None

    @classmethod
    def of(cls, row: AccessRequest) -> RequestView:
        return cls(
            id=row.id,
            app=row.app.name,
            scope=row.app.scope,
            requester=row.requester,
            role=row.role,
            state=row.state,
            justification=row.justification,
            starts_at=row.starts_at,
            ends_at=row.ends_at,
            approval_deadline_at=row.approval_deadline_at,
            approval_mode=row.approval_mode,
            notified_approvers=tuple(row.notified_approvers),
            created_at=row.created_at,
            decided_by=row.decided_by,
            decision_reason=row.decision_reason,
            decided_at=row.decided_at,
            activated_at=row.activated_at,
            ended_at=row.ended_at,
            ended_by=row.ended_by,
            end_reason=row.end_reason,
            end_requested=row.end_requested,
            attempts=row.attempts,
            last_error=row.last_error,
            revoke_failing_since=row.revoke_failing_since,
            version=row.version,
            breakglass=bool(row.breakglass),
            incident_ref=row.incident_ref,
            reviewed_by=row.reviewed_by,
            reviewed_at=row.reviewed_at,
            review_reason=row.review_reason,
            required_approvals=row.required_approvals,
            approvals=tuple(ApprovalView(a.approver, a.reason, a.at) for a in row.approvals),
            extension_ends_at=row.extension_ends_at,
            extension_reason=row.extension_reason,
            extension_deadline_at=row.extension_deadline_at,
            extension_approvals=tuple(
                ApprovalView(a["approver"], a["reason"], datetime.fromisoformat(a["at"]))
                for a in row.extension_approvals or ()
            ),
            native_request_id=row.native_request_id,
            native_application_id=(
                str((row.app.provider_config or {}).get("application_id") or "") or None
                if row.native_request_id
                else None
            ),
        )

    @property
    def native(self) -> bool:
        """Is this Azure's own managed-application JIT request (native mode)?"""
        return self.native_request_id is not None

    @property
    def needs_review(self) -> bool:
        """A break-glass request nobody has reviewed yet (also after access ended)."""
        return self.breakglass and self.reviewed_at is None

    @property
    def approved_by(self) -> tuple[str, ...]:
        return tuple(a.approver for a in self.approvals)

    @property
    def duration(self) -> timedelta:
        return self.ends_at - self.starts_at

    def holds_access(self, now: datetime) -> bool:
        """Does the grant hold at ``now``? A window that has ended is over even
        before the sweep has revoked it."""
        return self.state == RequestState.ACTIVE and now < self.ends_at

    def status_line(self, now: datetime, *, at: Callable[[datetime], str] = utc_text) -> str:
        """The state as a person should read it ("waiting for approval", not
        ``pending``), with what is in flight. ``at`` writes the times in it: UTC text
        by default; Slack passes its date tokens, so each reader sees their own zone."""
        if self.state == RequestState.ACTIVE:
            # A revoke or release is recorded: the sweep takes the grant back. Until
            # then the grant still holds, but "active" would read as if nothing happened.
            # "expire" is no one's ask: the sweep is revoking at the window's end (see
            # deadlines.mark_expiring).
            asked_to_end = self.end_requested not in (None, Event.EXPIRE)
            ending = "being revoked" if asked_to_end else "active"
            if self.revoke_failing_since is not None:
                return f"{ending} (revoke failing since {at(self.revoke_failing_since)})"
            if asked_to_end:
                return ending
            if self.end_requested == Event.EXPIRE or not self.holds_access(now):
                return "active (window over, revoking)"
        if self.state in (RequestState.APPROVED, RequestState.AUTO_APPROVED):
            if self.end_requested is not None:
                # A grant call was started: it ends once the backend confirmed the revoke.
                ending = f"being {_ENDING.get(self.end_requested, 'ended')}, access being revoked"
                if self.revoke_failing_since is not None:
                    return f"{ending} (revoke failing since {at(self.revoke_failing_since)})"
                return ending
            if self.attempts:
                return f"{state_words(self.state)} (grant failing, {self.attempts} attempts)"
        return state_words(self.state)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["notified_approvers"] = list(self.notified_approvers)
        data["approvals"] = [
            {"approver": a.approver, "reason": a.reason, "at": a.at.isoformat()}
            for a in self.approvals
        ]
        for key, value in data.items():
            if isinstance(value, datetime):
                data[key] = value.isoformat()
        data["duration"] = format_duration(self.duration)
        return data


def read_request(db: Database, rows: Rows, request_id: int) -> RequestView:
    """The request as it is now, in a read-only transaction of its own."""
    with db.transaction(readonly=True) as session:
        return RequestView.of(rows.get(session, request_id))


def read_app(db: Database, rows: Rows, name: str, *, include_removed: bool = False) -> AppView:
    """The application as it is now, in a read-only transaction of its own."""
    with db.transaction(readonly=True) as session:
        return AppView.of(rows.app(session, name, include_removed=include_removed))
