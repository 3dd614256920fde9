"""What the management commands run: the ``eventseam`` CLI's entry points with Django's settings.

``eventseam_flags`` runs the click group ``engine.cli.flags:flags`` with this project's EventSeam as
its application (contexts and settings, ``database_url`` derived from DATABASES);
``eventseam_worker`` runs ``engine.cli.worker:worker`` with a new EventSeam of its own
(``seam.worker_seam``).
``eventseam_relay`` runs ``relay``, ``eventseam relay`` with settings.EVENTSEAM instead of the
environment.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

import click
from django.core.management.base import BaseCommand, CommandError, CommandParser

from engine.cli import APP_SETTINGS
from engine.cli.options import relay_options

if TYPE_CHECKING:
    from collections.abc import Sequence


__all__ = ["APP_PATH", "WORKER_APP_PATH", "ClickCommand", "relay", "run_click"]

#: What ``eventseam --app`` loads in a Django project: the process's EventSeam.
APP_PATH: Final = "engine.integrations.django.seam:get_seam"
#: What ``eventseam worker`` loads: a new EventSeam (the worker disposes its engine).
WORKER_APP_PATH: Final = "engine.integrations.django.seam:worker_seam"


def run_click(
    command: click.Command, args: Sequence[str], *, prog_name: str, app_path: str = APP_PATH
) -> None:
    """Run a click command of the eventseam CLI on this project's EventSeam.

    The command prints its own output; a failure or a non-zero exit status becomes CommandError
    (with that status as ``returncode``).
    """
    try:
        status = command.main(
            list(args),
            prog_name=prog_name,
            standalone_mode=False,
            obj={"app_path": app_path, APP_SETTINGS: True},
        )
    except click.ClickException as exc:
        raise CommandError(exc.format_message(), returncode=exc.exit_code) from exc
    except click.Abort as exc:
        raise CommandError("aborted", returncode=1) from exc
    except SystemExit as exc:  # commands that call sys.exit themselves (eventseam worker)
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    if isinstance(status, int) and status != 0:
        raise CommandError(f"{prog_name} failed (exit status {status})", returncode=status)


class _PassThroughParser(CommandParser):
    """Django's parser that keeps the arguments it does not know, in order, as ``args``."""

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        options, extras = self.parse_known_args(args, namespace)
        if extras[:1] == ["--"]:
            extras = extras[1:]
        options.args = extras
        return options


class ClickCommand(BaseCommand):
    """A management command handing its arguments (``--help`` included) to a click command.

    Django's own options (``--settings``, ``--verbosity``, ``--traceback``...) stay Django's.
    """

    #: "module:attribute" of the click command.
    click_command: str = ""
    #: What ``eventseam --app`` would name: the factory of the EventSeam the command uses.
    app_path: str = APP_PATH

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        """Django's parser, without ``-h`` and abbreviations, passing unknown arguments through."""
        kwargs.update(add_help=False, allow_abbrev=False)
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.__class__ = _PassThroughParser  # same state, parse_args keeps the unknown arguments
        return parser

    def handle(self, *args: str, **options: Any) -> None:
        """Run the click command with ``args``."""
        module_name, _, attribute = self.click_command.partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        prog_name = f"manage.py {self.__module__.rpartition('.')[2]}"
        run_click(command, args, prog_name=prog_name, app_path=self.app_path)


@click.command("relay")
@relay_options
def relay(**options: Any) -> None:
    """Forward pending outbox rows to Kafka until SIGTERM or SIGINT (`eventseam relay` with
    settings.EVENTSEAM)."""
    from engine.cli.relay import run_relay  # on use: it imports the relay's dependencies

    from .seam import get_config

    run_relay(
        get_config().settings,
        missing_servers="set EVENTSEAM['kafka']['bootstrap_servers'] in the Django settings",
        **options,
    )
