"""Drift commands: ``drift`` (two files) and ``monitor`` (a model's logged traffic).

Exit codes: 0 no drift, 1 drift, 2 error — so both work from cron and CI.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from closedloop.cli.output import (
    command_runner,
    dump_json,
    json_option,
    model_argument,
    resolve_model,
    say,
    table,
    workspace,
)
from closedloop.errors import ConfigError

DRIFT_EXIT = 1

alpha_option = click.option(
    "--alpha",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=None,
    help="Family-wise significance level (default: monitor.alpha, 0.01).",
)
correction_option = click.option(
    "--correction",
    type=click.Choice(["bonferroni", "bh"]),
    default=None,
    help="Multiple-testing correction across columns.",
)


def _extras_options(func: Any) -> Any:
    func = click.option(
        "--no-multivariate",
        is_flag=True,
        help="Skip the domain-classifier test of joint drift (faster).",
    )(func)
    return click.option(
        "--no-quality", is_flag=True, help="Skip the data-quality signals (faster)."
    )(func)


def _options(
    alpha: float | None,
    correction: str | None,
    columns: tuple[str, ...] = (),
    categorical: tuple[str, ...] = (),
    *,
    no_multivariate: bool = False,
    no_quality: bool = False,
) -> Any:
    from closedloop.services.monitoring import DriftOptions

    cfg = workspace().settings.monitor
    return DriftOptions(
        alpha=alpha or cfg.alpha,
        correction=correction or cfg.correction,
        columns=columns or None,
        categorical=categorical or None,
        multivariate=not no_multivariate,
        quality=not no_quality,
    )


def _print_report(report: Any, title: str, outputs: dict[str, Any] | None = None) -> None:
    from closedloop.domain.checks.verdict import verdict_reasons

    marks = {"drift": "DRIFT", "minor": "minor", "stable": "stable"}
    rows = []
    for c in report.columns:  # ranked: drift, minor, stable; largest effect first
        rows.append(
            (
                c.column,
                c.kind,
                c.test,
                _num(c.statistic),
                _num(c.p_value),
                _num(c.p_value_adjusted),
                f"{_num(c.effect_size)} / {_num(c.effect_floor)}",
                marks[c.severity],
            )
        )
    head = ["column", "kind", "test", "statistic", "p-value", "adjusted", "effect / floor"]
    table(title, [*head, "severity"], rows)
    reasons = verdict_reasons(report, outputs)
    size = f"reference {report.n_reference} rows, current {report.n_current} rows"
    if report.drifted:
        for reason in (r for r in reasons if r.counted):
            say(f"DRIFT: {reason.text}")
        say(f"({size})")
    else:
        say(f"no drift in {len(report.columns)} columns ({size})")
    if report.minor_columns:
        say(
            f"minor: {', '.join(report.minor_columns)} (significant after the correction but "
            "below the effect floor; not counted)"
        )
    for reason in (r for r in reasons if not r.counted):
        say(f"note: {reason.text}")


def _reasons(report: Any, outputs: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    from closedloop.domain.checks.verdict import verdict_reasons

    return [r.to_dict() for r in verdict_reasons(report, outputs)]


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
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write a self-contained HTML report (opens offline) to this file.",
)
@_extras_options
@click.option(
    "--weights",
    "weights_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help='JSON object of feature-importance weights per column, e.g. {"income": 0.4}.',
)
@click.option(
    "--min-weighted-share",
    type=click.FloatRange(0.0, 1.0),
    default=0.0,
    help="With --weights: per-column drift counts only when the drifted columns carry at "
    "least this share of the weight [0: reported only].",
)
@json_option
@command_runner
def drift_cmd(
    reference: Path,
    current: Path,
    columns: tuple[str, ...],
    categorical: tuple[str, ...],
    alpha: float | None,
    correction: str | None,
    html_path: Path | None,
    no_multivariate: bool,
    no_quality: bool,
    weights_path: Path | None,
    min_weighted_share: float,
    as_json: bool,
) -> None:
    """Compare two data files (parquet or csv): per-column tests and a dataset verdict.

    Numeric columns: Kolmogorov-Smirnov (PSI, Wasserstein and Jensen-Shannon distances
    reported); categorical: chi-square (PSI, Jensen-Shannon, total variation, unseen categories).
    P-values are corrected across columns. Each column is DRIFT (significant, effect at or above
    its floor), minor (significant, below the floor: reported, never an alarm) or stable; columns
    are listed most severe and largest effect first. A domain classifier tests joint drift;
    data-quality signals are reported. Exits 1 when drift is found, 0 when not, 2 on error.
    """
    from dataclasses import replace

    from closedloop.services.monitoring import drift_files, read_weights

    options = _options(
        alpha,
        correction,
        columns,
        categorical,
        no_multivariate=no_multivariate,
        no_quality=no_quality,
    )
    if weights_path is not None:
        options = replace(
            options, weights=read_weights(weights_path), min_weighted_share=min_weighted_share
        )
    elif min_weighted_share > 0:
        raise ConfigError("--min-weighted-share needs --weights FILE.")
    report = drift_files(reference, current, options)
    if html_path is not None:
        _write_html(html_path, report, reference, current, list(columns) or None)
    if as_json:
        dump_json({**report.to_dict(), "reasons": _reasons(report)})
    else:
        _print_report(report, f"drift: {current} vs {reference}")
        if html_path is not None:
            say(f"report written to {html_path}")
    sys.exit(DRIFT_EXIT if report.drifted else 0)


def _write_html(
    path: Path, report: Any, reference: Path, current: Path, columns: list[str] | None
) -> None:
    from closedloop.reports import render_drift_report
    from closedloop.storage.datafiles import read_table

    page = render_drift_report(
        report,
        read_table(reference, columns=columns),
        read_table(current, columns=columns),
        title=f"{current.name} vs {reference.name}",
    )
    try:
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"Cannot write the report to {path}: {exc.strerror}.") from exc


@click.command("monitor")
@model_argument
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
@_extras_options
@json_option
@command_runner
def monitor_cmd(
    model: str | None,
    version: int | None,
    window: int | None,
    alpha: float | None,
    correction: str | None,
    no_multivariate: bool,
    no_quality: bool,
    as_json: bool,
) -> None:
    """Check MODEL's latest logged traffic against its version's training reference.

    The check is recorded in the store. An alert (a `monitor.alert` event) is raised when
    monitor.persistence consecutive windows drifted, at most once per monitor.cooldown_seconds.
    Exits 1 when drift is found, 0 when not, 2 on error — including no verdict: fewer than
    monitor.min_rows logged rows, or no new traffic since the version's last check.
    """
    from closedloop.services.monitors import run_monitor

    model = resolve_model(model)
    result = run_monitor(
        workspace(),
        model,
        version=version,
        window_rows=window,
        options=_options(alpha, correction, no_multivariate=no_multivariate, no_quality=no_quality),
    )
    check = result.check
    if as_json:
        dump_json(
            {
                **check.to_dict(),
                "reasons": _reasons(check.report, check.outputs),
                "monitor": result.decision.to_dict(),
                "alert_event_id": result.alert_event_id,
            }
        )
    else:
        _print_report(
            check.report,
            f"{model} v{check.version}: latest traffic vs training data",
            check.outputs,
        )
        say(
            f"check {check.number} of {model} recorded; monitor: {result.decision.reason}"
            + (" — ALERT raised" if result.alerted else "")
        )
    sys.exit(DRIFT_EXIT if check.report.drifted else 0)


@click.command("report")
@model_argument
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the HTML (default: MODEL-report.html).",
)
@click.option(
    "--checks",
    type=click.IntRange(min=1, max=500),
    default=20,
    show_default=True,
    help="How many recent checks to plot.",
)
@command_runner
def report_cmd(model: str | None, out: Path | None, checks: int) -> None:
    """Write a self-contained HTML report of MODEL's recent drift checks (opens offline)."""
    from closedloop.reports import render_model_report

    model = resolve_model(model)
    page = render_model_report(workspace(), model, checks=checks)
    path = out or Path(f"{model}-report.html")
    try:
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"Cannot write the report to {path}: {exc.strerror}.") from exc
    say(f"report written to {path}")


def register(cli: click.Group) -> None:
    cli.add_command(drift_cmd)
    cli.add_command(monitor_cmd)
    cli.add_command(report_cmd)
