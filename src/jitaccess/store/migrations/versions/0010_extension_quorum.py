"""access_requests: the approvals a pending extension has gathered

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 08:00:00

An extension needs the request's quorum (``required_approvals``), like the request
did. Its approvals so far are a JSON list of ``{approver, reason, at}`` on the
request, next to the other ``extension_*`` columns: they are cleared with the
extension (approved, denied, timed out) and guarded by the same row lock. The
``approvals`` table is not reused: it holds the request's own quorum, unique per
approver, and an extension's approvals must not count toward it (or outlive it).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("access_requests") as batch:
        batch.add_column(sa.Column("extension_approvals", sa.JSON()))


def downgrade() -> None:
    with op.batch_alter_table("access_requests") as batch:
        batch.drop_column("extension_approvals")
