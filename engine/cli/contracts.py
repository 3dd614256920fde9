"""``eventseam contracts``: write the event contracts, and check code against committed ones.

    eventseam contracts dump DIR      DIR/asyncapi.json (AsyncAPI 3.0) and DIR/schemas/*.json
                                      (one closed JSON Schema per event version); deterministic
    eventseam contracts check DIR     exit 1, naming event and field, when the current events
                                      cannot read what DIR's schemas allow (engine.contracts.compat)
        --compat backward|forward|full    direction (default backward)
        --strict                          also exit 1 when DIR is not what dump would write now

The application comes from ``eventseam --app module:function`` (see ``eventseam contexts``);
topics follow its relay settings, consumer groups its consumer settings. Exit status: 0 when
compatible (dump: written), 1 for incompatible changes (or, with ``--strict``, stale files),
2 when the application, DIR or jsoncompat (the ``contracts`` extra) is unusable.
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from engine.cli.contexts import Application, loaded_application
from engine.cli.failure import fail
from engine.contracts import (
    Compat,
    ContractError,
    DocumentInfo,
    Finding,
    check_compatibility,
    current_schemas,
    read_info,
    read_schemas,
    render_contracts,
    stale_files,
    write_contracts,
)
from engine.errors import EngineError
from outbox.topics import TopicNamer

INCOMPATIBLE_EXIT = 1
_DIRECTORY = click.Path(file_okay=False, path_type=Path)
_DEFAULT_INFO = DocumentInfo()


@click.group()
def contracts() -> None:
    """Event contracts: an AsyncAPI document and JSON Schemas, and a compatibility check."""


@contracts.command("dump")
@click.argument("directory", type=_DIRECTORY)
@click.option("--title", default=_DEFAULT_INFO.title, show_default=True, help="info.title")
@click.option(
    "--api-version",
    default=_DEFAULT_INFO.version,
    show_default=True,
    help="info.version of the AsyncAPI document (the contract's version)",
)
@click.pass_context
def dump(ctx: click.Context, directory: Path, title: str, api_version: str) -> None:
    """Write DIR/asyncapi.json and DIR/schemas/<event>.v<N>.json for every event version."""
    console = Console(highlight=False)
    with loaded_application(ctx) as app:
        files = _render(app, DocumentInfo(title=title, version=api_version))
    try:
        report = write_contracts(directory, files)
    except ContractError as exc:
        fail(str(exc))
    for relative in report.written:
        console.print(f"wrote {escape(str(directory / relative))}")
    for relative in report.removed:
        console.print(f"[yellow]removed[/] {escape(str(directory / relative))}")
    console.print(
        f"{len(files) - 1} event schema(s) and the AsyncAPI document in {escape(str(directory))}: "
        f"{len(report.written)} written, {len(report.unchanged)} unchanged, "
        f"{len(report.removed)} removed"
    )


@contracts.command("check")
@click.argument("directory", type=_DIRECTORY)
@click.option(
    "--compat",
    type=click.Choice([c.value for c in Compat]),
    default=Compat.BACKWARD.value,
    show_default=True,
    help="backward: the events read what DIR allows; forward: DIR's readers read the events",
)
@click.option("--strict", is_flag=True, help="also fail when DIR is not what dump would write now")
@click.pass_context
def check(ctx: click.Context, directory: Path, compat: str, strict: bool) -> None:
    """Fail, naming event and field, when the events are not compatible with DIR's schemas."""
    console = Console(highlight=False)
    with loaded_application(ctx) as app:
        try:
            committed = read_schemas(directory)
            findings = check_compatibility(committed, current_schemas(app.contexts), Compat(compat))
            stale = stale_files(directory, _render(app, read_info(directory))) if strict else []
        except ContractError as exc:
            fail(str(exc))
    breaking = [f for f in findings if f.breaking]
    _report(console, directory, compat, findings, stale)
    if breaking or stale:
        raise click.exceptions.Exit(INCOMPATIBLE_EXIT)
    console.print(
        f"[green]{len(committed)} committed event version(s) in {escape(str(directory))}: "
        f"the current events are {compat} compatible.[/]"
    )


def _report(
    console: Console, directory: Path, compat: str, findings: list[Finding], stale: list[str]
) -> None:
    breaking = [f for f in findings if f.breaking]
    if breaking:
        console.print(
            f"[bold red]error:[/] {len(breaking)} incompatible change(s) against "
            f"{escape(str(directory))} ({compat}):"
        )
    for finding in findings:
        tag = "[red]BREAKING[/]" if finding.breaking else "[yellow]note[/]"
        console.print(f"  {tag} {escape(str(finding))}")
    for relative in stale:
        console.print(f"  [red]STALE[/] {escape(relative)}: differs from what dump writes now")
    if breaking:
        console.print(
            "Keep old fields and add optional ones; for a breaking change declare a new version "
            "with an upcaster. If the break is intended, run `eventseam contracts dump "
            f"{escape(str(directory))}` and commit the result."
        )
    elif stale:
        console.print(f"Run `eventseam contracts dump {escape(str(directory))}` and commit it.")


def _render(app: Application, info: DocumentInfo | None) -> dict[str, str]:
    """Every file dump writes for ``app``; invalid naming settings exit with status 2."""
    prefix = app.settings.consumer.group_prefix
    try:
        return render_contracts(
            app.contexts,
            topic_of=TopicNamer(app.settings.relay),
            group_of=lambda handler: f"{prefix}{handler}",
            info=info,
        )
    except EngineError as exc:
        fail(str(exc))
