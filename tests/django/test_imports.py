"""The engine never imports Django; the integration is the only place that does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

BLOCK_DJANGO = """
import importlib.abc, sys

class NoDjango(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "django" or name.startswith("django."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)")
        return None

sys.meta_path.insert(0, NoDjango())
import engine, engine.seam, engine.bridge, engine.integrations, engine.cli, outbox.writer, outbox.migrate
assert not any(m == "django" or m.startswith("django.") for m in sys.modules)
try:
    import engine.integrations.django
except ModuleNotFoundError as exc:
    print("integration needs django:", exc)
"""


def test_engine_imports_without_django() -> None:
    """With Django unimportable, the engine, the outbox and engine.integrations still import."""
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_DJANGO],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "integration needs django" in result.stdout
