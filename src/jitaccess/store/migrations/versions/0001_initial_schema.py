"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-27 11:02:46.127841
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "audit_events",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("action", sa.String(length=50), nullable=False),
        sa.Column("app", sa.String(length=100), nullable=True),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.Column("from_state", sa.String(length=20), nullable=True),
        sa.Column("to_state", sa.String(length=20), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_audit_events_request_id"), ["request_id"], unique=False
        )

    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "log_grants",
        sa.Column("request_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("standing", sa.Boolean(), nullable=False),
        sa.Column("app", sa.String(length=100), nullable=False),
        sa.Column("scope", sa.String(length=500), nullable=False),
        sa.Column("principal", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=100), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("grant_calls", sa.Integer(), nullable=False),
        sa.Column("revoke_calls", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("request_id", "standing"),
    )
    op.create_table(
        "offers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("publishers", sa.JSON(), nullable=False),
        sa.Column("eligible_roles", sa.JSON(), nullable=False),
        sa.Column("standing_role", sa.String(length=100), nullable=False),
        sa.Column("jit_available", sa.Boolean(), nullable=False),
        sa.Column("provider_config", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dedup_key", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=50), nullable=False),
        sa.Column("recipient", sa.String(length=32), nullable=True),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("available_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedup_key"),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(
            "ix_outbox_undelivered", ["delivered_at", "available_at"], unique=False
        )

    op.create_table(
        "slack_events",
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )
    op.create_table(
        "slack_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("recipient", sa.String(length=32), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("ts", sa.String(length=32), nullable=False),
        sa.Column("last_dedup_key", sa.String(length=200), nullable=True),
        sa.Column("headline", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("request_id", "recipient", "role"),
    )
    with op.batch_alter_table("slack_messages", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_slack_messages_request_id"), ["request_id"], unique=False
        )

    op.create_table(
        "applications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("scope", sa.String(length=500), nullable=False),
        sa.Column("jit_enabled", sa.Boolean(), nullable=False),
        sa.Column("publishers", sa.JSON(), nullable=False),
        sa.Column("eligible_roles", sa.JSON(), nullable=False),
        sa.Column("admins", sa.JSON(), nullable=False),
        sa.Column("approval_mode", sa.String(length=20), nullable=False),
        sa.Column("max_duration_s", sa.Integer(), nullable=False),
        sa.Column("approvers", sa.JSON(), nullable=False),
        sa.Column("approval_timeout_s", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=50), nullable=False),
        sa.Column("provider_config", sa.JSON(), nullable=False),
        sa.Column("standing_role", sa.String(length=100), nullable=False),
        sa.Column("offer_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("removed_by", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["offer_id"],
            ["offers.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "access_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("app_id", sa.Integer(), nullable=False),
        sa.Column("requester", sa.String(length=32), nullable=False),
        sa.Column("role", sa.String(length=100), nullable=False),
        sa.Column("justification", sa.Text(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("approval_deadline_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("approval_mode", sa.String(length=20), nullable=False),
        sa.Column("notified_approvers", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.String(length=32), nullable=True),
        sa.Column("decision_reason", sa.Text(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_by", sa.String(length=32), nullable=True),
        sa.Column("end_reason", sa.Text(), nullable=True),
        sa.Column("end_requested", sa.String(length=10), nullable=True),
        sa.Column("end_requested_by", sa.String(length=32), nullable=True),
        sa.Column("end_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_requested_reason", sa.Text(), nullable=True),
        sa.Column("next_deadline_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_by", sa.String(length=100), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoke_failing_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoke_alerts_sent", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["app_id"],
            ["applications.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("access_requests", schema=None) as batch_op:
        batch_op.create_index(
            "ix_access_requests_app_created", ["app_id", "created_at"], unique=False
        )
        batch_op.create_index("ix_access_requests_due", ["state", "next_deadline_at"], unique=False)
        batch_op.create_index("ix_access_requests_requester", ["requester"], unique=False)

    op.create_table(
        "standing_grants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("app_id", sa.Integer(), nullable=False),
        sa.Column("principal", sa.String(length=32), nullable=False),
        sa.Column("role", sa.String(length=100), nullable=False),
        sa.Column("desired", sa.Boolean(), nullable=False),
        sa.Column("held", sa.Boolean(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["app_id"],
            ["applications.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("app_id", "principal", "role"),
    )


def downgrade() -> None:

    op.drop_table("standing_grants")
    with op.batch_alter_table("access_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_access_requests_requester")
        batch_op.drop_index("ix_access_requests_due")
        batch_op.drop_index("ix_access_requests_app_created")

    op.drop_table("access_requests")
    op.drop_table("applications")
    with op.batch_alter_table("slack_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_slack_messages_request_id"))

    op.drop_table("slack_messages")
    op.drop_table("slack_events")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_undelivered")

    op.drop_table("outbox")
    op.drop_table("offers")
    op.drop_table("log_grants")
    op.drop_table("audit_head")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_events_request_id"))

    op.drop_table("audit_events")
