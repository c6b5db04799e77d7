"""Alembic environment: runs against the connection ``Database.upgrade`` hands it."""

from alembic import context

from jitaccess.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only ``jitaccess db upgrade`` runs migrations
    raise SystemExit("run migrations with `jitaccess db upgrade`")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
