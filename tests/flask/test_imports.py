"""The engine never imports Flask; engine.integrations.flask is the only place that does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from engine.integrations import flask as integration

REPO_ROOT = Path(__file__).resolve().parents[2]

BLOCK_FLASK = """
import importlib.abc, sys

BLOCKED = ("flask", "flask_sqlalchemy", "werkzeug")

class NoFlask(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)")
        return None

sys.meta_path.insert(0, NoFlask())
import engine, engine.seam, engine.bridge, engine.cli, engine.integrations
import engine.integrations.common, outbox.writer
assert not any(m.split(".")[0] in BLOCKED for m in sys.modules)
try:
    import engine.integrations.flask
except ModuleNotFoundError as exc:
    print("integration needs flask:", exc)
"""


def test_engine_imports_without_flask() -> None:
    """With Flask unimportable, the engine, the shared integration code and the outbox still import."""
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_FLASK],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "integration needs flask" in result.stdout


def test_public_names_are_exported() -> None:
    """Every name in engine.integrations.flask.__all__ exists, and nothing public is missing from it."""
    public = {name for name in vars(integration) if not name.startswith("_")}
    modules = {"cli", "config", "errors", "extension"}
    assert set(integration.__all__) == public - modules - {"annotations"}
