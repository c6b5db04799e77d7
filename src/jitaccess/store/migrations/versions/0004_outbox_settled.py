"""outbox: settled is not delivered

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 05:10:00

``delivered_at`` used to be set for every message the relay was done with, also
for messages it dropped (Slack said the user is gone) or skipped (a reminder for
access already over). It now means only "Slack accepted it"; ``settled_at`` says
the relay is done with the message, whatever the outcome, and the queue index
moves to it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True))
        batch.drop_index("ix_outbox_undelivered")
        batch.create_index("ix_outbox_unsettled", ["settled_at", "available_at"])
    op.execute("UPDATE outbox SET settled_at = delivered_at")
    op.execute("UPDATE outbox SET delivered_at = NULL WHERE last_error LIKE 'undeliverable:%'")


def downgrade() -> None:
    op.execute("UPDATE outbox SET delivered_at = settled_at WHERE settled_at IS NOT NULL")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_index("ix_outbox_unsettled")
        batch.create_index("ix_outbox_undelivered", ["delivered_at", "available_at"])
        batch.drop_column("settled_at")
