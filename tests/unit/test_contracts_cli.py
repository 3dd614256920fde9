"""``eventseam contracts dump|check``: the committed contracts hold, and breaking changes fail."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner, Result
from pydantic import Field

from app.bootstrap import CONTEXTS
from contexts.orders.events import OrderCancelled
from contexts.payments import payments
from contexts.shipping import shipping
from engine.cli.contracts import INCOMPATIBLE_EXIT, contracts
from engine.contexts import BoundedContext, ContextMap
from engine.events import DomainEvent
from engine.settings import EventSeamSettings

ROOT = Path(__file__).resolve().parents[2]
#: The example monolith's committed contracts.
COMMITTED = ROOT / "docs" / "contracts"
HERE = "tests.unit.test_contracts_cli"


class OrderPlacedWithoutCurrency(DomainEvent, name="orders.OrderPlaced", version=1):
    """The example's OrderPlaced with ``currency`` deleted: a breaking change."""

    order_id: str
    customer_id: str
    total_cents: int = Field(gt=0)


class OrderPlacedWithCoupon(DomainEvent, name="orders.OrderPlaced", version=1):
    """The example's OrderPlaced with an optional field added: compatible."""

    order_id: str
    customer_id: str
    total_cents: int = Field(gt=0)
    currency: str = "EUR"
    coupon: str | None = None


class OrderPlacedV2(DomainEvent, name="orders.OrderPlaced", version=2):
    """A second version of OrderPlaced (new, not committed)."""

    order_id: str
    total_cents: int


def _app(*orders_events: type[DomainEvent]) -> SimpleNamespace:
    orders = BoundedContext("orders", owns=[*orders_events, OrderCancelled])
    return SimpleNamespace(
        contexts=ContextMap([orders, payments, shipping]), settings=EventSeamSettings()
    )


def example_app() -> SimpleNamespace:
    """The example monolith's contexts, without a database."""
    return SimpleNamespace(contexts=ContextMap(CONTEXTS), settings=EventSeamSettings())


def app_without_currency() -> SimpleNamespace:
    """The example monolith with OrderPlaced's ``currency`` field deleted."""
    return _app(OrderPlacedWithoutCurrency)


def app_with_coupon() -> SimpleNamespace:
    """The example monolith with an optional field added to OrderPlaced."""
    return _app(OrderPlacedWithCoupon)


def app_with_v2_only() -> SimpleNamespace:
    """The example monolith where OrderPlaced v1 was replaced by v2."""
    return _app(OrderPlacedV2)


def not_an_app() -> object:
    """Something without contexts."""
    return object()


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Run without EVENTSEAM_* variables, in a scratch directory (bootstrap's SQLite file)."""
    for name in list(os.environ):
        if name.upper().startswith("EVENTSEAM_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def run(app: str, *args: str) -> Result:
    """Invoke ``eventseam --app APP contracts ARGS`` (wide output)."""
    return CliRunner().invoke(contracts, list(args), obj={"app_path": app}, env={"COLUMNS": "240"})


def committed_copy(tmp_path: Path) -> Path:
    """A scratch copy of the committed contracts."""
    return Path(shutil.copytree(COMMITTED, tmp_path / "contracts"))


def test_example_monolith_is_compatible_with_its_committed_contracts() -> None:
    """The real application checks clean against docs/contracts (CI fails on a breaking edit)."""
    result = run("app.bootstrap:bootstrap", "check", str(COMMITTED))
    assert result.exit_code == 0, result.output
    assert "7 committed event version(s)" in result.output
    assert "backward compatible" in result.output


def test_committed_contracts_are_up_to_date() -> None:
    """docs/contracts is exactly what dump writes now: run `eventseam contracts dump docs/contracts`."""
    result = run(f"{HERE}:example_app", "check", "--strict", str(COMMITTED))
    assert result.exit_code == 0, result.output


def test_deleting_a_field_fails_the_check_naming_event_and_field(tmp_path: Path) -> None:
    """A modified event class against a copy of the committed schemas exits 1 naming the field."""
    result = run(f"{HERE}:app_without_currency", "check", str(committed_copy(tmp_path)))
    assert result.exit_code == INCOMPATIBLE_EXIT, result.output
    assert "1 incompatible change(s)" in result.output
    assert "BREAKING orders.OrderPlaced.v1: field 'currency': was removed" in result.output
    assert "contracts dump" in result.output


def test_removing_an_event_version_fails_and_a_new_one_is_noted(tmp_path: Path) -> None:
    """Replacing v1 by v2 breaks on v1 and notes v2 as not committed."""
    result = run(f"{HERE}:app_with_v2_only", "check", str(committed_copy(tmp_path)))
    assert result.exit_code == INCOMPATIBLE_EXIT, result.output
    assert "BREAKING orders.OrderPlaced.v1: event version removed" in result.output
    assert "note orders.OrderPlaced.v2: new event version, not committed yet" in result.output


def test_compatible_change_passes_and_strict_asks_for_a_dump(tmp_path: Path) -> None:
    """An added optional field passes; --strict fails until the contracts are dumped again."""
    directory = committed_copy(tmp_path)
    result = run(f"{HERE}:app_with_coupon", "check", str(directory))
    assert result.exit_code == 0, result.output
    assert "changed compatibly, not committed yet" in result.output
    strict = run(f"{HERE}:app_with_coupon", "check", "--strict", str(directory))
    assert strict.exit_code == INCOMPATIBLE_EXIT, strict.output
    assert "STALE schemas/orders.OrderPlaced.v1.json" in strict.output
    assert "STALE asyncapi.json" in strict.output
    assert run(f"{HERE}:app_with_coupon", "dump", str(directory)).exit_code == 0
    assert run(f"{HERE}:app_with_coupon", "check", "--strict", str(directory)).exit_code == 0


def test_dump_writes_deterministic_files_and_reports_changes(tmp_path: Path) -> None:
    """Two dumps into two folders are byte-identical; dumping again writes nothing."""
    first, second = tmp_path / "a", tmp_path / "b"
    result = run("app.bootstrap:bootstrap", "dump", str(first))
    assert result.exit_code == 0, result.output
    assert "8 written, 0 unchanged, 0 removed" in result.output
    assert run(f"{HERE}:example_app", "dump", str(second)).exit_code == 0
    names = sorted(p.relative_to(first).as_posix() for p in first.rglob("*.json"))
    assert names == sorted(p.relative_to(second).as_posix() for p in second.rglob("*.json"))
    assert all((first / n).read_bytes() == (second / n).read_bytes() for n in names)
    again = run(f"{HERE}:example_app", "dump", str(first))
    assert "0 written, 8 unchanged, 0 removed" in again.output


def test_dump_uses_title_and_version_and_strict_check_keeps_them(tmp_path: Path) -> None:
    """--title/--api-version land in info; a strict check compares with the committed info."""
    directory = tmp_path / "contracts"
    result = run(
        f"{HERE}:example_app", "dump", "--title", "Shop", "--api-version", "3.1.4", str(directory)
    )
    assert result.exit_code == 0, result.output
    assert '"title": "Shop"' in (directory / "asyncapi.json").read_text()
    assert run(f"{HERE}:example_app", "check", "--strict", str(directory)).exit_code == 0


def test_forward_compat_flag_is_passed_through(tmp_path: Path) -> None:
    """--compat full also runs the forward direction (a removed required field breaks both)."""
    directory = committed_copy(tmp_path)
    schema = directory / "schemas" / "orders.OrderPlaced.v1.json"
    schema.write_text(schema.read_text().replace('"customer_id",', '"customer_id",\n    "region",'))
    text = schema.read_text().replace(
        '"properties": {', '"properties": {\n    "region": {"type": "string"},'
    )
    schema.write_text(text)
    result = run(f"{HERE}:example_app", "check", "--compat", "full", str(directory))
    assert result.exit_code == INCOMPATIBLE_EXIT, result.output
    assert "field 'region': was removed" in result.output
    assert "field 'region': forward: was removed" in result.output


def test_missing_directory_exits_2(tmp_path: Path) -> None:
    """Checking a folder without schemas exits 2 and says to dump first."""
    result = run(f"{HERE}:example_app", "check", str(tmp_path / "nowhere"))
    assert result.exit_code == 2
    assert "contracts dump" in result.output


def test_unloadable_application_exits_2() -> None:
    """An --app without contexts, or one that cannot be imported, exits 2."""
    assert run(f"{HERE}:not_an_app", "check", str(COMMITTED)).exit_code == 2
    result = run("no_such_module:factory", "check", str(COMMITTED))
    assert result.exit_code == 2
    assert "cannot load the application" in result.output
