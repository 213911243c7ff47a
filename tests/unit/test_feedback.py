"""Tests for closedloop.storage.feedback: the append-only log of late labels.

Real local folders (``tmp_path``) and the fsspec in-memory filesystem; no mocks.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from closedloop.domain.performance import join_feedback, match_feedback, realised_performance
from closedloop.errors import ConfigError, InvalidInputError
from closedloop.storage.feedback import FEEDBACK_COLUMNS, FeedbackLog
from closedloop.storage.predictions import PredictionLog

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def _parts(root: Path) -> list[Path]:
    return sorted(root.rglob("*.parquet"))


def test_append_writes_one_part_per_call_in_the_layout(tmp_path: Path) -> None:
    log = FeedbackLog(str(tmp_path / "fb"))
    assert log.append("churn", ["r1", "r2"], [1, 0], ts=T0) == 2
    assert log.append("churn", ["r3"], [1]) == 1
    parts = _parts(tmp_path / "fb")
    assert len(parts) == 2
    for part in parts:
        assert part.parent.name == "model=churn"
        assert re.fullmatch(r"part-\d{8}T\d{12}Z-[0-9a-f]{32}\.parquet", part.name)
    assert [p for p in (tmp_path / "fb").rglob("*") if p.name.endswith(".tmp")] == []
    frame = log.read("churn")
    assert list(frame.columns) == list(FEEDBACK_COLUMNS)
    assert sorted(frame["_request_id"]) == ["r1", "r2", "r3"]
    assert str(frame["_feedback_ts"].dtype) == "datetime64[ms, UTC]"
    row = frame.set_index("_request_id").loc["r1"]
    assert row["_label"] == 1
    assert row["_feedback_ts"] == pd.Timestamp(T0)


def test_latest_label_wins_and_since_filters(tmp_path: Path) -> None:
    log = FeedbackLog(str(tmp_path))
    log.append("m", ["a", "b"], ["no", "no"], ts=T0)
    log.append("m", ["a"], ["yes"], ts=T0 + timedelta(days=1))
    log.append("m", ["b"], ["yes"], ts=T0 - timedelta(days=1))  # late-written, older label
    frame = log.read("m").set_index("_request_id")
    assert frame.loc["a", "_label"] == "yes"
    assert frame.loc["b", "_label"] == "no"
    since = log.read("m", since=T0 + timedelta(hours=1))
    assert since["_request_id"].tolist() == ["a"]
    # Naive datetimes are UTC.
    naive = log.read("m", since=(T0 + timedelta(hours=1)).replace(tzinfo=None))
    assert naive["_request_id"].tolist() == ["a"]


def test_equal_timestamps_last_written_wins(tmp_path: Path) -> None:
    log = FeedbackLog(str(tmp_path))
    for label in (0, 1, 0, 1):
        log.append("m", ["a"], [label], ts=T0)
    assert log.read("m")["_label"].tolist() == [1]


def test_unknown_model_and_foreign_files(tmp_path: Path) -> None:
    log = FeedbackLog(str(tmp_path))
    empty = log.read("nothing")
    assert empty.empty
    assert list(empty.columns) == list(FEEDBACK_COLUMNS)
    log.append("m", ["a"], [1], ts=T0)
    folder = tmp_path / "model=m"
    (folder / ".part-x.parquet.tmp").write_bytes(b"half")
    (folder / "notes.txt").write_text("ignored")
    assert len(log.read("m")) == 1


def test_labels_of_different_types_across_calls(tmp_path: Path) -> None:
    log = FeedbackLog(str(tmp_path))
    log.append("m", ["a"], [1], ts=T0)
    log.append("m", ["b"], ["yes"], ts=T0)
    log.append("m", ["c", "d"], [1, 2.5], ts=T0)
    labels = log.read("m").set_index("_request_id")["_label"]
    assert labels["a"] == 1
    assert labels["b"] == "yes"
    assert labels["d"] == 2.5


def test_in_memory_filesystem() -> None:
    log = FeedbackLog(f"memory://feedback-{uuid.uuid4().hex}")
    log.append("m", ["a", "b"], [True, False], ts=T0)
    frame = log.read("m")
    assert frame["_label"].tolist() == [True, False]


@pytest.mark.parametrize(
    ("ids", "labels", "match"),
    [
        ([], [], "must not be empty"),
        (["a", "b"], [1], "same length. Got 2 and 1"),
        (["a", 7], [1, 0], "non-empty string. Got 7"),
        (["a", ""], [1, 0], "non-empty string. Got ''"),
        (["a", "b"], [1, None], "must not be missing.*position 1"),
        (["a", "b"], [1, float("nan")], "must not be missing"),
        (["a", "b"], [1, "x"], "one kind per call"),
        (["a"], [[1, 2]], "one kind per call"),
        ("abc", [1, 2, 3], "sequence"),
    ],
)
def test_invalid_appends(tmp_path: Path, ids: object, labels: object, match: str) -> None:
    log = FeedbackLog(str(tmp_path))
    with pytest.raises(InvalidInputError, match=match):
        log.append("m", ids, labels)  # type: ignore[arg-type]
    assert _parts(tmp_path) == []


def test_invalid_model_rows_and_root(tmp_path: Path) -> None:
    log = FeedbackLog(str(tmp_path))
    with pytest.raises(InvalidInputError, match=r"model name '\.\./x' is not allowed"):
        log.append("../x", ["a"], [1])
    with pytest.raises(InvalidInputError, match="one position per label"):
        log.append("m", ["a", "b"], [1, 0], rows=[0])
    with pytest.raises(InvalidInputError, match="ints >= 0"):
        log.append("m", ["a"], [1], rows=[-1])
    with pytest.raises(InvalidInputError, match="datetime"):
        log.append("m", ["a"], [1], ts="2024-01-01")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="root_url"):
        FeedbackLog("")


def test_rows_are_stored_and_join_a_real_prediction_log(tmp_path: Path) -> None:
    """End to end: a batch request and single-row requests in a real prediction log, labels
    with row positions in a real feedback log, joined and scored."""
    with PredictionLog(str(tmp_path / "predictions"), flush_interval=60) as predictions:
        batch = pd.DataFrame({"x": [1.0, 2.0, 3.0]})
        predictions.append("m", 1, "batch-1", batch, np.array([1, 0, 1]), np.array([0.9, 0.2, 0.6]))
        single = pd.DataFrame({"x": [4.0]})
        predictions.append("m", 1, "one-1", single, np.array([0]), np.array([0.3]))
        predictions.flush()
        logged = predictions.read("m")

    feedback = FeedbackLog(str(tmp_path / "feedback"))
    feedback.append("m", ["batch-1", "batch-1", "one-1"], [1, 1, 0], rows=[0, 1, 0], ts=T0)
    labels = feedback.read("m")
    assert labels["_row"].tolist() == [0, 1, 0]

    joined = join_feedback(logged, labels)
    assert joined["x"].tolist() == [1.0, 2.0, 4.0]
    assert joined["_label"].tolist() == [1, 1, 0]
    realised = realised_performance(joined["_label"], joined["_score"], joined["_prediction"])
    assert realised["accuracy"] == pytest.approx(2 / 3)

    # Without row positions a label for the batch request is left out, not copied.
    request_level = FeedbackLog(str(tmp_path / "feedback2"))
    request_level.append("m", ["batch-1", "one-1"], [1, 0], ts=T0)
    match = match_feedback(logged, request_level.read("m"))
    assert match.joined["x"].tolist() == [4.0]
    assert match.ignored == {"ambiguous": 1}


def _write_by_hand(root: Path, model: str, name: str, frame: pd.DataFrame) -> None:
    """A part file written without FeedbackLog.append, as an older version or a script could."""
    folder = root / f"model={model}"
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(folder / f"part-{name}-{uuid.uuid4().hex}.parquet", index=False)


def test_hand_written_files_with_a_missing_or_mistyped_key_never_break_reading_or_the_join(
    tmp_path: Path,
) -> None:
    with PredictionLog(str(tmp_path / "predictions"), flush_interval=60) as predictions:
        predictions.append(
            "m", 1, "batch-1", pd.DataFrame({"x": [1.0, 2.0]}), np.array([1, 0]), None
        )
        predictions.append("m", 1, "one-1", pd.DataFrame({"x": [3.0]}), np.array([0]), None)
        predictions.flush()
        logged = predictions.read("m")
    root = tmp_path / "feedback"
    log = FeedbackLog(str(root))
    log.append("m", ["batch-1", "batch-1"], [1, 1], rows=[0, 1], ts=T0)
    # no _row and no _feedback_ts; an unknown request id
    _write_by_hand(
        root,
        "m",
        "20240301T120001000000Z",
        pd.DataFrame({"_request_id": ["one-1", "nonexistent"], "_label": [0, 1]}),
    )
    # _row as text, one of them unreadable; a missing request id
    _write_by_hand(
        root,
        "m",
        "20240301T120002000000Z",
        pd.DataFrame(
            {
                "_request_id": ["batch-1", None],
                "_row": ["zero", "0"],
                "_label": [0, 1],
                "_feedback_ts": ["2024-03-01T12:00:02Z", "2024-03-01T12:00:02Z"],
            }
        ),
    )
    labels = log.read("m")
    assert len(labels) == 6
    match = match_feedback(logged, labels)
    assert match.joined["x"].tolist() == [1.0, 2.0, 3.0]
    assert match.joined["_label"].tolist() == [1, 1, 0]
    assert match.ignored == {"malformed": 2, "unmatched": 1}
