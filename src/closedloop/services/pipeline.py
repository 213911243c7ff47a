"""The training pipeline: the user's loader and trainer, tracked, evaluated, gated and registered.

The project file names two plain functions (``module:function``); neither needs closedloop:

* the loader takes no argument and returns a pandas DataFrame holding the features and the target;
* the trainer takes ``(X, y)`` and returns a fitted model with ``predict`` (and ``predict_proba``
  when it has one).

``train`` loads → splits off held-out data → fits → scores the candidate and the incumbent
production version on the *same* held-out rows → registers the candidate → promotes it only when
the gate passes. The decision and both scores are recorded on the version and in the event log.
"""

from __future__ import annotations

import importlib
import sys
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
    UserCodeError,
)
from closedloop.services import registry
from closedloop.services.tracking import start_run
from closedloop.services.workspace import Workspace, default_actor

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from closedloop.domain.gate import GateDecision
    from closedloop.domain.model import LoadedVersion


@dataclass(frozen=True)
class TrainResult:
    model: str
    version: int
    run_id: str
    decision: GateDecision
    promoted: bool
    n_train: int
    n_holdout: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "run_id": self.run_id,
            "promoted": self.promoted,
            "gate": self.decision.to_dict(),
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


def _call_user(function: Callable[..., Any], what: str, *args: Any) -> Any:
    try:
        return function(*args)
    except ClosedloopError:
        raise
    except Exception as exc:
        raise UserCodeError(
            f"The {what} raised {type(exc).__name__}: {exc}.",
            hint="Fix the error in your pipeline code; production was not changed.",
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


def evaluate(
    loaded: LoadedVersion | Any, X: pd.DataFrame, y: pd.Series | np.ndarray, metric: str
) -> float:
    """Score a model (a LoadedVersion or a bare estimator) on held-out rows."""
    from closedloop.domain.metrics import score

    predict = getattr(loaded, "estimator", loaded)
    labels = predict.predict(X)
    proba = getattr(predict, "predict_proba", None)
    scores = None
    if callable(proba):
        matrix = proba(X)
        if getattr(matrix, "ndim", 0) == 2:  # binary: the positive column; else the whole matrix
            scores = matrix[:, 1] if matrix.shape[1] == 2 else matrix
    return float(score(metric, y, y_pred=labels, y_score=scores))


def _incumbent_version(ws: Workspace, model: str) -> int | None:
    """The production version the candidate will be compared with (read before training)."""
    try:
        return registry.resolve_alias(ws, model)
    except NotFoundError:
        return None


def _score_incumbent(
    ws: Workspace, model: str, number: int | None, X: pd.DataFrame, y: Any, metric: str
) -> tuple[int | None, float | None, str]:
    if number is None:
        return None, None, "no production version"
    try:
        incumbent = registry.load_version(ws, model, number)
        frame = X[incumbent.signature.names()]
        return number, evaluate(incumbent, frame, y, metric), ""
    except (ClosedloopError, KeyError, ValueError) as exc:
        return number, None, f"incumbent v{number} cannot score this data: {exc}"


def _load(ws: Workspace) -> tuple[pd.DataFrame, str]:
    import pandas as pd

    cfg = ws.settings.pipeline
    for setting in ("model", "loader", "trainer", "target"):
        if not getattr(cfg, setting):
            raise ConfigError(
                f"The setting pipeline.{setting} is not set.",
                hint="Run `closedloop init` or add it to [pipeline] in closedloop.toml.",
            )
    loader = import_function(cfg.loader, setting="loader", ws=ws)
    frame = _call_user(loader, f"loader {cfg.loader}")
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


def train(
    ws: Workspace,
    *,
    frame: pd.DataFrame | None = None,
    source: str | None = None,
    actor: str | None = None,
    reason: str = "",
) -> TrainResult:
    """Run the pipeline once; ``frame`` replaces the loader (used by retraining on new data)."""
    from closedloop.domain.gate import decide

    cfg = ws.settings.pipeline
    if frame is None:
        frame, source = _load(ws)
    actor = actor or default_actor()
    trainer = import_function(cfg.trainer, setting="trainer", ws=ws)
    train_rows, holdout = split_holdout(frame, cfg.target, cfg.holdout_fraction, cfg.seed)
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
        estimator = _call_user(trainer, f"trainer {cfg.trainer}", X_train, y_train)
        candidate = evaluate(estimator, X_hold, y_hold, cfg.metric)
        run.log_metric(cfg.metric, candidate)
        incumbent_version, incumbent, note = _score_incumbent(
            ws, cfg.model, incumbent_version, X_hold, y_hold, cfg.metric
        )
        decision = decide(cfg.metric, candidate, incumbent, cfg.gate_margin)
        if incumbent_version is not None and incumbent is None:
            decision = _unscorable_incumbent(decision, incumbent_version, note)
        lineage = {
            "dataset": {
                "sha256": data_hash,
                "source": source or "frame",
                "n_rows": len(frame),
                "schema": {str(c): str(t) for c, t in frame.dtypes.items()},
            },
            "run_id": run.id,
            "gate": {
                **decision.to_dict(),
                "incumbent_version": incumbent_version,
                "note": note,
                "n_holdout": len(holdout),
            },
        }
        from closedloop.services.tracking import code_version, environment

        lineage.update(code_version(ws.settings.project_dir))
        lineage["environment"] = environment()
        params = _estimator_params(estimator)
        info = registry.register_version(
            ws,
            cfg.model,
            estimator,
            X_train,
            metrics={cfg.metric: candidate},
            params=params,
            lineage=lineage,
            run_id=run.id,
            actor=actor,
            reason=reason or "closedloop train",
            evaluation=(X_hold, y_hold),
        )
        _record_decision(ws, info.number, decision, incumbent_version, note, actor)
        promoted = decision.passed and _promote(ws, info.number, incumbent_version, decision, actor)
    return TrainResult(
        model=cfg.model,
        version=info.number,
        run_id=run.id,
        decision=decision,
        promoted=promoted,
        n_train=len(train_rows),
        n_holdout=len(holdout),
    )


def _unscorable_incumbent(decision: GateDecision, version: int, note: str) -> GateDecision:
    """Production exists but cannot score the held-out rows: never promote past it silently."""
    from dataclasses import replace

    return replace(
        decision,
        passed=False,
        reason=f"production v{version} could not be scored on the same held-out rows ({note}); "
        "the candidate is registered but not promoted — promote it explicitly with "
        "`closedloop alias set` if that is intended",
    )


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
    ws: Workspace,
    number: int,
    decision: GateDecision,
    incumbent: int | None,
    note: str,
    actor: str,
) -> None:
    from closedloop.services import events

    with ws.metadata.write() as conn:
        events.record(
            conn,
            "gate.decided",
            actor=actor,
            model=ws.settings.pipeline.model,
            version=number,
            payload={**decision.to_dict(), "incumbent_version": incumbent, "note": note},
            reason=decision.reason,
        )


def _estimator_params(estimator: Any) -> dict[str, Any]:
    get_params = getattr(estimator, "get_params", None)
    if not callable(get_params):
        return {}
    try:
        params = get_params(deep=False)
    except Exception:  # a third-party get_params may fail; params are informational
        return {}
    return {
        str(k): v if isinstance(v, str | int | float | bool) or v is None else repr(v)
        for k, v in params.items()
    }
