"""Every name a package lists in ``__all__`` is public and importable from the package itself."""

from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from types import ModuleType

PACKAGES = ("engine", "outbox")


def exported(package: str) -> tuple[ModuleType, list[str]]:
    """The imported package and its ``__all__`` (fails the test when it has none)."""
    module = importlib.import_module(package)
    names = getattr(module, "__all__", None)
    assert names is not None, f"{package}/__init__.py must declare __all__ (its public API)"
    assert isinstance(names, (list, tuple)), f"{package}.__all__ must be a list of names"
    return module, list(names)


@pytest.mark.parametrize("package", PACKAGES)
def test_all_is_declared_and_not_empty(package: str) -> None:
    """The package declares a non-empty ``__all__`` without duplicates."""
    _, names = exported(package)
    assert names, f"{package}.__all__ is empty"
    assert len(names) == len(set(names)), f"{package}.__all__ lists a name twice"


@pytest.mark.parametrize("package", PACKAGES)
def test_exported_members_are_public_and_importable(package: str) -> None:
    """Each exported name is a public attribute of the package (``from package import name``)."""
    module, names = exported(package)
    for name in names:
        assert isinstance(name, str), f"{package}.__all__ holds a non-string: {name!r}"
        assert not name.startswith("_"), f"{package}.__all__ exports private name {name!r}"
        assert hasattr(module, name), f"{package}.__all__ names {name!r}, which the package lacks"


@pytest.mark.parametrize("package", PACKAGES)
def test_exported_members_have_docstrings(package: str) -> None:
    """Exported classes and functions document their contract."""
    module, names = exported(package)
    for name in names:
        member = getattr(module, name)
        if inspect.isclass(member) or inspect.isfunction(member):
            assert (member.__doc__ or "").strip(), f"{package}.{name} has no docstring"
