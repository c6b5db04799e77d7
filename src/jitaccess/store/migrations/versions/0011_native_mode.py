"""native mode: jitRequests followed, Entra sign-ins, require_mfa

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 23:00:00

Issue 18. ``access_requests`` gains the ``Microsoft.Solutions/jitRequests`` resource id
of a native request and the ``jitRequestState`` last read; its ``requester`` widens to
64 characters so a request made in the Azure portal by someone with no linked Slack
account keeps its creator's Entra object id. ``applications.require_mfa`` makes an
approval count only after a recent multi-factor sign-in. ``entra_links`` holds each
person's Entra link (refresh token encrypted); ``sign_in_attempts`` the single-use,
ten-minute Sign in with Microsoft links.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("access_requests") as batch:
        batch.add_column(sa.Column("native_request_id", sa.String(400)))
        batch.add_column(sa.Column("native_state", sa.String(20)))
        batch.alter_column(
            "requester", existing_type=sa.String(32), type_=sa.String(64), existing_nullable=False
        )
        batch.create_unique_constraint(
            "uq_access_requests_native_request_id", ["native_request_id"]
        )
    with op.batch_alter_table("applications") as batch:
        batch.add_column(
            sa.Column("require_mfa", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_table(
        "entra_links",
        sa.Column("slack_user", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("object_id", sa.String(64), nullable=False),
        sa.Column("username", sa.String(320), nullable=False),
        sa.Column("refresh_token", sa.Text(), nullable=False),
        sa.Column("acrs", sa.JSON(), nullable=False),
        sa.Column("authenticated_at", sa.DateTime(timezone=True)),
        sa.Column("linked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_entra_links_object_id", "entra_links", ["object_id"])
    op.create_table(
        "sign_in_attempts",
        sa.Column("state", sa.String(100), primary_key=True),
        sa.Column("slack_user", sa.String(32), nullable=False),
        sa.Column("purpose", sa.String(20), nullable=False),
        sa.Column("flow", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_sign_in_attempts_expires_at", "sign_in_attempts", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_sign_in_attempts_expires_at", "sign_in_attempts")
    op.drop_table("sign_in_attempts")
    op.drop_index("ix_entra_links_object_id", "entra_links")
    op.drop_table("entra_links")
    with op.batch_alter_table("applications") as batch:
        batch.drop_column("require_mfa")
    with op.batch_alter_table("access_requests") as batch:
        batch.drop_constraint("uq_access_requests_native_request_id", type_="unique")
        batch.alter_column(
            "requester", existing_type=sa.String(64), type_=sa.String(32), existing_nullable=False
        )
        batch.drop_column("native_state")
        batch.drop_column("native_request_id")
