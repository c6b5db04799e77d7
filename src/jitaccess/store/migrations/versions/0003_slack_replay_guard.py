"""slack replay guard: signatures of Slack HTTP requests already handled

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "slack_signatures",
        sa.Column("signature", sa.String(length=100), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("signature"),
    )
    with op.batch_alter_table("slack_signatures", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_slack_signatures_expires_at"), ["expires_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("slack_signatures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_slack_signatures_expires_at"))
    op.drop_table("slack_signatures")
