"""The ``eventseam`` command line. Each command group lives in its own module, loaded lazily."""

from __future__ import annotations

import importlib

import click

#: ``ctx.obj`` key: true when the command runs for an application (framework integrations,
#: ``--app``, ``EVENTSEAM_APP``): engine.cli.app_loader.command_settings reads its settings then.
APP_SETTINGS = "app_settings"

#: command name -> "module:attribute" of its click command or group.
COMMANDS: dict[str, str] = {
    "config": "engine.cli.config:config",
    "check": "engine.cli.check:check",
    "db": "engine.cli.db:db",
    "inbox": "engine.cli.inbox:inbox",
    "relay": "engine.cli.relay:relay",
    "outbox": "engine.cli.outbox:outbox",
    "worker": "engine.cli.worker:worker",
    "contracts": "engine.cli.contracts:contracts",
    "contexts": "engine.cli.contexts:contexts",
    "parity": "engine.cli.parity:parity",
    "status": "engine.cli.status:status",
    "flags": "engine.cli.flags:flags",
    "acl": "engine.cli.acl:acl",
    "dlq": "engine.cli.dlq:dlq",
    "replay": "engine.cli.replay:replay",
    "erase": "engine.cli.erase:erase",
    "keys": "engine.cli.keys:keys",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when used."""

    def __init__(self, *args: object, lazy: dict[str, str], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self._lazy.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module_name, attribute = target.split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command


@click.group(cls=LazyGroup, lazy=COMMANDS)
@click.option(
    "--app",
    "app_path",
    envvar="EVENTSEAM_APP",
    default=None,
    metavar="MODULE:FUNCTION",
    help="The function returning the application's EventSeam (its contexts and settings); "
    "default: $EVENTSEAM_APP. This repository's example monolith: app.bootstrap:bootstrap.",
)
@click.pass_context
def main(ctx: click.Context, app_path: str | None) -> None:
    """eventseam: in-process events, a transactional outbox and a relay to Kafka."""
    ctx.ensure_object(dict)
    ctx.obj["app_path"] = app_path
    # The database-only commands (db, outbox, inbox purge, erase, keys) read the settings of
    # the application when one is named, else the environment's.
    ctx.obj[APP_SETTINGS] = app_path is not None
