"""``eventseam acl``: the Kafka ACLs the application's relay and workers need (engine.acl).

    eventseam acl                          a table: principal, resource, operations, why
    eventseam acl --format kafka-acls      one ``kafka-acls.sh --add`` line per principal and
                                           resource, ready for a shell script
    eventseam acl --json                   the rules as JSON (one object per operation)

Principals come from ``EVENTSEAM_ACL__RELAY_PRINCIPAL`` and ``EVENTSEAM_ACL__PRINCIPALS__<CONTEXT>``
(default ``User:<context>``). Writes nothing and needs no broker. Exit status 0; 2 when the
application cannot be loaded or the registry cannot name a resource.
"""

from __future__ import annotations

import json
from itertools import groupby
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from engine.acl import AclError, kafka_acls_commands, required_acls
from engine.cli.contexts import loaded_application
from engine.cli.failure import fail

if TYPE_CHECKING:
    from engine.acl import Acl


@click.command("acl")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "kafka-acls", "json"]),
    default="table",
    show_default=True,
    help="a table, kafka-acls.sh command lines, or JSON",
)
@click.option("--json", "as_json", is_flag=True, help="same as --format json")
@click.option(
    "--bootstrap-server",
    default=None,
    help="for kafka-acls lines (default: EVENTSEAM_KAFKA__BOOTSTRAP_SERVERS, else $BOOTSTRAP)",
)
@click.option(
    "--command-config",
    default=None,
    help="admin client properties file passed to each kafka-acls.sh line",
)
@click.pass_context
def acl(
    ctx: click.Context,
    output_format: str,
    as_json: bool,
    bootstrap_server: str | None,
    command_config: str | None,
) -> None:
    """Print the Kafka ACLs the relay and each context's workers need."""
    with loaded_application(ctx) as app:
        try:
            rules = required_acls(app.contexts, app.settings)
        except AclError as exc:
            fail(str(exc))
        bootstrap = bootstrap_server or app.settings.kafka.bootstrap_servers or "$BOOTSTRAP"
    if as_json or output_format == "json":
        click.echo(json.dumps([rule.as_dict() for rule in rules], indent=2))
    elif output_format == "kafka-acls":
        click.echo("\n".join(kafka_acls_commands(rules, bootstrap, command_config)))
    else:
        Console(highlight=False).print(acl_table(rules))


def acl_table(rules: list[Acl]) -> Table:
    """One row per principal and resource, with its operations and why they are needed."""
    table = Table(title="Kafka ACLs (ALLOW, literal names)", title_justify="left")
    for column in ("principal", "resource", "operations", "why"):
        table.add_column(column, overflow="fold")  # long names wrap, never cut
    for (principal, kind, name), group in groupby(
        rules, key=lambda r: (r.principal, r.resource_type, r.resource)
    ):
        chosen = list(group)
        table.add_row(
            escape(principal),
            escape(f"{kind.lower()} {name}"),
            " ".join(rule.operation for rule in chosen),
            escape("; ".join(sorted({r for rule in chosen for r in rule.reason.split("; ")}))),
        )
    return table
