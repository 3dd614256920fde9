"""Management commands: eventseam_flags and eventseam_relay run the CLI's entry points with Django's settings."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections, transaction
from django.test import override_settings
from sqlalchemy import create_engine

from engine.integrations.django import get_config, publish
from outbox import migrate
from tests.django import settings as test_settings
from tests.django.shop.events import InvoiceIssued

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO_ROOT = Path(__file__).resolve().parents[2]


def flag_rows(alias: str) -> list[tuple[Any, ...]]:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT context, mode, updated_by FROM eventseam_flags ORDER BY context")
        return [tuple(row) for row in cursor.fetchall()]


def test_flags_set_show_clear_on_the_django_database(
    alias: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """eventseam_flags writes the flag table of settings.EVENTSEAM['database'] and lists it."""
    with override_settings(EVENTSEAM={**test_settings.EVENTSEAM, "database": alias}):
        call_command("eventseam_flags", "set", "orders", "dual", "--by", "tester")
        assert flag_rows(alias) == [("orders", "dual", "tester")]
        assert "orders: local -> dual" in capsys.readouterr().out
        call_command("eventseam_flags", "show")
        shown = capsys.readouterr().out
        assert "orders" in shown
        assert "billing" in shown
        call_command("eventseam_flags", "clear", "orders")
        assert flag_rows(alias) == []


def test_flags_unknown_context_fails_with_the_cli_status(sqlite_alias: str) -> None:
    """An unknown context makes the command fail with status 2, as `eventseam flags` does, and
    the CommandError says why."""
    with pytest.raises(CommandError) as caught:
        call_command("eventseam_flags", "set", "nope", "dual")
    assert caught.value.returncode == 2
    assert "unknown context 'nope'" in str(caught.value)
    assert flag_rows(sqlite_alias) == []


def test_relay_without_brokers_says_how_to_configure_one() -> None:
    """Without bootstrap servers (and no --bundled-broker) the relay command refuses to start."""
    with pytest.raises(CommandError, match=r"EVENTSEAM\['kafka'\]\['bootstrap_servers'\]"):
        call_command("eventseam_relay")


@pytest.fixture
def relay_tables(sqlite_alias: str) -> Iterator[str]:
    """The SQLite alias with the relay's lease tables.

    The shipped history does not create them yet (nor, then, do the Django migrations): until it
    does, they are created here for this test and dropped after it.
    """
    if "outbox.lease_table" in migrate.TABLE_MODULES:
        yield sqlite_alias
        return
    # Imported here: importing outbox.lease_table adds its tables to the shared metadata, which
    # the Alembic drift test (tests/integration) compares with the history.
    from outbox.lease_table import relay_lease, relay_member

    engine = create_engine(get_config().settings.database_url)
    tables = [relay_lease, relay_member]
    try:
        for table in tables:
            table.create(engine)
        yield sqlite_alias
    finally:
        for table in tables:
            table.drop(engine, checkfirst=True)
        engine.dispose()


@pytest.mark.broker
def test_relay_command_forwards_django_outbox_rows_to_kafka(relay_tables: str) -> None:
    """`manage.py eventseam_relay` sends a row Django committed to Kafka, serves /readyz and /metrics (counting it), then stops on SIGTERM."""
    from outbox.bundled_broker import free_port
    from tests.kafka_broker import read_topic, start_broker, unique_prefix

    with transaction.atomic(using=relay_tables):
        publish(InvoiceIssued(aggregate_id="R1", number="R1"), using=relay_tables)
    broker = start_broker()
    prefix = unique_prefix()
    env = {
        **os.environ,
        "EVENTSEAM_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "EVENTSEAM_RELAY__TOPIC_PREFIX": prefix,
        "EVENTSEAM_RELAY__POLL_INTERVAL": "0.05",
    }
    port, metrics_port = free_port(), free_port()
    command = [sys.executable, "-m", "django", "eventseam_relay", "--log-level", "warning"]
    command += ["--health-port", str(port), "--health-addr", "127.0.0.1"]
    command += ["--metrics-port", str(metrics_port), "--metrics-addr", "127.0.0.1"]
    relay = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_until_sent(relay_tables)
        read = functools.partial(read_topic, expected=1)
        records = anyio.run(read, broker.bootstrap_servers, f"{prefix}billing")
        assert [(r.key, r.header("ce_type")) for r in records] == [
            (b"R1", b"billing.InvoiceIssued")
        ]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            assert json.loads(response.read())["checks"]["relay"]["state"] == "running"
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(metrics_url, timeout=5) as response:
            exposed = response.read().decode()
        published = 'eventseam_relay_messages_total{context="billing",outcome="published"} 1.0'
        assert published in exposed
    finally:
        relay.send_signal(signal.SIGTERM)
        output, _ = relay.communicate(timeout=60)
        broker.stop()
    assert relay.returncode == 0, output


def wait_until_sent(alias: str, timeout: float = 60.0) -> None:
    """Wait until the outbox holds no pending row (the relay deletes rows once acked)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT count(*) FROM eventseam_outbox WHERE status = 'pending'")
            if cursor.fetchone() == (0,):
                return
        time.sleep(0.05)
    pytest.fail("the relay did not mark the row sent")


def run_manage(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m django ARGS`` in the test project (same databases), in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "django", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_worker_refuses_an_unknown_context() -> None:
    """eventseam_worker loads this project's EventSeam and exits 2 for an unknown context."""
    result = run_manage("eventseam_worker", "--context", "nope")
    assert result.returncode == 2, result.stderr
    assert "unknown context 'nope'" in result.stderr


def test_worker_needs_kafka() -> None:
    """eventseam_worker on a real context gets as far as the missing Kafka settings (status 1)."""
    result = run_manage("eventseam_worker", "--context", "billing")
    assert result.returncode == 1, result.stderr
    assert "no Kafka bootstrap servers" in result.stderr


def test_status_reports_the_backlog_of_the_django_database(
    sqlite_alias: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """eventseam_status counts the pending outbox rows Django's publish wrote, per context."""
    with override_settings(EVENTSEAM={**test_settings.EVENTSEAM, "database": sqlite_alias}):
        with transaction.atomic(using=sqlite_alias):
            publish(InvoiceIssued(aggregate_id="inv-9", number="inv-9"), using=sqlite_alias)
        call_command("eventseam_status", "--json")
    report = capsys.readouterr().out
    assert '"billing"' in report
    assert '"backlog": 1' in report


def test_operator_commands_run_on_the_project(
    sqlite_alias: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """eventseam_contexts, _acl, _dlq and _replay load this project's contexts, settings and
    database; eventseam_parity says it needs Kafka with the CLI's exit status."""
    call_command("eventseam_contexts", "--no-flags")
    table = capsys.readouterr().out
    assert all(name in table for name in ("orders", "audit", "billing"))
    call_command("eventseam_acl", "--json")
    resources = {rule["resource"] for rule in json.loads(capsys.readouterr().out)}
    assert {"eventseam.orders", "eventseam.billing"} <= resources
    call_command("eventseam_dlq", "list", "--no-kafka")
    assert "no dead letters" in capsys.readouterr().out
    call_command("eventseam_replay", "--context", "audit", "--since", "1h", "--dry-run", "--json")
    assert json.loads(capsys.readouterr().out)["context"] == "audit"
    with pytest.raises(CommandError) as refused:
        call_command("eventseam_parity", "--context", "orders")
    assert refused.value.returncode == 2
    assert "parity reads Kafka" in str(refused.value)


def test_personal_data_and_inbox_commands_use_the_projects_database(
    sqlite_alias: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """eventseam_erase, eventseam_keys and eventseam_inbox open the database Django writes
    (database_url derived from DATABASES), not the environment's default."""
    call_command("eventseam_erase", "--subject", "c-1")
    assert "erased 'c-1': no live key" in capsys.readouterr().out
    call_command("eventseam_keys", "show", "--subject", "c-1")
    assert "'c-1': no keys" in capsys.readouterr().out
    call_command("eventseam_inbox", "purge")
    assert capsys.readouterr().out.startswith("0 inbox rows processed")
