"""`closedloop predict` as a user runs it: a project made with `init` and `train`, a file of new
applications scored into another, logged so `monitor` checks them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.e2e.test_cli import as_json, assert_clean_error, cli, ok

from closedloop.domain.simulate import LoanSimulator

FEATURES = list(LoanSimulator.feature_columns)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("predict")
    ok(folder, "init")
    ok(folder, "train")
    return folder


@pytest.fixture
def project(trained: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    shutil.copytree(trained, folder)
    return folder


def _applications(project: Path, rows: int = 1200) -> pd.DataFrame:
    frame = LoanSimulator(seed=21).stream(rows)[FEATURES]
    frame.insert(0, "application_id", [f"A{i:05d}" for i in range(rows)])
    frame.to_parquet(project / "in.parquet", index=False)
    return frame


def test_predict_scores_a_file_and_logged_rows_are_monitored(project: Path) -> None:
    applications = _applications(project)

    result = ok(project, "predict", "loans", "in.parquet", "out.parquet", "--log", "--json")

    summary = as_json(result)
    assert {k: summary[k] for k in ("model", "version", "rows", "batches", "logged_rows")} == {
        "model": "loans",
        "version": 1,
        "rows": 1200,
        "batches": 1,
        "logged_rows": 1200,
    }
    assert summary["output"] == "out.parquet"
    assert result.stderr == ""  # no progress bar when stderr is not a terminal
    scored = pd.read_parquet(project / "out.parquet")
    assert list(scored.columns) == [
        "application_id",
        "prediction",
        "probability_0",
        "probability_1",
    ]
    assert scored["application_id"].tolist() == applications["application_id"].tolist()
    np.testing.assert_allclose(scored["probability_0"] + scored["probability_1"], 1.0)

    check = cli(project, "monitor", "loans", "--json")
    assert check.returncode in (0, 1), check.stderr  # a verdict: drift or not
    assert as_json(check)["n_current"] == 1200


def test_predict_in_batches_to_csv_says_what_it_did(project: Path) -> None:
    _applications(project, 250)
    result = ok(project, "predict", "loans", "in.parquet", "out.csv", "--batch-rows", "100")
    assert "scored 250 rows of in.parquet with loans v1 in 3 batch(es)" in result.stdout
    assert "wrote out.csv" in result.stdout
    assert len(pd.read_csv(project / "out.csv")) == 250


def test_predict_errors_are_one_line_and_leave_no_output(project: Path) -> None:
    frame = _applications(project, 300)
    frame.loc[250, "credit_score"] = None
    frame.to_parquet(project / "bad.parquet", index=False)

    bad = cli(project, "predict", "loans", "bad.parquet", "out.parquet", "--batch-rows", "100")
    assert_clean_error(bad, "'bad.parquet' (batch 3, rows 200-299)", "'credit_score'", "row 250 ")
    assert not (project / "out.parquet").exists()

    unknown = cli(project, "predict", "nope", "in.parquet", "out.parquet")
    assert_clean_error(unknown, "'nope'")
    both = cli(project, "predict", "loans", "in.parquet", "o.parquet", "--version=1", "--alias=x")
    assert_clean_error(both, "not both")
    assert "hint: Drop --version or --alias." in both.stderr
    text = cli(project, "predict", "loans", "pipeline.py", "out.parquet")
    assert_clean_error(text, "'pipeline.py'", ".parquet", ".csv")
    assert not (project / "out.parquet").exists()
