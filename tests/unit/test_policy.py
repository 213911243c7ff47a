"""The monitor's verdict policy, driven window by window with a fake clock."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from closedloop.domain.policy import (
    CheckOutcome,
    MonitorPolicy,
    PolicyDecision,
    decide,
    format_duration,
    last_alert,
    streak,
)
from closedloop.errors import InvalidInputError

T0 = datetime(2030, 1, 1, tzinfo=UTC)
D, C, S = "drift", "clean", "small"  # a drifted window, a clean one, one below min_rows


@dataclass
class FakeClock:
    current: datetime = T0

    def __call__(self) -> datetime:
        return self.current

    def advance(self, minutes: float) -> None:
        self.current += timedelta(minutes=minutes)


def run(policy: MonitorPolicy, steps: list[tuple[float, str]]) -> list[PolicyDecision]:
    """Feed windows ``(minutes after the previous one, kind)`` through the policy in order,
    remembering alerts the way a monitor service does."""
    clock = FakeClock()
    history: list[CheckOutcome] = []
    decisions = []
    for minutes, kind in steps:
        clock.advance(minutes)
        rows = policy.min_rows - 1 if kind == S else policy.min_rows
        new = CheckOutcome(ts=clock(), drifted=kind != C, n_rows=rows, check_id=len(history))
        decision = decide(policy, history, new, clock())
        decisions.append(decision)
        if decision.alert:
            new = replace(new, alerted_at=clock())
        history.append(new)
    return decisions


P2 = MonitorPolicy(persistence=2, cooldown=timedelta(hours=1))
P1 = MonitorPolicy(persistence=1, cooldown=timedelta(minutes=30))
P3 = MonitorPolicy(persistence=3, cooldown=timedelta(0))

CASES = {
    "persistence 2: the second drifted window alerts": (
        P2,
        [(10, D), (10, D)],
        [("drifting", 1), ("alerted", 2)],
    ),
    "persistence 1: the first drifted window alerts": (
        P1,
        [(10, C), (10, D)],
        [("ok", 0), ("alerted", 1)],
    ),
    "persistence 3 needs three in a row": (
        P3,
        [(1, D), (1, D), (1, C), (1, D), (1, D), (1, D)],
        [
            ("drifting", 1),
            ("drifting", 2),
            ("ok", 0),
            ("drifting", 1),
            ("drifting", 2),
            ("alerted", 3),
        ],
    ),
    "no alert again within the cooldown, then again once it has passed": (
        P2,
        [(10, D), (10, D), (10, D), (49, D), (1, D), (10, D)],
        [
            ("drifting", 1),
            ("alerted", 2),
            ("cooling_down", 3),
            ("cooling_down", 4),
            ("alerted", 5),
            ("cooling_down", 6),
        ],
    ),
    "the cooldown ends exactly at its length": (
        P1,
        [(0, D), (29, D), (1, D)],
        [("alerted", 1), ("cooling_down", 2), ("alerted", 3)],
    ),
    "zero cooldown alerts on every window of a long enough streak": (
        P3,
        [(1, D), (1, D), (1, D), (1, D)],
        [("drifting", 1), ("drifting", 2), ("alerted", 3), ("alerted", 4)],
    ),
    "insufficient windows inside a streak neither break nor extend it": (
        P2,
        [(10, D), (10, S), (10, S), (10, D)],
        [("drifting", 1), ("insufficient_data", 1), ("insufficient_data", 1), ("alerted", 2)],
    ),
    "an insufficient drifted window does not alert on its own": (
        P1,
        [(10, S), (10, S)],
        [("insufficient_data", 0), ("insufficient_data", 0)],
    ),
    "an insufficient window does not end a cooldown streak either": (
        P2,
        [(0, D), (10, D), (10, S), (60, D)],
        [("drifting", 1), ("alerted", 2), ("insufficient_data", 2), ("alerted", 3)],
    ),
    "recovery resets the streak": (
        P2,
        [(10, D), (10, C), (10, D), (10, D)],
        [("drifting", 1), ("ok", 0), ("drifting", 1), ("alerted", 2)],
    ),
    "the streak must persist through the cooldown to re-alert": (
        P2,
        [(0, D), (10, D), (10, C), (60, D), (10, D)],
        [("drifting", 1), ("alerted", 2), ("ok", 0), ("drifting", 1), ("alerted", 2)],
    ),
    "a new streak that completes within the cooldown waits for it": (
        P2,
        [(0, D), (1, D), (1, C), (1, D), (1, D), (60, D)],
        [
            ("drifting", 1),
            ("alerted", 2),
            ("ok", 0),
            ("drifting", 1),
            ("cooling_down", 2),
            ("alerted", 3),
        ],
    ),
}


@pytest.mark.parametrize("policy, steps, expected", CASES.values(), ids=list(CASES))
def test_policy_table(
    policy: MonitorPolicy, steps: list[tuple[float, str]], expected: list[tuple[str, int]]
) -> None:
    decisions = run(policy, steps)
    assert [(d.state, d.consecutive) for d in decisions] == expected
    assert [d.alert for d in decisions] == [state == "alerted" for state, _ in expected]
    assert all(d.reason for d in decisions)


def test_reasons_explain_the_decision() -> None:
    drifting, alerted, cooling, ok = run(P2, [(0, D), (1, D), (1, D), (1, C)])
    assert drifting.reason == "1 consecutive drifted window; an alert needs 2 (persistence)."
    assert alerted.reason == "2 consecutive drifted windows (persistence 2)."
    assert "last alert was 1m ago" in cooling.reason
    assert "another 59m" in cooling.reason
    assert ok.reason == "No drift in this window; this ends a streak of 3 drifted windows."
    small = run(P2, [(0, S)])[0]
    assert "Only 199 rows" in small.reason and "at least 200" in small.reason


def test_history_order_and_alert_lookup() -> None:
    outcomes = [
        CheckOutcome(ts=T0, drifted=True, n_rows=500, alerted_at=T0),
        CheckOutcome(ts=T0, drifted=True, n_rows=10),
        CheckOutcome(ts=T0, drifted=True, n_rows=500, alerted_at=T0 + timedelta(minutes=5)),
    ]
    assert streak(P2, outcomes) == 2
    assert last_alert(outcomes) == T0 + timedelta(minutes=5)
    assert last_alert([]) is None


def test_decision_to_dict() -> None:
    decision = run(P1, [(0, D)])[0]
    assert decision.to_dict() == {
        "alert": True,
        "state": "alerted",
        "consecutive": 1,
        "reason": decision.reason,
    }
    assert P2.to_dict() == {"min_rows": 200, "persistence": 2, "cooldown_seconds": 3600.0}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"persistence": 0}, "The 'persistence' parameter must be an int >= 1. Got 0 instead."),
        ({"persistence": 1.5}, "The 'persistence' parameter must be an int >= 1. Got 1.5 instead"),
        ({"persistence": True}, "The 'persistence' parameter must be an int >= 1. Got True"),
        ({"min_rows": 0}, "The 'min_rows' parameter must be an int >= 1. Got 0 instead."),
        ({"min_rows": "200"}, "The 'min_rows' parameter must be an int >= 1. Got '200' instead."),
        (
            {"cooldown": timedelta(seconds=-1)},
            "The 'cooldown' parameter must be a timedelta >= 0. Got",
        ),
        ({"cooldown": 3600}, "The 'cooldown' parameter must be a timedelta >= 0. Got 3600"),
    ],
)
def test_policy_parameters_are_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        MonitorPolicy(**kwargs)  # type: ignore[arg-type]
    assert str(info.value).startswith(message)


def test_times_must_be_timezone_aware() -> None:
    new = CheckOutcome(ts=T0, drifted=True, n_rows=500)
    with pytest.raises(InvalidInputError, match="'now' parameter must be a timezone-aware"):
        decide(P2, [], new, datetime(2030, 1, 1))
    with pytest.raises(InvalidInputError, match="'ts' parameter"):
        CheckOutcome(ts=datetime(2030, 1, 1), drifted=True, n_rows=5)
    with pytest.raises(InvalidInputError, match="'n_rows' parameter must be an int >= 0"):
        CheckOutcome(ts=T0, drifted=True, n_rows=-1)
    with pytest.raises(InvalidInputError, match="MonitorPolicy"):
        decide(None, [], new, T0)  # type: ignore[arg-type]


def test_format_duration() -> None:
    assert format_duration(timedelta(0)) == "0s"
    assert format_duration(timedelta(hours=1, minutes=5)) == "1h 5m"
    assert format_duration(timedelta(days=1, seconds=7)) == "1d 7s"
    assert format_duration(timedelta(seconds=-3)) == "0s"
