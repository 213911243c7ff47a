"""Shared CLI plumbing: JSON or table output, and one-line errors with a hint."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click

from closedloop.errors import ClosedloopError, ConfigError


def dump_json(data: Any) -> None:
    import orjson

    click.echo(
        orjson.dumps(
            data, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY, default=str
        ).decode()
    )


def table(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, fit_first: bool = False
) -> None:
    """Print a table (plain text when not a terminal, so scripts and logs stay readable).

    ``fit_first``: the first column (row names) is never cut or wrapped."""
    from rich.console import Console
    from rich.table import Table

    grid = Table(title=title, title_justify="left")
    for i, name in enumerate(columns):
        if i == 0 and fit_first:
            longest = max([len(name), *(len(str(row[0])) for row in rows)])
            grid.add_column(name, no_wrap=True, min_width=min(longest, 80))
        else:
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


# Commands that may create the project's store (the first `train`, a server or an agent
# waiting for models); every other command reads an existing store and creates nothing.
_CREATING = {"train", "db upgrade", "serve", "agent", "retrain", "alerts test"}
# Commands that read settings only: they work in any folder.
_ANYWHERE = {"drift", "backtest"}


def _command_name(ctx: click.Context) -> str:
    names: list[str] = []
    while ctx.parent is not None:
        names.append(ctx.command.name or "")
        ctx = ctx.parent
    return " ".join(reversed(names))


def workspace() -> Any:
    """The project's workspace, from the root command's --project option.

    Outside a project (no closedloop.toml here or above, no store in the environment) a command
    that opens the store is refused; a command that only reads never creates the store."""
    from closedloop.services.workspace import Workspace

    ctx = click.get_current_context()
    root = ctx.find_root()
    cached = root.meta.get("closedloop.workspace")
    if cached is None:
        cached = Workspace.open(root.params.get("project"))
        command = _command_name(ctx)
        if command not in _ANYWHERE:
            cached.require_project()
            if command not in _CREATING:
                cached.require_store()
        root.meta["closedloop.workspace"] = cached
    return cached


def model_argument(func: Callable[..., Any]) -> Callable[..., Any]:
    """The MODEL argument: optional, the project's pipeline.model when left out."""
    return click.argument("model", required=False, default=None)(func)


def resolve_model(given: str | None) -> str:
    """MODEL as given, else pipeline.model; NotFoundError (naming the closest registered
    model) when no such model is registered."""
    from closedloop.services import registry

    ws = workspace()
    model = given or ws.settings.pipeline.model
    if not model:
        raise ConfigError(
            "No MODEL given and pipeline.model is not set.",
            hint="Name the model, or set [pipeline] model in closedloop.toml.",
        )
    registry.get_model_id(ws, model)
    return str(model)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def figure(value: Any, digits: int = 4) -> str:
    """A metric value for people: ``digits`` significant figures (0.7931, 1.235e+04); ints and
    anything not a number as they are. ``--json`` output keeps full precision."""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    if hasattr(value, "dtype") and getattr(value, "ndim", None) == 0:  # a numpy scalar
        return figure(value.item(), digits)
    return str(value)
