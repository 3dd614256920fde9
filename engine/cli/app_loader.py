"""The application named by ``eventseam --app module:function``: load it, dispose what it made.

Every command that needs the application (its contexts, settings, flags, database) loads it
here: ``ctx.obj["app_path"]`` names a factory, imported with the current directory on
``sys.path`` and called once. A failure raises AppLoadError; each command reports it in its own
way (and checks the result has what it needs). ``dispose_app`` disposes the database engine the
application bound its session factory to: the command's process is done with it.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import click
from pydantic import ValidationError
from sqlalchemy import Engine

from engine.settings import EventSeamSettings

from . import APP_SETTINGS
from .options import settings_or_fail

#: The message when ``eventseam --app`` names nothing.
NO_APP = "no application: pass `eventseam --app module:function` or set EVENTSEAM_APP"


class AppLoadError(Exception):
    """The application could not be loaded; raised by load_app.

    ``app_path`` is what ``--app`` named (None when nothing was), ``str(exc)`` says why.
    """

    def __init__(self, message: str, app_path: str | None) -> None:
        super().__init__(message)
        self.app_path = app_path


def app_path_of(ctx: click.Context) -> str | None:
    """The ``module:function`` given to ``eventseam --app`` (None when the group set none)."""
    app_path = ctx.obj.get("app_path") if isinstance(ctx.obj, dict) else None
    return str(app_path) if app_path else None


def load_app(
    ctx: click.Context, *, factory_errors: tuple[type[Exception], ...] = ()
) -> tuple[str, object]:
    """``(app_path, application)``: the factory named by ``eventseam --app``, called once.

    Raises AppLoadError when no factory is named or it cannot be imported, and when calling it
    raises pydantic's ValidationError (invalid settings) or one of ``factory_errors`` (other
    errors of the factory propagate).
    """
    app_path = app_path_of(ctx)
    if app_path is None:
        raise AppLoadError(NO_APP, None)
    module_name, _, attribute = app_path.partition(":")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise AppLoadError(_cannot_load(app_path, exc), app_path) from exc
    caught: tuple[type[Exception], ...] = (ValidationError, *factory_errors)
    try:
        return app_path, factory()
    except caught as exc:
        raise AppLoadError(_cannot_load(app_path, exc), app_path) from exc


def command_settings(ctx: click.Context) -> EventSeamSettings:
    """The settings of the application when the command runs for one, else of the environment.

    For the commands that need only the database and settings (``db``, ``outbox parked``,
    ``inbox purge``, ``erase``, ``keys``): under ``flask eventseam``, ``manage.py`` or an
    application named by ``--app`` or ``EVENTSEAM_APP``, that application's settings (its
    ``database_url``, its retention windows, its master key); otherwise ``EVENTSEAM_*`` and
    ``eventseam.toml``. An application that cannot be loaded is a ClickException.
    """
    if not (isinstance(ctx.obj, dict) and ctx.obj.get(APP_SETTINGS)):
        return settings_or_fail()
    try:
        app_path, app = load_app(ctx)
    except AppLoadError as exc:
        raise click.ClickException(str(exc)) from exc
    dispose_app(app)  # only its settings are used
    settings = getattr(app, "settings", None)
    if not isinstance(settings, EventSeamSettings):
        raise click.ClickException(f"the application from {app_path!r} has no .settings")
    return settings


def command_database_url(ctx: click.Context, url: str | None) -> str:
    """``url`` (the command's ``--url``), else the ``database_url`` of ``command_settings``."""
    return url or command_settings(ctx).database_url


def app_engine(app: object) -> Engine | None:
    """The Engine the application's session factory is bound to, if any."""
    factory_kw = getattr(getattr(app, "session_factory", None), "kw", {})
    bind = factory_kw.get("bind") if isinstance(factory_kw, dict) else None
    return bind if isinstance(bind, Engine) else None


def dispose_app(app: object) -> None:
    """Dispose the application's database engine (its pooled connections)."""
    engine = app_engine(app)
    if engine is not None:
        engine.dispose()


def _cannot_load(app_path: str, exc: Exception) -> str:
    return f"cannot load the application {app_path!r}: {exc}"
