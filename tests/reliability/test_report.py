"""The figures pipeline: record_figures writes a run's figures, the report renders them."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from tests.reliability.figures import RESULTS_ENV, SCALE_ENV, Run, record_figures
from tests.reliability.report import END, START, load_results, render, updated
from tests.reliability.verify import failed_bounds

if TYPE_CHECKING:
    from pathlib import Path


def test_recorded_figures_are_rendered_with_their_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recorded result shows in the document with its figures, bound and command; a scenario without one says "not yet run"."""
    monkeypatch.setenv(RESULTS_ENV, str(tmp_path))
    monkeypatch.setenv(SCALE_ENV, "full")
    path = record_figures(
        "1-relay-kills", "sqlite", {"lost": 0, "kills": 25}, bounds={"lost": "== 0"}, run=Run()
    )
    assert path == tmp_path / "full" / "1-relay-kills-sqlite.json"
    assert json.loads(path.read_text())["figures"] == {"lost": 0, "kills": 25}
    text = render(load_results(tmp_path))
    assert "| `kills` | 25 |  |" in text
    assert "| `lost` | 0 | == 0 |" in text
    assert "EVENTSEAM_RELIABILITY=full" in text
    assert "#### 3. Broker unreachable" in text.split("### Figures, reduced scale")[0]
    assert "not yet run" in text
    document = f"intro\n{START}\nold\n{END}\noutro\n"
    assert updated(document, text) == f"intro\n{text}\noutro\n"


def test_record_figures_refuses_an_unknown_scenario(monkeypatch: pytest.MonkeyPatch) -> None:
    """A typo in a scenario key is an error, not a result nobody renders."""
    monkeypatch.delenv(RESULTS_ENV, raising=False)
    with pytest.raises(ValueError, match="1-relay-kills"):
        record_figures("1-relay-kill", "sqlite", {})


def test_failed_bounds_names_each_broken_figure() -> None:
    """Bounds are checked as written: == and <=."""
    figures = {"lost": 1, "duplicates": 40, "kills": 3}
    bounds = {"lost": "== 0", "duplicates": "<= 30", "kills": "<= 5"}
    assert failed_bounds(figures, bounds) == [
        "lost = 1 (wanted == 0)",
        "duplicates = 40 (wanted <= 30)",
    ]
