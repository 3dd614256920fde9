"""eventseam's Alembic history: no drift from the canonical tables, reversible, host-safe."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import Connection, create_engine, inspect, make_url, text

from engine.cli import main
from engine.modes import Mode
from engine.seam import EventSeam
from engine.settings import load_settings
from outbox import migrate
from outbox.errors import MigrationError
from outbox.writer import write
from tests.integration.test_writer import make_records

if TYPE_CHECKING:
    from collections.abc import Iterator


REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def reference_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """A second fresh database of the same kind, built with ``metadata.create_all``."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        yield f"sqlite:///{tmp_path / 'reference.db'}"
        return
    name = f"{url.database}_ref"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def eventseam_tables(connection: Connection) -> set[str]:
    """Tables whose names start with ``eventseam_``."""
    return {name for name in inspect(connection).get_table_names() if name.startswith("eventseam_")}


def raw_index_ddl(connection: Connection) -> dict[str, str]:
    """The database's own text of every eventseam index (partial predicates included)."""
    if connection.dialect.name == "postgresql":
        query = "SELECT indexname, indexdef, tablename FROM pg_indexes"
    else:
        query = "SELECT name, sql, tbl_name FROM sqlite_master WHERE type = 'index'"
    return {
        str(name): str(ddl)
        for name, ddl, table in connection.execute(text(query))
        if table.startswith("eventseam_") and table != migrate.VERSION_TABLE
    }


def schema_of(connection: Connection) -> dict[str, Any]:
    """Everything the inspector reports about the eventseam tables (version table excluded)."""
    inspector = inspect(connection)
    schema: dict[str, Any] = {"index_ddl": raw_index_ddl(connection)}
    for table in sorted(eventseam_tables(connection) - {migrate.VERSION_TABLE}):
        columns = [
            {**column, "type": column["type"].compile(dialect=connection.dialect)}
            for column in inspector.get_columns(table)
        ]
        schema[table] = {
            "columns": columns,
            "pk": inspector.get_pk_constraint(table),
            "unique": inspector.get_unique_constraints(table),
            "indexes": [
                {
                    **index,
                    "dialect_options": {
                        k: str(v) for k, v in index.get("dialect_options", {}).items()
                    },
                }
                for index in inspector.get_indexes(table)
            ],
            "checks": inspector.get_check_constraints(table),
        }
    return schema


def test_upgrade_has_no_drift_from_the_canonical_tables(
    database_url: str, reference_url: str
) -> None:
    """A fresh upgrade equals metadata.create_all: autogenerate finds nothing, the inspector neither."""
    metadata = migrate.schema_metadata()
    migrate.upgrade(database_url)
    migrated = create_engine(database_url)
    reference = create_engine(reference_url)
    try:
        metadata.create_all(reference)
        with migrated.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={
                    "version_table": migrate.VERSION_TABLE,
                    "compare_server_default": True,
                    "compare_type": True,
                },
            )
            assert compare_metadata(context, metadata) == []
            assert eventseam_tables(connection) == {*metadata.tables, migrate.VERSION_TABLE}
            migrated_schema = schema_of(connection)
        with reference.connect() as connection:
            assert migrated_schema == schema_of(connection)
        assert "WHERE" in migrated_schema["index_ddl"]["ix_eventseam_outbox_pending"].upper()
    finally:
        migrated.dispose()
        reference.dispose()


def test_upgrade_downgrade_upgrade(database_url: str) -> None:
    """The history goes up, all the way down, and up again, and the outbox takes writes after."""
    assert migrate.current(database_url) is None
    migrate.upgrade(database_url)
    assert migrate.current(database_url) == migrate.head()
    migrate.upgrade(database_url)  # already at head: nothing to do
    migrate.downgrade(database_url, "base")
    assert migrate.current(database_url) is None
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            assert eventseam_tables(connection) == {migrate.VERSION_TABLE}
        migrate.upgrade(engine)
        assert migrate.current(engine) == migrate.head()
        with engine.begin() as connection:
            write(connection, make_records(2), Mode.DUAL)
            assert connection.scalar(text("SELECT count(*) FROM eventseam_outbox")) == 2
    finally:
        engine.dispose()


def test_host_alembic_history_is_untouched(database_url: str) -> None:
    """The host's own alembic_version row and tables survive upgrade and downgrade."""
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
            )
            connection.execute(text("INSERT INTO alembic_version VALUES ('host_0042')"))
            connection.execute(text("CREATE TABLE host_orders (id INTEGER PRIMARY KEY)"))
        migrate.upgrade(engine)
        migrate.downgrade(engine, "base")
        migrate.upgrade(engine)
        with engine.connect() as connection:
            assert connection.scalars(text("SELECT version_num FROM alembic_version")).all() == [
                "host_0042"
            ]
            assert "host_orders" in inspect(connection).get_table_names()
            version = connection.scalars(
                text(f"SELECT version_num FROM {migrate.VERSION_TABLE}")
            ).all()
        assert version == [migrate.head()]
    finally:
        engine.dispose()


def test_upgrade_joins_an_open_connection_transaction(postgres_url: str) -> None:
    """On PostgreSQL an upgrade on the caller's Connection commits or rolls back with it."""
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as connection:
            connection.begin()
            migrate.upgrade(connection)
            assert migrate.current(connection) == migrate.head()
            connection.rollback()
        assert migrate.current(engine) is None
    finally:
        engine.dispose()


def test_unknown_revision_raises_migration_error(sqlite_url: str) -> None:
    """An unknown revision is a MigrationError naming the action and the database."""
    with pytest.raises(MigrationError, match=r"'upgrade nope' failed on sqlite:///.*nope"):
        migrate.upgrade(sqlite_url, "nope")


def test_unreachable_database_raises_migration_error(tmp_path: Path) -> None:
    """A database that cannot be opened is a MigrationError, not a driver error."""
    with pytest.raises(MigrationError, match="unable to open database file"):
        migrate.upgrade(f"sqlite:///{tmp_path / 'missing' / 'dir' / 'x.db'}")


def test_password_is_masked_in_errors() -> None:
    """A failing URL is shown with its password masked."""
    with pytest.raises(MigrationError) as caught:
        migrate.upgrade("postgresql+psycopg://user:s3cret@127.0.0.1:1/nowhere")
    assert "s3cret" not in str(caught.value)
    assert "user:***@" in str(caught.value)


def test_cli_upgrade_current_downgrade(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`eventseam db` upgrades, reports and downgrades the database of --url or the settings."""
    runner = CliRunner()
    monkeypatch.setenv("EVENTSEAM_DATABASE_URL", sqlite_url)
    result = runner.invoke(main, ["db", "current"])
    assert result.exit_code == 0, result.output
    assert "not created" in result.output
    result = runner.invoke(main, ["db", "upgrade", "--url", sqlite_url])
    assert result.exit_code == 0, result.output
    assert f"at revision {migrate.head()}" in result.output
    result = runner.invoke(main, ["db", "current"])
    assert f"{migrate.head()} (head)" in result.output
    result = runner.invoke(main, ["db", "downgrade", "--url", sqlite_url, "base"], input="n\n")
    assert result.exit_code == 1
    assert migrate.current(sqlite_url) == migrate.head()
    result = runner.invoke(main, ["db", "downgrade", "--url", sqlite_url, "base", "--yes"])
    assert result.exit_code == 0, result.output
    assert migrate.current(sqlite_url) is None


def app_on_its_own_database() -> EventSeam:
    """``--app`` factory: an application whose database is $MIGRATIONS_TEST_APP_DATABASE."""
    return EventSeam(load_settings(database_url=os.environ["MIGRATIONS_TEST_APP_DATABASE"]), [])


def test_cli_works_on_the_database_of_an_application_named_on_purpose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --app, `eventseam db` and `outbox parked` take that application's database; without
    it, the environment's."""
    app_url, env_url = f"sqlite:///{tmp_path / 'app.db'}", f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("MIGRATIONS_TEST_APP_DATABASE", app_url)
    monkeypatch.setenv("EVENTSEAM_DATABASE_URL", env_url)
    app = ["--app", f"{__name__}:app_on_its_own_database"]
    runner = CliRunner()
    result = runner.invoke(main, [*app, "db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "app.db: eventseam schema at revision" in result.output
    assert (migrate.current(app_url), migrate.current(env_url)) == (migrate.head(), None)
    result = runner.invoke(main, [*app, "outbox", "parked", "list"])
    assert (result.exit_code, result.output) == (0, "no parked rows\n")
    result = runner.invoke(main, ["outbox", "parked", "list"])  # env.db has no tables
    assert result.exit_code == 1
    assert "no such table: eventseam_outbox" in result.output
    result = runner.invoke(main, ["db", "current"])
    assert result.exit_code == 0, result.output
    assert "env.db: not created" in result.output


def test_cli_reports_failures_without_a_traceback(sqlite_url: str) -> None:
    """A failed migration exits with status 1 and the MigrationError message."""
    result = CliRunner().invoke(main, ["db", "upgrade", "--url", sqlite_url, "nope"])
    assert result.exit_code == 1
    assert "Error: eventseam schema migration 'upgrade nope' failed" in result.output


def test_concurrent_upgrades_serialize(postgres_url: str) -> None:
    """Several processes upgrading one PostgreSQL database at once all succeed (advisory lock)."""
    code = "import sys; from outbox import migrate; migrate.upgrade(sys.argv[1])"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code, postgres_url],
            cwd=REPO_ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [(process.communicate(timeout=120)[1], process.returncode) for process in processes]
    assert [stderr for stderr, returncode in results if returncode != 0] == []
    assert migrate.current(postgres_url) == migrate.head()


def test_threads_share_one_process_safely(sqlite_url: str) -> None:
    """Upgrades from several threads of one process run one at a time and all succeed."""
    errors: list[BaseException] = []

    def upgrade() -> None:
        try:
            migrate.upgrade(sqlite_url)
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=upgrade) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert migrate.current(sqlite_url) == migrate.head()
