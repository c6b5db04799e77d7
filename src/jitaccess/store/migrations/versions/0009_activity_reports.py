"""activity_reports: the activity-log summary owed when access ends

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 07:30:00

When an Azure-backed request ends after access was granted, the transaction that
ends it also records that a summary of the publisher's activity is owed; the sweep
reads the Azure Activity Log once it has caught up (``due_at``), audits the summary
and its sha256 and tells the requester and approvers. One row per request: at most
one summary each.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "activity_reports",
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_by", sa.String(length=100), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("outcome", sa.String(length=20), nullable=True),
        sa.Column("summary_sha256", sa.String(length=64), nullable=True),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["request_id"], ["access_requests.id"]),
        sa.PrimaryKeyConstraint("request_id"),
    )
    op.create_index("ix_activity_reports_due_at", "activity_reports", ["due_at"])


def downgrade() -> None:
    op.drop_index("ix_activity_reports_due_at", table_name="activity_reports")
    op.drop_table("activity_reports")
