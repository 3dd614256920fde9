"""Recording a scenario's measured figures, for docs/RELIABILITY.md (rendered by ``report``).

Conventions every scenario of the suite follows (the network scenarios included):

- A scenario measures its figures from the run (counts read back from the broker and the
  database, never expected values), asserts on them, and records them with ``record_figures``
  *before* asserting, so a failing run still leaves its figures behind.
- ``record_figures(scenario, database, figures, bounds=...)`` writes one JSON file,
  ``<results dir>/<scale>/<scenario>-<database>.json``, only when ``EVENTSEAM_RELIABILITY_RESULTS``
  names the results directory (the documented command sets it to ``tests/reliability/results``);
  otherwise it records nothing (the CI run asserts without touching the tree).
- ``scenario`` is the issue item's key from ``SCENARIOS`` (``"1-relay-kills"``...), ``database``
  is ``"sqlite"``, ``"postgresql"`` or ``"-"``; ``figures`` maps a figure's name to an int, float
  or short string (``{"events": 100000, "kills": 25, "lost": 0, ...}``); ``bounds`` maps a figure
  to the assertion it must meet, as text (``{"lost": "== 0", "duplicates": "<= 3000"}``).
- The JSON file holds: scenario, title, database, scale, figures, bounds, command, started_at,
  finished_at, seconds, load (1-minute load average at start and end), cpus, python, commit
  (HEAD's short hash, ``-dirty`` when a tracked file outside the results directory had
  uncommitted changes: the result files a run writes do not make its later scenarios dirty).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

Figure = int | float | str

RESULTS_ENV = "EVENTSEAM_RELIABILITY_RESULTS"
SCALE_ENV = "EVENTSEAM_RELIABILITY"
REPO_ROOT = Path(__file__).resolve().parents[2]

#: The issue's items, in the document's order: key -> title.
SCENARIOS: dict[str, str] = {
    "1-relay-kills": "Relay SIGKILLed at random while events flow",
    "2-crash-points": "Relay crashing at each deterministic crash point",
    "3-broker-outage": "Broker unreachable (refused and hanging connections through the fault proxy)",
    "4-broker-restart": "Broker killed and restarted (it loses its topics)",
    "5-worker-kills": "Consumer worker SIGKILLed every few seconds",
    "6-poison": "Poison events dead-lettered while workers are killed",
    "7-bad-input": "Bad input of every kind among good events",
    "8-flag-flips": "Routing flag flipped mid-stream across processes",
    "9-database-outage": "Database unreachable for the relay and the worker",
    "10-many-processes": "3 relays and 2 workers at once, with random kills",
}


def command_line() -> str:
    """The command that ran this pytest session, as a reader would retype it."""
    scale = os.environ.get(SCALE_ENV, "reduced")
    prefix = f"{SCALE_ENV}={scale} {RESULTS_ENV}=tests/reliability/results "
    return prefix + ".venv/bin/pytest " + " ".join(sys.argv[1:])


def _commit() -> str:
    try:
        head = _git("rev-parse", "--short", "HEAD")
        changed = _git("status", "--porcelain", "--untracked-files=no", "--", ".", _NOT_RESULTS)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}-dirty" if changed else head


#: A pathspec leaving out the results directory (the files a recording run writes itself).
_NOT_RESULTS = ":(exclude)tests/reliability/results"


def _git(*arguments: str) -> str:
    return subprocess.run(
        ["git", *arguments], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


class Run:
    """Times one scenario run: create it at the start, pass it to ``record_figures`` at the end."""

    def __init__(self) -> None:
        self.started_at = datetime.now(UTC)
        self.started = time.monotonic()
        self.load_at_start = os.getloadavg()[0]


def record_figures(
    scenario: str,
    database: str,
    figures: Mapping[str, Figure],
    *,
    bounds: Mapping[str, str] | None = None,
    run: Run | None = None,
) -> Path | None:
    """Write the figures of one run (see the module docstring); the file, or None when not recording."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}: one of {', '.join(SCENARIOS)}")
    directory = os.environ.get(RESULTS_ENV)
    if not directory:
        return None
    scale = os.environ.get(SCALE_ENV, "reduced")
    now = datetime.now(UTC)
    document = {
        "scenario": scenario,
        "title": SCENARIOS[scenario],
        "database": database,
        "scale": scale,
        "figures": dict(figures),
        "bounds": dict(bounds or {}),
        "command": command_line(),
        "started_at": (run.started_at if run else now).isoformat(timespec="seconds"),
        "finished_at": now.isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - run.started, 1) if run else None,
        "load": [round(run.load_at_start, 2) if run else None, round(os.getloadavg()[0], 2)],
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "commit": _commit(),
    }
    path = Path(directory)
    if not path.is_absolute():
        path = REPO_ROOT / path
    path = path / scale / f"{scenario}-{database}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    return path


def database_name(url: str) -> str:
    """``sqlite`` or ``postgresql`` (the backend of a SQLAlchemy URL), for ``record_figures``."""
    return url.split(":", 1)[0].split("+", 1)[0]
