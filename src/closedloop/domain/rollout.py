"""The rollout state machine: canary and shadow releases of a model version, as pure rules.

A model is in one of three modes:

``idle``
    Production (the ``production`` alias) serves all traffic.
``canary``
    A *candidate* version serves a share ``weight`` of the traffic (the ``canary`` alias);
    production serves the rest. The share grows along ``steps``.
``shadow``
    A candidate version receives a copy of the traffic (the ``shadow`` alias); its answers are
    logged, never returned.

Steps
    ``steps`` is a strictly increasing tuple of weights in ``(0, 1]`` whose last value is
    ``1.0``. The last step is never *served* as a canary weight: reaching it **is** promotion.
    :func:`start_canary` normalises the schedule to start at the initial ``weight``: the stored
    steps are ``(weight, *[s for s in steps if s > weight])``, so ``weight=0.1`` with the
    default ``(0.1, 0.25, 0.5, 1.0)`` serves 10%, 25%, 50%, then promotes. A ``weight`` of
    ``1.0`` sends all traffic to the candidate while production stays warm for an instant abort;
    the next :func:`advance` promotes.

Each transition checks an ordered list of named rules (like an orchestration policy: the first
rule that does not hold raises) and returns ``(new_state, Transition)``. The transition lists
the alias moves it implies; applying them (and recording the event) is the service's job:

=============  ==================  ==================  =========================================
transition     from mode           to mode             alias moves
=============  ==================  ==================  =========================================
start_canary   idle                canary              canary → candidate
advance        canary              canary (next step)  none (the weight lives in the rollout)
               canary, last step   idle                as promote
promote        canary              idle                production → candidate, canary removed
abort          canary              idle                canary removed (production never moved)
start_shadow   idle                shadow              shadow → candidate
stop_shadow    shadow              idle                shadow removed
rollback       canary or shadow    idle                canary or shadow removed (production was
                                                       rolled back in the same transaction)
=============  ==================  ==================  =========================================

State conflicts raise :class:`ConflictError`; malformed arguments (weights, steps, durations)
raise :class:`InvalidInputError`. :func:`advance` does not wait for ``step_duration``: the
guardrails (:mod:`closedloop.domain.guardrails`) decide when to advance; a person may force it.

Pure: no I/O, no clock (every transition takes ``now``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from closedloop.errors import ClosedloopError, ConflictError, InvalidInputError

Mode = Literal["idle", "canary", "shadow"]
MODES: tuple[Mode, ...] = ("idle", "canary", "shadow")
PRODUCTION = "production"
CANARY = "canary"
SHADOW = "shadow"
DEFAULT_STEPS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)
DEFAULT_WEIGHT = 0.1
DEFAULT_STEP_DURATION = timedelta(minutes=10)


@dataclass(frozen=True)
class RolloutState:
    """Where a model's rollout stands. ``production`` mirrors the production alias."""

    model: str
    production: int | None = None
    candidate: int | None = None
    mode: Mode = "idle"
    weight: float = 0.0
    steps: tuple[float, ...] = ()
    step_index: int = 0
    step_started_at: datetime | None = None
    step_duration: timedelta = DEFAULT_STEP_DURATION
    started_at: datetime | None = None

    @property
    def promotes_next(self) -> bool:
        """Whether the next :func:`advance` promotes (the next step is the last, 1.0)."""
        return self.mode == "canary" and (
            self.step_index + 1 >= len(self.steps) - 1 or self.weight >= 1.0
        )

    def step_elapsed(self, now: datetime) -> bool:
        """Whether the current canary step has run for at least ``step_duration``."""
        if self.mode != "canary" or self.step_started_at is None:
            return False
        return now - self.step_started_at >= self.step_duration

    def summary(self) -> dict[str, Any]:
        """The fields a transition record shows for its before/after states."""
        return {
            "mode": self.mode,
            "production": self.production,
            "candidate": self.candidate,
            "weight": self.weight,
            "step_index": self.step_index,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; ``weight`` and ``steps`` are fractions of the traffic in (0, 1],
        ``percent`` and ``steps_percent`` the same figures in percent (what the CLI shows)."""
        return {
            "model": self.model,
            "mode": self.mode,
            "production": self.production,
            "candidate": self.candidate,
            "weight": self.weight,
            "percent": percent(self.weight),
            "steps": list(self.steps),
            "steps_percent": [percent(s) for s in self.steps],
            "step_index": self.step_index,
            "step_started_at": _iso(self.step_started_at),
            "step_duration_seconds": self.step_duration.total_seconds(),
            "started_at": _iso(self.started_at),
        }


@dataclass(frozen=True)
class AliasMove:
    """Point ``alias`` at ``version``; ``version=None`` removes the alias."""

    alias: str
    version: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"alias": self.alias, "version": self.version}


@dataclass(frozen=True)
class Transition:
    """What one transition did: its name, the states before and after, the implied alias moves."""

    name: str
    model: str
    version: int | None
    before: dict[str, Any]
    after: dict[str, Any]
    alias_moves: tuple[AliasMove, ...] = ()
    reason: str = ""
    at: datetime | None = None
    rules: tuple[str, ...] = field(default=())

    @property
    def kind(self) -> str:
        """The event kind the service records: ``rollout.<name>``."""
        return f"rollout.{self.name}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "transition": self.name,
            "model": self.model,
            "version": self.version,
            "before": self.before,
            "after": self.after,
            "alias_moves": [m.to_dict() for m in self.alias_moves],
            "reason": self.reason,
            "at": _iso(self.at),
            "rules": list(self.rules),
        }


# --------------------------------------------------------------------------------------------
# Rules: each returns None when it holds, else the error to raise.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """The arguments of a transition, as the rules see them."""

    version: int | None = None
    weight: float | None = None
    steps: tuple[float, ...] | None = None
    step_duration: timedelta | None = None


Rule = tuple[str, Callable[[RolloutState, Request], ClosedloopError | None]]


def _mode_is(*modes: Mode, action: str) -> Rule:
    def check(state: RolloutState, _request: Request) -> ClosedloopError | None:
        if state.mode in modes:
            return None
        if state.mode == "idle":
            return ConflictError(
                f"Cannot {action} {state.model!r}: no rollout is running.",
                hint=f"Start one with `closedloop rollout start {state.model} VERSION`.",
            )
        what = f"a {state.mode} of v{state.candidate}"
        hint = (
            f"Abort or promote it first: `closedloop rollout abort {state.model}`."
            if state.mode == "canary"
            else f"Stop it first: `closedloop rollout stop-shadow {state.model}`."
        )
        return ConflictError(f"Cannot {action} {state.model!r}: {what} is running.", hint=hint)

    return (f"mode_is_{'_or_'.join(modes)}", check)


def _has_production(state: RolloutState, _request: Request) -> ClosedloopError | None:
    if state.production is not None:
        return None
    return ConflictError(
        f"Model {state.model!r} has no production version to compare a candidate with.",
        hint=f"Set one first: `closedloop alias set {state.model} production N`.",
    )


def _candidate_is_not_production(state: RolloutState, request: Request) -> ClosedloopError | None:
    if request.version != state.production:
        return None
    return ConflictError(
        f"Version {request.version} of {state.model!r} is already in production; "
        "a rollout needs a different candidate."
    )


def _version_is_positive(_state: RolloutState, request: Request) -> ClosedloopError | None:
    version = request.version
    if isinstance(version, int) and not isinstance(version, bool) and version >= 1:
        return None
    return InvalidInputError(f"The candidate version must be an int >= 1. Got {version!r}.")


def _weight_in_range(_state: RolloutState, request: Request) -> ClosedloopError | None:
    weight = request.weight
    ok = (
        isinstance(weight, int | float)
        and not isinstance(weight, bool)
        and math.isfinite(weight)
        and 0.0 < weight <= 1.0
    )
    if ok:
        return None
    return InvalidInputError(f"The canary weight must be in (0, 1]. Got {weight!r} instead.")


def _steps_valid(_state: RolloutState, request: Request) -> ClosedloopError | None:
    steps = request.steps
    problem = check_steps(steps)
    return None if problem is None else InvalidInputError(problem)


def _duration_positive(_state: RolloutState, request: Request) -> ClosedloopError | None:
    duration = request.step_duration
    if isinstance(duration, timedelta) and duration > timedelta(0):
        return None
    return InvalidInputError(
        f"The step duration must be a positive timedelta. Got {duration!r} instead."
    )


def check_steps(steps: Sequence[float] | None) -> str | None:
    """Why ``steps`` is not a valid schedule (None when it is)."""
    if steps is None or len(steps) == 0:
        return "The canary steps must not be empty; the last step must be 1.0."
    values = list(steps)
    for value in values:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not 0.0 < value <= 1.0
        ):
            return f"Every canary step must be a weight in (0, 1]. Got {value!r} in {values}."
    if any(b <= a for a, b in itertools.pairwise(values)):
        return f"The canary steps must be strictly increasing. Got {values}."
    if values[-1] != 1.0:
        return f"The last canary step must be 1.0 (promotion). Got {values}."
    return None


POLICY: dict[str, tuple[Rule, ...]] = {
    "start_canary": (
        _mode_is("idle", action="start a canary of"),
        ("version_is_positive", _version_is_positive),
        ("has_production", _has_production),
        ("candidate_is_not_production", _candidate_is_not_production),
        ("weight_in_range", _weight_in_range),
        ("steps_increasing_ending_at_1", _steps_valid),
        ("step_duration_positive", _duration_positive),
    ),
    "advance": (_mode_is("canary", action="advance"),),
    "promote": (_mode_is("canary", action="promote"),),
    "abort": (_mode_is("canary", action="abort"),),
    "start_shadow": (
        _mode_is("idle", action="start a shadow of"),
        ("version_is_positive", _version_is_positive),
        ("candidate_is_not_production", _candidate_is_not_production),
    ),
    "stop_shadow": (_mode_is("shadow", action="stop the shadow of"),),
    "rollback": (
        _mode_is("canary", "shadow", action="end the rollout of"),
        ("version_is_positive", _version_is_positive),
    ),
}
"""Each transition's rules, checked in order; the first that fails raises its error."""


def _apply_rules(name: str, state: RolloutState, request: Request) -> tuple[str, ...]:
    for _rule_name, rule in POLICY[name]:
        error = rule(state, request)
        if error is not None:
            raise error
    return tuple(rule_name for rule_name, _ in POLICY[name])


def _idle(state: RolloutState, production: int | None) -> RolloutState:
    return RolloutState(
        model=state.model,
        production=production,
        step_duration=state.step_duration,
    )


def _transition(
    name: str,
    before: RolloutState,
    after: RolloutState,
    version: int | None,
    moves: tuple[AliasMove, ...],
    rules: tuple[str, ...],
    now: datetime,
    reason: str = "",
) -> tuple[RolloutState, Transition]:
    record = Transition(
        name=name,
        model=before.model,
        version=version,
        before=before.summary(),
        after=after.summary(),
        alias_moves=moves,
        reason=reason,
        at=now,
        rules=rules,
    )
    return after, record


# --------------------------------------------------------------------------------------------
# Transitions
# --------------------------------------------------------------------------------------------


def schedule(weight: float, steps: Sequence[float]) -> tuple[float, ...]:
    """The stored schedule: the initial weight, then every step above it (ending at 1.0)."""
    return (float(weight), *(float(s) for s in steps if s > weight))


def start_canary(
    state: RolloutState,
    version: int,
    *,
    weight: float = DEFAULT_WEIGHT,
    steps: Sequence[float] = DEFAULT_STEPS,
    step_duration: timedelta = DEFAULT_STEP_DURATION,
    now: datetime,
) -> tuple[RolloutState, Transition]:
    """Send ``weight`` of the traffic to ``version``; its share then grows along ``steps``."""
    request = Request(
        version=version,
        weight=weight,
        steps=tuple(steps) if steps is not None else None,
        step_duration=step_duration,
    )
    rules = _apply_rules("start_canary", state, request)
    plan = schedule(weight, steps)
    after = replace(
        state,
        candidate=version,
        mode="canary",
        weight=plan[0],
        steps=plan,
        step_index=0,
        step_started_at=now,
        step_duration=step_duration,
        started_at=now,
    )
    return _transition(
        "canary_started", state, after, version, (AliasMove(CANARY, version),), rules, now
    )


def advance(state: RolloutState, now: datetime) -> tuple[RolloutState, Transition]:
    """Move the canary to its next step; from the step before 1.0 (or at 1.0) this promotes."""
    rules = _apply_rules("advance", state, Request())
    if state.promotes_next:
        return promote(state, now)
    index = state.step_index + 1
    after = replace(state, step_index=index, weight=state.steps[index], step_started_at=now)
    return _transition("advanced", state, after, state.candidate, (), rules, now)


def promote(state: RolloutState, now: datetime) -> tuple[RolloutState, Transition]:
    """Make the candidate production and end the canary."""
    rules = _apply_rules("promote", state, Request())
    assert state.candidate is not None
    after = _idle(state, state.candidate)
    moves = (AliasMove(PRODUCTION, state.candidate), AliasMove(CANARY, None))
    return _transition("promoted", state, after, state.candidate, moves, rules, now)


def abort(state: RolloutState, now: datetime, reason: str = "") -> tuple[RolloutState, Transition]:
    """End the canary; production never moved, so nothing else changes."""
    rules = _apply_rules("abort", state, Request())
    after = _idle(state, state.production)
    moves = (AliasMove(CANARY, None),)
    return _transition("aborted", state, after, state.candidate, moves, rules, now, reason)


def start_shadow(
    state: RolloutState, version: int, now: datetime
) -> tuple[RolloutState, Transition]:
    """Mirror traffic to ``version``; its answers are logged (``_role="shadow"``), not returned."""
    rules = _apply_rules("start_shadow", state, Request(version=version))
    after = replace(
        state,
        candidate=version,
        mode="shadow",
        weight=0.0,
        steps=(),
        step_index=0,
        step_started_at=None,
        started_at=now,
    )
    return _transition(
        "shadow_started", state, after, version, (AliasMove(SHADOW, version),), rules, now
    )


def stop_shadow(state: RolloutState, now: datetime) -> tuple[RolloutState, Transition]:
    """Stop mirroring traffic to the shadow version."""
    rules = _apply_rules("stop_shadow", state, Request())
    after = _idle(state, state.production)
    moves = (AliasMove(SHADOW, None),)
    return _transition("shadow_stopped", state, after, state.candidate, moves, rules, now)


def rollback(
    state: RolloutState, production: int, now: datetime, reason: str = ""
) -> tuple[RolloutState, Transition]:
    """End a running canary or shadow because production was rolled back to ``production``.

    ``state`` is the rollout as it stood before the rollback (its ``production`` is the version
    rolled back from). The candidate's alias is removed; what serves afterwards is production
    alone, as after an abort.
    """
    rules = _apply_rules("rollback", state, Request(version=production))
    after = _idle(state, production)
    moves = (AliasMove(CANARY if state.mode == "canary" else SHADOW, None),)
    return _transition("rolled_back", state, after, state.candidate, moves, rules, now, reason)


def percent(weight: float) -> float:
    """A traffic share as a percentage (0.25 → 25.0), without float noise."""
    return round(weight * 100, 6)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
