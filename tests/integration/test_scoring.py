"""Batch scoring: a file streamed through a version, checked like a request, written whole or
not at all, and optionally logged so monitoring sees batch traffic."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.support import diabetes, features, fit_model, fit_ridge, loans

from closedloop.errors import ConfigError, InvalidInputError, NotFoundError, SchemaError
from closedloop.services import registry, scoring
from closedloop.services.workspace import Workspace

ROWS = 2_500
BATCH = 1_000


@pytest.fixture
def model(ws: Workspace) -> Workspace:
    """``loans`` v1 (production) and v2 (alias ``candidate``), trained on different rows."""
    first, second = loans(600, seed=0), loans(600, seed=1)
    registry.register_version(ws, "loans", fit_model(first), features(first))
    registry.register_version(ws, "loans", fit_model(second, invert=True), features(second))
    registry.set_alias(ws, "loans", "production", 1)
    registry.set_alias(ws, "loans", "candidate", 2)
    return ws


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A folder for the data files (the workspace's own files live in ``tmp_path``)."""
    folder = tmp_path / "files"
    folder.mkdir()
    return folder


def _input(rows: int = ROWS) -> pd.DataFrame:
    """Features plus two columns the model does not use: an id and the true label."""
    frame = loans(rows, seed=7)
    return frame.assign(loan_id=[f"L{i:06d}" for i in range(rows)])


def _write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_every_row_is_scored_in_bounded_batches_with_pass_through_columns_and_probabilities(
    model: Workspace, files: Path, suffix: str
) -> None:
    frame = _input()
    source = _write(frame, files / f"in{suffix}")
    target = files / f"scores{suffix}"
    seen: list[tuple[int, int | None]] = []

    result = scoring.score_file(
        model,
        "loans",
        source,
        target,
        batch_rows=BATCH,
        progress=lambda done, total: seen.append((done, total)),
    )

    assert (result.version, result.rows) == (1, ROWS)
    assert result.batches == math.ceil(ROWS / BATCH) == 3
    total = ROWS if suffix == ".parquet" else None  # only Parquet says how many rows it has
    assert seen == [(0, total), (1000, total), (2000, total), (2500, total)]
    scored = _read(target)
    assert list(scored.columns) == [
        "default",
        "loan_id",
        "prediction",
        "probability_0",
        "probability_1",
    ]
    assert result.columns == list(scored.columns)
    assert scored["loan_id"].tolist() == frame["loan_id"].tolist()
    assert scored["default"].tolist() == frame["default"].tolist()
    estimator = registry.load_version(model, "loans", 1).estimator
    X = features(frame).drop(columns=["loan_id"])
    assert scored["prediction"].tolist() == estimator.predict(X).tolist()
    expected = estimator.predict_proba(X)
    np.testing.assert_allclose(scored[["probability_0", "probability_1"]], expected, rtol=1e-9)


def test_version_or_alias_picks_the_model_and_keep_features_copies_the_inputs(
    model: Workspace, files: Path
) -> None:
    frame = _input(300)
    source = _write(frame, files / "in.parquet")
    by_alias = scoring.score_file(
        model, "loans", source, files / "a.parquet", alias="candidate", keep_features=True
    )
    by_number = scoring.score_file(model, "loans", source, files / "b.parquet", version=2)
    assert by_alias.version == by_number.version == 2
    with_features = _read(files / "a.parquet")
    assert list(with_features.columns[: len(frame.columns)]) == list(frame.columns)
    pd.testing.assert_frame_equal(with_features[frame.columns], frame)
    second = registry.load_version(model, "loans", 2).estimator
    expected = second.predict(features(frame).drop(columns=["loan_id"]))
    assert _read(files / "b.parquet")["prediction"].tolist() == expected.tolist()


def test_unknown_model_version_or_alias_and_both_choices_are_refused(
    model: Workspace, files: Path
) -> None:
    source = _write(_input(50), files / "in.parquet")
    out = files / "out.parquet"
    with pytest.raises(NotFoundError, match="'nope'"):
        scoring.score_file(model, "nope", source, out)
    with pytest.raises(NotFoundError, match="no version 9"):
        scoring.score_file(model, "loans", source, out, version=9)
    with pytest.raises(NotFoundError, match="no 'canary' alias") as unset:
        scoring.score_file(model, "loans", source, out, alias="canary")
    assert "closedloop alias set loans canary N" in (unset.value.hint or "")
    with pytest.raises(ConfigError, match="not both"):
        scoring.score_file(model, "loans", source, out, version=1, alias="candidate")
    assert not out.exists()


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_a_bad_row_in_the_third_batch_names_its_row_and_column_and_leaves_nothing(
    model: Workspace, files: Path, suffix: str
) -> None:
    frame = _input()
    bad_row = 2 * BATCH + 17
    frame.loc[bad_row, "income"] = np.nan  # training saw no missing income
    source = _write(frame, files / f"in{suffix}")
    target = files / f"scores{suffix}"
    target.write_text("an older file")  # replaced only by a complete output

    with pytest.raises(SchemaError) as refused:
        scoring.score_file(model, "loans", source, target, batch_rows=BATCH, log=True)

    error = refused.value
    assert error.message.startswith(f"{str(source)!r} (batch 3, rows 2000-2499): ")
    assert "column 'income' does not accept nulls" in error.message
    assert f"row {bad_row} is null" in error.message
    assert error.details["column"] == "income"
    assert (error.details["row"], error.details["batch"]) == (bad_row, 3)
    assert error.details["batch_row"] == 17
    assert target.read_text() == "an older file"
    assert sorted(p.name for p in files.iterdir()) == [f"in{suffix}", f"scores{suffix}"]
    log = model.prediction_log()
    try:
        assert len(log.read("loans")) == 0  # a failed run logs nothing
    finally:
        log.close()


def test_a_missing_feature_or_a_clashing_column_is_refused_before_any_batch(
    model: Workspace, files: Path
) -> None:
    source = _write(_input(50).drop(columns=["region"]), files / "in.parquet")
    with pytest.raises(SchemaError, match=r"no column\(s\) \['region'\]") as missing:
        scoring.score_file(model, "loans", source, files / "out.parquet")
    assert missing.value.details["missing"] == ["region"]
    clash = _write(_input(50).assign(prediction=1), files / "clash.parquet")
    with pytest.raises(SchemaError, match="already has column"):
        scoring.score_file(model, "loans", clash, files / "out.parquet")
    assert not (files / "out.parquet").exists()


def test_unreadable_inputs_name_the_file_and_the_formats(model: Workspace, files: Path) -> None:
    text = files / "rows.txt"
    text.write_text("income\n1\n")
    with pytest.raises(InvalidInputError, match=r"rows\.txt") as unknown:
        scoring.score_file(model, "loans", text, files / "out.parquet")
    assert ".parquet" in unknown.value.message and ".csv" in unknown.value.message
    corrupt = files / "broken.parquet"
    corrupt.write_bytes(b"not parquet at all")
    with pytest.raises(InvalidInputError, match=r"broken\.parquet.*not a readable Parquet file"):
        scoring.score_file(model, "loans", corrupt, files / "out.parquet")
    with pytest.raises(InvalidInputError, match="does not exist"):
        scoring.score_file(model, "loans", files / "gone.csv", files / "out.parquet")
    source = _write(_input(20), files / "in.parquet")
    with pytest.raises(InvalidInputError, match=r"out\.json.*unknown file extension"):
        scoring.score_file(model, "loans", source, files / "out.json")
    assert sorted(p.name for p in files.iterdir()) == [
        "broken.parquet",
        "in.parquet",
        "rows.txt",
    ]


def test_logged_batches_are_the_rows_monitoring_reads(model: Workspace, files: Path) -> None:
    frame = _input()
    source = _write(frame, files / "in.parquet")
    result = scoring.score_file(
        model, "loans", source, files / "out.parquet", batch_rows=BATCH, log=True
    )
    assert result.logged_rows == ROWS
    log = model.prediction_log()
    try:
        logged = log.read("loans", version=1)
    finally:
        log.close()
    assert len(logged) == ROWS
    prefix = result.request_id_prefix
    assert prefix is not None
    assert logged["_request_id"].value_counts().sort_index().to_dict() == {
        f"{prefix}-1": 1000,
        f"{prefix}-2": 1000,
        f"{prefix}-3": 500,
    }
    scored = _read(files / "out.parquet")
    assert sorted(logged["_prediction"].tolist()) == sorted(scored["prediction"].tolist())
    np.testing.assert_allclose(
        np.sort(logged["_score"].to_numpy()), np.sort(scored["probability_1"].to_numpy())
    )
    assert "loan_id" not in logged.columns  # only the model's features are logged
    assert sorted(logged["income"].tolist()) == sorted(frame["income"].tolist())


def test_a_regression_gets_a_prediction_and_no_probabilities(ws: Workspace, files: Path) -> None:
    data = diabetes()
    X, y = data.drop(columns=["progression"]), data["progression"]
    registry.register_version(ws, "progression", fit_ridge(X, y), X)
    source = _write(data, files / "in.csv")
    result = scoring.score_file(ws, "progression", source, files / "out.csv", version=1)
    scored = _read(files / "out.csv")
    assert result.columns == ["progression", "prediction"]
    estimator = registry.load_version(ws, "progression", 1).estimator
    np.testing.assert_allclose(scored["prediction"], estimator.predict(X), rtol=1e-9)


def test_input_and_output_on_s3(model: Workspace, s3_bucket: str, files: Path) -> None:
    import fsspec

    fs = fsspec.filesystem("s3")
    frame = _input()
    local = _write(frame, files / "in.parquet")
    fs.put_file(str(local), f"{s3_bucket}/batch/in.parquet")

    result = scoring.score_file(
        model,
        "loans",
        f"s3://{s3_bucket}/batch/in.parquet",
        f"s3://{s3_bucket}/batch/scores.parquet",
        batch_rows=BATCH,
    )
    assert (result.rows, result.batches) == (ROWS, 3)
    with fs.open(f"{s3_bucket}/batch/scores.parquet", "rb") as handle:
        scored = pd.read_parquet(handle)
    assert scored["loan_id"].tolist() == frame["loan_id"].tolist()
    assert sorted(fs.ls(f"{s3_bucket}/batch", detail=False)) == [
        f"{s3_bucket}/batch/in.parquet",
        f"{s3_bucket}/batch/scores.parquet",
    ]

    broken = frame.copy()
    broken.loc[2 * BATCH + 3, "age"] = None
    _write(broken, files / "broken.parquet")
    fs.put_file(str(files / "broken.parquet"), f"{s3_bucket}/batch/broken.parquet")
    with pytest.raises(
        SchemaError, match=r"\(batch 3, rows 2000-2499\): column 'age' .* row 2003 is null"
    ):
        scoring.score_file(
            model,
            "loans",
            f"s3://{s3_bucket}/batch/broken.parquet",
            f"s3://{s3_bucket}/batch/never.parquet",
            batch_rows=BATCH,
        )
    assert not fs.exists(f"{s3_bucket}/batch/never.parquet")
    with pytest.raises(InvalidInputError, match="does not exist"):
        scoring.score_file(
            model, "loans", f"s3://{s3_bucket}/batch/gone.parquet", files / "out.parquet"
        )


def test_dictionary_encoded_text_columns_are_scored_as_their_values(
    model: Workspace, files: Path
) -> None:
    frame = _input(400)
    as_categories = frame.astype({"purpose": "category", "region": "category"})
    source = _write(as_categories, files / "in.parquet")
    scoring.score_file(model, "loans", source, files / "out.parquet")
    estimator = registry.load_version(model, "loans", 1).estimator
    expected = estimator.predict_proba(features(frame).drop(columns=["loan_id"]))[:, 1]
    np.testing.assert_allclose(_read(files / "out.parquet")["probability_1"], expected, rtol=1e-9)
