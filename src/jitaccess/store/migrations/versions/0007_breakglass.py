"""break-glass: who may take access at once, and the review of each use

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 07:30:00

Applications name break-glass holders (people or user groups) and a cap; requests
say whether they were taken with break-glass, for which incident, and who reviewed
them afterwards, when and why.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("applications") as batch:
        batch.add_column(
            sa.Column("breakglass", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )
        batch.add_column(
            sa.Column("breakglass_max_s", sa.Integer(), nullable=False, server_default="3600")
        )
    with op.batch_alter_table("access_requests") as batch:
        batch.add_column(
            sa.Column("breakglass", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("incident_ref", sa.String(200), nullable=True))
        batch.add_column(sa.Column("reviewed_by", sa.String(32), nullable=True))
        batch.add_column(sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("review_reason", sa.Text(), nullable=True))
        batch.create_index("ix_access_requests_unreviewed", ["breakglass", "reviewed_at"])


def downgrade() -> None:
    with op.batch_alter_table("access_requests") as batch:
        batch.drop_index("ix_access_requests_unreviewed")
        for column in ("review_reason", "reviewed_at", "reviewed_by", "incident_ref", "breakglass"):
            batch.drop_column(column)
    with op.batch_alter_table("applications") as batch:
        batch.drop_column("breakglass_max_s")
        batch.drop_column("breakglass")
