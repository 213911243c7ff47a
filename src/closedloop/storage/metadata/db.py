"""The metadata store: engine set-up, transactions and the schema check.

SQLite (the default) runs in WAL mode: reads never block; every write transaction starts with
``BEGIN IMMEDIATE`` so that writers queue on the database lock (``busy_timeout``) instead of failing
mid-transaction. PostgreSQL uses ordinary transactions with row locks where ordering matters.

At start-up the schema revision is compared with this release's Alembic head: an empty database is
created at head; an older one is refused with the command that upgrades it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.pool import NullPool

from closedloop.errors import ConfigError, SchemaVersionError, StoreError
from closedloop.storage.failures import one_line

HERE = Path(__file__).parent
UPGRADE_HINT = "Run `closedloop db upgrade` (back up the database first)."


def _alembic_config(connection: Connection | None = None) -> Any:
    from alembic.config import Config

    config = Config(str(HERE / "alembic.ini"))
    config.set_main_option("script_location", str(HERE / "migrations"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


_REVISION = re.compile(r"^(down_revision|revision)\s*(?::[^=]*)?=\s*(.+?)\s*$", re.MULTILINE)


def _linear_head() -> str | None:
    """The head of a linear migration chain, read from the files without importing alembic
    (which costs a CLI command a quarter of a second); None when the chain is not simple."""
    down: dict[str, str | None] = {}
    for path in (HERE / "migrations" / "versions").glob("*.py"):
        found = dict(_REVISION.findall(path.read_text(encoding="utf-8")))
        if "revision" not in found:
            continue
        revision, parent = found["revision"], found.get("down_revision", "None")
        if not revision.startswith('"') or not (parent == "None" or parent.startswith('"')):
            return None
        down[revision.strip('"')] = None if parent == "None" else parent.strip('"')
    heads = set(down) - set(down.values())
    return heads.pop() if len(heads) == 1 else None


def head_revision() -> str:
    """The schema revision this release of closedloop expects."""
    head = _linear_head()
    if head is not None:
        return head
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def known_revisions() -> set[str]:
    """Every schema revision in this release's migration chain."""
    from alembic.script import ScriptDirectory

    return {s.revision for s in ScriptDirectory.from_config(_alembic_config()).walk_revisions()}


def _unknown_revision(url: str, revision: str) -> SchemaVersionError:
    return SchemaVersionError(
        f"The metadata store at {url} has schema revision {revision!r}, which this closedloop "
        "does not know: it was written by a newer closedloop, or changed by hand.",
        hint="Upgrade closedloop (pip install -U closedloop), or restore the database from backup.",
    )


def _normalise_url(url: str) -> str:
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _sqlite_engine(url: str) -> Engine:
    path = url[len("sqlite:///") :]
    if path and path != ":memory:":
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"Cannot create the metadata store's folder {Path(path).parent}: {one_line(exc)}",
                hint="Check store.metadata_url and the folder's permissions.",
            ) from exc
    engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": 60})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("closedloop_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _revision(conn: Connection) -> str | None:
    if not inspect(conn).has_table("alembic_version"):
        return None
    value = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return None if value is None else str(value)


class MetadataStore:
    """A connection to the metadata database."""

    def __init__(self, url: str, *, check_schema: bool = True) -> None:
        self.url = url
        real_url = _normalise_url(url)
        try:
            if real_url.startswith("sqlite"):
                self.engine = _sqlite_engine(real_url)
            elif real_url.startswith("postgresql"):
                self.engine = create_engine(
                    real_url, pool_pre_ping=True, pool_size=5, connect_args={"connect_timeout": 10}
                )
            else:
                raise ConfigError(
                    f"Unsupported metadata URL {url!r}.",
                    hint="Use sqlite:///path/to/metadata.db or postgresql://user@host:port/db.",
                )
        except ModuleNotFoundError as exc:
            raise ConfigError(
                f"The driver for {url!r} is not installed ({exc.name}).",
                hint="pip install 'closedloop[postgres]'",
            ) from exc
        self.dialect = self.engine.dialect.name
        if check_schema:
            self.ensure_schema()

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction."""
        with self._errors(), self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction: committed on success, rolled back on any error."""
        with self._errors(), self.engine.connect() as conn:
            conn.execution_options(closedloop_write=True)
            with conn.begin():
                yield conn

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (OperationalError, InterfaceError) as exc:
            raise StoreError(
                f"The metadata store at {self.display_url} cannot be used: "
                f"{one_line(exc.orig or exc)}",
                hint="Check that the database is running and reachable (store.metadata_url).",
            ) from exc

    @property
    def display_url(self) -> str:
        """The URL without a password."""
        return self.engine.url.render_as_string(hide_password=True)

    def current_revision(self) -> str | None:
        """The schema revision recorded in the database (None for an empty database)."""
        with self.read() as conn:
            return _revision(conn)

    def upgrade(self) -> tuple[str | None, str]:
        """Migrate the schema to this release's head; returns (before, after).

        Runs under a database-wide lock (``BEGIN IMMEDIATE`` on SQLite, an advisory lock on
        PostgreSQL) and re-reads the revision inside it, so racing processes migrate once.
        """
        from alembic import command

        from closedloop.storage.metadata.tables import metadata

        with self.write() as conn:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(7260315)"))
            before = _revision(conn)
            if before is None:
                ours = set(metadata.tables) & set(inspect(conn).get_table_names())
                if ours:
                    raise SchemaVersionError(
                        f"{self.display_url} holds closedloop tables ({', '.join(sorted(ours))}) "
                        "but no schema revision; it was not created by closedloop's migrations.",
                        hint="Point closedloop at an empty database.",
                    )
            if before != head_revision():
                if before is not None and before not in known_revisions():
                    raise _unknown_revision(self.display_url, before)
                command.upgrade(_alembic_config(conn), "head")
        return before, head_revision()

    def ensure_schema(self) -> None:
        """Create an empty database at head; refuse an outdated or unknown schema."""
        current = self.current_revision()
        head = head_revision()
        if current == head:
            return
        if current is None:
            self.upgrade()
            return
        if current not in known_revisions():
            raise _unknown_revision(self.display_url, current)
        raise SchemaVersionError(
            f"The metadata store at {self.display_url} has schema revision {current!r}; "
            f"this closedloop expects {head!r}.",
            hint=UPGRADE_HINT,
        )

    def store_id(self) -> str:
        """This metadata store's id, named by its artifact store's marker (created with the
        schema; made again here if the row went missing)."""
        import uuid
        from datetime import UTC, datetime

        from sqlalchemy import select

        from closedloop.storage.metadata.tables import store_identity

        with self.read() as conn:
            found = conn.execute(select(store_identity.c.id)).scalar()
        if found is not None:
            return str(found)
        with self.write() as conn:
            found = conn.execute(select(store_identity.c.id)).scalar()
            if found is None:
                found = str(uuid.uuid4())
                conn.execute(store_identity.insert().values(id=found, created_at=datetime.now(UTC)))
        return str(found)

    def referenced_artifact(self) -> str | None:
        """The sha256 of the newest artifact this store records (a version's model, else a run
        artifact), or None when it records none."""
        from sqlalchemy import select

        from closedloop.storage.metadata.tables import run_artifacts, versions

        with self.read() as conn:
            sha = conn.execute(
                select(versions.c.artifact_sha256).order_by(versions.c.id.desc()).limit(1)
            ).scalar()
            if sha is None:
                sha = conn.execute(select(run_artifacts.c.sha256).limit(1)).scalar()
        return None if sha is None else str(sha)

    def dispose(self) -> None:
        self.engine.dispose()
