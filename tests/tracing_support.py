"""OpenTelemetry test helpers: a global SDK TracerProvider with an in-memory exporter, undone after.

``installed_provider()`` sets the global provider (eventseam checks it when a component is
built, so install it first) and resets the API's globals on exit with opentelemetry-test-utils'
``reset_trace_globals`` (the global provider can otherwise be set once per process).
``span_rows`` turns finished spans into plain dicts, the form the worker subprocess writes too.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.test.globals_test import reset_trace_globals

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from opentelemetry.sdk.trace import ReadableSpan


@contextmanager
def installed_provider() -> Iterator[InMemorySpanExporter]:
    """A global SDK TracerProvider exporting every finished span to the yielded exporter."""
    reset_trace_globals()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        provider.shutdown()
        reset_trace_globals()


def span_row(span: ReadableSpan) -> dict[str, Any]:
    """A finished span as JSON-friendly data: ids in hex, kind and status names, attributes."""
    context = span.get_span_context()
    assert context is not None
    parent = span.parent
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_id": None if parent is None else f"{parent.span_id:016x}",
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "links": [f"{link.context.span_id:016x}" for link in span.links],
    }


def span_rows(spans: Iterable[ReadableSpan]) -> list[dict[str, Any]]:
    """``span_row`` of each span, in the order given."""
    return [span_row(span) for span in spans]


def traceparent_ids(traceparent: str | bytes) -> tuple[str, str]:
    """(trace id, span id) a W3C traceparent names, read through the API's propagator."""
    from engine.tracing import parent_context

    context = trace.get_current_span(parent_context(traceparent)).get_span_context()
    assert context.is_valid, f"not a valid traceparent: {traceparent!r}"
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def only(rows: Iterable[dict[str, Any]], **match: Any) -> dict[str, Any]:
    """The one row whose fields equal ``match`` (fails listing the rows otherwise)."""
    rows = list(rows)
    found = [row for row in rows if all(row.get(key) == value for key, value in match.items())]
    assert len(found) == 1, f"expected one span with {match}, got {len(found)} among {rows}"
    return found[0]
