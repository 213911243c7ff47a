"""Monitors on SQLite and PostgreSQL: real versions, real prediction-log windows, a fake clock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest
from tests.support import features, fit_model, loans

from closedloop.domain.policy import MonitorPolicy
from closedloop.domain.simulate import LoanSimulator
from closedloop.errors import ConflictError, InvalidInputError, NotFoundError
from closedloop.services import events, monitors, registry
from closedloop.services.monitors import run_monitor
from closedloop.services.workspace import Workspace

MODEL = "loans"
WINDOW = 1000
FEATURES = list(LoanSimulator.feature_columns)
DRIFTED = set(LoanSimulator.drifted_columns)
SIM = LoanSimulator(seed=11, drift_at=1_000_000)
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@dataclass
class FakeClock:
    current: datetime = T0

    def __call__(self) -> datetime:
        return self.current

    def advance(self, minutes: float) -> None:
        self.current += timedelta(minutes=minutes)


@pytest.fixture(scope="module")
def trained() -> tuple[Any, Any]:
    frame = loans(2000)
    return fit_model(frame), features(frame)


@pytest.fixture
def deployed(ws: Workspace, trained: tuple[Any, Any]) -> Workspace:
    """``loans`` v1 registered with a 2,000-row reference and in production."""
    estimator, X = trained
    registry.register_version(ws, MODEL, estimator, X)
    registry.set_alias(ws, MODEL, "production", 1, actor="test")
    return ws


class Traffic:
    """Windows of the simulated stream, clean or drifted, each appended then flushed."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.clean_at = 0
        self.drifted_at = SIM.drift_at

    def window(self, drifted: bool, rows: int = WINDOW, version: int = 1) -> None:
        if drifted:
            frame = SIM.stream(rows, start=self.drifted_at)
            self.drifted_at += rows
        else:
            frame = SIM.stream(rows, start=self.clean_at)
            self.clean_at += rows
        inputs = frame[FEATURES].reset_index(drop=True)
        log = self.ws.prediction_log()
        try:
            log.append(
                MODEL,
                version,
                [f"req-{i}" for i in range(rows)],
                inputs,
                np.zeros(rows, dtype=np.int64),
                np.full(rows, 0.2),
            )
        finally:
            log.close()


def alerts(ws: Workspace) -> list[events.Event]:
    return events.list_events(ws, model=MODEL, kinds=("monitor.alert",))


def step(
    ws: Workspace,
    traffic: Traffic,
    clock: FakeClock,
    minutes: float,
    drifted: bool,
    policy: MonitorPolicy,
    **kwargs: Any,
) -> monitors.MonitorResult:
    clock.advance(minutes)
    traffic.window(drifted, rows=kwargs.pop("rows", WINDOW))
    return run_monitor(ws, MODEL, now=clock, window_rows=WINDOW, policy=policy, **kwargs)


def test_persistence_cooldown_and_recovery(deployed: Workspace) -> None:
    ws, traffic, clock = deployed, Traffic(deployed), FakeClock()
    policy = MonitorPolicy(persistence=2, cooldown=timedelta(hours=1))

    first = step(ws, traffic, clock, 0, True, policy, actor="cron")
    assert first.check.report.drifted
    assert (first.decision.state, first.decision.consecutive, first.alerted) == (
        "drifting",
        1,
        False,
    )
    assert first.alert_event_id is None and alerts(ws) == []

    second = step(ws, traffic, clock, 10, True, policy, actor="cron")
    assert (second.decision.state, second.decision.consecutive) == ("alerted", 2)
    [alert] = alerts(ws)
    assert alert.id == second.alert_event_id
    assert alert.ts == clock() == second.ts
    assert (alert.actor, alert.version) == ("cron", 1)
    assert alert.payload["check_id"] == second.check.id
    assert set(alert.payload["drifted_columns"]) == DRIFTED
    assert alert.payload["consecutive"] == 2
    assert alert.payload["reason"] == second.decision.reason == alert.reason
    assert alert.payload["policy"] == policy.to_dict()

    third = step(ws, traffic, clock, 10, True, policy)
    assert (third.decision.state, third.decision.consecutive) == ("cooling_down", 3)
    assert "10m ago" in third.decision.reason and "another 50m" in third.decision.reason
    assert len(alerts(ws)) == 1

    fourth = step(ws, traffic, clock, 55, True, policy)  # 65 minutes after the alert
    assert (fourth.decision.state, fourth.decision.consecutive) == ("alerted", 4)
    assert [a.payload["check_id"] for a in alerts(ws)] == [second.check.id, fourth.check.id]
    assert alerts(ws)[-1].ts == T0 + timedelta(minutes=75)

    recovered = step(ws, traffic, clock, 90, False, policy)
    assert not recovered.check.report.drifted
    assert (recovered.decision.state, recovered.decision.consecutive) == ("ok", 0)

    again = step(ws, traffic, clock, 10, True, policy)
    assert (again.decision.state, again.decision.consecutive, again.alerted) == (
        "drifting",
        1,
        False,
    )
    assert len(alerts(ws)) == 2
    assert again.to_dict()["decision"]["state"] == "drifting"
    assert again.to_dict()["check"]["check_id"] == again.check.id


def test_small_windows_neither_break_nor_extend_a_streak(deployed: Workspace) -> None:
    ws, traffic, clock = deployed, Traffic(deployed), FakeClock()
    policy = MonitorPolicy(min_rows=800, persistence=2, cooldown=timedelta(0))

    assert step(ws, traffic, clock, 0, True, policy).decision.state == "drifting"
    # 300 new rows: enough for monitor.min_rows (200) so the check is recorded, not for the
    # policy.
    traffic.window(True, rows=300)
    small = run_monitor(ws, MODEL, now=clock, window_rows=300, policy=policy)
    assert small.check.report.n_current == 300
    assert (small.decision.state, small.decision.consecutive) == ("insufficient_data", 1)
    assert alerts(ws) == []
    third = step(ws, traffic, clock, 5, True, policy)
    assert (third.decision.state, third.decision.consecutive) == ("alerted", 2)
    assert len(alerts(ws)) == 1


def test_the_cooldown_holds_beyond_the_history_read(
    deployed: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An alert still cooling down is found even when more checks than the history window
    were recorded since."""
    monkeypatch.setattr(monitors, "HISTORY_WINDOWS", 1)
    ws, traffic, clock = deployed, Traffic(deployed), FakeClock()
    policy = MonitorPolicy(persistence=1, cooldown=timedelta(hours=1))
    states = [step(ws, traffic, clock, 5, True, policy).decision.state for _ in range(4)]
    assert states == ["alerted", "cooling_down", "cooling_down", "cooling_down"]
    assert step(ws, traffic, clock, 60, True, policy).decision.state == "alerted"


def test_a_new_version_starts_a_new_streak(deployed: Workspace, trained: tuple[Any, Any]) -> None:
    ws, traffic, clock = deployed, Traffic(deployed), FakeClock()
    policy = MonitorPolicy(persistence=2, cooldown=timedelta(hours=1))
    step(ws, traffic, clock, 0, True, policy)
    assert step(ws, traffic, clock, 1, True, policy).alerted

    estimator, X = trained
    registry.register_version(ws, MODEL, estimator, X)
    registry.set_alias(ws, MODEL, "production", 2, actor="test")
    clock.advance(1)
    traffic.window(True, version=2)
    v2 = run_monitor(ws, MODEL, now=clock, window_rows=WINDOW, policy=policy)
    assert (v2.check.version, v2.decision.state, v2.decision.consecutive) == (2, "drifting", 1)
    clock.advance(1)
    traffic.window(True, version=2)
    v2 = run_monitor(ws, MODEL, now=clock, window_rows=WINDOW, policy=policy)
    assert v2.alerted  # the v1 alert a minute ago does not cool v2 down
    assert [a.version for a in alerts(ws)] == [1, 2]


def test_check_history_carries_results_and_alerts(deployed: Workspace) -> None:
    ws, traffic, clock = deployed, Traffic(deployed), FakeClock()
    policy = MonitorPolicy(persistence=1)
    clean = step(ws, traffic, clock, 0, False, policy)
    drifted = step(ws, traffic, clock, 1, True, policy)
    history = monitors.check_history(ws, MODEL, limit=5)
    assert [h["check_id"] for h in history] == [drifted.check.id, clean.check.id]
    assert [h["alerted"] for h in history] == [True, False]
    assert history[0]["result"] == {
        **drifted.check.report.to_dict(),
        "outputs": drifted.check.outputs,
        "window": drifted.check.window,
    }
    assert {k: v for k, v in history[1].items() if k not in ("result", "alerted")} == (
        monitoring_row(ws, clean.check.id)
    )
    assert [a.payload["check_id"] for a in monitors.list_alerts(ws, MODEL)] == [drifted.check.id]
    with pytest.raises(InvalidInputError, match="'limit' parameter must be an int >= 1"):
        monitors.check_history(ws, MODEL, limit=0)


def test_checks_are_numbered_per_model(deployed: Workspace, trained: tuple[Any, Any]) -> None:
    from closedloop.services.monitoring import list_checks, monitor

    ws, traffic, clock = deployed, Traffic(deployed), FakeClock()
    policy = MonitorPolicy(persistence=1)
    estimator, X = trained
    registry.register_version(ws, "other", estimator, X)
    registry.set_alias(ws, "other", "production", 1, actor="test")
    first = step(ws, traffic, clock, 0, False, policy)
    log = ws.prediction_log()
    try:
        rows = SIM.stream(WINDOW)[FEATURES].reset_index(drop=True)
        log.append("other", 1, "r", rows, np.zeros(WINDOW, dtype=np.int64), None)
    finally:
        log.close()
    other = monitor(ws, "other", window_rows=WINDOW)
    second = step(ws, traffic, clock, 1, False, policy)
    assert (first.check.number, other.number, second.check.number) == (1, 1, 2)
    assert second.check.id == other.id + 1  # the store's ids run across models
    assert [c["number"] for c in monitors.check_history(ws, MODEL)] == [2, 1]
    assert [c["number"] for c in list_checks(ws, MODEL, limit=1)] == [2]
    assert second.check.to_dict()["number"] == 2


def monitoring_row(ws: Workspace, check_id: int) -> dict[str, Any]:
    from closedloop.services.monitoring import list_checks

    return next(c for c in list_checks(ws, MODEL) if c["check_id"] == check_id)


def test_default_policy_follows_settings_and_errors_propagate(
    deployed: Workspace, trained: tuple[Any, Any]
) -> None:
    ws, traffic = deployed, Traffic(deployed)
    traffic.window(True, rows=WINDOW)
    result = run_monitor(ws, MODEL, window_rows=WINDOW)
    assert result.policy == MonitorPolicy(min_rows=ws.settings.monitor.min_rows)
    assert result.decision.state == "drifting"
    assert abs(result.ts - datetime.now(UTC)) < timedelta(minutes=5)
    paris = timezone(timedelta(hours=1))
    traffic.window(True, rows=WINDOW)
    local = run_monitor(ws, MODEL, now=lambda: datetime(2030, 1, 1, 13, tzinfo=paris))
    assert local.ts == T0 and local.ts.tzinfo == UTC and local.alerted
    assert alerts(ws)[-1].ts == T0
    with pytest.raises(NotFoundError, match="nosuch"):
        run_monitor(ws, "nosuch")
    estimator, X = trained
    registry.register_version(ws, "other", estimator, X)
    with pytest.raises(ConflictError, match="no production version"):
        run_monitor(ws, "other")
    assert monitors.check_history(ws, "other") == []
    with pytest.raises(InvalidInputError, match="MonitorPolicy"):
        run_monitor(ws, MODEL, policy={"persistence": 2})  # type: ignore[arg-type]


def test_checking_the_same_rows_again_is_refused_and_does_not_extend_a_streak(
    deployed: Workspace,
) -> None:
    ws, traffic, clock = deployed, Traffic(deployed), FakeClock()
    policy = MonitorPolicy(persistence=2, cooldown=timedelta(hours=1))
    first = step(ws, traffic, clock, 0, True, policy)
    assert first.decision.state == "drifting"
    clock.advance(10)  # no new traffic: there is no new window, so no verdict and no record
    refused = f"No new traffic for '{MODEL}' version 1 since check 1"
    with pytest.raises(ConflictError, match=refused):
        run_monitor(ws, MODEL, now=clock, window_rows=WINDOW, policy=policy)
    assert [c["check_id"] for c in monitors.check_history(ws, MODEL)] == [first.check.id]
    assert alerts(ws) == []
    fresh = step(ws, traffic, clock, 10, True, policy)  # new drifted rows: the streak grows
    assert (fresh.decision.state, fresh.decision.consecutive) == ("alerted", 2)
