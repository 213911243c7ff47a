"""Backtesting a retraining policy: the replay on a seeded simulated stream with planted drift."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest

from closedloop.domain.backtest import (
    BacktestPolicy,
    BacktestResult,
    History,
    Pipeline,
    Window,
    plan_windows,
    replay,
)
from closedloop.domain.policy import MonitorPolicy
from closedloop.domain.simulate import LoanSimulator
from closedloop.domain.triggers import CronSchedule
from closedloop.errors import InvalidInputError
from closedloop.services.backtest import history_from_frame, simulator_trainer
from closedloop.services.pipeline import split_holdout

ROWS = 11_000
DRIFT_AT = 6_000
FIRST_ROW = 3_000
WINDOW_ROWS = 1_000  # windows start at rows 3000, 4000, ...: window 3 starts at the drift
DRIFT_WINDOW = (DRIFT_AT - FIRST_ROW) // WINDOW_ROWS
SIMULATOR = LoanSimulator(seed=11, drift_at=DRIFT_AT)
TARGET = LoanSimulator.target
QUIET = timedelta(0)


@pytest.fixture(scope="module")
def history() -> History:
    return history_from_frame(SIMULATOR.stream(ROWS), "applied_at", TARGET, source="simulator")


@pytest.fixture(scope="module")
def windows(history: History) -> list[Window]:
    return plan_windows(history.times, FIRST_ROW, rows=WINDOW_ROWS)


def policy(**changes: Any) -> BacktestPolicy:
    monitor = MonitorPolicy(persistence=changes.pop("persistence", 2), cooldown=QUIET)
    return replace(BacktestPolicy(target=TARGET, monitor=monitor), **changes)


def run(history: History, windows: list[Window], rules: BacktestPolicy) -> BacktestResult:
    pipeline = Pipeline(train=simulator_trainer, split=split_holdout)
    return replay(history, windows, FIRST_ROW, rules, pipeline, drift_point=drift_time(history))


def drift_time(history: History) -> pd.Timestamp:
    return history.times[DRIFT_AT]


def first_alert(result: BacktestResult) -> int:
    alerts = [w.window.index for w in result.windows if w.alert]
    assert alerts, "the policy never alerted"
    return alerts[0]


@pytest.fixture(scope="module")
def alerting(history: History, windows: list[Window]) -> dict[int, BacktestResult]:
    """The drift monitor alone (no retraining on its alerts), at persistence 1 and 3."""
    return {
        persistence: run(history, windows, policy(persistence=persistence, on_drift=False))
        for persistence in (1, 3)
    }


@pytest.fixture(scope="module")
def on_traffic(history: History, windows: list[Window]) -> BacktestResult:
    """Retrain on drift alerts, on the most recent traffic."""
    return run(history, windows, policy(retrain_data="traffic", traffic_rows=2_000))


# --------------------------------------------------------------------------------------------
# Windows
# --------------------------------------------------------------------------------------------


def test_windows_follow_the_training_rows_without_gaps(windows: list[Window]) -> None:
    assert windows[0].lo == FIRST_ROW
    assert [w.n for w in windows] == [WINDOW_ROWS] * ((ROWS - FIRST_ROW) // WINDOW_ROWS)
    assert all(a.hi == b.lo for a, b in itertools.pairwise(windows))
    assert windows[DRIFT_WINDOW].lo == DRIFT_AT


def test_time_windows_cover_the_data_from_the_cut_off(history: History) -> None:
    start = history.times[FIRST_ROW]
    spans = plan_windows(history.times, FIRST_ROW, start=start, span=pd.Timedelta(hours=12))
    assert spans[0].start == start and spans[0].lo == FIRST_ROW
    assert spans[-1].hi == ROWS
    assert all(w.end - w.start == pd.Timedelta(hours=12) for w in spans)
    for w in spans:
        inside = history.times[w.lo : w.hi]
        assert ((inside >= w.start) & (inside < w.end)).all()


# --------------------------------------------------------------------------------------------
# Alerts
# --------------------------------------------------------------------------------------------


def test_the_policy_alerts_only_after_the_drift_point_and_within_its_persistence(
    history: History, on_traffic: BacktestResult
) -> None:
    drift = drift_time(history)
    before = [w for w in on_traffic.windows if w.window.end <= drift]
    assert before and not any(w.alert for w in before)
    alert = first_alert(on_traffic)
    assert on_traffic.windows[alert].window.start >= drift
    # persistence 2: the second consecutive drifted window alerts
    assert alert == DRIFT_WINDOW + 1
    assert on_traffic.windows[DRIFT_WINDOW].drift.drifted
    assert set(on_traffic.windows[DRIFT_WINDOW].drift.columns) & set(LoanSimulator.drifted_columns)
    summary = on_traffic.summary()
    assert summary["first_drifted_window"] == DRIFT_WINDOW
    assert summary["windows_to_alert"] == 1


def test_persistence_three_delays_the_alert_against_persistence_one(
    alerting: dict[int, BacktestResult],
) -> None:
    assert first_alert(alerting[1]) == DRIFT_WINDOW
    assert first_alert(alerting[3]) == DRIFT_WINDOW + 2
    states = [w.drift.decision.state for w in alerting[3].windows]
    assert states[DRIFT_WINDOW : DRIFT_WINDOW + 3] == ["drifting", "drifting", "alerted"]


def test_an_alert_without_on_drift_triggers_nothing(alerting: dict[int, BacktestResult]) -> None:
    result = alerting[1]
    assert any(w.alert for w in result.windows)
    assert all(w.triggers == () and w.retrain is None for w in result.windows)
    assert {w.versions["policy"] for w in result.windows} == {1}


# --------------------------------------------------------------------------------------------
# Retraining
# --------------------------------------------------------------------------------------------


def test_retraining_on_the_alert_recovers_above_never_retraining(
    on_traffic: BacktestResult,
) -> None:
    alert = first_alert(on_traffic)
    retrain = on_traffic.windows[alert].retrain
    assert retrain is not None and retrain.promoted and retrain.gate is not None
    assert retrain.gate.passed
    # the promoted model serves from the next window, not the one it was trained after
    assert on_traffic.windows[alert].versions["policy"] == 1
    assert on_traffic.windows[alert + 1].versions["policy"] == retrain.candidate_version
    summary = on_traffic.summary()
    after = summary["mean_after_drift"]
    assert after["policy"] > after["never"] + 0.05
    before = summary["mean_before_drift"]
    assert before["policy"] == pytest.approx(before["never"])
    assert summary["retrains"]["policy"] < summary["retrains"]["every_window"]
    assert summary["promotions"]["policy"] >= 1


def test_a_realised_performance_drop_triggers_only_after_the_drift(
    history: History, windows: list[Window]
) -> None:
    rules = policy(
        on_drift=False, performance_drop=0.05, estimated_drop=0.5, retrain_data="traffic"
    )
    result = run(history, windows, rules)
    fired = [w.window.index for w in result.windows if w.triggers]
    assert fired and min(fired) >= DRIFT_WINDOW
    assert {t.kind for w in result.windows for t in w.triggers} == {"performance"}
    assert all(w.estimated is not None and 0.5 < w.estimated < 1 for w in result.windows)
    assert result.summary()["promotions"]["policy"] >= 1


def test_a_worse_candidate_is_not_promoted(history: History, windows: list[Window]) -> None:
    calls: list[int] = []

    def first_good_then_inverted(X: pd.DataFrame, y: pd.Series) -> Any:
        calls.append(len(X))
        return simulator_trainer(X, y if len(calls) == 1 else 1 - y)

    every_window = CronSchedule.parse("* * * * *")
    rules = policy(schedule=every_window, on_drift=False, retrain_data="traffic")
    pipeline = Pipeline(train=first_good_then_inverted, split=split_holdout)
    result = replay(history, windows, FIRST_ROW, rules, pipeline)
    retrains = [w.retrain for w in result.windows[:-1]]
    assert all(r is not None and r.gate is not None for r in retrains)
    assert not any(r.promoted or r.gate.passed for r in retrains if r and r.gate)
    assert {w.versions["policy"] for w in result.windows} == {1}
    # without a gate the inverted models are served and fail
    assert all(w.metrics["every_window"] < 0.5 for w in result.windows[1:])  # type: ignore[operator]
    assert all(w.metrics["policy"] == w.metrics["never"] for w in result.windows)


def test_a_schedule_policy_retrains_at_the_cron_times(history: History) -> None:
    start = pd.Timestamp("2024-01-03T00:00:00Z")
    first = int(np.searchsorted(history.times.as_unit("ns").asi8, start.value))
    spans = plan_windows(history.times, first, start=start, span=pd.Timedelta(hours=12))
    rules = policy(schedule=CronSchedule.parse("0 6 * * *"), on_drift=False)
    result = replay(history, spans, first, rules, Pipeline(simulator_trainer, split_holdout))
    fired = [w.window.index for w in result.windows if w.triggers]
    mornings = [w.window.index for w in result.windows if w.window.start.hour == 0]
    assert fired == mornings
    for w in result.windows:
        kinds = [t.kind for t in w.triggers]
        assert kinds == (["schedule"] if w.window.index in mornings else [])
    retrained = [w.window.index for w in result.windows if w.retrain and w.retrain.n_rows]
    assert retrained == [i for i in mornings if i != result.windows[-1].window.index]


# --------------------------------------------------------------------------------------------
# No peeking
# --------------------------------------------------------------------------------------------


@dataclass
class Spy:
    """A model that remembers the last row it was trained on and every window it scored."""

    model: Any
    trained_through: int
    scored: list[tuple[int, np.ndarray]] = field(default_factory=list)

    def fit(self, X: pd.DataFrame, y: pd.Series) -> Spy:  # the model contract
        return self

    def predict(self, X: pd.DataFrame) -> Any:
        self.scored.append((self.trained_through, X["row"].to_numpy()))
        return self.model.predict(X.drop(columns=["row"]))

    def predict_proba(self, X: pd.DataFrame) -> Any:
        return self.model.predict_proba(X.drop(columns=["row"]))


def test_no_model_is_scored_on_a_window_it_was_trained_on(windows: list[Window]) -> None:
    frame = SIMULATOR.stream(ROWS)
    frame.insert(1, "row", np.arange(ROWS))
    history = history_from_frame(frame, "applied_at", TARGET, source="simulator")
    scored: list[tuple[int, np.ndarray]] = []

    def spying_trainer(X: pd.DataFrame, y: pd.Series) -> Spy:
        model = simulator_trainer(X.drop(columns=["row"]), y)
        return Spy(model, int(X["row"].max()), scored)

    rules = policy(performance_drop=0.01, retrain_data="loader")
    result = replay(history, windows, FIRST_ROW, rules, Pipeline(spying_trainer, split_holdout))
    assert sum(1 for w in result.windows if w.promoted) >= 1
    spans = {(w.lo, w.hi) for w in windows}
    window_calls = [
        (through, rows)
        for through, rows in scored
        if (int(rows[0]), int(rows[-1]) + 1) in spans and len(rows) == rows[-1] - rows[0] + 1
    ]
    assert {int(rows[0]) for _, rows in window_calls} == {w.lo for w in windows}
    assert all(through < rows[0] for through, rows in window_calls)


def test_replay_needs_training_rows_and_a_window(history: History, windows: list[Window]) -> None:
    pipeline = Pipeline(simulator_trainer, split_holdout)
    with pytest.raises(InvalidInputError, match="at least 10"):
        replay(history, windows, 5, policy(), pipeline)
    with pytest.raises(InvalidInputError, match="no window"):
        replay(history, [], FIRST_ROW, policy(), pipeline)
