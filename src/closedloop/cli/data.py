"""Drift commands: ``drift`` (two files) and ``monitor`` (a model's logged traffic).

Exit codes: 0 no drift, 1 drift, 2 error — so both work from cron and CI.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from closedloop.cli.output import command_runner, dump_json, json_option, say, table, workspace

DRIFT_EXIT = 1

alpha_option = click.option(
    "--alpha",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=None,
    help="Family-wise significance level (default 0.05).",
)
correction_option = click.option(
    "--correction",
    type=click.Choice(["bonferroni", "bh"]),
    default=None,
    help="Multiple-testing correction across columns.",
)


def _options(
    alpha: float | None,
    correction: str | None,
    columns: tuple[str, ...] = (),
    categorical: tuple[str, ...] = (),
) -> Any:
    from closedloop.services.monitoring import DriftOptions

    cfg = workspace().settings.monitor
    return DriftOptions(
        alpha=alpha or cfg.alpha,
        correction=correction or cfg.correction,
        columns=columns or None,
        categorical=categorical or None,
    )


def _print_report(report: Any, title: str) -> None:
    rows = []
    for c in report.columns:
        rows.append(
            (
                c.column,
                c.kind,
                c.test,
                _num(c.statistic),
                _num(c.p_value),
                _num(getattr(c, "p_value_adjusted", None)),
                "DRIFT" if c.drifted else "ok",
            )
        )
    table(title, ["column", "kind", "test", "statistic", "p-value", "adjusted", "verdict"], rows)
    drifted = [c.column for c in report.columns if c.drifted]
    verdict = (
        f"DRIFT in {len(drifted)} of {len(report.columns)} columns: {', '.join(drifted)}"
        if report.drifted
        else f"no drift in {len(report.columns)} columns"
    )
    say(f"{verdict} (reference {report.n_reference} rows, current {report.n_current} rows)")


def _num(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.3g}" if abs(value) < 1e-3 and value != 0 else f"{value:.4f}"


@click.command("drift")
@click.argument("reference", type=click.Path(path_type=Path))
@click.argument("current", type=click.Path(path_type=Path))
@click.option("--column", "columns", multiple=True, help="Only these columns (repeatable).")
@click.option("--categorical", multiple=True, help="Treat these columns as categorical.")
@alpha_option
@correction_option
@json_option
@command_runner
def drift_cmd(
    reference: Path,
    current: Path,
    columns: tuple[str, ...],
    categorical: tuple[str, ...],
    alpha: float | None,
    correction: str | None,
    as_json: bool,
) -> None:
    """Compare two data files (parquet or csv): per-column tests and a dataset verdict.

    Numeric columns: Kolmogorov-Smirnov (with PSI reported); categorical: chi-square. P-values
    are corrected across columns. Exits 1 when drift is found, 0 when not, 2 on error.
    """
    from closedloop.services.monitoring import drift_files

    report = drift_files(reference, current, _options(alpha, correction, columns, categorical))
    if as_json:
        dump_json(report.to_dict())
    else:
        _print_report(report, f"drift: {current} vs {reference}")
    sys.exit(DRIFT_EXIT if report.drifted else 0)


@click.command("monitor")
@click.argument("model")
@click.option(
    "--version",
    type=click.IntRange(min=1),
    default=None,
    help="Version to check (default: production).",
)
@click.option(
    "--window",
    type=click.IntRange(min=1),
    default=None,
    help="Most recent logged rows to check (default: monitor.window_rows).",
)
@alpha_option
@correction_option
@json_option
@command_runner
def monitor_cmd(
    model: str,
    version: int | None,
    window: int | None,
    alpha: float | None,
    correction: str | None,
    as_json: bool,
) -> None:
    """Check MODEL's latest logged traffic against its version's training reference.

    The check is recorded in the store. Exits 1 when drift is found, 0 when not, 2 on error.
    """
    from closedloop.services.monitoring import monitor

    result = monitor(
        workspace(), model, version=version, window_rows=window, options=_options(alpha, correction)
    )
    if as_json:
        dump_json(result.to_dict())
    else:
        _print_report(result.report, f"{model} v{result.version}: latest traffic vs training data")
        say(f"check {result.id} recorded")
    sys.exit(DRIFT_EXIT if result.report.drifted else 0)


def register(cli: click.Group) -> None:
    cli.add_command(drift_cmd)
    cli.add_command(monitor_cmd)
