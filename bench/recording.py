"""How a benchmark records its run: the command that made it, and its results files.

Every benchmark writes ``<name>.json`` (every figure of the run) and ``<name>.md`` (the page a
reader opens, which names the command) into its results directory, ``bench/results`` unless
told otherwise. Hand-written notes in a recorded ``.md`` are overwritten: re-add them.
"""

from __future__ import annotations

import json
import shlex
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

__all__ = ["command_line", "write_results"]


def command_line(module: str, argv: Sequence[str] | None) -> str:
    """The shell command that reruns ``module`` with ``argv`` (this process's arguments: None)."""
    arguments = sys.argv[1:] if argv is None else argv
    return shlex.join([".venv/bin/python", "-m", module, *arguments])


def write_results(out: Path, name: str, result: dict[str, Any], markdown: str) -> None:
    """Write ``out/name.json`` (``result``, indented) and ``out/name.md``, creating ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown)
