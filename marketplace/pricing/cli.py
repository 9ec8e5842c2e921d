"""``marketplace pricing import FILE --trust ODS`` and ``marketplace pricing refresh``
(DESIGN §9)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from ..cli import CLI_ACTOR, app_state, fail, handle_errors, session_scope
from . import rollups, service
from .importer import FORMATS, CountingReader, MalformedFile, RowError, detect_format


@click.group("pricing")
def pricing() -> None:
    """Purchase records and price-variance statistics."""


@pricing.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path, allow_dash=True))
@click.option("--trust", "ods", required=True, help="ODS code of the trust that bought.")
@click.option(
    "--format",
    "file_format",
    type=click.Choice(FORMATS),
    default=None,
    help="Default: from the file name (.csv, .json), else from its first character.",
)
@click.option("--quiet", is_flag=True, default=False, help="No progress bar.")
@handle_errors
def import_command(file: Path, ods: str, file_format: str | None, quiet: bool) -> None:
    """Import a CSV or JSON file of a trust's purchase lines.

    Rejected rows go to stderr as FILE:ROW: COLUMN: reason; the summary goes to stdout. Exit
    status 0 when every row was accepted, 1 when some were rejected (the others are imported)
    or the file was refused (then nothing is written)."""
    label = str(file)
    if label == "-":
        raw = sys.stdin.buffer
        size = None
        file_format = file_format or "csv"
    else:
        raw = file.open("rb")
        size = os.fstat(raw.fileno()).st_size
        if file_format is None:
            head = raw.read(64)
            raw.seek(0)
            file_format = detect_format(file.name, None, head)
    show_bar = not quiet and size is not None and sys.stderr.isatty()

    def report(error: RowError) -> None:
        click.echo(f"{label}:{error.row}: {error.column}: {error.reason}", err=True)

    try:
        with click.progressbar(
            length=size or 0,
            label=f"Importing {file.name}",
            file=sys.stderr if show_bar else open(os.devnull, "w"),
            show_eta=True,
            show_percent=True,
        ) as bar:
            reader = CountingReader(raw, on_progress=bar.update)
            with session_scope() as session:
                trust = service.find_trust(session, ods)
                result = service.import_purchases(
                    session,
                    CLI_ACTOR,
                    trust,
                    reader,
                    file_format,
                    filename=file.name,
                    on_error=report,
                )
    except MalformedFile as error:
        fail(f"{label}: {error.detail} Nothing was imported.")
        return
    finally:
        if raw is not sys.stdin.buffer:
            raw.close()
    click.echo(
        f"{label}: {result.rows} rows read; {result.imported} imported "
        f"({result.matched} matched, {result.unmatched} unmatched); "
        f"{result.already_imported} already imported; {result.rejected} rejected."
    )
    click.echo(f"import id: {result.import_id}")
    if result.rejected:
        click.echo(f"marketplace: {result.rejected} rows were rejected (see above).", err=True)
        sys.exit(1)


@pricing.command("refresh")
@click.option(
    "--rollups",
    "rebuild",
    is_flag=True,
    default=False,
    help="Also rebuild the daily and monthly rollups (e.g. after lines were loaded or repaired "
    "below the importer).",
)
@click.option("--quiet", is_flag=True, default=False, help="No progress bar.")
@handle_errors
def refresh_command(rebuild: bool, quiet: bool) -> None:
    """Recompute the default window's statistics from the raw purchase lines."""
    app_state()
    bar = None

    def progress(stage: str, done: int, total: int) -> None:
        nonlocal bar
        if stage == "waiting":
            click.echo("Waiting for the imports in progress to commit…", err=True)
            return
        if quiet or stage != "statistics" or not total:
            return
        if bar is None:
            bar = click.progressbar(length=total, label="Computing statistics", file=sys.stderr)
            bar.__enter__()
        bar.update(done - bar.pos)

    if rebuild:
        click.echo("Rebuilding the rollups from the purchase lines…", err=True)
    click.echo("Summing the window's purchase lines per trust…", err=True)
    try:
        with session_scope() as session:
            products = rollups.refresh_all(session, progress=progress, rebuild=rebuild)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    click.echo(f"statistics refreshed for {products} products")
