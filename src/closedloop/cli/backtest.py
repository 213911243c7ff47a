"""``closedloop backtest``: judge a retraining policy on labelled history before trusting it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from closedloop.cli.output import command_runner, dump_json, json_option, say, table, workspace
from closedloop.errors import ConfigError, InvalidInputError


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
    """
    from closedloop.services.backtest import Windowing, backtest_file, backtest_simulated

    _check_source(data, simulate, time_column, rows, drift_at, seed)
    windowing = Windowing(window=window, window_rows=window_rows, train_until=train_until)
    with _progress(enabled=not as_json) as progress:
        if simulate:
            result = backtest_simulated(
                workspace(),
                rows=rows if rows is not None else 50_000,
                drift_at=drift_at,
                seed=seed or 0,
                windowing=windowing,
                policy_file=policy_file,
                progress=progress,
            )
        else:
            assert data is not None and time_column is not None
            result = backtest_file(
                workspace(),
                data,
                time_column=time_column,
                windowing=windowing,
                policy_file=policy_file,
                progress=progress,
            )
    body = result.to_dict()
    if html_path is not None:
        _write_html(html_path, body)
    if as_json:
        dump_json(body)
        return
    _print(body)
    if html_path is not None:
        say(f"page written to {html_path}")


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


@contextmanager
def _progress(*, enabled: bool) -> Iterator[Any]:
    """A progress bar on stderr when it is a terminal; otherwise no callback."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("replaying windows", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield advance


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


def window_row(window: dict[str, Any], strategies: list[str]) -> list[str]:
    """One table row: when, who served, how well, what the policy saw and did."""
    drift = window["drift"]
    verdict = "DRIFT" if drift["drifted"] else ("ok" if drift["checked"] else "—")
    columns = list(drift["columns"])
    if drift["drifted"] and columns:
        more = f" +{len(columns) - 2}" if len(columns) > 2 else ""
        verdict += f": {', '.join(columns[:2])}{more}"
    return [
        str(window["index"]),
        window["start"][:16].replace("T", " "),
        str(window["n"]),
        "/".join(str(window["versions"][s]) for s in strategies),
        *(_num(window["metrics"][s]) for s in strategies),
        verdict,
        drift["state"] + (" ALERT" if window["alert"] else ""),
        ", ".join(t["kind"] for t in window["triggers"]) or "",
        retrain_text(window["retrain"]),
    ]


def retrain_text(retrain: dict[str, Any] | None) -> str:
    if retrain is None:
        return ""
    if retrain["candidate_version"] is None:
        return f"not run: {retrain['note']}"
    outcome = "PROMOTED" if retrain["promoted"] else "rejected"
    if retrain["gate"] is None:
        return f"v{retrain['candidate_version']} {outcome} ({retrain['note']})"
    return f"v{retrain['candidate_version']} {outcome}"


def _print(body: dict[str, Any]) -> None:
    from closedloop.domain.backtest import STRATEGY_LABELS, summary_lines

    strategies = list(body["strategies"])
    metric = body["summary"]["metric"]
    data, initial = body["data"], body["initial"]
    say(
        f"{data['source']}: {data['rows']:,} rows; first model trained on "
        f"{initial['n_rows']:,} rows ({data['train_rule']}), held-out {metric} "
        f"{_num(initial['holdout_score'])}; windows of {data['window']}."
    )
    head = ["#", "start", "n", "versions", *(STRATEGY_LABELS[s] for s in strategies)]
    labels = " / ".join(STRATEGY_LABELS[s] for s in strategies)
    table(
        f"backtest: {metric} per window (versions: {labels})",
        [*head, "drift", "monitor", "triggers", "retrain"],
        [window_row(w, strategies) for w in body["windows"]],
    )
    for line in summary_lines(body["summary"], strategies):
        say(line)


def register(cli: click.Group) -> None:
    cli.add_command(backtest_cmd)
