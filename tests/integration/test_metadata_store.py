"""The metadata store: created at head on first use, outdated schemas refused with the fix."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from closedloop.errors import ConfigError, SchemaVersionError, StoreError
from closedloop.storage.metadata.db import MetadataStore, head_revision


def test_an_empty_database_is_created_at_the_current_revision(metadata_url: str) -> None:
    store = MetadataStore(metadata_url)
    assert store.current_revision() == head_revision()
    store.dispose()


def _downgrade_to(store: MetadataStore, revision: str) -> None:
    from alembic import command

    from closedloop.storage.metadata.db import _alembic_config

    with store.write() as conn:
        command.downgrade(_alembic_config(conn), revision)


def test_an_outdated_schema_is_refused_with_the_upgrade_command(metadata_url: str) -> None:
    store = MetadataStore(metadata_url)
    _downgrade_to(store, "0001")
    store.dispose()
    with pytest.raises(SchemaVersionError, match="schema revision '0001'") as caught:
        MetadataStore(metadata_url)
    assert caught.value.hint is not None
    assert "closedloop db upgrade" in caught.value.hint


def test_db_upgrade_migrates_an_outdated_schema_and_keeps_the_data(metadata_url: str) -> None:
    store = MetadataStore(metadata_url)
    with store.write() as conn:
        conn.execute(
            text(
                "INSERT INTO models (name, description, created_at) "
                "VALUES ('kept', '', CURRENT_TIMESTAMP)"
            )
        )
    _downgrade_to(store, "0001")
    assert store.upgrade() == ("0001", head_revision())
    store.dispose()
    again = MetadataStore(metadata_url)
    with again.read() as conn:
        assert conn.execute(text("SELECT name FROM models")).scalar() == "kept"
    again.dispose()


def test_a_revision_this_release_does_not_know_is_refused_without_migrating(
    metadata_url: str,
) -> None:
    store = MetadataStore(metadata_url)
    with store.write() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(SchemaVersionError, match="does not know") as caught:
        store.upgrade()
    assert "Upgrade closedloop" in (caught.value.hint or "")
    store.dispose()
    with pytest.raises(SchemaVersionError, match="'9999'"):
        MetadataStore(metadata_url)


def test_closedloop_tables_without_a_revision_are_not_touched(metadata_url: str) -> None:
    store = MetadataStore(metadata_url)
    with store.write() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
    store.dispose()
    with pytest.raises(SchemaVersionError, match="no schema revision"):
        MetadataStore(metadata_url)


def test_sqlite_runs_in_wal_mode(sqlite_url: str) -> None:
    store = MetadataStore(sqlite_url)
    with store.read() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    store.dispose()


def test_an_unreachable_postgresql_is_a_store_error_naming_the_server() -> None:
    with pytest.raises(StoreError, match=r"127\.0\.0\.1:1"):
        MetadataStore("postgresql://nobody@127.0.0.1:1/none")


def test_an_unsupported_url_names_the_accepted_forms() -> None:
    with pytest.raises(ConfigError, match="Unsupported metadata URL 'mysql:") as caught:
        MetadataStore("mysql://root@localhost/db")
    assert "sqlite:///" in (caught.value.hint or "")
    assert "postgresql://" in (caught.value.hint or "")


def test_a_store_from_before_store_ids_gets_one_on_upgrade_and_keeps_it(
    metadata_url: str,
) -> None:
    store = MetadataStore(metadata_url)
    _downgrade_to(store, "0005")
    with store.read() as conn:
        assert not inspect(conn).has_table("store_identity")
    assert store.upgrade() == ("0005", head_revision())
    first = store.store_id()
    assert uuid.UUID(first) and store.store_id() == first
    store.dispose()
    again = MetadataStore(metadata_url)
    assert again.store_id() == first
    again.dispose()


def test_two_metadata_stores_have_different_ids(tmp_path: Path) -> None:
    one = MetadataStore(f"sqlite:///{tmp_path / 'one.db'}")
    two = MetadataStore(f"sqlite:///{tmp_path / 'two.db'}")
    assert one.store_id() != two.store_id()
    one.dispose()
    two.dispose()
