"""``eventseam dlq``: dead letters of the bus and of the consumers' dead-letter topics.

    eventseam dlq                           # same as `dlq list`
    eventseam dlq list [--handler NAME] [--json]
    eventseam dlq show ID [--json]
    eventseam dlq replay ID [ID ...]        # apply again, in this process, with the inbox
    eventseam dlq replay --all [--handler NAME]
    eventseam dlq discard ID [ID ...]       # drop for good

Ids: a bus dead letter's UUID (persisted in the application's database), or
``TOPIC:PARTITION:OFFSET`` of a record on a dead-letter topic (engine.dlq). Replay applies the
event to the handler the letter names (engine.redelivery): ``delivered`` or ``already applied``
resolve the letter, ``failed`` keeps it and prints the new error. Dead letters of a bus without
a database live only in its process: ``seam.bus.dead_letters`` and ``Bus.redeliver`` there.

The application comes from ``eventseam --app module:function``; ``--database-url`` replaces its
database, ``--no-kafka`` leaves the dead-letter topics out. Exit status: 0 on success; 1 when an
id names no dead letter (or one already resolved), a replay failed, or the database or Kafka
could not be read; 2 for bad input (an id that is neither form, no id and no ``--all``) or an
application that cannot be loaded.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING, TypeVar

import anyio
import click
from sqlalchemy import create_engine
from sqlalchemy.exc import SQLAlchemyError

from engine.cli import app_loader
from engine.cli.failure import fail
from engine.cli.logging import configure_logging
from engine.cli.replay import load_seam
from engine.dlq import DeadLetters, DeadLetterView, parse_id, to_dict
from engine.errors import (
    ConsumeError,
    HandlerError,
    SettingsError,
    UnknownDeadLetterError,
    database_error_line,
)
from engine.redelivery import Outcome

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from engine.redelivery import Delivery

_T = TypeVar("_T")
FAILED_EXIT = 1

database_option = click.option(
    "--database-url", default=None, help="SQLAlchemy URL of the eventseam database [default: app]"
)
kafka_option = click.option("--no-kafka", is_flag=True, help="Leave the dead-letter topics out.")


def _run(
    ctx: click.Context,
    database_url: str | None,
    no_kafka: bool,
    action: Callable[[DeadLetters], Awaitable[_T]],
) -> _T:
    """Run ``action`` on the application's dead letters; failures become exit 1 (or 2)."""
    configure_logging("warning", json_logs=False)  # engine warnings to stderr, never stdout
    seam = load_seam(ctx)
    engine = create_engine(database_url) if database_url else None
    try:
        letters = DeadLetters(seam, engine=engine, kafka=not no_kafka)
        return anyio.run(action, letters, backend="asyncio")
    except UnknownDeadLetterError as exc:
        fail(str(exc), FAILED_EXIT)
    except (HandlerError, SettingsError) as exc:
        fail(str(exc))
    except ConsumeError as exc:
        fail(f"cannot read the dead-letter topics: {exc.reason}", FAILED_EXIT)
    except SQLAlchemyError as exc:
        fail(f"database error: {database_error_line(exc)}", FAILED_EXIT)
    finally:
        if engine is not None:
            engine.dispose()
        app_loader.dispose_app(seam)


def _check_ids(ids: tuple[str, ...]) -> None:
    for letter_id in ids:
        try:
            parse_id(letter_id)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="ID") from None


@click.group(invoke_without_command=True)
@click.pass_context
def dlq(ctx: click.Context) -> None:
    """Dead letters: list (default), show, replay or discard them."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_command)


@dlq.command("list")
@click.option("--handler", default=None, help="only this handler's dead letters (durable name)")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@database_option
@kafka_option
@click.pass_context
def list_command(
    ctx: click.Context,
    handler: str | None = None,
    as_json: bool = False,
    database_url: str | None = None,
    no_kafka: bool = False,
) -> None:
    """List dead letters: the bus's, then the dead-letter topics'."""

    async def collect(letters: DeadLetters) -> tuple[list[DeadLetterView], bool]:
        return await letters.list(handler=handler), letters.kafka

    views, kafka = _run(ctx, database_url, no_kafka, collect)
    if as_json:
        click.echo(json.dumps([to_dict(view) for view in views], indent=2))
        return
    click.echo("\n".join(_lines(views)) if views else "no dead letters")
    if not kafka:
        click.echo("dead-letter topics: not read (no Kafka bootstrap servers, or --no-kafka)")


def _lines(views: list[DeadLetterView]) -> Iterator[str]:
    """Three lines per letter under its id (ids are never cut: they are what commands take)."""
    kinds = Counter(view.kind for view in views)
    yield f"{len(views)} dead letter(s): bus {kinds['bus']}, kafka {kinds['kafka']}"
    for view in views:
        when = view.failed_at.strftime("%Y-%m-%d %H:%M:%S UTC") if view.failed_at else "-"
        error = f"{view.error_type}: {view.error_message}".splitlines()[0]
        yield ""
        yield view.id
        yield f"  handler  {view.handler} ({view.kind}, {view.attempts} attempts, {when})"
        yield f"  event    {view.event_type} {view.event_id} (aggregate {view.aggregate_id})"
        yield f"  error    {error}"


@dlq.command()
@click.argument("letter_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@database_option
@kafka_option
@click.pass_context
def show(
    ctx: click.Context, letter_id: str, as_json: bool, database_url: str | None, no_kafka: bool
) -> None:
    """Show one dead letter: its event, its error and (bus letters) the traceback."""
    _check_ids((letter_id,))

    async def read(letters: DeadLetters) -> DeadLetterView:
        return await letters.show(letter_id)

    view = _run(ctx, database_url, no_kafka, read)
    data = to_dict(view)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for name in ("id", "kind", "handler", "event_type", "event_id", "aggregate_id", "reason"):
        click.echo(f"{name + ':':14}{data[name]}")
    click.echo(f"{'attempts:':14}{view.attempts}")
    click.echo(f"{'failed_at:':14}{data['failed_at']}")
    click.echo(f"{'error:':14}{view.error_type}: {view.error_message}")
    click.echo(f"payload:\n{json.dumps(data['payload'], indent=2)}")
    if view.traceback:
        click.echo(f"traceback:\n{view.traceback.rstrip()}")


@dlq.command()
@click.argument("letter_ids", metavar="[ID]...", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Replay every dead letter (of --handler).")
@click.option("--handler", default=None, help="with --all: only this handler's dead letters")
@database_option
@kafka_option
@click.pass_context
def replay(
    ctx: click.Context,
    letter_ids: tuple[str, ...],
    every: bool,
    handler: str | None,
    database_url: str | None,
    no_kafka: bool,
) -> None:
    """Apply dead letters' events to their handlers again (the inbox skips applied ones)."""
    if bool(letter_ids) == every:
        raise click.UsageError("give one or more IDs, or --all")
    if handler is not None and not every:
        raise click.UsageError("--handler goes with --all")
    _check_ids(letter_ids)

    async def again(letters: DeadLetters) -> list[Delivery]:
        ids = list(letter_ids)
        if every:
            ids = [view.id for view in await letters.list(handler=handler)]
        return await letters.replay(ids, progress=_echo_delivery(ids))

    deliveries = _run(ctx, database_url, no_kafka, again)
    counts = dict.fromkeys(Outcome, 0)
    for delivery in deliveries:
        counts[delivery.outcome] += 1
    click.echo(
        f"replayed {len(deliveries)}: "
        + ", ".join(f"{outcome.value} {count}" for outcome, count in counts.items())
    )
    if counts[Outcome.FAILED]:
        raise click.exceptions.Exit(FAILED_EXIT)


def _echo_delivery(ids: list[str]) -> Callable[[Delivery], None]:
    """A progress callback echoing one line per replayed letter (its id, outcome, error)."""
    remaining = iter(ids)

    def echo(delivery: Delivery) -> None:
        error = f": {delivery.error}" if delivery.error else ""
        click.echo(f"{next(remaining)}  {delivery.handler}  {delivery.outcome.value}{error}")

    return echo


@dlq.command()
@click.argument("letter_ids", metavar="ID...", nargs=-1, required=True)
@database_option
@kafka_option
@click.pass_context
def discard(
    ctx: click.Context, letter_ids: tuple[str, ...], database_url: str | None, no_kafka: bool
) -> None:
    """Drop dead letters for good: their events are never applied by their handlers."""
    _check_ids(letter_ids)

    async def drop(letters: DeadLetters) -> None:
        for letter_id in letter_ids:  # one at a time: an unknown id stops the rest
            view = await letters.discard(letter_id)
            click.echo(f"{view.id} discarded ({view.handler}, {view.event_type} {view.event_id})")

    _run(ctx, database_url, no_kafka, drop)
