"""Canary and shadow rollouts: persistence, alias moves, guardrail evaluation, the serving plan.

One ``rollouts`` row per model holds its mode (idle, canary, shadow), candidate version, canary
weight and step schedule. Every transition (rules in :mod:`closedloop.domain.rollout`) is ONE
write transaction that locks the model row, re-reads the rollout, updates it, moves or removes
the ``canary``/``shadow``/``production`` aliases (each with its ``alias.set``/``alias.deleted``
event, the payload shape of :mod:`closedloop.services.registry`, so ``history``, ``alias_at`` and
``last_known_good`` see them) and records ``rollout.<transition>`` with actor and reason. Two
writers racing to start a canary are serialised by the lock: exactly one wins, the other gets a
:class:`ConflictError`.

:func:`evaluate` reads the prediction log (outside any transaction) since the canary started,
runs the guardrails (:mod:`closedloop.domain.guardrails`) and applies the verdict only if the
rollout did not change meanwhile (compare-and-set on mode, candidate and step), recording every
check's figures in the event payload (``rollout.evaluated`` for a ``wait``).

Rollback during a canary or a shadow: :func:`closedloop.services.registry.rollback` moves
``production`` and, in the same transaction, ends the rollout (:func:`end_for_rollback`: the
``canary``/``shadow`` alias is removed and ``rollout.rolled_back`` is recorded, pointing at the
``alias.rollback`` event). After a rollback production serves everything; start a new canary
when the incident is over.

:func:`serving_plan` is what a serving host polls: one query for every model's production,
canary (with weight) and shadow version.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, select

from closedloop.domain import rollout as machine
from closedloop.domain.guardrails import GuardrailPolicy, Verdict, window_stats
from closedloop.domain.guardrails import evaluate as evaluate_guardrails
from closedloop.errors import ConflictError, NotFoundError
from closedloop.services import events, registry
from closedloop.services.events import as_utc, utcnow
from closedloop.services.workspace import Workspace, default_actor
from closedloop.storage.metadata.tables import aliases, models, rollouts, versions

if TYPE_CHECKING:
    import pandas as pd

RolloutState = machine.RolloutState
DEFAULT_STEPS = machine.DEFAULT_STEPS
DEFAULT_STEP_DURATION = machine.DEFAULT_STEP_DURATION


@dataclass(frozen=True)
class ServingPlan:
    """What one model's servers should serve: production, an optional weighted canary and an
    optional shadow (mirrored, answers logged with ``_role="shadow"`` and never returned)."""

    production: int | None
    canary: int | None = None
    canary_weight: float = 0.0
    shadow: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# --------------------------------------------------------------------------------------------
# Rows and aliases (inside the caller's write transaction)
# --------------------------------------------------------------------------------------------


def _alias_value(conn: Connection, model_id: int, alias: str) -> int | None:
    value = conn.execute(
        select(aliases.c.version_number).where(
            aliases.c.model_id == model_id, aliases.c.name == alias
        )
    ).scalar()
    return None if value is None else int(value)


def _check_version(conn: Connection, model_id: int, model: str, number: int) -> None:
    found = conn.execute(
        select(versions.c.id).where(versions.c.model_id == model_id, versions.c.number == number)
    ).first()
    if found is None:
        raise NotFoundError(
            f"Model {model!r} has no version {number}.",
            hint=f"List versions with `closedloop versions {model}`.",
        )


def move_alias(
    conn: Connection,
    model_id: int,
    model: str,
    alias: str,
    number: int | None,
    *,
    actor: str,
    reason: str,
    now: datetime,
    extra: dict[str, Any] | None = None,
) -> int | None:
    """Point ``alias`` at ``number`` (None: delete the alias) with its ``alias.set`` /
    ``alias.deleted`` event, inside the caller's transaction; returns the previous version."""
    previous = _alias_value(conn, model_id, alias)
    where = and_(aliases.c.model_id == model_id, aliases.c.name == alias)
    if number is None:
        if previous is None:
            return None
        conn.execute(aliases.delete().where(where))
        kind = "alias.deleted"
    elif previous is None:
        conn.execute(
            aliases.insert().values(
                model_id=model_id, name=alias, version_number=number, updated_at=now
            )
        )
        kind = "alias.set"
    else:
        conn.execute(aliases.update().where(where).values(version_number=number, updated_at=now))
        kind = "alias.set"
    payload = {"alias": alias, "from_version": previous, "to_version": number, **(extra or {})}
    events.record(
        conn,
        kind,
        actor=actor,
        model=model,
        version=number if number is not None else previous,
        payload=payload,
        reason=reason,
        ts=now,
    )
    return previous


def _load(conn: Connection, model_id: int, model: str) -> RolloutState:
    production = _alias_value(conn, model_id, machine.PRODUCTION)
    row = conn.execute(select(rollouts).where(rollouts.c.model_id == model_id)).first()
    if row is None or row.mode == "idle":
        duration = (
            timedelta(seconds=row.step_duration_seconds)
            if row is not None
            else DEFAULT_STEP_DURATION
        )
        return RolloutState(model=model, production=production, step_duration=duration)
    return RolloutState(
        model=model,
        production=production,
        candidate=row.candidate_version,
        mode=row.mode,
        weight=float(row.weight),
        steps=tuple(float(s) for s in row.steps),
        step_index=int(row.step_index),
        step_started_at=None if row.step_started_at is None else as_utc(row.step_started_at),
        step_duration=timedelta(seconds=float(row.step_duration_seconds)),
        started_at=None if row.started_at is None else as_utc(row.started_at),
    )


def _save(conn: Connection, model_id: int, state: RolloutState, now: datetime) -> None:
    values = {
        "mode": state.mode,
        "candidate_version": state.candidate,
        "weight": state.weight,
        "steps": list(state.steps),
        "step_index": state.step_index,
        "step_started_at": state.step_started_at,
        "step_duration_seconds": state.step_duration.total_seconds(),
        "started_at": state.started_at,
        "updated_at": now,
    }
    exists = conn.execute(
        select(rollouts.c.model_id).where(rollouts.c.model_id == model_id)
    ).first()
    if exists is None:
        conn.execute(rollouts.insert().values(model_id=model_id, **values))
    else:
        conn.execute(rollouts.update().where(rollouts.c.model_id == model_id).values(**values))


def _same(a: RolloutState, b: RolloutState) -> bool:
    return (a.mode, a.candidate, a.step_index, a.started_at) == (
        b.mode,
        b.candidate,
        b.step_index,
        b.started_at,
    )


def _apply(
    ws: Workspace,
    model: str,
    step: Callable[[RolloutState], tuple[RolloutState, machine.Transition]],
    *,
    actor: str | None,
    reason: str,
    now: datetime | None,
    check_version: int | None = None,
    expected: RolloutState | None = None,
    payload: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run one transition in one write transaction: row, aliases and events commit together."""
    now = now or utcnow()
    actor = actor or default_actor()
    with ws.metadata.write() as conn:
        model_id = registry.lock_model(conn, model)
        state = _load(conn, model_id, model)
        if expected is not None and not _same(state, expected):
            raise ConflictError(
                f"The rollout of {model!r} changed while it was being evaluated "
                f"(now {state.mode} of v{state.candidate}, step {state.step_index}); not applied.",
                hint=f"Look at `closedloop rollout status {model}` and evaluate again.",
            )
        after, transition = step(state)
        if check_version is not None:
            _check_version(conn, model_id, model, check_version)
        return _commit(
            conn, model_id, after, transition, actor=actor, reason=reason, now=now, payload=payload
        )


def _commit(
    conn: Connection,
    model_id: int,
    after: RolloutState,
    transition: machine.Transition,
    *,
    actor: str,
    reason: str,
    now: datetime,
    payload: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Inside the caller's transaction: the transition's alias moves, the row, the event."""
    model = transition.model
    for move in transition.alias_moves:
        move_alias(
            conn,
            model_id,
            model,
            move.alias,
            move.version,
            actor=actor,
            reason=reason or f"rollout {transition.name}",
            now=now,
            extra={"rollout": transition.name},
        )
    _save(conn, model_id, after, now)
    body = {**transition.to_dict(), **(payload or {})}
    events.record(
        conn,
        transition.kind,
        actor=actor,
        model=model,
        version=transition.version,
        payload=body,
        reason=reason,
        ts=now,
    )
    return {**body, "state": after.to_dict()}


def end_for_rollback(
    conn: Connection,
    model_id: int,
    model: str,
    *,
    from_version: int,
    to_version: int,
    actor: str,
    reason: str,
    now: datetime,
    rollback_event: int,
) -> RolloutState | None:
    """Inside a rollback's write transaction (production already moved from ``from_version`` to
    ``to_version``): end a running canary or shadow, removing its alias and recording
    ``rollout.rolled_back``. Returns the rollout that ended, or None when none was running."""
    state = _load(conn, model_id, model)
    if state.mode == "idle":
        return None
    before = replace(state, production=from_version)
    after, transition = machine.rollback(before, to_version, now, reason)
    _commit(
        conn,
        model_id,
        after,
        transition,
        actor=actor,
        reason=reason,
        now=now,
        payload={"rollback_event": rollback_event},
    )
    return state


# --------------------------------------------------------------------------------------------
# Transitions
# --------------------------------------------------------------------------------------------


def start_canary(
    ws: Workspace,
    model: str,
    version: int,
    *,
    weight: float = machine.DEFAULT_WEIGHT,
    steps: Sequence[float] = DEFAULT_STEPS,
    step_duration: timedelta = DEFAULT_STEP_DURATION,
    actor: str | None = None,
    reason: str = "",
    now: datetime | None = None,
) -> dict[str, Any]:
    """Send ``weight`` of ``model``'s traffic to ``version`` (alias ``canary``)."""
    at = now or utcnow()
    return _apply(
        ws,
        model,
        lambda s: machine.start_canary(
            s, version, weight=weight, steps=steps, step_duration=step_duration, now=at
        ),
        actor=actor,
        reason=reason,
        now=at,
        check_version=version,
    )


def start_shadow(
    ws: Workspace,
    model: str,
    version: int,
    *,
    actor: str | None = None,
    reason: str = "",
    now: datetime | None = None,
) -> dict[str, Any]:
    """Mirror ``model``'s traffic to ``version`` (alias ``shadow``)."""
    at = now or utcnow()
    return _apply(
        ws,
        model,
        lambda s: machine.start_shadow(s, version, at),
        actor=actor,
        reason=reason,
        now=at,
        check_version=version,
    )


def stop_shadow(
    ws: Workspace,
    model: str,
    *,
    actor: str | None = None,
    reason: str = "",
    now: datetime | None = None,
) -> dict[str, Any]:
    at = now or utcnow()
    return _apply(
        ws, model, lambda s: machine.stop_shadow(s, at), actor=actor, reason=reason, now=at
    )


def advance(
    ws: Workspace,
    model: str,
    *,
    actor: str | None = None,
    reason: str = "",
    now: datetime | None = None,
) -> dict[str, Any]:
    """Move the canary to its next weight now (promotes from the step before 1.0)."""
    at = now or utcnow()
    return _apply(ws, model, lambda s: machine.advance(s, at), actor=actor, reason=reason, now=at)


def promote(
    ws: Workspace,
    model: str,
    *,
    actor: str | None = None,
    reason: str = "",
    now: datetime | None = None,
) -> dict[str, Any]:
    """Make the canary production now (``production`` moves, ``canary`` is removed)."""
    at = now or utcnow()
    return _apply(ws, model, lambda s: machine.promote(s, at), actor=actor, reason=reason, now=at)


def abort(
    ws: Workspace,
    model: str,
    *,
    actor: str | None = None,
    reason: str = "",
    now: datetime | None = None,
) -> dict[str, Any]:
    """End the canary: ``canary`` is removed, production (which never moved) serves everything."""
    at = now or utcnow()
    return _apply(
        ws, model, lambda s: machine.abort(s, at, reason), actor=actor, reason=reason, now=at
    )


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def state(ws: Workspace, model: str) -> RolloutState:
    """The model's rollout as stored (production from the alias)."""
    with ws.metadata.read() as conn:
        model_id = conn.execute(select(models.c.id).where(models.c.name == model)).scalar()
        if model_id is None:
            raise registry.unknown_model(conn, model)
        return _load(conn, int(model_id), model)


def status(ws: Workspace, model: str, *, now: datetime | None = None) -> dict[str, Any]:
    """The rollout of ``model`` as a JSON-friendly dict: mode, versions, ``weight``/``steps``
    (fractions) and ``percent``/``steps_percent``; for a canary also the step's timing
    (``step_number`` counts from 1, ``step_seconds`` is how long the step has run,
    ``step_elapsed`` whether it ran its full ``step_duration_seconds``)."""
    current = state(ws, model)
    body = current.to_dict()
    now = now or utcnow()
    if current.mode == "canary" and current.step_started_at is not None:
        due = current.step_started_at + current.step_duration
        body["step_number"] = current.step_index + 1
        body["step_seconds"] = max((now - current.step_started_at).total_seconds(), 0.0)
        body["next_step_at"] = due.isoformat()
        body["step_elapsed"] = current.step_elapsed(now)
        body["promotes_next"] = current.promotes_next
    return body


def serving_plan(ws: Workspace) -> dict[str, ServingPlan]:
    """Every model's :class:`ServingPlan`, in one query (serving hosts call it on every poll)."""
    production = aliases.alias("production_alias")
    stmt = (
        select(
            models.c.name,
            production.c.version_number,
            rollouts.c.mode,
            rollouts.c.candidate_version,
            rollouts.c.weight,
        )
        .select_from(
            models.outerjoin(
                production,
                and_(
                    production.c.model_id == models.c.id,
                    production.c.name == machine.PRODUCTION,
                ),
            ).outerjoin(rollouts, rollouts.c.model_id == models.c.id)
        )
        .order_by(models.c.name)
    )
    plans: dict[str, ServingPlan] = {}
    with ws.metadata.read() as conn:
        for name, prod, mode, candidate, weight in conn.execute(stmt):
            canary = candidate if mode == "canary" and candidate != prod else None
            plans[name] = ServingPlan(
                production=prod,
                canary=canary,
                canary_weight=float(weight) if canary is not None else 0.0,
                shadow=candidate if mode == "shadow" else None,
            )
    return plans


# --------------------------------------------------------------------------------------------
# Guardrails
# --------------------------------------------------------------------------------------------


def _feedback(ws: Workspace, model: str) -> pd.DataFrame | None:
    frame = ws.feedback_log().read(model)
    return frame if len(frame) else None


def evaluate(
    ws: Workspace,
    model: str,
    *,
    now: datetime | None = None,
    actor: str | None = None,
    policy: GuardrailPolicy | None = None,
) -> dict[str, Any]:
    """Run the guardrails on the traffic since the canary started and apply the verdict.

    ``abort``/``advance``/``promote`` are applied as transitions whose event carries the
    verdict; ``wait`` records ``rollout.evaluated``. Returns the verdict, the transition (if
    any) and the state after.
    """
    now = now or utcnow()
    actor = actor or default_actor()
    if policy is None:
        policy = GuardrailPolicy(metric=ws.settings.pipeline.metric)
    before = state(ws, model)
    if before.mode != "canary":
        raise ConflictError(
            f"Cannot evaluate {model!r}: no canary is running (mode {before.mode}).",
            hint=f"Start one with `closedloop rollout start {model} VERSION`.",
        )
    log = ws.prediction_log()
    try:
        rows = log.read(model, since=before.started_at)
    finally:
        log.close()
    feedback = _feedback(ws, model)
    canary_stats = window_stats(rows, feedback, version=before.candidate)
    production_stats = window_stats(rows, feedback, version=before.production)
    verdict = evaluate_guardrails(
        canary_stats,
        production_stats,
        policy,
        step_elapsed=before.step_elapsed(now),
        last_step=before.promotes_next,
    )
    payload = {
        "verdict": verdict.to_dict(),
        "policy": policy.to_dict(),
        "window": {
            "since": before.started_at.isoformat() if before.started_at else None,
            "until": now.isoformat(),
            "canary_version": before.candidate,
            "production_version": before.production,
        },
    }
    reason = "; ".join(verdict.reasons)
    if verdict.action == "wait":
        return _record_wait(ws, model, before, verdict, payload, actor=actor, now=now)
    step: Callable[[RolloutState], tuple[RolloutState, machine.Transition]]
    if verdict.action == "abort":
        step = lambda s: machine.abort(s, now, reason)  # noqa: E731
    elif verdict.action == "promote":
        step = lambda s: machine.promote(s, now)  # noqa: E731
    else:
        step = lambda s: machine.advance(s, now)  # noqa: E731
    result = _apply(
        ws, model, step, actor=actor, reason=reason, now=now, expected=before, payload=payload
    )
    return {**result, "action": verdict.action}


def _record_wait(
    ws: Workspace,
    model: str,
    before: RolloutState,
    verdict: Verdict,
    payload: dict[str, Any],
    *,
    actor: str,
    now: datetime,
) -> dict[str, Any]:
    with ws.metadata.write() as conn:
        model_id = registry.lock_model(conn, model)
        current = _load(conn, model_id, model)
        if not _same(current, before):
            raise ConflictError(
                f"The rollout of {model!r} changed while it was being evaluated; not recorded.",
                hint=f"Look at `closedloop rollout status {model}` and evaluate again.",
            )
        events.record(
            conn,
            "rollout.evaluated",
            actor=actor,
            model=model,
            version=before.candidate,
            payload=payload,
            reason="; ".join(verdict.reasons),
            ts=now,
        )
    return {
        "transition": None,
        "model": model,
        "version": before.candidate,
        **payload,
        "state": before.to_dict(),
        "action": verdict.action,
    }
