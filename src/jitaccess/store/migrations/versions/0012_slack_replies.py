"""slack_replies: the thread replies posted under each person's card

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08 02:00:00

Issue 19. Each person has one card per request, edited in place; what happened at a
step is a reply in that card's thread. A reply is posted once per outbox message: its
``dedup_key`` is unique here, so a redelivery after a crash (Slack accepted the reply,
the message was not settled yet) finds it and posts nothing new.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "slack_replies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dedup_key", sa.String(length=200), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("recipient", sa.String(length=32), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("thread_ts", sa.String(length=32), nullable=True),
        sa.Column("ts", sa.String(length=32), nullable=False),
        sa.Column("posted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedup_key"),
    )
    op.create_index("ix_slack_replies_request_id", "slack_replies", ["request_id"])


def downgrade() -> None:
    op.drop_index("ix_slack_replies_request_id", table_name="slack_replies")
    op.drop_table("slack_replies")
