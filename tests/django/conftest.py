"""Django for tests/django: the test project (tests.django.settings) on fresh databases.

Before Django starts, this module names a fresh SQLite file (alias ``default``) and a fresh
PostgreSQL database (alias ``pg``, created on first use, dropped at the end). The ``alias`` fixture
runs a test once per database; PostgreSQL tests fail in CI and skip loudly elsewhere when the
server is down (tests.conftest.require_service, through ``postgres_server``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from typing import TYPE_CHECKING

import django
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import POSTGRES_ADMIN_URL

_TMP = tempfile.mkdtemp(prefix="eventseam-django-")
os.environ["ES_DJANGO_TEST_SQLITE"] = os.path.join(_TMP, "django.db")
os.environ["ES_DJANGO_TEST_PG_NAME"] = f"eventseam_django_{os.getpid()}_{uuid.uuid4().hex[:8]}"
os.environ["ES_DJANGO_TEST_PG_URL"] = POSTGRES_ADMIN_URL
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.django.settings"
django.setup()

from django.core.management import call_command  # noqa: E402  (needs django.setup())
from django.db import connections  # noqa: E402

from engine.integrations.django import get_seam, reset_seam  # noqa: E402
from tests.django.shop.events import RECEIVED  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.engine import URL

#: Aliases migrated in this session (their tables are emptied after every test).
MIGRATED: set[str] = set()
ALIASES = {"sqlite": "default", "postgresql": "pg"}
TABLES = ("eventseam_outbox", "eventseam_flags", "eventseam_inbox", "shop_order")


def migrate(alias: str) -> None:
    """Apply every migration (the test app has none: its tables are synced) on ``alias``."""
    call_command("migrate", database=alias, run_syncdb=True, verbosity=0)
    MIGRATED.add(alias)


@pytest.fixture(scope="session", autouse=True)
def _temporary_directory() -> Iterator[None]:
    """Remove the SQLite database's directory at the end of the session."""
    yield
    connections.close_all()
    shutil.rmtree(_TMP, ignore_errors=True)


@pytest.fixture(scope="session")
def sqlite_alias() -> str:
    """The migrated SQLite alias."""
    migrate("default")
    return "default"


@pytest.fixture(scope="session")
def pg_alias(postgres_server: URL) -> Iterator[str]:
    """The migrated PostgreSQL alias, on a database created now and dropped at the end."""
    name = connections["pg"].settings_dict["NAME"]
    admin = create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        migrate("pg")
        yield "pg"
    finally:
        MIGRATED.discard("pg")
        connections["pg"].close()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=sorted(ALIASES))
def alias(request: pytest.FixtureRequest, sqlite_alias: str) -> str:
    """A migrated database alias, once for SQLite and once for PostgreSQL.

    The SQLite alias is migrated either way: it is ``default``, where the seam reads its flags.
    """
    return sqlite_alias if request.param == "sqlite" else str(request.getfixturevalue("pg_alias"))


@pytest.fixture(autouse=True)
def fresh_engine() -> Iterator[None]:
    """Each test starts with a new EventSeam, nothing received, and leaves empty tables."""
    reset_seam()
    RECEIVED.clear()
    yield
    reset_seam()
    RECEIVED.clear()
    for name in sorted(MIGRATED):
        with connections[name].cursor() as cursor:
            for table in TABLES:
                cursor.execute(f"DELETE FROM {table}")


def drain() -> None:
    """Wait until every event handed to the running bus was handled (no-op when not started)."""
    seam = get_seam()
    if seam.running:
        seam.bridge.call(seam.join)
