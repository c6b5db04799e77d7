"""Engine set-up and transactions, the same on SQLite and PostgreSQL.

SQLite: WAL, and every write transaction starts with ``BEGIN IMMEDIATE`` so
writers queue on the database lock instead of failing half-way with
"database is locked"; that also makes each use case serialisable there.
PostgreSQL: psycopg 3; rows are locked with ``FOR UPDATE`` (``SKIP LOCKED`` in
the sweep) so replicas never act twice.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from jitaccess.domain.errors import RuleViolation
from jitaccess.store import staged

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")

#: ``revision = "0004"`` and ``down_revision = "0003"`` (or ``None``) lines of a
#: migration script, with or without a type annotation.
_REVISION_LINE = re.compile(
    r"""^(down_revision|revision)\s*(?::[^=]*)?=\s*(?:["']([^"']+)["']|(None))\s*(?:\#.*)?$""",
    re.MULTILINE,
)


@functools.cache
def shipped_head(versions: Path) -> str | None:
    """The head revision of the migrations in ``versions``, read from the scripts' own
    ``revision``/``down_revision`` lines without importing Alembic; ``None`` when the
    scripts are not a plain chain this reader understands (a merge, a branch, a line it
    cannot parse), and then callers ask Alembic. A test keeps this equal to
    ``ScriptDirectory.get_current_head()``."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in versions.glob("*.py"):
        found: dict[str, list[str | None]] = {"revision": [], "down_revision": []}
        for match in _REVISION_LINE.finditer(script.read_text(encoding="utf-8")):
            found[match.group(1)].append(match.group(2))
        if len(found["revision"]) != 1 or len(found["down_revision"]) != 1:
            return None  # not one plain string revision and parent: let Alembic decide
        revision, parent = found["revision"][0], found["down_revision"][0]
        if revision is None or revision in revisions:
            return None
        revisions.add(revision)
        if parent is not None:
            parents.add(parent)
    heads = revisions - parents
    if len(heads) != 1 or not parents <= revisions:
        return None
    return heads.pop()


def _unstorable(value: Any) -> str | None:
    """The first NUL or lone surrogate in a statement parameter, if any."""
    if isinstance(value, str):
        if "\x00" in value:
            return "\x00"
        if not value.isascii():
            return next((c for c in value if 0xD800 <= ord(c) <= 0xDFFF), None)
        return None
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, list | tuple):
        return None
    return next((bad for bad in map(_unstorable, value) if bad is not None), None)


def _refuse_unstorable_text(
    _conn: Connection, _cursor: Any, _statement: str, parameters: Any, _context: Any, _many: bool
) -> None:
    """The last line of defence behind the rules' own checks: text that no database
    stores the same way (PostgreSQL refuses NUL; neither driver encodes a lone
    surrogate) is refused with a message, before the driver fails on it."""
    bad = _unstorable(parameters)
    if bad is not None:
        kind = "a NUL character" if bad == "\x00" else "an invalid character"
        raise RuleViolation(
            f"Some text you gave contains {kind} (U+{ord(bad):04X}) that cannot be stored: "
            "remove it and try again"
        )


def normalise_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` as psycopg 3 URLs."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from pysqlite so we can BEGIN IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")


class Database:
    """One engine and its sessions. ``transaction()`` is one use case's unit of work."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = normalise_url(url)
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite" and parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = {"echo": echo}
        if self.dialect == "postgresql":
            kwargs.update(pool_pre_ping=True, pool_size=10, max_overflow=10)
        self.engine = create_engine(self.url, **kwargs)
        if self.dialect == "sqlite":
            _sqlite_setup(self.engine)
        event.listen(self.engine, "before_cursor_execute", _refuse_unstorable_text)
        self._writer = sessionmaker(self.engine, expire_on_commit=False)
        self._commit_hooks: list[Callable[[Session], None]] = []
        self._write_lock = threading.RLock()
        event.listen(self._writer, "before_commit", staged.insert_staged)
        event.listen(self._writer, "after_commit", self._after_commit)
        self._reader = sessionmaker(
            self.engine.execution_options(sqlite_begin="DEFERRED"), expire_on_commit=False
        )

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextmanager
    def transaction(self, *, readonly: bool = False) -> Iterator[Session]:
        """Commit on success, roll back on any exception.

        On SQLite, write transactions of this process queue on a lock first: a thread
        then starts the moment the previous writer commits, instead of sleeping in
        SQLite's busy handler (which made a Slack click's tail latency hundreds of ms).
        """
        factory = self._reader if readonly else self._writer
        lock = self._write_lock if self.is_sqlite and not readonly else nullcontext()
        with lock, factory() as session, session.begin():
            yield session

    def on_commit(self, hook: Callable[[Session], None]) -> None:
        """Call ``hook(session)`` after each write transaction commits."""
        self._commit_hooks.append(hook)

    def _after_commit(self, session: Session) -> None:
        for hook in self._commit_hooks:
            hook(session)

    def dispose(self) -> None:
        self.engine.dispose()

    # -- migrations -------------------------------------------------------------
    def _alembic_config(self, connection: Connection) -> Config:
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        return config

    def stamped_revisions(self) -> set[str] | None:
        """The revisions in ``alembic_version``, read with one plain SELECT; ``None``
        when the table is not there (a new database) or cannot be read."""
        try:
            with self.engine.connect().execution_options(sqlite_begin="DEFERRED") as connection:
                rows = connection.execute(text("SELECT version_num FROM alembic_version"))
                return {row[0] for row in rows}
        except DBAPIError:
            return None

    def upgrade(self) -> None:
        """Bring the schema to the newest migration (the only way it is created).

        Every command and ``serve`` calls this first, so the common case (already at
        the head) is one SELECT of ``alembic_version`` compared with the head of the
        shipped scripts, without importing Alembic; anything else (a new database, a
        database behind or ahead, scripts the fast reader does not understand) goes
        through Alembic's own upgrade."""
        head = shipped_head(MIGRATIONS / "versions")
        if head is not None and self.stamped_revisions() == {head}:
            return
        from alembic import command

        with self.engine.begin() as connection:
            command.upgrade(self._alembic_config(connection), "head")

    def schema_is_current(self) -> bool:
        head = shipped_head(MIGRATIONS / "versions")
        if head is not None:
            return self.stamped_revisions() == {head}
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        with self.engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
            head = ScriptDirectory.from_config(self._alembic_config(connection)).get_current_head()
        return current == head
