"""The context boundary check: only another context's events module may be imported."""

from __future__ import annotations

import textwrap
import uuid
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from engine.boundaries import assert_context_boundaries, find_violations
from engine.cli import main
from engine.errors import BoundaryViolationError, ContextError

if TYPE_CHECKING:
    from pathlib import Path


def write_package(root: Path, files: dict[str, str]) -> None:
    """Write ``files`` (relative path -> source) under ``root``, adding empty ``__init__.py``s."""
    for relative, source in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(root).parents:
            init = root / parent / "__init__.py"
            if parent.parts and not init.exists():
                init.write_text("", encoding="utf-8")
        path.write_text(textwrap.dedent(source).lstrip(), encoding="utf-8")


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """A throwaway contexts package on sys.path (unique name), with two contexts ``a`` and ``b``."""
    name = f"throwaway_contexts_{uuid.uuid4().hex[:8]}"
    write_package(
        tmp_path,
        {
            f"{name}/a/events.py": "X = 1\n",
            f"{name}/a/models.py": "Y = 2\n",
            f"{name}/a/handlers.py": f"from {name}.b.events import Z\nfrom . import models\n",
            f"{name}/b/events.py": "Z = 3\n",
            f"{name}/b/models.py": "W = 4\n",
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return name, tmp_path / name


def test_clean_package_passes(shop: tuple[str, Path]) -> None:
    """Importing another context's events module and one's own internals is allowed."""
    name, _ = shop
    assert find_violations(name) == []
    assert_context_boundaries(name)


def test_import_of_another_contexts_internals_is_caught(shop: tuple[str, Path]) -> None:
    """b.handlers importing a.models is reported with importer, imported module and line."""
    name, root = shop
    (root / "b" / "handlers.py").write_text(
        f"from {name}.a.events import X\n\nfrom {name}.a.models import Y\n", encoding="utf-8"
    )
    violations = find_violations(name)
    assert [(v.importer, v.imported, v.line_number) for v in violations] == [
        (f"{name}.b.handlers", f"{name}.a.models", 3)
    ]
    with pytest.raises(BoundaryViolationError) as caught:
        assert_context_boundaries(name)
    assert caught.value.violations == [str(violations[0])]
    assert f"{name}.b.handlers:3 -> {name}.a.models" in str(caught.value)


def test_import_of_another_contexts_package_is_caught(shop: tuple[str, Path]) -> None:
    """Importing the other context's package itself (its __init__) is a violation too."""
    name, root = shop
    (root / "b" / "service.py").write_text(f"import {name}.a\n", encoding="utf-8")
    assert [(v.importer, v.imported) for v in find_violations(name)] == [
        (f"{name}.b.service", f"{name}.a")
    ]


def test_type_checking_imports_count(shop: tuple[str, Path]) -> None:
    """An import under ``if TYPE_CHECKING:`` couples contexts all the same."""
    name, root = shop
    (root / "b" / "service.py").write_text(
        f"from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from {name}.a.models import Y\n",
        encoding="utf-8",
    )
    assert [v.line_number for v in find_violations(name)] == [3]


def test_events_module_importing_internals_is_caught(shop: tuple[str, Path]) -> None:
    """An events module may not import its own context's internals (no indirect leak through it)."""
    name, root = shop
    (root / "a" / "events.py").write_text("from .models import Y\nX = 1\n", encoding="utf-8")
    violations = find_violations(name)
    assert [(v.importer, v.imported) for v in violations] == [
        (f"{name}.a.events", f"{name}.a.models")
    ]
    assert "events module" in violations[0].reason


def test_custom_events_module(shop: tuple[str, Path]) -> None:
    """A context may publish another module (BoundedContext.events_module); only that one is open."""
    name, root = shop
    (root / "a" / "published.py").write_text("P = 1\n", encoding="utf-8")
    (root / "b" / "service.py").write_text(f"from {name}.a.published import P\n", encoding="utf-8")
    events_modules = {"a": f"{name}.a.published"}
    assert find_violations(name, events_modules=events_modules) == []
    assert [v.imported for v in find_violations(name)] == [f"{name}.a.published"]


def test_missing_package_is_a_context_error() -> None:
    """A package that cannot be found raises ContextError, not a violation."""
    with pytest.raises(ContextError, match="cannot check boundaries"):
        find_violations(f"no_such_package_{uuid.uuid4().hex[:8]}")


def test_real_contexts_package_passes() -> None:
    """The example monolith's contexts (orders, payments, shipping) respect their boundaries."""
    assert_context_boundaries("contexts")


def test_cli_check_reports_violations_and_exits_1(shop: tuple[str, Path]) -> None:
    """``eventseam check`` lists each violation and exits 1; a clean package exits 0."""
    name, root = shop
    runner = CliRunner()
    clean = runner.invoke(main, ["check", "--package", name, "--path", str(root.parent)])
    assert clean.exit_code == 0, clean.output
    (root / "a" / "service.py").write_text(f"from {name}.b.models import W\n", encoding="utf-8")
    broken = runner.invoke(
        main, ["check", "--package", name, "--path", str(root.parent)], env={"COLUMNS": "200"}
    )
    assert broken.exit_code == 1, broken.output
    assert f"{name}.a.service:1 -> {name}.b.models" in broken.output


def test_cli_check_missing_package_exits_2(tmp_path: Path) -> None:
    """``eventseam check`` on a package that does not exist exits 2 with an error."""
    result = CliRunner().invoke(
        main, ["check", "--package", "no_such_contexts_pkg", "--path", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "error" in result.output
