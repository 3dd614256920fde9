"""Render the recorded figures into docs/RELIABILITY.md: ``python -m tests.reliability.report``.

Reads every ``tests/reliability/results/<scale>/<scenario>-<database>.json`` (written by
``figures.record_figures`` during a run) and replaces the part of the document between the
``<!-- figures:start -->`` and ``<!-- figures:end -->`` lines; the prose around it is kept.
A scenario without a result says "not yet run". ``--check`` exits 1 when the document is not
what the results render to (nothing is written).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from tests.reliability.figures import REPO_ROOT, SCENARIOS

if TYPE_CHECKING:
    from pathlib import Path

RESULTS = REPO_ROOT / "tests" / "reliability" / "results"
DOCUMENT = REPO_ROOT / "docs" / "RELIABILITY.md"
START, END = "<!-- figures:start -->", "<!-- figures:end -->"
SCALES = ("full", "reduced")
DATABASES = ("sqlite", "postgresql", "-")


def load_results(root: Path = RESULTS) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """scale -> scenario -> results (one per database, in DATABASES order)."""
    found: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(root.glob("*/*.json")):
        result = json.loads(path.read_text())
        found[result["scale"]][result["scenario"]].append(result)
    for scenarios in found.values():
        for results in scenarios.values():
            results.sort(
                key=lambda r: DATABASES.index(r["database"]) if r["database"] in DATABASES else 9
            )
    return found


def _cell(name: str, value: object) -> str:
    if name == "seed" or isinstance(value, bool) or not isinstance(value, int):
        return str(value)
    return f"{value:,}"


def render_scenario(scenario: str, results: list[dict[str, Any]]) -> list[str]:
    """The table of one scenario at one scale: a row per figure, a column per database."""
    names = list(dict.fromkeys(name for r in results for name in r["figures"]))
    header = ["figure", *(r["database"] for r in results), "asserted"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for name in names:
        bound = next((r["bounds"][name] for r in results if name in r["bounds"]), "")
        cells = [_cell(name, r["figures"].get(name, "")) for r in results]
        lines.append("| " + " | ".join([f"`{name}`", *cells, bound]) + " |")
    lines.append("")
    for r in results:
        lines.append(
            f"- {r['database']}: {r['started_at']} to {r['finished_at']} ({r['seconds']} s), "
            f"load {r['load'][0]} then {r['load'][1]} on {r['cpus']} CPUs, commit {r['commit']}; "
            f"`{r['command']}`"
        )
    lines.append("")
    return lines


def render(found: dict[str, dict[str, list[dict[str, Any]]]]) -> str:
    """The generated part of the document (between the markers)."""
    lines = [START, ""]
    for scale in SCALES:
        lines += [f"### Figures, {scale} scale", ""]
        for scenario, title in SCENARIOS.items():
            number = scenario.split("-", 1)[0]
            lines += [f"#### {number}. {title}", ""]
            results = found.get(scale, {}).get(scenario)
            lines += render_scenario(scenario, results) if results else ["not yet run", ""]
    lines.append(END)
    return "\n".join(lines)


def updated(document: str, generated: str) -> str:
    """``document`` with its generated part replaced by ``generated``."""
    head, start, rest = document.partition(START)
    _, end, tail = rest.partition(END)
    if not (start and end):
        raise SystemExit(f"{DOCUMENT} lacks the {START} / {END} markers")
    return head + generated + tail


def main(argv: list[str]) -> int:
    """Write the figures into the document (``--check``: only compare)."""
    document = DOCUMENT.read_text()
    new = updated(document, render(load_results()))
    if "--check" in argv:
        if new != document:
            print(f"{DOCUMENT} is out of date: run python -m tests.reliability.report")
            return 1
        return 0
    DOCUMENT.write_text(new)
    print(f"wrote {DOCUMENT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
