"""The rollout state machine: every legal transition and every illegal one, table-driven."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from closedloop.domain import rollout as machine
from closedloop.domain.rollout import AliasMove, RolloutState
from closedloop.errors import ClosedloopError, ConflictError, InvalidInputError

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
LATER = T0 + timedelta(minutes=11)

IDLE = RolloutState(model="loans", production=1)
NO_PRODUCTION = RolloutState(model="loans")
CANARY, _ = machine.start_canary(IDLE, 2, now=T0)
SHADOW, _ = machine.start_shadow(IDLE, 3, T0)


def _at_step(index: int) -> RolloutState:
    state = CANARY
    for _ in range(index):
        state, _t = machine.advance(state, T0)
    return state


Step = Callable[[RolloutState], tuple[RolloutState, machine.Transition]]

LEGAL: list[tuple[str, RolloutState, Step, dict[str, Any], tuple[AliasMove, ...]]] = [
    (
        "start_canary",
        IDLE,
        lambda s: machine.start_canary(s, 2, now=T0),
        {"mode": "canary", "candidate": 2, "weight": 0.1, "step_index": 0, "production": 1},
        (AliasMove("canary", 2),),
    ),
    (
        "start_canary_custom_weight",
        IDLE,
        lambda s: machine.start_canary(s, 2, weight=0.05, steps=(0.5, 1.0), now=T0),
        {"mode": "canary", "weight": 0.05, "steps": (0.05, 0.5, 1.0)},
        (AliasMove("canary", 2),),
    ),
    (
        "start_canary_full_weight",
        IDLE,
        lambda s: machine.start_canary(s, 2, weight=1.0, now=T0),
        {"mode": "canary", "weight": 1.0, "steps": (1.0,)},
        (AliasMove("canary", 2),),
    ),
    (
        "advance_first_step",
        CANARY,
        lambda s: machine.advance(s, LATER),
        {"mode": "canary", "weight": 0.25, "step_index": 1, "step_started_at": LATER},
        (),
    ),
    (
        "advance_before_last_promotes",
        _at_step(2),
        lambda s: machine.advance(s, LATER),
        {"mode": "idle", "production": 2, "candidate": None, "weight": 0.0},
        (AliasMove("production", 2), AliasMove("canary", None)),
    ),
    (
        "promote",
        CANARY,
        lambda s: machine.promote(s, LATER),
        {"mode": "idle", "production": 2, "candidate": None, "steps": ()},
        (AliasMove("production", 2), AliasMove("canary", None)),
    ),
    (
        "abort",
        _at_step(1),
        lambda s: machine.abort(s, LATER, "errors"),
        {"mode": "idle", "production": 1, "candidate": None, "weight": 0.0},
        (AliasMove("canary", None),),
    ),
    (
        "start_shadow",
        IDLE,
        lambda s: machine.start_shadow(s, 3, T0),
        {"mode": "shadow", "candidate": 3, "weight": 0.0},
        (AliasMove("shadow", 3),),
    ),
    (
        "start_shadow_without_production",
        NO_PRODUCTION,
        lambda s: machine.start_shadow(s, 3, T0),
        {"mode": "shadow", "candidate": 3},
        (AliasMove("shadow", 3),),
    ),
    (
        "stop_shadow",
        SHADOW,
        lambda s: machine.stop_shadow(s, LATER),
        {"mode": "idle", "candidate": None, "production": 1},
        (AliasMove("shadow", None),),
    ),
    (
        "rollback_during_a_canary",
        _at_step(1),
        lambda s: machine.rollback(s, 1, LATER, "incident"),
        {"mode": "idle", "production": 1, "candidate": None, "weight": 0.0, "steps": ()},
        (AliasMove("canary", None),),
    ),
    (
        "rollback_during_a_shadow",
        SHADOW,
        lambda s: machine.rollback(s, 1, LATER),
        {"mode": "idle", "production": 1, "candidate": None},
        (AliasMove("shadow", None),),
    ),
]


@pytest.mark.parametrize(
    ("name", "before", "step", "expected", "moves"), LEGAL, ids=[c[0] for c in LEGAL]
)
def test_legal_transitions(
    name: str,
    before: RolloutState,
    step: Step,
    expected: dict[str, Any],
    moves: tuple[AliasMove, ...],
) -> None:
    after, transition = step(before)
    for key, value in expected.items():
        assert getattr(after, key) == value, key
    assert transition.alias_moves == moves
    assert transition.before == before.summary()
    assert transition.after == after.summary()
    assert transition.kind.startswith("rollout.")
    assert transition.rules  # the rules that were checked are recorded


ILLEGAL: list[tuple[str, RolloutState, Step, type[ClosedloopError], str]] = [
    ("canary_while_canary", CANARY, lambda s: machine.start_canary(s, 3, now=T0), ConflictError,
     "canary of v2 is running"),
    ("canary_while_shadow", SHADOW, lambda s: machine.start_canary(s, 2, now=T0), ConflictError,
     "shadow of v3 is running"),
    ("canary_without_production", NO_PRODUCTION, lambda s: machine.start_canary(s, 2, now=T0),
     ConflictError, "no production version"),
    ("canary_of_production", IDLE, lambda s: machine.start_canary(s, 1, now=T0), ConflictError,
     "already in production"),
    ("canary_version_zero", IDLE, lambda s: machine.start_canary(s, 0, now=T0),
     InvalidInputError, "int >= 1"),
    ("weight_zero", IDLE, lambda s: machine.start_canary(s, 2, weight=0.0, now=T0),
     InvalidInputError, "(0, 1]"),
    ("weight_above_one", IDLE, lambda s: machine.start_canary(s, 2, weight=1.5, now=T0),
     InvalidInputError, "(0, 1]"),
    ("weight_nan", IDLE, lambda s: machine.start_canary(s, 2, weight=float("nan"), now=T0),
     InvalidInputError, "(0, 1]"),
    ("steps_empty", IDLE, lambda s: machine.start_canary(s, 2, steps=(), now=T0),
     InvalidInputError, "must not be empty"),
    ("steps_not_increasing", IDLE,
     lambda s: machine.start_canary(s, 2, steps=(0.5, 0.25, 1.0), now=T0),
     InvalidInputError, "strictly increasing"),
    ("steps_repeated", IDLE, lambda s: machine.start_canary(s, 2, steps=(0.5, 0.5, 1.0), now=T0),
     InvalidInputError, "strictly increasing"),
    ("steps_not_ending_at_one", IDLE,
     lambda s: machine.start_canary(s, 2, steps=(0.1, 0.5), now=T0),
     InvalidInputError, "last canary step must be 1.0"),
    ("steps_out_of_range", IDLE,
     lambda s: machine.start_canary(s, 2, steps=(0.0, 1.0), now=T0),
     InvalidInputError, "weight in (0, 1]"),
    ("duration_zero", IDLE,
     lambda s: machine.start_canary(s, 2, step_duration=timedelta(0), now=T0),
     InvalidInputError, "positive timedelta"),
    ("advance_idle", IDLE, lambda s: machine.advance(s, T0), ConflictError, "no rollout"),
    ("advance_shadow", SHADOW, lambda s: machine.advance(s, T0), ConflictError, "shadow"),
    ("promote_idle", IDLE, lambda s: machine.promote(s, T0), ConflictError, "no rollout"),
    ("promote_shadow", SHADOW, lambda s: machine.promote(s, T0), ConflictError, "stop-shadow"),
    ("abort_idle", IDLE, lambda s: machine.abort(s, T0), ConflictError, "no rollout"),
    ("abort_shadow", SHADOW, lambda s: machine.abort(s, T0), ConflictError, "shadow"),
    ("shadow_while_canary", CANARY, lambda s: machine.start_shadow(s, 3, T0), ConflictError,
     "rollout abort"),
    ("shadow_while_shadow", SHADOW, lambda s: machine.start_shadow(s, 2, T0), ConflictError,
     "shadow of v3"),
    ("shadow_of_production", IDLE, lambda s: machine.start_shadow(s, 1, T0), ConflictError,
     "already in production"),
    ("stop_shadow_idle", IDLE, lambda s: machine.stop_shadow(s, T0), ConflictError,
     "no rollout"),
    ("stop_shadow_canary", CANARY, lambda s: machine.stop_shadow(s, T0), ConflictError,
     "canary of v2"),
    ("rollback_idle", IDLE, lambda s: machine.rollback(s, 1, T0), ConflictError, "no rollout"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "before", "step", "error", "needle"), ILLEGAL, ids=[c[0] for c in ILLEGAL]
)
def test_illegal_transitions_raise_with_a_clear_message(
    name: str, before: RolloutState, step: Step, error: type[ClosedloopError], needle: str
) -> None:
    with pytest.raises(error) as caught:
        step(before)
    assert type(caught.value) is error
    assert needle in caught.value.message + (caught.value.hint or "")


def test_a_full_schedule_serves_every_weight_below_one_then_promotes() -> None:
    state, _ = machine.start_canary(IDLE, 2, steps=(0.1, 0.25, 0.5, 1.0), now=T0)
    served = [state.weight]
    names = []
    while state.mode == "canary":
        state, transition = machine.advance(state, T0)
        names.append(transition.name)
        if state.mode == "canary":
            served.append(state.weight)
    assert served == [0.1, 0.25, 0.5]
    assert names == ["advanced", "advanced", "promoted"]
    assert state.production == 2


def test_step_timing() -> None:
    assert not CANARY.step_elapsed(T0 + timedelta(minutes=9))
    assert CANARY.step_elapsed(T0 + timedelta(minutes=10))
    assert not IDLE.step_elapsed(LATER)
    assert not CANARY.promotes_next
    assert _at_step(2).promotes_next
    full, _ = machine.start_canary(IDLE, 2, weight=1.0, now=T0)
    assert full.promotes_next


def test_every_transition_has_an_ordered_rule_list() -> None:
    assert set(machine.POLICY) == {
        "start_canary",
        "advance",
        "promote",
        "abort",
        "start_shadow",
        "stop_shadow",
        "rollback",
    }
    names = [name for name, _ in machine.POLICY["start_canary"]]
    assert names[0].startswith("mode_is_idle")
    assert "steps_increasing_ending_at_1" in names


def test_check_steps() -> None:
    assert machine.check_steps((0.1, 1.0)) is None
    assert machine.check_steps((1.0,)) is None
    assert machine.check_steps((True, 1.0)) is not None
    assert machine.check_steps(None) is not None


def test_transition_to_dict_is_json_friendly() -> None:
    import json

    _, transition = machine.promote(CANARY, LATER)
    body = transition.to_dict()
    json.dumps(body)
    assert body["alias_moves"] == [
        {"alias": "production", "version": 2},
        {"alias": "canary", "version": None},
    ]
    assert json.dumps(CANARY.to_dict())
