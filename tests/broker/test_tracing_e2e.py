"""One trace from a Flask request through the relay to a handler in another process, and back.

The test process runs the desk's Flask app (instrumented by opentelemetry-instrumentation-flask:
the request is a SERVER span) and a Relay to the bundled broker; ``eventseam worker --context
triage`` runs in a subprocess with its own in-memory exporter (tests.broker.tracing_app) and
writes its spans to a file when it exits. Expected trace, one trace id throughout:

    POST /tickets (SERVER, web)
      └─ send <prefix>desk (PRODUCER, relay)
           └─ process <prefix>desk (CONSUMER, worker)
                └─ triage.assess (the handler's span, worker)
                     └─ send <prefix>triage (PRODUCER, relay: the handler's follow-up)
"""

from __future__ import annotations

import itertools
import json
import os
import signal
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread
import pytest
from opentelemetry.instrumentation.flask import FlaskInstrumentor

from engine.integrations.flask import stop_seam
from tests.broker.tracing_app import ASSESS, HANDLER, db, settings, web_app
from tests.kafka_broker import create_outbox, relay_running, wait_for
from tests.reliability.processes import running_worker
from tests.tracing_support import installed_provider, only, span_rows

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from typing import Any

    from flask import Flask
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from outbox.bundled_broker import BundledBroker

pytestmark = [pytest.mark.anyio, pytest.mark.broker, pytest.mark.postgres]

REPO = Path(__file__).resolve().parents[2]
#: The factory the worker subprocess loads (``--app``).
APP = "tests.broker.tracing_app:worker_app"


@asynccontextmanager
async def instrumented(app: Flask) -> AsyncIterator[Flask]:
    """``app`` with OpenTelemetry's Flask instrumentation; uninstrumented and stopped afterwards."""
    FlaskInstrumentor().instrument_app(app)  # type: ignore[no-untyped-call]  # unannotated
    try:
        yield app
    finally:
        FlaskInstrumentor().uninstrument_app(app)  # type: ignore[no-untyped-call]  # unannotated
        await anyio.to_thread.run_sync(stop_seam, app)  # blocks: never on the event loop
        with app.app_context():
            db.engine.dispose()


def sent_spans(exporter: InMemorySpanExporter, topic: str) -> list[Any]:
    """Finished send spans of ``topic`` in this process."""
    return [span for span in exporter.get_finished_spans() if span.name == f"send {topic}"]


async def test_one_trace_from_the_web_request_to_the_handler_in_a_worker_process(
    postgres_url: str, kafka_broker: BundledBroker, topic_prefix: str, tmp_path: Path
) -> None:
    """The request span parents the relay's send span, which parents the worker's process span, which parents the handler's span, whose follow-up's send span closes the loop."""
    bootstrap = kafka_broker.bootstrap_servers
    spans_file, log = tmp_path / "worker-spans.json", tmp_path / "worker.log"
    environment = {
        **os.environ,
        "TRACING_TEST_DATABASE": postgres_url,
        "TRACING_TEST_BOOTSTRAP": bootstrap,
        "TRACING_TEST_PREFIX": topic_prefix,
        "TRACING_TEST_SPANS": str(spans_file),
        "PYTHONPATH": str(REPO),
    }
    create_outbox(postgres_url).dispose()
    with installed_provider() as exporter:
        app_settings = settings(postgres_url, bootstrap, topic_prefix)
        async with instrumented(web_app(postgres_url, bootstrap, topic_prefix)) as app:
            with running_worker(APP, ["triage"], environment, log) as worker:
                async with relay_running(app_settings):
                    response = await anyio.to_thread.run_sync(app.test_client().post, "/tickets")
                    assert response.status_code == 201, response.text
                    await wait_for(
                        lambda: sent_spans(exporter, f"{topic_prefix}triage"),
                        timeout=90,
                        message=f"the worker's follow-up was relayed; see {log}",
                    )
                worker.send_signal(signal.SIGTERM)
                await anyio.to_thread.run_sync(worker.wait, 60)
        assert worker.returncode == 0, log.read_text()
        web = span_rows(exporter.get_finished_spans())
    assert spans_file.exists(), log.read_text()
    remote = json.loads(spans_file.read_text())
    event_id = response.json["event_id"] if response.json else None

    request = only(web, kind="SERVER")
    send = only(web, name=f"send {topic_prefix}desk")
    process = only(remote, name=f"process {topic_prefix}desk")
    assess = only(remote, name=ASSESS)
    follow_up = only(web, name=f"send {topic_prefix}triage")
    assert request["name"] == "POST /tickets"
    assert (send["kind"], process["kind"], follow_up["kind"]) == (
        "PRODUCER",
        "CONSUMER",
        "PRODUCER",
    )
    chain = [request, send, process, assess, follow_up]
    assert {span["trace_id"] for span in chain} == {request["trace_id"]}
    for parent, child in itertools.pairwise(chain):
        assert child["parent_id"] == parent["span_id"], (parent["name"], child["name"])
    assert send["attributes"]["messaging.message.id"] == event_id
    assert process["attributes"]["messaging.message.id"] == event_id
    assert process["attributes"]["messaging.consumer.group.name"] == f"{topic_prefix}g.{HANDLER}"
    assert process["attributes"]["messaging.destination.name"] == f"{topic_prefix}desk"
    assert process["attributes"]["messaging.destination.partition.id"] == "0"
    assert process["links"] == [send["span_id"]]
