"""Why a verdict is what it is: every signal that can make a window drifted is stated."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from closedloop.domain.checks.assessment import assess
from closedloop.domain.checks.drift import DriftReport
from closedloop.domain.checks.verdict import estimate_disagreements, verdict_reasons


def correlated(rho: float, seed: int, n: int = 4000) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x, noise = rng.standard_normal(n), rng.standard_normal(n)
    return pd.DataFrame({"x": x, "y": rho * x + np.sqrt(1 - rho**2) * noise})


def column(name: str, drifted: bool) -> dict[str, Any]:
    return {
        "column": name,
        "kind": "numeric",
        "test": "ks",
        "statistic": 0.2 if drifted else 0.01,
        "p_value": 1e-9 if drifted else 0.5,
        "drifted": drifted,
    }


def report(**fields: Any) -> DriftReport:
    body = {
        "drifted": False,
        "n_reference": 1000,
        "n_current": 1000,
        "columns": [column("income", False), column("age", False)],
    }
    return DriftReport.from_dict(body | fields)


def test_a_broken_correlation_is_stated_as_joint_drift() -> None:
    found = assess(correlated(0.9, 1), correlated(-0.9, 2), quality=False)
    assert found.drifted and found.drifted_columns == []
    [reason] = verdict_reasons(found)
    assert (reason.signal, reason.counted, reason.label) == ("joint", True, "joint drift")
    assert reason.text.startswith("joint drift — no column drifted on its own")
    assert "ROC AUC" in reason.text and "relationship between columns" in reason.text


def test_a_drifted_report_always_has_a_counted_reason() -> None:
    columns = report(drifted=True, columns=[column("income", True), column("age", False)])
    [reason] = verdict_reasons(columns)
    assert reason.counted and reason.label == "1 of 2 columns"
    assert reason.text.startswith("per-column drift in 1 of 2 columns: income")

    quality = {
        "flagged": True,
        "affects_verdict": True,
        "columns": [{"column": "age", "flagged": True, "reasons": ["missing_rate_increase"]}],
    }
    [reason] = verdict_reasons(report(drifted=True, quality=quality))
    assert (reason.signal, reason.counted) == ("quality", True)
    assert reason.text == "data quality — age (missing values rose)"


def test_signals_that_do_not_count_are_stated_as_such_after_those_that_do() -> None:
    quality = {
        "flagged": True,
        "affects_verdict": False,
        "columns": [{"column": "city", "flagged": True, "reasons": ["unseen_categories"]}],
    }
    weighting = {"weighted_share": 0.02, "min_weighted_share": 0.3, "counts": False}
    found = report(
        drifted=True,
        columns=[column("income", False), column("zip", True)],
        multivariate={"drifted": True, "auc": 0.7, "ci_low": 0.68, "ci_high": 0.72},
        quality=quality,
        weighting=weighting,
    )
    outputs = {
        "prediction_drift": {"column": "_score", "test": "ks", "drifted": True}
        | {"statistic": 0.3, "p_value": 1e-12}
    }
    reasons = verdict_reasons(found, outputs)
    assert [(r.signal, r.counted) for r in reasons] == [
        ("joint", True),
        ("columns", False),
        ("quality", False),
        ("prediction", False),
    ]
    assert "carry 2% of the importance weight, below the 30% the verdict needs" in reasons[1].text
    assert reasons[2].text.endswith("(reported; not counted in the verdict)")
    assert "model's scores differ" in reasons[3].text


def test_nothing_fired_means_no_reasons() -> None:
    assert verdict_reasons(report(multivariate={"drifted": False, "auc": 0.5})) == []


def performance(realised: float, n_labelled: int, n: int = 2000) -> dict[str, Any]:
    return {
        "estimated": {"n": n, "metrics": {"roc_auc": {"value": 0.82, "lower": 0.8, "upper": 0.84}}},
        "realised": {"roc_auc": realised, "n_labelled": n_labelled},
    }


def test_an_estimate_far_from_the_labels_is_flagged_as_likely_concept_drift() -> None:
    [found] = estimate_disagreements(performance(0.63, 2000))
    assert found["metric"] == "roc_auc" and found["realised"] == 0.63
    reasons = verdict_reasons(report(), {"performance": performance(0.63, 2000)})
    assert [(r.signal, r.counted) for r in reasons] == [("performance", False)]
    assert "estimated ROC AUC 0.82" in reasons[0].text and "realised 0.63" in reasons[0].text
    assert "concept drift" in reasons[0].text


@pytest.mark.parametrize(
    ("realised", "n_labelled", "disagrees"),
    [
        (0.81, 2000, False),  # inside the band
        (0.78, 2000, True),  # just outside the band of all rows
        (0.78, 200, False),  # 200 labels vary more: the band is sqrt(10) times wider
        (0.70, 200, True),
    ],
)
def test_the_band_widens_when_few_rows_are_labelled(
    realised: float, n_labelled: int, disagrees: bool
) -> None:
    assert bool(estimate_disagreements(performance(realised, n_labelled))) is disagrees


def test_missing_performance_parts_disagree_with_nothing() -> None:
    assert estimate_disagreements(None) == []
    assert estimate_disagreements({"estimated": {"note": "x"}}) == []
    assert estimate_disagreements({"estimated": performance(0.6, 10)["estimated"]}) == []
