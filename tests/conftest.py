"""Suite-wide fixtures: the anyio backend and service availability policy.

Services a test needs are never skipped silently: outside CI a missing PostgreSQL makes its tests
skip with a loud reason; in CI (``CI=true``) it makes them fail.
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import TYPE_CHECKING

import pytest
import structlog
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture
def anyio_backend() -> str:
    """The engine runs on asyncio (aiokafka is asyncio-only)."""
    return "asyncio"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Undo what a command run in-process set up for "its process" (engine.cli.logging):
    structlog's configuration and the root logging handler, both writing to this test's
    output streams, which close with it (a later test's log line would fail on them)."""
    yield
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_eventseam_handler", False):
            root.removeHandler(handler)
            root.setLevel(logging.WARNING)


def require_service(name: str, reason: str) -> None:
    """Fail in CI, skip loudly elsewhere, when a service the test needs is missing."""
    message = f"{name} is not available: {reason}"
    if IN_CI:
        pytest.fail(message + " (CI requires it)")
    pytest.skip("SERVICE MISSING - " + message)


POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def _postgres_admin_engine() -> Engine:
    return create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[URL]:
    """The admin URL of the PostgreSQL server (fails in CI, skips loudly elsewhere, when down)."""
    admin = _postgres_admin_engine()
    try:
        with admin.connect() as connection:
            connection.execute(text("SELECT 1"))
    except OperationalError as exc:
        admin.dispose()
        require_service("PostgreSQL", f"{POSTGRES_ADMIN_URL}: {exc.orig}")
    yield make_url(POSTGRES_ADMIN_URL)
    admin.dispose()


@pytest.fixture
def postgres_url(postgres_server: URL) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test (sync psycopg URL); dropped afterwards."""
    name = f"eventseam_test_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    admin = _postgres_admin_engine()
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield postgres_server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite database file for one test."""
    return f"sqlite:///{tmp_path / 'eventseam.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """A fresh database URL, once for SQLite and once for PostgreSQL."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(fixture))


def async_url(url: str) -> str:
    """The async-driver twin of a sync URL (aiosqlite / psycopg async)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
