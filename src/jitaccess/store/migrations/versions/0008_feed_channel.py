"""applications and requests: a feed channel

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 07:30:00

An application may name a Slack channel (``feed_channel``) where each of its requests
is posted once and then updated in place. The channel's message is remembered in
``slack_messages`` with role "feed" and the channel as recipient, so no new table.
Each request keeps the channel it was submitted under (``access_requests.feed_channel``).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("applications", "access_requests"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("feed_channel", sa.String(32), nullable=True))


def downgrade() -> None:
    for table in ("access_requests", "applications"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("feed_channel")
