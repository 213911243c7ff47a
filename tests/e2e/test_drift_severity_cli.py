"""``closedloop drift`` on large windows with small changes: minor columns, never an alarm."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from tests.e2e.test_cli import as_json, assert_ranked, cli

ROWS = 70_000


def _windows(tmp_path: Path) -> tuple[Path, Path]:
    """A 0.03-sd shift of ``amount`` (KS D = 0.012) and a 1.5-point move of ``plan``'s shares
    (TVD = 0.015): both significant at 70,000 rows per side, both under the 0.05 floors."""
    rng = np.random.default_rng(3)
    quantiles = stats.norm.ppf((np.arange(ROWS) + 0.5) / ROWS)
    half, moved = ROWS // 2, int(0.015 * ROWS)
    reference = pd.DataFrame(
        {
            "amount": rng.permutation(quantiles),
            "plan": rng.permutation(["basic"] * half + ["pro"] * (ROWS - half)),
            "age": rng.permutation(np.arange(ROWS) % 60 + 18),
        }
    )
    current = pd.DataFrame(
        {
            "amount": rng.permutation(quantiles + 0.03),
            "plan": rng.permutation(["basic"] * (half + moved) + ["pro"] * (ROWS - half - moved)),
            "age": rng.permutation(np.arange(ROWS) % 60 + 18),
        }
    )
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    reference.to_parquet(a, index=False)
    current.to_parquet(b, index=False)
    return a, b


def test_a_significant_but_small_change_is_minor_not_drift_and_exits_0(tmp_path: Path) -> None:
    a, b = _windows(tmp_path)

    result = cli(tmp_path, "drift", str(a), str(b), "--json")
    assert result.returncode == 0, result.stderr
    report = as_json(result)
    assert report["drifted"] is False
    columns = {c["column"]: c for c in report["columns"]}
    for name in ("amount", "plan"):
        column = columns[name]
        assert (column["severity"], column["drifted"]) == ("minor", False), column
        assert column["p_value_adjusted"] < 1e-3
    assert columns["amount"]["statistic"] < columns["amount"]["effect_floor"]
    assert columns["plan"]["tvd"] < columns["plan"]["effect_floor"]
    assert (columns["age"]["severity"], columns["age"]["p_value"]) == ("stable", 1.0)
    assert [c["column"] for c in report["columns"]] == ["plan", "amount", "age"]
    assert_ranked(report["columns"])

    human = cli(tmp_path, "drift", str(a), str(b))
    assert human.returncode == 0, human.stderr
    lines = human.stdout.splitlines()
    assert "severity" in next(line for line in lines if "column" in line and "kind" in line)
    cells = [line.replace("│", " ").split() for line in lines]
    rows = [row for row in cells if row[:1] in (["plan"], ["amount"], ["age"])]
    assert [(row[0], row[-1]) for row in rows] == [
        ("plan", "minor"),
        ("amount", "minor"),
        ("age", "stable"),
    ]
    assert "no drift in 3 columns" in human.stdout
    assert any(line.startswith("minor: plan, amount") for line in lines), human.stdout
    assert "DRIFT" not in human.stdout
