"""Django system checks for settings.EVENTSEAM, and the settings the EventSeam is built from."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pytest
from django.core.checks import Error, run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from engine.integrations.common import engine_of
from engine.integrations.django import EventSeamImproperlyConfigured, get_config, get_seam
from engine.integrations.django.seam import worker_seam
from engine.modes import Mode
from tests.django import settings as test_settings
from tests.django.shop.events import seen

if TYPE_CHECKING:
    from django.core.checks import CheckMessage


@pytest.fixture(autouse=True)
def _no_eventseam_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks read EVENTSEAM_* variables: start each test without any."""
    for name in list(os.environ):
        if name.upper().startswith("EVENTSEAM_"):
            monkeypatch.delenv(name)


def eventseam(**changes: Any) -> dict[str, Any]:
    """The test project's EVENTSEAM with ``changes`` applied (None removes a key)."""
    merged = {**test_settings.EVENTSEAM, **changes}
    return {key: value for key, value in merged.items() if value is not None}


def messages(**changes: Any) -> list[CheckMessage]:
    """The eventseam check messages for EVENTSEAM with ``changes``."""
    with override_settings(EVENTSEAM=eventseam(**changes)):
        return [m for m in run_checks(tags=["eventseam"]) if m.id and m.id.startswith("eventseam.")]


def only(found: list[CheckMessage]) -> CheckMessage:
    assert len(found) == 1, found
    return found[0]


def test_the_test_project_passes_every_check() -> None:
    """The test project's settings produce no eventseam message."""
    assert messages() == []


def test_misspelled_mode_is_an_error_with_a_hint() -> None:
    """A misspelled mode names the context and suggests the mode meant."""
    message = only(messages(contexts={"orders": "duall"}))
    assert isinstance(message, Error)
    assert message.id == "eventseam.E005"
    assert "['contexts']['orders'] = 'duall' is not a routing mode" in message.msg
    assert message.hint is not None
    assert "did you mean 'dual'?" in message.hint


def test_unknown_context_is_an_error_with_a_hint() -> None:
    """A mode for a context no bounded context declares suggests the known name."""
    message = only(messages(contexts={"order": "dual"}))
    assert message.id == "eventseam.E007"
    assert "unknown context 'order'" in message.msg
    assert message.hint is not None
    assert "did you mean 'orders'?" in message.hint


def test_invalid_settings_are_errors() -> None:
    """A value EventSeamSettings rejects is reported with its path."""
    message = only(messages(max_event_bytes="lots"))
    assert message.id == "eventseam.E006"
    assert "['max_event_bytes']" in message.msg


def test_unknown_keys_are_errors_not_silently_ignored() -> None:
    """Misspelled keys, at the top and inside sections, are reported with a suggestion."""
    found = messages(kafak={"bootstrap_servers": "x"}, relay={"batch_sise": 10})
    assert sorted(m.id or "" for m in found) == ["eventseam.E002", "eventseam.E002"]
    hints = " ".join(m.hint or "" for m in found)
    assert "did you mean 'kafka'?" in hints
    assert "did you mean 'batch_size'?" in hints


def test_bounded_contexts_must_import() -> None:
    """A missing or wrong bounded_contexts entry is an error naming the entry."""
    assert only(messages(bounded_contexts=None)).id == "eventseam.E003"
    message = only(messages(bounded_contexts=["tests.django.shop.events:nope"]))
    assert message.id == "eventseam.E003"
    assert "'tests.django.shop.events:nope'" in message.msg
    assert (
        only(messages(bounded_contexts=["tests.django.shop.events:RECEIVED"])).id
        == "eventseam.E003"
    )


def test_database_must_be_an_alias() -> None:
    """A database that is not in DATABASES is an error suggesting the aliases."""
    message = only(messages(database="pgg"))
    assert message.id == "eventseam.E004"
    assert message.hint is not None
    assert "did you mean 'pg'?" in message.hint


def test_missing_setting_is_an_error() -> None:
    """Without settings.EVENTSEAM the check says how to set it."""
    with override_settings(EVENTSEAM=None):
        found = [m for m in run_checks(tags=["eventseam"]) if m.id == "eventseam.E001"]
    assert len(found) == 1


def test_unknown_environment_variables_are_warned(monkeypatch: pytest.MonkeyPatch) -> None:
    """An EVENTSEAM_* variable no setting reads is a warning."""
    monkeypatch.setenv("EVENTSEAM_KAFKA_BOOTSTRAP", "x")
    message = only(messages())
    assert message.id == "eventseam.W001"
    assert "EVENTSEAM_KAFKA_BOOTSTRAP" in message.msg


def test_manage_py_check_fails_on_errors() -> None:
    """`manage.py check` stops on an eventseam error, as every management command would."""
    with (
        override_settings(EVENTSEAM=eventseam(contexts={"orders": "brokr"})),
        pytest.raises(SystemCheckError, match=r"eventseam\.E005"),
    ):
        call_command("check")


def test_settings_are_init_values_and_derive_the_database_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """EVENTSEAM wins over EVENTSEAM_* variables; database_url follows DATABASES unless set."""
    monkeypatch.setenv("EVENTSEAM_CONTEXTS__ORDERS", "broker")
    monkeypatch.setenv("EVENTSEAM_MAX_EVENT_BYTES", "2048")
    with override_settings(EVENTSEAM=eventseam(contexts={"orders": "dual"}, database="pg")):
        config = get_config()
        assert config.database == "pg"
        assert config.settings.mode_of("orders") is Mode.DUAL
        assert config.settings.max_event_bytes == 2048
        assert config.settings.database_url.startswith("postgresql+psycopg://")
        assert config.settings.database_url.endswith("/" + test_settings.DATABASES["pg"]["NAME"])
        assert [context.name for context in get_seam().contexts] == ["orders", "audit", "billing"]
    with override_settings(EVENTSEAM=eventseam(database_url="sqlite:///elsewhere.db")):
        assert get_config().settings.database_url == "sqlite:///elsewhere.db"


def test_unusable_settings_raise_improperly_configured() -> None:
    """Building the EventSeam from broken settings raises ImproperlyConfigured (and SettingsError)."""
    with (
        override_settings(EVENTSEAM=eventseam(contexts={"orders": "duall"})),
        pytest.raises(EventSeamImproperlyConfigured, match=r"manage\.py check"),
    ):
        get_seam()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("tests.django.shop.events:seen", "must be a list"),
        (
            ["tests.django.shop.events:nowhere"],
            "entry 'tests.django.shop.events:nowhere' is not usable",
        ),
        (["tests.django.shop.events:SEEN"], "is a list, not a callable middleware"),
    ],
)
def test_unusable_middlewares_are_an_error(value: object, reason: str) -> None:
    """middlewares must list importable callables: E009 names the entry, and the seam refuses to build."""
    message = only(messages(middlewares=value))
    assert message.id == "eventseam.E009"
    assert "settings.EVENTSEAM['middlewares']" in message.msg
    assert reason in message.msg
    with (
        override_settings(EVENTSEAM=eventseam(middlewares=value)),
        pytest.raises(EventSeamImproperlyConfigured, match="middlewares"),
    ):
        get_config()


def test_middlewares_are_imported_in_order() -> None:
    """The dotted paths become the seam's middlewares, first one outermost, in the worker too."""
    paths = ["tests.django.shop.events:seen", "tests.django.shop.events.seen"]
    with override_settings(EVENTSEAM=eventseam(middlewares=paths)):
        assert messages(middlewares=paths) == []
        assert get_config().middlewares == (seen, seen)
        assert get_seam().middlewares == (seen, seen)
        worker = worker_seam()
        try:
            assert worker.middlewares == (seen, seen)
        finally:
            engine = engine_of(worker)
            assert engine is not None
            engine.dispose()


def test_a_subscription_nobody_owns_is_a_warning() -> None:
    """Without orders (the owner of shop.OrderPlaced), audit's handlers of it never run: W003
    names each, and nothing else is reported."""
    found = messages(
        bounded_contexts=["tests.django.shop.events:audit", "tests.django.shop.events:billing"]
    )
    assert {message.id for message in found} == {"eventseam.W003"}
    named = sorted(message.msg.split("'")[1] for message in found)
    assert named == [
        "audit.count_orders_with_session_on_order_placed",
        "audit.record_order_placed",
        "audit.store_audit_copy_on_order_placed",
    ]
    assert all("shop.OrderPlaced, which no context of settings.EVENTSEAM" in m.msg for m in found)
