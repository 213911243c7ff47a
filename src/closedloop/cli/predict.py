"""``closedloop predict``: score a Parquet or CSV file (local or S3) with a registered version."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click

from closedloop.cli.output import (
    command_runner,
    dump_json,
    json_option,
    resolve_model,
    say,
    workspace,
)


@contextmanager
def _progress_bar(enabled: bool) -> Iterator[Callable[[int, int | None], None] | None]:
    """A progress bar on stderr (rows scored / total rows when known); None when disabled."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("scoring"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = bar.add_task("scoring", total=None)

    def advance(done: int, total: int | None) -> None:
        bar.update(task, completed=done, total=total)

    with bar:
        yield advance


@click.command("predict")
@click.argument("model")
@click.argument("input_path", metavar="INPUT")
@click.argument("output_path", metavar="OUTPUT")
@click.option(
    "--version",
    type=click.IntRange(min=1),
    default=None,
    help="Version to score with (default: the production alias).",
)
@click.option("--alias", default=None, help="Score with the version this alias points to.")
@click.option(
    "--batch-rows",
    type=click.IntRange(min=1),
    default=100_000,
    show_default=True,
    help="Rows read, checked, predicted and written at a time (bounds memory).",
)
@click.option(
    "--keep-features",
    is_flag=True,
    help="Also copy the feature columns to OUTPUT (by default only the other columns are).",
)
@click.option(
    "--log",
    "log",
    is_flag=True,
    help="Record the scored rows in the prediction log (so `closedloop monitor` checks them).",
)
@json_option
@command_runner
def predict_cmd(
    model: str,
    input_path: str,
    output_path: str,
    version: int | None,
    alias: str | None,
    batch_rows: int,
    keep_features: bool,
    log: bool,
    as_json: bool,
) -> None:
    """Score every row of INPUT with MODEL and write OUTPUT.

    INPUT and OUTPUT are Parquet (.parquet, .pq) or CSV (.csv) files, local paths or URLs
    such as s3://bucket/key.parquet. Rows are streamed --batch-rows at a time; each batch's
    feature columns are checked against the version's signature as the server checks a
    request. OUTPUT gets INPUT's other columns (e.g. an id) as they are, `prediction`, and for
    a classifier one `probability_<class>` column per class. OUTPUT appears only once every
    row is scored (an existing file is replaced): a bad row stops the run with its row number
    and column, and leaves no output.
    """
    from closedloop.services.scoring import score_file

    model = resolve_model(model)
    with _progress_bar(sys.stderr.isatty()) as progress:
        result = score_file(
            workspace(),
            model,
            input_path,
            output_path,
            version=version,
            alias=alias,
            batch_rows=batch_rows,
            keep_features=keep_features,
            log=log,
            progress=progress,
        )
    if as_json:
        dump_json(result.to_dict())
        return
    rate = result.rows_per_second
    say(
        f"scored {result.rows:,} rows of {result.input} with {model} v{result.version} in "
        f"{result.batches} batch(es), {result.seconds:.1f} s"
        + (f" ({rate:,.0f} rows/s)" if rate else "")
        + f"; wrote {result.output}"
    )
    if result.logged_rows:
        say(
            f"logged {result.logged_rows:,} rows to the prediction log "
            f"(request ids {result.request_id_prefix}-1 …)"
        )


def register(cli: click.Group) -> None:
    cli.add_command(predict_cmd)
