"""``closedloop backtest``: judge a retraining policy on labelled history before trusting it."""

from __future__ import annotations

import math
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from closedloop.cli.output import command_runner, dump_json, json_option, say, workspace
from closedloop.errors import ConfigError, InvalidInputError

if TYPE_CHECKING:
    from closedloop.domain.backtest import WindowResult
    from closedloop.services.backtest import Setup

PROGRESS_LINES = 10
"""When stderr is not a terminal: about this many plain progress lines per run."""


@click.command("backtest")
@click.option(
    "--data",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Labelled history (parquet or csv) with the features, the target and a time column.",
)
@click.option(
    "--simulate",
    is_flag=True,
    help="Use the built-in simulator's seeded stream (drift half-way) instead of --data.",
)
@click.option("--time-column", default=None, help="The column that orders the rows in time.")
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(path_type=Path),
    default=None,
    help="A closedloop.toml to read the policy from instead of the project's.",
)
@click.option(
    "--trainer",
    default=None,
    metavar="builtin|MODULE:FUNCTION",
    help="Retrain with this instead of the project's pipeline.trainer: 'builtin' (a logistic "
    "regression) or a module:function in the project folder. Default: pipeline.trainer, else "
    "the built-in one.",
)
@click.option("--window", default=None, help="Window span, e.g. 7d, 12h, 30m, 1w.")
@click.option(
    "--window-rows",
    type=int,
    default=None,
    help="Window size in rows (default: monitor.window_rows; --simulate: one-day windows).",
)
@click.option(
    "--train-until",
    default=None,
    help="The first model is trained on the rows before this time (default: the first 20 %).",
)
@click.option("--rows", type=int, default=None, help="With --simulate: stream rows (50,000).")
@click.option(
    "--drift-at", type=int, default=None, help="With --simulate: first drifted row (half-way)."
)
@click.option("--seed", type=int, default=None, help="With --simulate: the simulator's seed (0).")
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write a self-contained HTML page (opens offline) to this file.",
)
@json_option
@command_runner
def backtest_cmd(
    data: Path | None,
    simulate: bool,
    time_column: str | None,
    policy_file: Path | None,
    trainer: str | None,
    window: str | None,
    window_rows: int | None,
    train_until: str | None,
    rows: int | None,
    drift_at: int | None,
    seed: int | None,
    html_path: Path | None,
    as_json: bool,
) -> None:
    """Replay time-ordered labelled history through the drift monitor, the triggers, the
    pipeline and the gate, and compare the policy with never retraining and with retraining
    on every window.

    The first model is trained on the rows before --train-until (default: the first 20 %);
    each window is then scored by every strategy's serving model, checked for drift against
    the policy's serving model, and retrained on as the policy says. A model promoted after a
    window serves from the next one.

    The trainer is the project's pipeline.trainer (your code) unless --trainer says otherwise;
    the first lines printed name the trainer, the data and where the policy came from.
    """
    from closedloop.services.backtest import Windowing, backtest_file, backtest_simulated

    _check_source(data, simulate, time_column, rows, drift_at, seed)
    windowing = Windowing(window=window, window_rows=window_rows, train_until=train_until)
    on_start = None if as_json else _print_setup
    with _progress(as_json=as_json) as progress:
        if simulate:
            result = backtest_simulated(
                workspace(),
                rows=rows if rows is not None else 50_000,
                drift_at=drift_at,
                seed=seed or 0,
                windowing=windowing,
                policy_file=policy_file,
                trainer=trainer,
                progress=progress,
                on_start=on_start,
            )
        else:
            assert data is not None and time_column is not None
            result = backtest_file(
                workspace(),
                data,
                time_column=time_column,
                windowing=windowing,
                policy_file=policy_file,
                trainer=trainer,
                progress=progress,
                on_start=on_start,
            )
    body = result.to_dict()
    if html_path is not None:
        _write_html(html_path, body)
    if as_json:
        dump_json(body)
        return
    _print(body)
    if html_path is not None:
        _say(f"page written to {html_path}")


def _check_source(
    data: Path | None,
    simulate: bool,
    time_column: str | None,
    rows: int | None,
    drift_at: int | None,
    seed: int | None,
) -> None:
    if simulate == (data is not None):
        raise InvalidInputError(
            "Pass either --data FILE or --simulate.",
            hint="--data needs --time-column; --simulate uses the simulator's applied_at.",
        )
    if data is not None and not time_column:
        raise InvalidInputError(
            "--time-column is required with --data: name the column that orders the rows."
        )
    if data is not None and any(v is not None for v in (rows, drift_at, seed)):
        raise InvalidInputError("--rows, --drift-at and --seed only apply with --simulate.")


ProgressCallback = Callable[[int, int, "WindowResult"], None]


@contextmanager
def _progress(*, as_json: bool) -> Iterator[ProgressCallback | None]:
    """Progress on stderr: a bar when it is a terminal (stdout, even --json, is untouched);
    otherwise about :data:`PROGRESS_LINES` plain lines, none with --json."""
    if sys.stderr.isatty():
        with _bar() as advance:
            yield advance
    elif as_json:
        yield None
    else:
        yield _lines()


@contextmanager
def _bar() -> Iterator[ProgressCallback]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    counts = _Counts()
    columns = (
        TextColumn("backtest: window"),
        MofNCompleteColumn(),
        BarColumn(),
        TextColumn("{task.fields[retrains]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("backtest", total=None, retrains="")

        def advance(done: int, total: int, window: WindowResult) -> None:
            counts.add(window)
            bar.update(task, completed=done, total=total, retrains=counts.text())

        yield advance


class _Counts:
    """The policy's retrains and promotions so far."""

    def __init__(self) -> None:
        self.retrains = 0
        self.promotions = 0

    def add(self, window: WindowResult) -> None:
        if window.retrain is not None and window.retrain.candidate_version is not None:
            self.retrains += 1
        self.promotions += int(window.promoted)

    def text(self) -> str:
        return f"policy retrains {self.retrains}, promotions {self.promotions}"


def _lines() -> ProgressCallback:
    counts = _Counts()

    def advance(done: int, total: int, window: WindowResult) -> None:
        counts.add(window)
        step = max(1, math.ceil(total / PROGRESS_LINES))
        if done % step == 0 or done == total:
            click.echo(f"backtest: window {done} of {total}; {counts.text()}", err=True)

    return advance


def _write_html(path: Path, body: dict[str, Any]) -> None:
    from closedloop.reports.backtest import render_backtest

    page = render_backtest(body)
    try:
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"Cannot write the page to {path}: {exc.strerror}.") from exc


# --------------------------------------------------------------------------------------------
# The readable table
# --------------------------------------------------------------------------------------------


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def _width() -> int:
    """The terminal's width (``COLUMNS`` when set; 100 when stdout is not a terminal)."""
    import shutil

    return max(60, shutil.get_terminal_size((100, 24)).columns)


def _say(text: str) -> None:
    """One paragraph, wrapped to the terminal (continuation lines indented)."""
    for line in textwrap.wrap(text, width=_width(), subsequent_indent="  ", break_on_hyphens=False):
        say(line)


def _print_setup(setup: Setup) -> None:
    for line in setup.lines():
        _say(line)


def window_row(window: dict[str, Any], strategies: list[str]) -> list[str]:
    """One line per window: when, how many rows, the policy's version, each strategy's metric,
    the drift verdict and what the policy did after the window."""
    drift = window["drift"]
    return [
        str(window["index"]),
        window["start"][:16].replace("T", " "),
        str(window["n"]),
        f"v{window['versions']['policy']}",
        *(_num(window["metrics"][s]) for s in strategies),
        "DRIFT" if drift["drifted"] else ("ok" if drift["checked"] else "—"),
        policy_text(window),
    ]


def policy_text(window: dict[str, Any]) -> str:
    """What the monitor and the policy did after the window, in a few words."""
    drift = window["drift"]
    state = {
        "alerted": "ALERT",
        "drifting": f"drifting ({drift.get('consecutive', 0)})",
        "cooling_down": "cooling down",
        "insufficient_data": "too few rows",
    }.get(drift["state"], "")
    parts = [state] if state else []
    if window["triggers"]:
        retrain = retrain_text(window["retrain"])
        kinds = ", ".join(t["kind"] for t in window["triggers"])
        parts.append(kinds + (f" → {retrain}" if retrain else ""))
    return "; ".join(parts)


def retrain_text(retrain: dict[str, Any] | None) -> str:
    if retrain is None:
        return ""
    if retrain["candidate_version"] is None:
        return f"not run: {retrain['note']}"
    outcome = "PROMOTED" if retrain["promoted"] else "rejected"
    gate = retrain["gate"]
    if gate is None:
        return f"v{retrain['candidate_version']} {outcome} ({retrain['note']})"
    improvement = gate.get("improvement")
    by = "" if improvement is None else f" ({improvement:+.3f})"
    return f"v{retrain['candidate_version']} {outcome}{by}"


def _table(body: dict[str, Any], strategies: list[str]) -> None:
    """The windows, one line each, fitted to the terminal: the last column is cut short with
    an ellipsis rather than wrapped (--json has every field)."""
    from closedloop.domain.backtest import STRATEGY_LABELS

    head = ["#", "start", "n", "serves", *(STRATEGY_LABELS[s].split()[0] for s in strategies)]
    head += ["drift", "policy: monitor; trigger → retrain"]
    rows = [window_row(w, strategies) for w in body["windows"]]
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    right = {0, 2, *range(4, 4 + len(strategies))}
    room = _width()

    def line(cells: list[str]) -> str:
        parts = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        text = " ".join(parts).rstrip()
        return text if len(text) <= room else text[: room - 1] + "…"

    names = ", ".join(STRATEGY_LABELS[s] for s in strategies)
    _say(f"{body['summary']['metric']} per window ({names}):")
    say(line(head))
    say("─" * min(room, len(line(head)) if not rows else max(len(line(r)) for r in rows)))
    for row in rows:
        say(line(row))


def _print(body: dict[str, Any]) -> None:
    from closedloop.domain.backtest import summary_lines

    strategies = list(body["strategies"])
    metric = body["summary"]["metric"]
    data, initial = body["data"], body["initial"]
    _say(
        f"first model: {initial['n_rows']:,} of {data['rows']:,} rows, {data['train_rule']}; "
        f"held-out {metric} {_num(initial['holdout_score'])}."
    )
    _table(body, strategies)
    _say(
        "serves: the policy's version on the window; a model promoted after a window serves "
        "from the next one. --json has every field, --html draws it."
    )
    for line in summary_lines(body["summary"], strategies):
        _say(line)


def register(cli: click.Group) -> None:
    cli.add_command(backtest_cmd)
