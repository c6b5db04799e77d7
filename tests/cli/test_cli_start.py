"""Starting a command. Every command upgrades first, cheaply: the fast path (one
SELECT of ``alembic_version`` against the head read from the shipped scripts) must
agree with Alembic, so a new migration is never skipped. What a command imports stays
small and the GC pause of start-up ends, so ``jitaccess --help`` and read commands
start quickly (timed in bench/cli_start.py, never here)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

import jitaccess.store.db as db_module
from conftest import Cli
from jitaccess.store.db import MIGRATIONS, Database, shipped_head


def alembic_head(db: Database) -> str | None:
    with db.engine.connect() as connection:
        return ScriptDirectory.from_config(db._alembic_config(connection)).get_current_head()


def upgrade_to(db: Database, revision: str) -> None:
    with db.engine.begin() as connection:
        command.upgrade(db._alembic_config(connection), revision)


def test_fast_path_head_is_alembics_head(db: Database) -> None:
    head = shipped_head(MIGRATIONS / "versions")
    assert head is not None, "the shipped migrations must stay a chain the fast path reads"
    assert head == alembic_head(db)
    assert db.stamped_revisions() == {head}
    assert db.schema_is_current()


def test_a_database_one_migration_behind_is_upgraded_by_a_read_command(
    cli: Cli, tmp_path: Path
) -> None:
    """A database one migration behind gets the newest migration's columns from a read."""
    db = Database(f"sqlite:///{tmp_path / 'j.db'}")
    head = alembic_head(db)
    with db.engine.connect() as connection:
        scripts = ScriptDirectory.from_config(db._alembic_config(connection))
        previous = scripts.get_revision(head).down_revision
    assert isinstance(previous, str)
    upgrade_to(db, previous)
    assert db.stamped_revisions() == {previous}
    assert not db.schema_is_current()
    before = all_columns(db)

    assert "No applications yet" in cli("apps", "list").stdout

    assert db.stamped_revisions() == {head}
    assert db.schema_is_current()
    assert all_columns(db) > before, "the newest migration's tables or columns were not added"
    db.dispose()


def all_columns(db: Database) -> set[tuple[str, str]]:
    inspector = inspect(db.engine)
    return {
        (table, column["name"])
        for table in inspector.get_table_names()
        for column in inspector.get_columns(table)
    }


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_a_new_database_is_created_by_alembic(
    tmp_path: Path, dialect: str, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'new.db'}"
        if dialect == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    db = Database(url)
    assert db.stamped_revisions() is None  # no alembic_version table: not an error
    assert not db.schema_is_current()
    db.upgrade()
    assert db.stamped_revisions() == {alembic_head(db)}
    assert db.schema_is_current()
    db.upgrade()  # the fast path: nothing to do
    db.dispose()


def test_a_new_migration_is_never_skipped(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database at today's head meets scripts with one more migration (as after
    `pip install -U`): the fast path sees the new head and Alembic runs it."""
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, migrations, ignore=shutil.ignore_patterns("__pycache__"))
    head = shipped_head(MIGRATIONS / "versions")
    (migrations / "versions" / "9999_probe.py").write_text(
        textwrap.dedent(f'''\
            """probe"""
            import sqlalchemy as sa
            from alembic import op

            revision: str = "9999"
            down_revision: str | None = "{head}"
            branch_labels = None
            depends_on = None


            def upgrade() -> None:
                op.create_table("probe", sa.Column("id", sa.Integer, primary_key=True))


            def downgrade() -> None:
                op.drop_table("probe")
        ''')
    )
    monkeypatch.setattr(db_module, "MIGRATIONS", migrations)
    assert shipped_head(migrations / "versions") == "9999" == alembic_head(db)
    assert not db.schema_is_current()

    db.upgrade()

    assert db.stamped_revisions() == {"9999"}
    assert "probe" in inspect(db.engine).get_table_names()
    assert db.schema_is_current()


@pytest.mark.parametrize(
    "down_revision",
    [
        '("0003", "0002")',  # a merge: the fast reader leaves it to Alembic
        "'0003'  # a branch beside 0004 and what follows it: two heads",
    ],
)
def test_scripts_the_fast_reader_does_not_understand_fall_back_to_alembic(
    tmp_path: Path, down_revision: str
) -> None:
    versions = tmp_path / "versions"
    shutil.copytree(MIGRATIONS / "versions", versions, ignore=shutil.ignore_patterns("__pycache__"))
    (versions / "9998_odd.py").write_text(f'revision = "9998"\ndown_revision = {down_revision}\n')
    assert shipped_head(versions) is None


def test_an_unreadable_version_table_takes_the_slow_path(db: Database) -> None:
    with db.engine.begin() as connection:
        connection.execute(text("DELETE FROM alembic_version"))
    assert db.stamped_revisions() == set()
    assert not db.schema_is_current()
    with pytest.raises(Exception, match="already exists"):
        db.upgrade()  # Alembic, not the fast path, decides: here it refuses to recreate


# -- what starting a command imports ---------------------------------------------------
_PROBE = """
import gc, json, sys
out, args = sys.argv[1], json.loads(sys.argv[2])
sys.argv = ["jitaccess", *args]
from jitaccess.cli import main
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
with open(out, "w") as handle:
    json.dump({"code": code, "modules": sorted(sys.modules), "gc": gc.isenabled()}, handle)
"""


def imported_by(tmp_path: Path, *args: str) -> set[str]:
    out = tmp_path / "modules.json"
    env = {
        **os.environ,
        "JITACCESS_DATABASE_URL": f"sqlite:///{tmp_path / 'j.db'}",
        "SLACK_BOT_TOKEN": "xoxb-not-used",  # a laptop with Slack settings in .env
    }
    subprocess.run(
        [sys.executable, "-c", _PROBE, str(out), json.dumps(list(args))],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
    )
    result = json.loads(out.read_text())
    assert result["code"] in (0, None), result["code"]
    assert result["gc"], "main() paused the cyclic GC for start-up and never resumed it"
    return {name.split(".")[0] for name in result["modules"]} | set(result["modules"])


SERVE_ONLY = {"slack_bolt", "slack_sdk", "apscheduler", "waitress", "prometheus_client"}
BACKENDS = {"azure", "jitaccess.providers.azure"}


def test_help_imports_neither_the_store_nor_the_service(tmp_path: Path) -> None:
    modules = imported_by(tmp_path, "--help")
    heavy = {"sqlalchemy", "alembic", "pydantic_settings", "jitaccess.app.service", "yaml"}
    assert modules & (heavy | SERVE_ONLY | BACKENDS) == set()


def test_read_commands_import_no_migration_tool_scheduler_slack_or_backend(
    tmp_path: Path,
) -> None:
    Database(f"sqlite:///{tmp_path / 'j.db'}").upgrade()
    for args in (("apps", "list"), ("requests", "list")):
        modules = imported_by(tmp_path, *args)
        assert "jitaccess.app.service" in modules
        assert modules & ({"alembic", "statemachine.contrib"} | SERVE_ONLY | BACKENDS) == set()


def test_a_command_resumes_the_gc_once_its_container_is_built(cli: Cli) -> None:
    """main() pauses the cyclic GC for start-up; a command's own work runs with it."""
    import gc

    seen: list[bool] = []
    original = Database.transaction

    def spy(self: Database, **kwargs: Any) -> Any:
        seen.append(gc.isenabled())
        return original(self, **kwargs)

    gc.disable()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(Database, "transaction", spy)
            cli("apps", "list")
    finally:
        gc.unfreeze()
        gc.enable()
    assert seen and all(seen)
