"""quorum: required approvals and the approvals given

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 07:40:00

A policy may require several approvers to approve (``required_approvals``, default 1),
snapshotted on each request at submission. Each approval is a row in ``approvals``,
unique per request and approver, so nobody counts twice toward a quorum.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("applications", "access_requests"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column("required_approvals", sa.Integer(), nullable=False, server_default="1")
            )
    op.create_table(
        "approvals",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("request_id", sa.Integer(), sa.ForeignKey("access_requests.id"), nullable=False),
        sa.Column("approver", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("request_id", "approver"),
    )


def downgrade() -> None:
    op.drop_table("approvals")
    for table in ("access_requests", "applications"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("required_approvals")
