"""Benchmark: label-free performance estimation (CBPE) under covariate shift and concept drift.

On :class:`~closedloop.domain.simulate.LoanSimulator` data:

1. train the demo's classifier (HistGradientBoosting with one-hot categories,
   :func:`closedloop.demo.pipeline.train`) on pre-drift rows, and fit a calibrator
   (:func:`~closedloop.domain.performance.fit_calibrator`) on a separate held-out pre-drift set;
2. **covariate shift without concept drift**: windows of ``--window`` rows resampled from a
   large pool of *pre-drift* rows with probability ``∝ exp(strength · z(column))`` (z = the
   standardised column), so the feature distribution moves (richer/poorer, more/less
   indebted, better/worse credit) while every label still comes from the unchanged concept.
   Estimated accuracy and ROC AUC are compared with the realised values; the goal is a mean
   and max absolute error within 0.02;
3. **contrast — the simulator's real drift** (covariate *and* concept drift from ``drift_at``):
   consecutive stream windows before and after the drift point. After it the estimate is
   expected to be wrong: CBPE assumes ``P(y|x)`` is unchanged, and here it is not.

Run: ``python benchmarks/performance_estimation.py [--json] [--seed 0] [--window 5000]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Literal

import numpy as np
import pandas as pd

from closedloop.demo.pipeline import train
from closedloop.domain.performance import (
    Calibrator,
    estimate_performance,
    fit_calibrator,
    realised_performance,
)
from closedloop.domain.simulate import LoanSimulator

GOAL = 0.02
METRICS = ("accuracy", "roc_auc")
# (column, strength): rows are drawn with probability proportional to exp(strength * z).
SHIFTS: tuple[tuple[str, float], ...] = (
    ("none", 0.0),
    ("income", 0.5),
    ("income", 1.0),
    ("income", -0.5),
    ("income", -1.0),
    ("debt_to_income", 0.5),
    ("debt_to_income", 1.0),
    ("debt_to_income", 1.5),
    ("credit_score", -0.75),
    ("credit_score", -1.5),
    ("age", 1.0),
)


def _window_result(
    model: Any, calibrator: Calibrator, rows: pd.DataFrame, seed: int
) -> dict[str, Any]:
    features = rows[list(LoanSimulator.feature_columns)]
    scores = model.predict_proba(features)[:, 1]
    predictions = model.predict(features)
    estimate = estimate_performance(scores, calibrator=calibrator, random_state=seed)
    realised = realised_performance(rows[LoanSimulator.target], scores, predictions)
    result: dict[str, Any] = {"default_rate": float(rows[LoanSimulator.target].mean())}
    for metric in METRICS:
        m = estimate[metric]
        value = realised[metric]
        assert value is not None
        result[metric] = {
            "estimated": round(m.value, 4),
            "band": [round(m.lower, 4), round(m.upper, 4)],
            "realised": round(value, 4),
            "error": round(m.value - value, 4),
            "within_band": m.contains(value),
        }
    return result


def _summary(windows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for metric in METRICS:
        errors = np.abs([w[metric]["error"] for w in windows])
        out[metric] = {
            "mean_abs_error": round(float(errors.mean()), 4),
            "max_abs_error": round(float(errors.max()), 4),
            "within_band": f"{sum(w[metric]['within_band'] for w in windows)}/{len(windows)}",
        }
    return out


def run(
    seed: int,
    window: int,
    n_train: int,
    n_calibration: int,
    pool: int,
    calibration: Literal["auto", "isotonic", "identity"] = "auto",
) -> dict[str, Any]:
    started = time.perf_counter()
    sim = LoanSimulator(seed=seed, drift_at=4 * window)
    reference = sim.reference(n_train + n_calibration + pool)
    training = reference.iloc[:n_train]
    held_out = reference.iloc[n_train : n_train + n_calibration]
    pool_rows = reference.iloc[n_train + n_calibration :].reset_index(drop=True)

    features = list(LoanSimulator.feature_columns)
    model = train(training[features], training[LoanSimulator.target])
    calibrator = fit_calibrator(
        model.predict_proba(held_out[features])[:, 1],
        held_out[LoanSimulator.target],
        method=calibration,
    )

    rng = np.random.default_rng(seed)
    covariate: list[dict[str, Any]] = []
    for index, (column, strength) in enumerate(SHIFTS):
        if column == "none":
            weights = np.ones(len(pool_rows))
        else:
            values = pool_rows[column].to_numpy(dtype=np.float64)
            z = (values - values.mean()) / values.std()
            weights = np.exp(strength * z)
        chosen = rng.choice(len(pool_rows), size=window, replace=False, p=weights / weights.sum())
        rows = pool_rows.iloc[np.sort(chosen)]
        result = {"shift": column, "strength": strength}
        if column != "none":
            shifted = rows[column].mean()
            result["column_mean_vs_reference"] = round(float(shifted / pool_rows[column].mean()), 3)
        result.update(_window_result(model, calibrator, rows, seed + index))
        covariate.append(result)

    stream = sim.stream(8 * window)
    concept: list[dict[str, Any]] = []
    for index, start in enumerate(range(0, len(stream), window)):
        rows = stream.iloc[start : start + window]
        result = {
            "rows": f"{start}-{start + window - 1}",
            "after_drift": start >= sim.drift_at,
        }
        result.update(_window_result(model, calibrator, rows, seed + 100 + index))
        concept.append(result)

    covariate_summary = _summary(covariate)
    goal_met = all(
        covariate_summary[m]["mean_abs_error"] <= GOAL
        and covariate_summary[m]["max_abs_error"] <= GOAL
        for m in METRICS
    )
    return {
        "seed": seed,
        "window_rows": window,
        "train_rows": n_train,
        "calibration_rows": n_calibration,
        "pool_rows": pool,
        "calibration": {
            "method": calibrator.method,
            "reason": calibrator.reason,
            "brier_raw": calibrator.brier_raw,
            "brier_isotonic_cv": calibrator.brier_isotonic_cv,
        },
        "covariate_shift": {
            "windows": covariate,
            "summary": covariate_summary,
            "goal": f"mean and max absolute error <= {GOAL}",
            "goal_met": goal_met,
        },
        "real_drift": {
            "drift_at": sim.drift_at,
            "windows": concept,
            "summary_before": _summary([w for w in concept if not w["after_drift"]]),
            "summary_after": _summary([w for w in concept if w["after_drift"]]),
            "note": "After drift_at the simulator changes P(y|x) (concept drift): CBPE assumes "
            "it does not, so the estimate is expected to be wrong there. Only labels "
            "(realised performance) reveal this kind of degradation.",
        },
        "seconds": round(time.perf_counter() - started, 1),
    }


def _print_text(report: dict[str, Any]) -> None:
    cal = report["calibration"]
    print(f"calibration: {cal['method']} ({cal['reason']})")
    print(f"\ncovariate shift, no concept drift ({report['window_rows']} rows per window)")
    header = f"{'shift':<16}{'str':>6}  {'acc est':>8}{'real':>8}{'err':>8}"
    print(header + f"  {'auc est':>8}{'real':>8}{'err':>8}")
    for w in report["covariate_shift"]["windows"]:
        acc, auc = w["accuracy"], w["roc_auc"]
        print(
            f"{w['shift']:<16}{w['strength']:>6}  {acc['estimated']:>8.4f}{acc['realised']:>8.4f}"
            f"{acc['error']:>+8.4f}  {auc['estimated']:>8.4f}{auc['realised']:>8.4f}"
            f"{auc['error']:>+8.4f}"
        )
    print("summary:", json.dumps(report["covariate_shift"]["summary"]))
    print("goal met:", report["covariate_shift"]["goal_met"])
    print(f"\nreal drift at row {report['real_drift']['drift_at']} (covariate + concept drift)")
    for w in report["real_drift"]["windows"]:
        acc, auc = w["accuracy"], w["roc_auc"]
        print(
            f"{w['rows']:<16}{'after' if w['after_drift'] else 'before':>6}  "
            f"{acc['estimated']:>8.4f}{acc['realised']:>8.4f}{acc['error']:>+8.4f}  "
            f"{auc['estimated']:>8.4f}{auc['realised']:>8.4f}{auc['error']:>+8.4f}"
        )
    print("before:", json.dumps(report["real_drift"]["summary_before"]))
    print("after: ", json.dumps(report["real_drift"]["summary_after"]))
    print(report["real_drift"]["note"])
    print(f"\n{report['seconds']} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--window", type=int, default=5_000)
    parser.add_argument("--train-rows", type=int, default=20_000)
    parser.add_argument("--calibration-rows", type=int, default=10_000)
    parser.add_argument("--pool-rows", type=int, default=150_000)
    parser.add_argument("--calibration", choices=("auto", "isotonic", "identity"), default="auto")
    args = parser.parse_args(argv)
    report = run(
        args.seed,
        args.window,
        args.train_rows,
        args.calibration_rows,
        args.pool_rows,
        args.calibration,
    )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
