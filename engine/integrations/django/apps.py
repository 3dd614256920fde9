"""The Django app: add ``"engine.integrations.django"`` to INSTALLED_APPS (app label ``eventseam``).

``ready`` registers the system checks (engine.integrations.django.checks) and resets the
process's EventSeam when ``EVENTSEAM`` or ``DATABASES`` change (``override_settings``). It builds
and starts nothing: the EventSeam is built on first use and its bus started on the first publish
that dispatches locally, in the process that publishes (safe under pre-fork servers).
"""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig

SETTINGS_WATCHED = frozenset({"EVENTSEAM", "DATABASES"})


class EventSeamConfig(AppConfig):
    """eventseam's tables (migrations), system checks and management commands."""

    name = "engine.integrations.django"
    label = "eventseam"
    verbose_name = "eventseam"

    def ready(self) -> None:
        """Register the checks and the settings-change hook (no I/O, no threads)."""
        from django.core import checks
        from django.core.signals import setting_changed

        from .checks import check_settings

        checks.register(check_settings, "eventseam")
        setting_changed.connect(_on_setting_changed, dispatch_uid="eventseam.setting_changed")


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in SETTINGS_WATCHED:
        from .seam import reset_seam

        reset_seam()
