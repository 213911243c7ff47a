"""The training pipeline: the user's loader and trainer, tracked, evaluated, gated and registered.

The project file names two plain functions (``module:function``); neither needs closedloop:

* the loader takes no argument and returns a pandas DataFrame holding the features and the target;
* the trainer takes ``(X, y)`` and returns a fitted model with ``predict`` (and ``predict_proba``
  when it has one).

``train`` loads → splits off held-out data → fits → predicts with the candidate and the incumbent
production version on the *same* held-out rows (once each) → runs the gate
(:func:`closedloop.domain.gate.judge`: a paired-bootstrap interval of the improvement, the
declared slices, and both models' latency, which is measured here) → registers the candidate →
promotes it only when the gate passes (and promotion was asked for). The whole decision is
recorded on the version's lineage and in the ``gate.decided`` event. The tracked run records the
pipeline settings, the trained estimator's parameters (nested ones too, under ``model.``, see
:func:`~closedloop.services.tracking.estimator_params`) and every figure the gate computed
(:meth:`~closedloop.domain.gate.GateDecision.metrics`).
"""

from __future__ import annotations

import importlib
import json
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from closedloop.errors import (
    ClosedloopError,
    ConfigError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    StoreError,
    UserCodeError,
)
from closedloop.services import registry
from closedloop.services.tracking import start_run
from closedloop.services.workspace import Workspace, default_actor
from closedloop.storage.names import check_model_name

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from closedloop.domain.gate import GateDecision, GateRules
    from closedloop.domain.metrics import Outputs
    from closedloop.domain.model import LoadedVersion

LATENCY_REPEATS = 7
"""Timed predict calls per model (interleaved, alternating which model goes first); the median
is judged. Fewer (at least 3) when the calls are slow, see :data:`LATENCY_BUDGET_SECONDS`."""
LATENCY_BUDGET_SECONDS = 10.0
"""Stop adding latency repeats (after the third) once this much time has been spent timing."""
MODEL_PARAM_PREFIX = "model."
"""The trained estimator's parameters are recorded on the run under this prefix (the pipeline's
own settings have none), e.g. ``model.ridge__alpha``; the version records them without it."""
_LINEAGE_KEYS = frozenset({"dataset", "run_id", "gate", "git_commit", "git_dirty", "environment"})


@dataclass(frozen=True)
class TrainResult:
    """One pipeline run: the registered version, the gate's decision and whether production
    moved to it (never when ``promote=False`` was asked for; ``decision.passed`` still says
    whether the gate passed). ``incumbent_version`` is the production version it was compared
    with (None when there was none)."""

    model: str
    version: int
    run_id: str
    decision: GateDecision
    promoted: bool
    n_train: int
    n_holdout: int
    incumbent_version: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "run_id": self.run_id,
            "promoted": self.promoted,
            "gate": self.decision.to_dict(),
            "incumbent_version": self.incumbent_version,
            "n_train": self.n_train,
            "n_holdout": self.n_holdout,
        }


def import_function(spec: str, *, setting: str, ws: Workspace) -> Callable[..., Any]:
    """Import ``module:function`` from the project folder, with errors that name the setting."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(
            f"The setting pipeline.{setting} must look like 'module:function'. "
            f"Got {spec!r} instead.",
            hint='Set it in closedloop.toml, e.g. loader = "pipeline:load_data".',
        )
    folder = str(ws.settings.project_dir)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise UserCodeError(
            f"Cannot import {module_name!r} (pipeline.{setting}): {exc}.",
            details={"traceback": traceback.format_exc()},
        ) from exc
    function = getattr(module, attr, None)
    if not callable(function):
        raise ConfigError(f"{module_name!r} has no function {attr!r} (pipeline.{setting}).")
    return function  # type: ignore[no-any-return]


def call_user(
    function: Callable[..., Any],
    what: str,
    *args: Any,
    hint: str = "Fix the error in your pipeline code; production was not changed.",
) -> Any:
    """Call the user's code; anything it raises becomes a UserCodeError with the traceback."""
    try:
        return function(*args)
    except ClosedloopError:
        raise
    except Exception as exc:
        raise UserCodeError(
            f"The {what} raised {type(exc).__name__}: {exc}.",
            hint=hint,
            details={"traceback": traceback.format_exc()},
        ) from exc


def split_holdout(
    frame: pd.DataFrame, target: str, fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded split; stratified on the target when it looks like a class label."""
    from sklearn.model_selection import train_test_split

    if not 0 < fraction < 1:
        raise ConfigError(
            f"pipeline.holdout_fraction must be a float in (0, 1). Got {fraction!r} instead."
        )
    y = frame[target]
    stratify = y if y.nunique() <= 20 and y.value_counts().min() >= 2 else None
    train, holdout = train_test_split(
        frame, test_size=fraction, random_state=seed, stratify=stratify
    )
    return train, holdout


def predict_outputs(model: LoadedVersion | Any, X: pd.DataFrame) -> Outputs:
    """What the gate scores and times: ``predict`` and, when the model has it, ``predict_proba``
    (its positive column for a binary classifier, the whole matrix otherwise)."""
    from closedloop.domain.metrics import Outputs
    from closedloop.domain.model import LoadedVersion

    estimator = model.estimator if isinstance(model, LoadedVersion) else model
    labels = estimator.predict(X)
    proba = getattr(estimator, "predict_proba", None)
    scores = None
    if callable(proba):
        matrix = proba(X)
        if getattr(matrix, "ndim", 0) == 2:  # binary: the positive column; else the whole matrix
            scores = matrix[:, 1] if matrix.shape[1] == 2 else matrix
    return Outputs(labels=labels, scores=scores)


def evaluate(
    loaded: LoadedVersion | Any, X: pd.DataFrame, y: pd.Series | np.ndarray, metric: str
) -> float:
    """Score a model (a LoadedVersion or a bare estimator) on held-out rows."""
    from closedloop.domain.metrics import score_outputs

    return score_outputs(metric, y, predict_outputs(loaded, X))


def time_predictions(
    *calls: tuple[Any, pd.DataFrame],
    repeats: int = LATENCY_REPEATS,
    budget: float = LATENCY_BUDGET_SECONDS,
) -> list[float]:
    """Median seconds of one :func:`predict_outputs` call for each ``(model, rows)`` pair.

    The calls are timed in interleaved rounds, each round rotating which model goes first, so
    that every model sees the same machine load. Native thread pools (OpenMP, BLAS) are limited
    to one thread while timing: on a busy machine oversubscribed pools make wall-clock times
    swing several-fold between identical calls, while one thread measures each model's compute
    per row, which is what the comparison is about. Garbage collection is paused while timing,
    as :mod:`timeit` does. After three rounds, no further round starts once ``budget`` seconds
    have been spent.
    """
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    timings: list[list[float]] = [[] for _ in calls]
    spent = 0.0
    with threadpool_limits(limits=1):
        for round_ in range(repeats):
            if round_ >= 3 and spent > budget:
                break
            for k in range(len(calls)):
                which = (k + round_) % len(calls)
                elapsed = _timed_call(*calls[which])
                timings[which].append(elapsed)
                spent += elapsed
    return [statistics.median(t) for t in timings]


def _timed_call(model: Any, X: pd.DataFrame) -> float:
    import gc

    collecting = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        predict_outputs(model, X)
        return time.perf_counter() - start
    finally:
        if collecting:
            gc.enable()


def _incumbent_version(ws: Workspace, model: str) -> int | None:
    """The production version the candidate will be compared with (read before training)."""
    try:
        return registry.resolve_alias(ws, model)
    except NotFoundError:
        return None


@dataclass(frozen=True)
class _Incumbent:
    """Production's estimator, its view of the held-out rows and its outputs on them (all None
    when there is no production version or it cannot score these rows: ``note`` says which)."""

    estimator: Any = None
    frame: pd.DataFrame | None = None
    outputs: Outputs | None = None
    note: str = ""


def _load_incumbent(
    ws: Workspace, model: str, number: int | None, X: pd.DataFrame, y: Any, metric: str
) -> _Incumbent:
    from closedloop.domain.metrics import score_outputs

    if number is None:
        return _Incumbent(note="no production version")
    try:
        loaded = registry.load_version(ws, model, number)
        frame = X[loaded.signature.names()]
        outputs = predict_outputs(loaded, frame)
        score_outputs(metric, y, outputs)  # scorable on these rows?
    except StoreError:
        raise  # the store is down or misconfigured: not the incumbent's fault
    except (ClosedloopError, KeyError, ValueError, TypeError) as exc:
        return _Incumbent(note=f"incumbent v{number} cannot score this data: {exc}")
    return _Incumbent(estimator=loaded.estimator, frame=frame, outputs=outputs)


def load_frame(ws: Workspace) -> tuple[pd.DataFrame, str]:
    """Call the project's loader; returns its frame (checked: a DataFrame with the target and at
    least 10 rows) and the loader's name as the data source."""
    import pandas as pd

    cfg = ws.settings.pipeline
    for setting in ("model", "loader", "trainer", "target"):
        if not getattr(cfg, setting):
            raise ConfigError(
                f"The setting pipeline.{setting} is not set.",
                hint="Run `closedloop init` or add it to [pipeline] in closedloop.toml.",
            )
    loader = import_function(cfg.loader, setting="loader", ws=ws)
    frame = call_user(loader, f"loader {cfg.loader}")
    if not isinstance(frame, pd.DataFrame):
        raise InvalidInputError(
            f"The loader {cfg.loader} must return a pandas DataFrame. "
            f"Got {type(frame).__name__} instead."
        )
    if cfg.target not in frame.columns:
        raise InvalidInputError(
            f"The loader's frame has no target column {cfg.target!r}.",
            hint=f"Columns: {', '.join(map(str, frame.columns[:20]))}.",
        )
    if len(frame) < 10:
        raise InvalidInputError(f"The loader returned {len(frame)} rows; at least 10 are needed.")
    return frame, cfg.loader


def gate_rules(ws: Workspace) -> GateRules:
    """The ``[gate]`` settings as the domain's rules (ConfigError when one is invalid)."""
    from closedloop.domain.gate import GateRules

    g = ws.settings.gate
    return GateRules(
        bootstrap=g.bootstrap,
        confidence=g.confidence,
        seed=g.seed,
        slice_tolerance=g.slice_tolerance,
        min_slice_rows=g.min_slice_rows,
        latency_tolerance=g.latency_tolerance,
    )


def train(
    ws: Workspace,
    *,
    frame: pd.DataFrame | None = None,
    source: str | None = None,
    actor: str | None = None,
    reason: str = "",
    promote: bool = True,
    lineage_extra: dict[str, Any] | None = None,
) -> TrainResult:
    """Run the pipeline once; ``frame`` replaces the loader (used by retraining on new data).

    ``promote=False`` registers the candidate and records the gate's decision but leaves
    production where it is (``TrainResult.promoted`` is False; ``decision.passed`` says whether
    the gate passed). ``lineage_extra`` is merged into the version's lineage, e.g.
    ``{"agent_step": "retrain:42"}``: JSON-serialisable, without the keys closedloop writes.
    """
    from closedloop.domain.gate import select_slices
    from closedloop.domain.metrics import score_outputs

    cfg = ws.settings.pipeline
    check_model_name(cfg.model)  # before anything is fitted or recorded
    extra = _check_lineage_extra(lineage_extra)
    rules = gate_rules(ws)
    _ = ws.artifacts  # a missing bucket or a foreign store is refused before training
    if frame is None:
        frame, source = load_frame(ws)
    actor = actor or default_actor()
    trainer = import_function(cfg.trainer, setting="trainer", ws=ws)
    train_rows, holdout = split_holdout(frame, cfg.target, cfg.holdout_fraction, cfg.seed)
    slices = select_slices(ws.settings.gate.slices, holdout)
    X_train, y_train = train_rows.drop(columns=[cfg.target]), train_rows[cfg.target]
    X_hold, y_hold = holdout.drop(columns=[cfg.target]), holdout[cfg.target]
    with start_run(ws, name=f"train-{cfg.model}", experiment=cfg.model) as run:
        run.log_params(
            {
                "trainer": cfg.trainer,
                "loader": cfg.loader,
                "target": cfg.target,
                "metric": cfg.metric,
                "holdout_fraction": cfg.holdout_fraction,
                "seed": cfg.seed,
            }
        )
        data_hash = run.log_dataset(frame, source=source or "frame", role="training")
        incumbent_version = _incumbent_version(ws, cfg.model)
        estimator = call_user(trainer, f"trainer {cfg.trainer}", X_train, y_train)
        params = run.log_estimator_params(estimator, prefix=MODEL_PARAM_PREFIX)
        outputs = call_user(predict_outputs, "candidate's predict", estimator, X_hold)
        candidate = score_outputs(cfg.metric, y_hold, outputs)
        run.log_metric(cfg.metric, candidate)
        decision, note = _run_gate(
            ws, rules, (estimator, outputs), incumbent_version, X_hold, y_hold, slices
        )
        run.log_metrics({k: v for k, v in decision.metrics().items() if k != cfg.metric})
        gate_record = {
            **decision.to_dict(),
            "incumbent_version": incumbent_version,
            "note": note,
            "promote": promote,
        }
        lineage = {
            **extra,
            "dataset": {
                "sha256": data_hash,
                "source": source or "frame",
                "n_rows": len(frame),
                "schema": {str(c): str(t) for c, t in frame.dtypes.items()},
            },
            "run_id": run.id,
            "gate": {**gate_record, "n_holdout": len(holdout)},
        }
        from closedloop.services.tracking import code_version, environment

        lineage.update(code_version(ws.settings.project_dir))
        lineage["environment"] = environment()
        info = registry.register_version(
            ws,
            cfg.model,
            estimator,
            X_train,
            metrics={cfg.metric: candidate},
            params={k.removeprefix(MODEL_PARAM_PREFIX): v for k, v in params.items()},
            lineage=lineage,
            run_id=run.id,
            actor=actor,
            reason=reason or "closedloop train",
            evaluation=(X_hold, y_hold),
        )
        _record_decision(ws, info.number, decision, gate_record, actor)
        promoted = (
            promote
            and decision.passed
            and _promote(ws, info.number, incumbent_version, decision, actor)
        )
    return TrainResult(
        model=cfg.model,
        version=info.number,
        run_id=run.id,
        decision=decision,
        promoted=promoted,
        n_train=len(train_rows),
        n_holdout=len(holdout),
        incumbent_version=incumbent_version,
    )


def _run_gate(
    ws: Workspace,
    rules: GateRules,
    candidate: tuple[Any, Outputs],
    incumbent_version: int | None,
    X: pd.DataFrame,
    y: pd.Series,
    slices: dict[str, Any],
) -> tuple[GateDecision, str]:
    """The gate's decision for the candidate's ``(estimator, outputs)`` and a note on the
    incumbent (empty when it was scored). Latency is measured here, judged by the domain."""
    from closedloop.domain.gate import judge, judge_latency

    cfg = ws.settings.pipeline
    estimator, outputs = candidate
    incumbent = _load_incumbent(ws, cfg.model, incumbent_version, X, y, cfg.metric)
    if incumbent.outputs is None or incumbent.frame is None:
        decision = judge(cfg.metric, y, outputs, None, margin=cfg.gate_margin, rules=rules)
        if incumbent_version is not None:
            decision = _unscorable_incumbent(decision, incumbent_version, incumbent.note)
        return decision, incumbent.note
    seconds = time_predictions((estimator, X), (incumbent.estimator, incumbent.frame))
    latency = judge_latency(*seconds, n_rows=len(X), tolerance=rules.latency_tolerance)
    decision = judge(
        cfg.metric,
        y,
        outputs,
        incumbent.outputs,
        margin=cfg.gate_margin,
        rules=rules,
        slices=slices,
        latency=latency,
    )
    return decision, incumbent.note


def _check_lineage_extra(extra: dict[str, Any] | None) -> dict[str, Any]:
    if extra is None:
        return {}
    if not isinstance(extra, dict) or not all(isinstance(k, str) for k in extra):
        raise InvalidInputError(
            f"lineage_extra must be a dict with str keys. Got {type(extra).__name__} instead."
        )
    clash = sorted(_LINEAGE_KEYS & set(extra))
    if clash:
        raise InvalidInputError(
            f"lineage_extra must not set {', '.join(clash)}: closedloop writes those keys. "
            f"Got keys {', '.join(sorted(extra))}."
        )
    try:
        json.dumps(extra)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"lineage_extra must be JSON-serialisable: {exc}.") from exc
    return dict(extra)


def _unscorable_incumbent(decision: GateDecision, version: int, note: str) -> GateDecision:
    """Production exists but cannot score the held-out rows: never promote past it silently."""
    from dataclasses import replace

    reason = (
        f"production v{version} could not be scored on the same held-out rows ({note}); "
        "the candidate is registered but not promoted — promote it explicitly with "
        "`closedloop alias set` if that is intended"
    )
    return replace(decision, passed=False, reason=reason, reasons=(reason,))


def _promote(
    ws: Workspace, number: int, incumbent: int | None, decision: GateDecision, actor: str
) -> bool:
    """Move production to the winner, unless production moved while we were training."""
    try:
        registry.set_alias(
            ws,
            ws.settings.pipeline.model,
            registry.PRODUCTION,
            number,
            actor=actor,
            reason=f"gate passed: {decision.reason}",
            expected=incumbent,
        )
    except ConflictError:
        return False
    return True


def _record_decision(
    ws: Workspace, number: int, decision: GateDecision, payload: dict[str, Any], actor: str
) -> None:
    from closedloop.services import events

    with ws.metadata.write() as conn:
        events.record(
            conn,
            "gate.decided",
            actor=actor,
            model=ws.settings.pipeline.model,
            version=number,
            payload=payload,
            reason=decision.reason,
        )
