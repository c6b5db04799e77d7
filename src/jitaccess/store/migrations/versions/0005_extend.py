"""access_requests: extensions

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 07:30:00

A pending extension (manual mode) is four columns on the request: the end asked
for, why, when, and when it times out. ``backend_ends_at`` is the end an
expiry-aware backend was last told; while it differs from ``ends_at`` the sweep
owes that backend an ``extend`` call (never a revoke and re-grant).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = (
    "extension_ends_at",
    "extension_reason",
    "extension_requested_at",
    "extension_deadline_at",
    "backend_ends_at",
)


def upgrade() -> None:
    with op.batch_alter_table("access_requests") as batch:
        batch.add_column(sa.Column("extension_ends_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("extension_reason", sa.Text()))
        batch.add_column(sa.Column("extension_requested_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("extension_deadline_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("backend_ends_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("access_requests") as batch:
        for name in reversed(_COLUMNS):
            batch.drop_column(name)
