"""grant intent: where a grant may be held

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 04:40:00

A request remembers, before its first backend grant call starts, that a grant may
exist and on which backend (provider and config, so a later change of the
application's provider cannot send the revoke elsewhere). Standing grants remember
the same.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("access_requests") as batch:
        batch.add_column(sa.Column("grant_started_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("grant_provider", sa.String(length=50), nullable=True))
        batch.add_column(sa.Column("grant_config", sa.JSON(), nullable=True))
    with op.batch_alter_table("standing_grants") as batch:
        batch.add_column(sa.Column("held_provider", sa.String(length=50), nullable=True))
        batch.add_column(sa.Column("held_config", sa.JSON(), nullable=True))
    # Grants made before this revision: an active request holds its grant on its
    # application's current provider; so does a standing grant marked held.
    op.execute(
        "UPDATE access_requests SET grant_started_at = activated_at, "
        "grant_provider = (SELECT provider FROM applications a WHERE a.id = app_id), "
        "grant_config = (SELECT provider_config FROM applications a WHERE a.id = app_id) "
        "WHERE state = 'active'"
    )
    op.execute(
        "UPDATE standing_grants SET "
        "held_provider = (SELECT provider FROM applications a WHERE a.id = app_id), "
        "held_config = (SELECT provider_config FROM applications a WHERE a.id = app_id) "
        "WHERE held"
    )


def downgrade() -> None:
    with op.batch_alter_table("standing_grants") as batch:
        batch.drop_column("held_config")
        batch.drop_column("held_provider")
    with op.batch_alter_table("access_requests") as batch:
        batch.drop_column("grant_config")
        batch.drop_column("grant_provider")
        batch.drop_column("grant_started_at")
