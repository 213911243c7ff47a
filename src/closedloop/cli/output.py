"""Shared CLI plumbing: JSON or table output, and one-line errors with a hint."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click

from closedloop.errors import ClosedloopError


def dump_json(data: Any) -> None:
    import orjson

    click.echo(
        orjson.dumps(
            data, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY, default=str
        ).decode()
    )


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a table (plain text when not a terminal, so scripts and logs stay readable)."""
    from rich.console import Console
    from rich.table import Table

    grid = Table(title=title, title_justify="left")
    for name in columns:
        grid.add_column(name)
    for row in rows:
        grid.add_row(*("" if v is None else str(v) for v in row))
    Console(width=max(100, _width())).print(grid)


def _width() -> int:
    import shutil

    return shutil.get_terminal_size((120, 20)).columns


def say(message: str) -> None:
    click.echo(message)


@contextmanager
def handle_errors(debug: bool, as_json: bool = False) -> Iterator[None]:
    """Turn closedloop errors into one line plus a hint (and the JSON error shape with --json)."""
    try:
        yield
    except ClosedloopError as exc:
        if debug:
            traceback.print_exc()
        if as_json:
            dump_json(exc.to_dict())
        click.echo(f"error: {exc.message}", err=True)
        if exc.hint:
            click.echo(f"hint: {exc.hint}", err=True)
        sys.exit(exc.exit_code)
    except (click.exceptions.ClickException, click.exceptions.Abort, click.exceptions.Exit):
        raise
    except Exception as exc:
        # The last resort: nothing may leave a command as a traceback with exit 1 (which means
        # "drift found"). Storage layers raise StoreError; this catches what slipped through.
        from closedloop.storage.failures import is_storage_failure, one_line

        if debug:
            traceback.print_exc()
        if is_storage_failure(exc):
            error = ClosedloopError(
                f"A store or file could not be used: {one_line(exc)}",
                hint="Check that the metadata store, the artifact store and their endpoints "
                "are reachable (--debug shows the traceback).",
            )
        else:
            error = ClosedloopError(
                f"Unexpected error: {one_line(exc)}",
                hint="This is a bug in closedloop; --debug shows the traceback to report.",
            )
        if as_json:
            dump_json(error.to_dict())
        click.echo(f"error: {error.message}", err=True)
        click.echo(f"hint: {error.hint}", err=True)
        sys.exit(error.exit_code)


def command_runner(func: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: run the command body inside handle_errors, reading --debug/--json."""
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        debug = bool(ctx.find_root().params.get("debug"))
        with handle_errors(debug, bool(kwargs.get("as_json"))):
            return func(*args, **kwargs)

    return wrapper


def workspace() -> Any:
    """The project's workspace, from the root command's --project option."""
    from closedloop.services.workspace import Workspace

    ctx = click.get_current_context()
    cached = ctx.find_root().meta.get("closedloop.workspace")
    if cached is None:
        cached = Workspace.open(ctx.find_root().params.get("project"))
        ctx.find_root().meta["closedloop.workspace"] = cached
    return cached


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
