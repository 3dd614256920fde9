"""Context boundaries: a context may import another context's published events module, nothing else.

The check reads the import graph that grimp (import-linter's graph library) builds from source;
no module is executed. Every direct child of the root package (``contexts``) is a context, and:

1. a module of context X imports, from another context Y, only Y's events module (by default
   ``contexts.Y.events``, or modules under it) -- never ``contexts.Y`` itself (its ``__init__``
   declares the context and its handlers) nor ``.models``, ``.service``, ``.handlers``...;
2. an events module imports nothing else from the root package: it is the context's published
   language, so importing it can never drag another module in indirectly.

Together the two rules also exclude indirect leaks (X -> Y.events -> Y.models). Imports under
``if TYPE_CHECKING:`` count: a type-only import is coupling all the same.

    assert_context_boundaries("contexts")   # raises BoundaryViolationError listing each violation
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import BoundaryViolationError, ContextError

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from grimp import ImportGraph

DEFAULT_PACKAGE = "contexts"


@dataclass(frozen=True, slots=True)
class Violation:
    """One import that crosses a boundary: who imports what, where, and which rule it breaks."""

    importer: str
    imported: str
    line_number: int
    line_contents: str
    reason: str

    def __str__(self) -> str:
        return f"{self.importer}:{self.line_number} -> {self.imported} ({self.reason}): {self.line_contents}"


@dataclass(frozen=True, slots=True)
class _Layout:
    """The contexts under the root package and the one module each of them publishes."""

    root: str
    events: Mapping[str, str]  # context package ("contexts.orders") -> its events module

    def context_of(self, module: str) -> str | None:
        """The context package ``module`` belongs to, or None (the root package itself)."""
        parts = module.split(".")
        if len(parts) < 2 or parts[0] != self.root:
            return None
        return f"{self.root}.{parts[1]}"

    def is_events_module(self, module: str, context: str) -> bool:
        """True for ``context``'s events module or a module under it."""
        allowed = self.events[context]
        return module == allowed or module.startswith(allowed + ".")


def find_violations(
    package: str = DEFAULT_PACKAGE, *, events_modules: Mapping[str, str] | None = None
) -> list[Violation]:
    """Every boundary violation under ``package`` (importable from ``sys.path``), sorted.

    ``events_modules`` maps a context name (``"orders"``) to the module other contexts may
    import (``BoundedContext.events_module``); the default is ``<package>.<name>.events``.
    Raises ContextError when ``package`` cannot be found.
    """
    graph = _build_graph(package)
    contexts = sorted(graph.find_children(package))
    overrides = dict(events_modules or {})
    layout = _Layout(
        root=package,
        events={c: overrides.get(c.rsplit(".", 1)[1], f"{c}.events") for c in contexts},
    )
    found = [v for module in sorted(graph.modules) for v in _violations_of(graph, layout, module)]
    return sorted(found, key=lambda v: (v.importer, v.line_number, v.imported))


def assert_context_boundaries(
    package: str = DEFAULT_PACKAGE, *, events_modules: Mapping[str, str] | None = None
) -> None:
    """Raise BoundaryViolationError listing each violation under ``package``; return when clean."""
    violations = find_violations(package, events_modules=events_modules)
    if violations:
        raise BoundaryViolationError([str(v) for v in violations])


def _build_graph(package: str) -> ImportGraph:
    try:
        import grimp
    except ImportError as exc:  # pragma: no cover - grimp ships with import-linter (dev extra)
        raise ContextError("the boundary check needs grimp: pip install import-linter") from exc
    try:
        return grimp.build_graph(package, cache_dir=None)
    except ValueError as exc:
        raise ContextError(f"cannot check boundaries of {package!r}: {exc}") from exc


def _violations_of(graph: ImportGraph, layout: _Layout, importer: str) -> Iterator[Violation]:
    source = layout.context_of(importer)
    if source is None:
        return
    for imported in sorted(graph.find_modules_directly_imported_by(importer)):
        reason = _reason(layout, source, importer, imported)
        if reason is None:
            continue
        details = graph.get_import_details(importer=importer, imported=imported)
        lines = [(d["line_number"], d["line_contents"]) for d in details] or [(0, "?")]
        for line_number, line_contents in lines:
            yield Violation(importer, imported, line_number, line_contents, reason)


def _reason(layout: _Layout, source: str, importer: str, imported: str) -> str | None:
    """Why ``importer`` (in context ``source``) may not import ``imported``; None when it may."""
    target = layout.context_of(imported)
    if layout.is_events_module(importer, source):
        if layout.is_events_module(imported, source) or (
            target is None and imported != layout.root
        ):
            return None
        return f"an events module imports nothing else from {layout.root}"
    if target is None or target == source or layout.is_events_module(imported, target):
        return None
    return f"only {layout.events[target]} of {target} may be imported"
