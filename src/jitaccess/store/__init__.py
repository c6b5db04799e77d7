"""The SQLAlchemy adapter: tables, engine set-up, migrations and queries."""
