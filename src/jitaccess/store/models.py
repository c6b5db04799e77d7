"""Tables. Deadlines are columns here, never process memory (see ``sweep``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite and PostgreSQL alike.

    SQLite has no time zones, so values are stored there as naive UTC; the
    text then sorts in time order, which the deadline index relies on.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column; pass an aware one")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[str]: JSON}


class Offer(Base):
    """A publisher's managed application definition, deployed by consumers as applications."""

    __tablename__ = "offers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    publishers: Mapped[list[str]]
    eligible_roles: Mapped[list[str]]
    standing_role: Mapped[str] = mapped_column(String(100), default="Reader")
    jit_available: Mapped[bool]
    #: Backend settings deployments inherit, e.g. the Slack user -> Azure principal mapping.
    provider_config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]


class Application(Base):
    """A managed application: the resource group a publisher operates in for a consumer."""

    __tablename__ = "applications"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    scope: Mapped[str] = mapped_column(String(500))
    jit_enabled: Mapped[bool]
    publishers: Mapped[list[str]]
    eligible_roles: Mapped[list[str]]
    admins: Mapped[list[str]]
    approval_mode: Mapped[str] = mapped_column(String(20))
    max_duration_s: Mapped[int]
    approvers: Mapped[list[str]]
    approval_timeout_s: Mapped[int]
    #: People or user groups (``S…``) who may break glass, and for how long at most.
    breakglass: Mapped[list[str]] = mapped_column(default=list)
    breakglass_max_s: Mapped[int] = mapped_column(Integer, default=3600)
    #: How many different approvers must approve a request (a quorum).
    required_approvals: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    #: The Slack channel (ID) the application's requests are posted to; NULL: no feed.
    feed_channel: Mapped[str | None] = mapped_column(String(32))
    provider: Mapped[str] = mapped_column(String(50), default="log")
    provider_config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: The publisher's always-on role (JIT enabled); JIT disabled holds every eligible role.
    standing_role: Mapped[str] = mapped_column(String(100), default="Reader")
    offer_id: Mapped[int | None] = mapped_column(ForeignKey("offers.id"))
    #: An approval counts only from an approver whose Entra sign-in proved multi-factor
    #: authentication recently (domain.native.check_step_up).
    require_mfa: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    #: Set when the application was removed; its history stays readable.
    removed_at: Mapped[datetime | None]
    removed_by: Mapped[str | None] = mapped_column(String(32))

    requests: Mapped[list[AccessRequest]] = relationship(back_populates="app")


class AccessRequest(Base):
    """One request for elevated access. ``state`` is driven by ``RequestLifecycle``."""

    __tablename__ = "access_requests"
    __table_args__ = (
        # The sweep reads "rows in state S due by now, oldest first": this index
        # answers it with a range scan, however many rows are not yet due.
        Index("ix_access_requests_due", "state", "next_deadline_at"),
        Index("ix_access_requests_app_created", "app_id", "created_at"),
        Index("ix_access_requests_requester", "requester"),
        # "Break-glass requests nobody reviewed yet" (App Home, /jit pending).
        Index("ix_access_requests_unreviewed", "breakglass", "reviewed_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("applications.id"))
    #: A Slack user id; for a native request made in the Azure portal by someone with no
    #: linked Slack account, the creator's Entra object id.
    requester: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(100))
    justification: Mapped[str] = mapped_column(Text)
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    approval_deadline_at: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(20))
    #: The policy's mode when the request was made; a later policy change does not alter it.
    approval_mode: Mapped[str] = mapped_column(String(20))
    #: The approvers notified at submission (decisions check the current policy).
    notified_approvers: Mapped[list[str]]
    #: The policy's quorum when the request was made; a later policy change does not alter it.
    required_approvals: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    #: The application's feed channel at submission: the request's message there is
    #: kept current to the end, even if the feed is turned off or moved meanwhile.
    feed_channel: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime]
    #: The deciding approval (the one reaching the quorum) or the denial.
    decided_by: Mapped[str | None] = mapped_column(String(32))
    decision_reason: Mapped[str | None] = mapped_column(Text)
    decided_at: Mapped[datetime | None]
    activated_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    ended_by: Mapped[str | None] = mapped_column(String(32))
    end_reason: Mapped[str | None] = mapped_column(Text)
    #: An early end asked for by a person ("revoke" or "release"), carried out by the sweep.
    end_requested: Mapped[str | None] = mapped_column(String(10))
    end_requested_by: Mapped[str | None] = mapped_column(String(32))
    end_requested_at: Mapped[datetime | None]
    end_requested_reason: Mapped[str | None] = mapped_column(Text)
    #: When the sweep must next look at this row; NULL once the request is final.
    next_deadline_at: Mapped[datetime | None]
    #: The sweeper holding a lease on the row (lease = next_deadline_at pushed ahead).
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_attempt_at: Mapped[datetime | None]
    revoke_failing_since: Mapped[datetime | None]
    #: Alerts sent since the revoke started failing (they come less and less often).
    revoke_alerts_sent: Mapped[int] = mapped_column(Integer, default=0)
    #: Intent before effect: set, in the claim's transaction, before the first backend
    #: grant call starts. From then on a revoke is owed before the request may end.
    grant_started_at: Mapped[datetime | None]
    #: The backend that may hold the grant (provider name and config at the first
    #: grant call): every later grant and revoke goes there, whatever the application
    #: is switched to meanwhile.
    grant_provider: Mapped[str | None] = mapped_column(String(50))
    grant_config: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: Taken with break-glass: granted at once, without approval, reviewed afterwards.
    breakglass: Mapped[bool] = mapped_column(default=False)
    incident_ref: Mapped[str | None] = mapped_column(String(200))
    #: The after-the-fact review of a break-glass request (NULL until someone reviewed).
    reviewed_by: Mapped[str | None] = mapped_column(String(32))
    reviewed_at: Mapped[datetime | None]
    review_reason: Mapped[str | None] = mapped_column(Text)
    #: A pending extension (manual mode; at most one): the end asked for, why, when,
    #: and when it times out (the sweep looks then). NULL when none is pending.
    extension_ends_at: Mapped[datetime | None]
    extension_reason: Mapped[str | None] = mapped_column(Text)
    extension_requested_at: Mapped[datetime | None]
    extension_deadline_at: Mapped[datetime | None]
    #: The pending extension's approvals so far (``{approver, reason, at}``, oldest
    #: first): it is approved when they reach ``required_approvals``. Replaced, never
    #: mutated in place (a plain JSON column does not track changes inside it).
    extension_approvals: Mapped[list[dict[str, str]] | None] = mapped_column(JSON)
    #: The end an expiry-aware backend (``ExpiryAwareProvider``) was last told; NULL for
    #: other backends. While it differs from ``ends_at`` the sweep owes an ``extend``.
    backend_ends_at: Mapped[datetime | None]
    #: Native mode: the ``Microsoft.Solutions/jitRequests`` resource id, and the
    #: ``jitRequestState`` jitaccess last read from Azure.
    native_request_id: Mapped[str | None] = mapped_column(String(400), unique=True)
    native_state: Mapped[str | None] = mapped_column(String(20))
    version: Mapped[int] = mapped_column(Integer, default=1)

    app: Mapped[Application] = relationship(back_populates="requests", lazy="joined")
    #: Every approval given so far, oldest first (a quorum counts them). Read-only:
    #: approvals are inserted as rows of their own (``quorum.record_approval``), so a
    #: flush of many requests (the sweep's) does no bookkeeping for this collection.
    approvals: Mapped[list[Approval]] = relationship(
        lazy="selectin", order_by="Approval.id", viewonly=True
    )

    __mapper_args__ = {"version_id_col": version}


class Approval(Base):
    """One approver's approval of a request, with their reason. Unique per approver, so
    nobody counts twice toward a quorum, even under racing clicks."""

    __tablename__ = "approvals"
    __table_args__ = (UniqueConstraint("request_id", "approver"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("access_requests.id"))
    approver: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime]


class AuditEvent(Base):
    """Append-only, hash-chained log of everything that happened."""

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(50))
    app: Mapped[str | None] = mapped_column(String(100))
    request_id: Mapped[int | None] = mapped_column(index=True)
    from_state: Mapped[str | None] = mapped_column(String(20))
    to_state: Mapped[str | None] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The chain's tip (one row). Locking it serialises appends across processes,
    and comparing it with the last row detects a deleted tail."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    seq: Mapped[int]
    hash: Mapped[str] = mapped_column(String(64))


class OutboxMessage(Base):
    """A notification written in the transition's transaction, delivered later by the relay."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_unsettled", "settled_at", "available_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dedup_key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(50))
    recipient: Mapped[str | None] = mapped_column(String(32))
    request_id: Mapped[int | None]
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]
    available_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(default=0)
    #: When Slack accepted it; NULL for a message dropped or skipped.
    delivered_at: Mapped[datetime | None]
    #: When the relay was done with it: delivered, dropped (undeliverable) or skipped.
    settled_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)


class LogGrant(Base):
    """What the ``log`` provider "granted": the stand-in for a real backend."""

    __tablename__ = "log_grants"

    request_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    #: A standing grant (``request_id`` is then a standing grant's id).
    standing: Mapped[bool] = mapped_column(primary_key=True, default=False)
    app: Mapped[str] = mapped_column(String(100))
    scope: Mapped[str] = mapped_column(String(500))
    principal: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(100))
    granted_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    grant_calls: Mapped[int] = mapped_column(default=0)
    revoke_calls: Mapped[int] = mapped_column(default=0)


class SlackReply(Base):
    """A reply posted in the thread of a request's card, one per outbox message: a
    redelivery of that message (a crash after Slack accepted it, before it was
    settled) finds it here and posts nothing new."""

    __tablename__ = "slack_replies"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: The outbox message the reply tells (unique: one reply per message).
    dedup_key: Mapped[str] = mapped_column(String(200), unique=True)
    request_id: Mapped[int] = mapped_column(index=True)
    recipient: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(32))
    #: The card the reply is under (None: posted on its own, no card to reply to).
    thread_ts: Mapped[str | None] = mapped_column(String(32))
    ts: Mapped[str] = mapped_column(String(32))
    posted_at: Mapped[datetime]


class SlackMessage(Base):
    """Where a request's card was posted for one person, so later changes edit it
    in place (``chat.update``) instead of posting again."""

    __tablename__ = "slack_messages"
    __table_args__ = (UniqueConstraint("request_id", "recipient", "role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(index=True)
    recipient: Mapped[str] = mapped_column(String(32))
    #: "approver" (the decision card), "requester" (the latest status card) or
    #: "feed" (the application's channel; ``recipient`` is then the channel ID).
    #: "extension" (an approver's extension card, a reply in their card's thread).
    #: "activity" (the activity summary of older versions, posted once).
    role: Mapped[str] = mapped_column(String(20))
    channel: Mapped[str] = mapped_column(String(32))
    ts: Mapped[str] = mapped_column(String(32))
    #: The outbox message this card last showed: a redelivery of it is a no-op.
    last_dedup_key: Mapped[str | None] = mapped_column(String(200))
    #: A digest of what the card shows now (``sha256:…``), so an edit that would change
    #: nothing is not sent (older versions kept the card's first line here).
    headline: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime]


class SlackEvent(Base):
    """Slack Events API deliveries already handled, so a retry is not processed twice."""

    __tablename__ = "slack_events"

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    received_at: Mapped[datetime]


class StandingGrant(Base):
    """Access a publisher holds outside JIT: the standing role, or every eligible role
    when JIT is disabled. ``desired`` says whether it should be held; ``held`` whether
    the backend confirmed it. Reconciliation brings the two together."""

    __tablename__ = "standing_grants"
    __table_args__ = (UniqueConstraint("app_id", "principal", "role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("applications.id"))
    principal: Mapped[str] = mapped_column(String(32))
    role: Mapped[str] = mapped_column(String(100))
    desired: Mapped[bool] = mapped_column(default=True)
    held: Mapped[bool] = mapped_column(default=False)
    #: Where the grant may be held (set before the grant call, cleared after a revoke
    #: succeeded): a provider switch revokes it here before granting on the new one.
    held_provider: Mapped[str | None] = mapped_column(String(50))
    held_config: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    last_error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    app: Mapped[Application] = relationship(lazy="joined")


class SlackSignature(Base):
    """Signatures of Slack HTTP requests already handled. Slack's signature covers the
    body and a timestamp accepted for five minutes either way, so within that window
    a captured request could be replayed: a signature seen before marks a replay. Rows
    are kept until ``expires_at`` (past the window), then pruned."""

    __tablename__ = "slack_signatures"

    signature: Mapped[str] = mapped_column(String(100), primary_key=True)
    received_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)


class ActivityReport(Base):
    """The activity-log summary owed for a request whose access ended (Azure apps):
    written in the transaction that ended the request, due once the activity log has
    caught up (``due_at``), done once (the request id is the key)."""

    __tablename__ = "activity_reports"

    request_id: Mapped[int] = mapped_column(ForeignKey("access_requests.id"), primary_key=True)
    #: The window the summary covers: from the grant to the end of access.
    window_start: Mapped[datetime]
    window_end: Mapped[datetime]
    #: When the sweep should next read the log (also a claim's lease); NULL once done.
    due_at: Mapped[datetime | None] = mapped_column(index=True)
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    #: "posted" (summary audited and sent) or "gave_up" (the log could not be read).
    outcome: Mapped[str | None] = mapped_column(String(20))
    summary_sha256: Mapped[str | None] = mapped_column(String(64))
    done_at: Mapped[datetime | None]


class EntraLink(Base):
    """A Slack person's link to their Entra account, made by Sign in with Microsoft.
    The refresh token is stored encrypted (``app.signins.TokenCipher``) and never
    logged; ``acrs`` and ``authenticated_at`` are what the last interactive sign-in
    proved (for ``require_mfa``)."""

    __tablename__ = "entra_links"

    slack_user: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    object_id: Mapped[str] = mapped_column(String(64), index=True)
    username: Mapped[str] = mapped_column(String(320))
    refresh_token: Mapped[str] = mapped_column(Text)
    acrs: Mapped[list[str]] = mapped_column(JSON, default=list)
    authenticated_at: Mapped[datetime | None]
    linked_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class SignInAttempt(Base):
    """One Sign in with Microsoft link: single use, valid ten minutes, its ``state``
    bound to the Slack person it was posted to. ``flow`` is msal's auth-code flow
    (PKCE verifier, nonce), encrypted like refresh tokens."""

    __tablename__ = "sign_in_attempts"

    state: Mapped[str] = mapped_column(String(100), primary_key=True)
    slack_user: Mapped[str] = mapped_column(String(32))
    #: "link" (first sign-in) or "step_up" (an approval asked for multi-factor).
    purpose: Mapped[str] = mapped_column(String(20))
    flow: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    used_at: Mapped[datetime | None]
