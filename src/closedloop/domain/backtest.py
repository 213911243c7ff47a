"""Backtesting a retraining policy: replay labelled history through the loop. Pure: no I/O.

:func:`replay` walks time-ordered labelled rows (:class:`History`) window by window
(:func:`plan_windows`) and runs three strategies side by side:

``policy``
    the policy under test (:class:`BacktestPolicy`): the drift check of each window against the
    serving model's training reference (:func:`closedloop.domain.checks.assessment.assess`, the
    check ``closedloop drift`` and ``monitor`` run, with the same defaults), the monitor policy
    (:func:`closedloop.domain.policy.decide`: persistence and cooldown, the window end as the
    clock, the streak per version), the triggers (a drift alert when ``on_drift``, cron fire
    times within the window, a realised or estimated performance drop), and on a trigger a
    retrain on the policy's data with a held-out split and the promotion gate (:func:`gate`);
``never``
    the first model serves throughout;
``every_window``
    a retrain after every window on the same data rule, promoted without a gate.

For each window, in order: every strategy's serving model is scored on the window (the realised
metric: the history has the labels); the policy's drift check, monitor decision and triggers
run; then retraining uses only rows up to the window's end, and a promoted model serves from the
next window on. A model is never scored on a window it was trained on. After the last window
nothing is left to serve, so triggers there are reported but no retrain is run.

Retraining data in a backtest (``retrain_data``):

``loader``
    every labelled row up to the window's end, the initial training rows included: what a
    loader reading the data warehouse would return at that time;
``traffic``
    the most recent ``traffic_rows`` rows after the initial training rows (the traffic the
    first model served), up to the window's end; fewer than ``min_labelled_rows`` and the
    retrain fails, as the agent's does;
``traffic+loader``
    both, concatenated (the recent rows appear twice, as when a loader already holds them).

The first model is fitted like ``closedloop train`` does: the rows are split (the pipeline's
seeded split, :class:`Pipeline`), the trainer fits the rest, the held-out score is the baseline
of the performance triggers, and the training features (at most ``reference_rows``, sampled
with seed 0 as the registry stores them) are the drift reference. A candidate fitted on the
same rows is shared by the strategies (one fit, not two).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd

from closedloop.domain.checks.drift import DEFAULT_ALPHA, Correction
from closedloop.domain.gate import GateDecision, GateRules
from closedloop.domain.metrics import Outputs, check_metric, higher_is_better, score_outputs
from closedloop.domain.policy import CheckOutcome, MonitorPolicy, PolicyDecision, decide
from closedloop.domain.triggers import CronSchedule, PerformanceCheck, TriggerKind
from closedloop.errors import ConfigError, InvalidInputError

POLICY = "policy"
NEVER = "never"
EVERY_WINDOW = "every_window"
STRATEGIES: tuple[str, ...] = (POLICY, NEVER, EVERY_WINDOW)
STRATEGY_LABELS = {POLICY: "policy", NEVER: "never", EVERY_WINDOW: "every window"}

RetrainData = Literal["loader", "traffic", "traffic+loader"]
RETRAIN_DATA: tuple[str, ...] = get_args(RetrainData)
MIN_TRAINING_ROWS = 10
"""The fewest rows the first model may be trained on (as ``closedloop train`` requires)."""

Trainer = Callable[[pd.DataFrame, pd.Series], Any]
Splitter = Callable[[pd.DataFrame, str, float, int], tuple[pd.DataFrame, pd.DataFrame]]


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BacktestPolicy:
    """The policy under test: the ``[pipeline]``, ``[monitor]`` and ``[agent]`` settings."""

    target: str
    metric: str = "roc_auc"
    gate_margin: float = 0.0
    holdout_fraction: float = 0.2
    seed: int = 0
    alpha: float = DEFAULT_ALPHA
    correction: Correction = "bonferroni"
    monitor: MonitorPolicy = field(default_factory=MonitorPolicy)
    schedule: CronSchedule | None = None
    on_drift: bool = True
    performance_drop: float = 0.0
    estimated_drop: float = 0.0
    retrain_data: RetrainData = "loader"
    traffic_rows: int = 5000
    min_labelled_rows: int = 200
    reference_rows: int = 100_000
    gate_rules: GateRules = field(default_factory=GateRules)
    gate_slices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_metric(self.metric)
        if self.retrain_data not in RETRAIN_DATA:
            raise ConfigError(
                f"agent.retrain_data must be one of {', '.join(RETRAIN_DATA)}. "
                f"Got {self.retrain_data!r} instead."
            )
        for name in ("performance_drop", "estimated_drop", "gate_margin"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a number >= 0. Got {value!r} instead.")
        for name in ("traffic_rows", "min_labelled_rows", "reference_rows"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1. Got {getattr(self, name)!r} instead.")

    @property
    def higher_is_better(self) -> bool:
        return higher_is_better(self.metric)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "metric": self.metric,
            "gate_margin": self.gate_margin,
            "holdout_fraction": self.holdout_fraction,
            "seed": self.seed,
            "alpha": self.alpha,
            "correction": self.correction,
            "monitor": self.monitor.to_dict(),
            "schedule": self.schedule.expression if self.schedule else None,
            "on_drift": self.on_drift,
            "performance_drop": self.performance_drop,
            "estimated_drop": self.estimated_drop,
            "retrain_data": self.retrain_data,
            "traffic_rows": self.traffic_rows,
            "min_labelled_rows": self.min_labelled_rows,
            "gate": {
                "bootstrap": self.gate_rules.bootstrap,
                "confidence": self.gate_rules.confidence,
                "seed": self.gate_rules.seed,
                "slices": list(self.gate_slices),
                "slice_tolerance": self.gate_rules.slice_tolerance,
                "min_slice_rows": self.gate_rules.min_slice_rows,
                "latency": "not judged (a backtest does not time predictions)",
            },
        }


@dataclass(frozen=True)
class Pipeline:
    """The user's trainer and the pipeline's held-out split (``split(frame, target, fraction,
    seed) -> (train, holdout)``)."""

    train: Trainer
    split: Splitter


@dataclass(frozen=True)
class History:
    """Labelled rows sorted by time: ``features`` and ``target`` indexed 0..n-1, ``times`` UTC."""

    features: pd.DataFrame
    target: pd.Series
    times: pd.DatetimeIndex

    def __post_init__(self) -> None:
        n = len(self.times)
        if len(self.features) != n or len(self.target) != n:
            raise InvalidInputError(
                "History features, target and times must have the same length. Got "
                f"{len(self.features)}, {len(self.target)} and {n} instead."
            )
        if self.times.tz is None or not self.times.is_monotonic_increasing:
            raise InvalidInputError("History times must be timezone-aware and sorted.")

    def __len__(self) -> int:
        return len(self.times)


@dataclass(frozen=True)
class Window:
    """Rows ``lo .. hi - 1`` of the history; the window spans ``[start, end)``."""

    index: int
    start: pd.Timestamp
    end: pd.Timestamp
    lo: int
    hi: int

    @property
    def n(self) -> int:
        return self.hi - self.lo


def plan_windows(
    times: pd.DatetimeIndex,
    first_row: int,
    *,
    start: pd.Timestamp | None = None,
    span: pd.Timedelta | None = None,
    rows: int | None = None,
) -> list[Window]:
    """Windows after the first ``first_row`` (training) rows: consecutive ``span``-long time
    windows from ``start`` (default: the first row's time), or blocks of ``rows`` rows (the
    last one may be shorter). Time windows cover the data up to its last row; empty ones are
    kept (they have ``n == 0``)."""
    if (span is None) == (rows is None):
        raise InvalidInputError("Give exactly one of a window span or a window row count.")
    n = len(times)
    if first_row >= n:
        return []
    if rows is not None:
        return _row_windows(times, first_row, rows)
    assert span is not None
    origin = times[first_row] if start is None else start
    count = int((times[-1] - origin) // span) + 1
    edges = pd.DatetimeIndex([origin + k * span for k in range(count + 1)])
    cuts = np.searchsorted(times.as_unit("ns").asi8, edges.as_unit("ns").asi8, side="left")
    cuts[0] = first_row
    return [
        Window(index=k, start=edges[k], end=edges[k + 1], lo=int(cuts[k]), hi=int(cuts[k + 1]))
        for k in range(count)
    ]


def _row_windows(times: pd.DatetimeIndex, first_row: int, rows: int) -> list[Window]:
    if rows < 1:
        raise InvalidInputError(f"A window needs at least 1 row. Got {rows} instead.")
    n = len(times)
    starts = range(first_row, n, rows)
    windows = []
    for k, lo in enumerate(starts):
        hi = min(lo + rows, n)
        end = times[hi] if hi < n else times[n - 1]
        windows.append(Window(index=k, start=times[lo], end=end, lo=lo, hi=hi))
    return windows


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trigger:
    """A trigger that fired at the end of a window."""

    kind: TriggerKind
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "detail": self.detail}


@dataclass(frozen=True)
class DriftVerdict:
    """The policy's drift check of one window and the monitor policy's decision."""

    checked: bool
    drifted: bool
    columns: tuple[str, ...]
    multivariate: bool | None
    decision: PolicyDecision

    def to_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "drifted": self.drifted,
            "columns": list(self.columns),
            "multivariate": self.multivariate,
            **self.decision.to_dict(),
        }


@dataclass(frozen=True)
class Retrain:
    """The policy's retrain at the end of a window: the candidate, its gate and the outcome."""

    candidate_version: int | None
    n_rows: int
    n_train: int
    n_holdout: int
    gate: GateDecision | None
    promoted: bool
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidate_version": self.candidate_version,
            "n_rows": self.n_rows,
            "n_train": self.n_train,
            "n_holdout": self.n_holdout,
            "gate": None if self.gate is None else self.gate.to_dict(),
            "promoted": self.promoted,
            "note": self.note,
        }


@dataclass(frozen=True)
class WindowResult:
    """One window of the replay: who served it, how well, and what the policy did after it."""

    window: Window
    versions: dict[str, int]
    metrics: dict[str, float | None]
    drift: DriftVerdict
    triggers: tuple[Trigger, ...] = ()
    estimated: float | None = None
    retrain: Retrain | None = None

    @property
    def alert(self) -> bool:
        return self.drift.decision.alert

    @property
    def promoted(self) -> bool:
        return self.retrain is not None and self.retrain.promoted

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.window.index,
            "start": self.window.start.isoformat(),
            "end": self.window.end.isoformat(),
            "n": self.window.n,
            "versions": dict(self.versions),
            "metrics": dict(self.metrics),
            "estimated": self.estimated,
            "drift": self.drift.to_dict(),
            "alert": self.alert,
            "triggers": [t.to_dict() for t in self.triggers],
            "retrain": None if self.retrain is None else self.retrain.to_dict(),
        }


@dataclass(frozen=True)
class InitialModel:
    """The first model, shared by every strategy."""

    train_until: pd.Timestamp
    n_rows: int
    n_train: int
    n_holdout: int
    holdout_score: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "train_until": self.train_until.isoformat(),
            "n_rows": self.n_rows,
            "n_train": self.n_train,
            "n_holdout": self.n_holdout,
            "holdout_score": self.holdout_score,
        }


@dataclass(frozen=True)
class BacktestResult:
    """The replay: the policy, the first model, every window, and :func:`summarise`'s figures."""

    policy: BacktestPolicy
    initial: InitialModel
    windows: tuple[WindowResult, ...]
    drift_point: pd.Timestamp | None = None

    def summary(self) -> dict[str, Any]:
        return summarise(self.windows, self.policy.metric, self.drift_point)

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategies": list(STRATEGIES),
            "policy": self.policy.to_dict(),
            "initial": self.initial.to_dict(),
            "drift_point": None if self.drift_point is None else self.drift_point.isoformat(),
            "windows": [w.to_dict() for w in self.windows],
            "summary": self.summary(),
        }


# --------------------------------------------------------------------------------------------
# Models, predictions, the gate
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fit:
    """One pipeline run: a fitted model, its held-out rows, outputs and score, its drift
    reference."""

    key: int
    estimator: Any
    holdout: pd.DataFrame
    X_holdout: pd.DataFrame
    y_holdout: pd.Series
    outputs: Outputs
    score: float | None
    reference: pd.DataFrame
    n_rows: int
    n_train: int
    calibrator: Any = None


@dataclass(frozen=True)
class _Serving:
    version: int
    fit: _Fit


def predict(estimator: Any, X: pd.DataFrame) -> Outputs:
    """``predict`` and, when the model has it, ``predict_proba`` (its positive column for a
    binary classifier, the whole matrix otherwise): what ``closedloop train`` scores."""
    labels = np.asarray(estimator.predict(X))
    proba = getattr(estimator, "predict_proba", None)
    scores = None
    if callable(proba):
        matrix = np.asarray(proba(X))
        if matrix.ndim == 2:
            scores = matrix[:, 1] if matrix.shape[1] == 2 else matrix
    return Outputs(labels=labels, scores=scores)


def _score(metric: str, y: pd.Series, outputs: Outputs) -> float | None:
    """The realised metric, or None when it is undefined here (one class, no rows)."""
    if len(y) == 0:
        return None
    try:
        value = score_outputs(metric, y, outputs)
    except InvalidInputError:
        return None
    return value if math.isfinite(value) else None


def gate(policy: BacktestPolicy, candidate: _Fit, incumbent: _Fit) -> GateDecision:
    """The promotion gate (:func:`closedloop.domain.gate.judge`: the paired-bootstrap interval
    of the improvement and the slice checks) of the candidate vs the incumbent on the
    candidate's held-out rows. Latency is not judged: a backtest does not time predictions.

    The one place the backtest decides a promotion, so the rule can change in one place.
    """
    from closedloop.domain.gate import judge, select_slices

    slices = select_slices(policy.gate_slices, candidate.holdout) if policy.gate_slices else {}
    return judge(
        policy.metric,
        candidate.y_holdout,
        candidate.outputs,
        predict(incumbent.estimator, candidate.X_holdout),
        margin=policy.gate_margin,
        rules=policy.gate_rules,
        slices=slices,
    )


# --------------------------------------------------------------------------------------------
# The replay
# --------------------------------------------------------------------------------------------


def replay(
    history: History,
    windows: Sequence[Window],
    first_row: int,
    policy: BacktestPolicy,
    pipeline: Pipeline,
    *,
    drift_point: pd.Timestamp | None = None,
    progress: Callable[[int, int, WindowResult], None] | None = None,
) -> BacktestResult:
    """Replay ``windows`` of ``history``; the first model is trained on rows ``0 ..
    first_row - 1``. ``progress(done, total, window_result)`` is called after each window."""
    if first_row < MIN_TRAINING_ROWS:
        raise InvalidInputError(
            f"The first model would be trained on {first_row} rows; at least "
            f"{MIN_TRAINING_ROWS} are needed.",
            hint="Pass a later --train-until.",
        )
    if not windows:
        raise InvalidInputError("There is no window to replay after the training rows.")
    run = _Replay(history, policy, pipeline, first_row)
    results = []
    for position, window in enumerate(windows):
        results.append(run.step(window, last=position == len(windows) - 1))
        if progress is not None:
            progress(position + 1, len(windows), results[-1])
    initial = run.initial
    return BacktestResult(
        policy=policy,
        initial=InitialModel(
            train_until=windows[0].start,
            n_rows=initial.n_rows,
            n_train=initial.n_train,
            n_holdout=len(initial.y_holdout),
            holdout_score=initial.score,
        ),
        windows=tuple(results),
        drift_point=drift_point,
    )


class _Replay:
    """The state carried from window to window."""

    def __init__(
        self, history: History, policy: BacktestPolicy, pipeline: Pipeline, first_row: int
    ) -> None:
        self.history = history
        self.policy = policy
        self.pipeline = pipeline
        self.first_row = first_row
        self._fits: dict[tuple[tuple[int, int], ...], _Fit] = {}
        self._next_key = 0
        self.initial = self._fit(((0, first_row),))
        self.serving = {name: _Serving(1, self.initial) for name in STRATEGIES}
        self.candidates = {POLICY: 1, EVERY_WINDOW: 1}
        self.outcomes: list[CheckOutcome] = []

    # -- one window ---------------------------------------------------------------------------

    def step(self, window: Window, *, last: bool) -> WindowResult:
        X, y = self._rows(window.lo, window.hi)
        predictions: dict[int, Outputs] = {}
        metrics: dict[str, float | None] = {}
        for name, serving in self.serving.items():
            if serving.fit.key not in predictions and window.n:
                predictions[serving.fit.key] = predict(serving.fit.estimator, X)
            prediction = predictions.get(serving.fit.key)
            metrics[name] = (
                None if prediction is None else _score(self.policy.metric, y, prediction)
            )
        versions = {name: serving.version for name, serving in self.serving.items()}
        current = self.serving[POLICY]
        verdict = self._drift(window, X, current)
        estimated = self._estimate(current, predictions.get(current.fit.key))
        triggers = self._triggers(window, verdict, metrics[POLICY], estimated, current)
        self._fits.clear()
        retrain = None
        if not last:
            retrain = self._retrain_policy(window) if triggers else None
            self._retrain_every_window(window)
        elif triggers:
            retrain = Retrain(None, 0, 0, 0, None, False, "no later window to serve")
        return WindowResult(window, versions, metrics, verdict, triggers, estimated, retrain)

    def _rows(self, lo: int, hi: int) -> tuple[pd.DataFrame, pd.Series]:
        return self.history.features.iloc[lo:hi], self.history.target.iloc[lo:hi]

    # -- monitoring ---------------------------------------------------------------------------

    def _drift(self, window: Window, X: pd.DataFrame, serving: _Serving) -> DriftVerdict:
        monitor = self.policy.monitor
        checked = window.n >= monitor.min_rows
        drifted, multivariate = False, None
        columns: tuple[str, ...] = ()
        if checked:
            drifted, columns, multivariate = drift_check(serving.fit.reference, X, self.policy)
        now = window.end.to_pydatetime()
        new = CheckOutcome(ts=now, drifted=drifted, n_rows=window.n, drifted_columns=columns)
        decision = decide(monitor, self.outcomes, new, now)
        self.outcomes.append(replace(new, alerted_at=now if decision.alert else None))
        return DriftVerdict(checked, drifted, columns, multivariate, decision)

    def _estimate(self, serving: _Serving, prediction: Outputs | None) -> float | None:
        if self.policy.estimated_drop <= 0 or prediction is None or prediction.scores is None:
            return None
        from closedloop.domain.performance import estimate_performance

        calibrator = serving.fit.calibrator
        if calibrator is None or np.ndim(prediction.scores) != 1:
            return None
        estimate = estimate_performance(prediction.scores, calibrator=calibrator)
        value = estimate[self.policy.metric].value
        return value if math.isfinite(value) else None

    def _triggers(
        self,
        window: Window,
        verdict: DriftVerdict,
        realised: float | None,
        estimated: float | None,
        serving: _Serving,
    ) -> tuple[Trigger, ...]:
        policy = self.policy
        fired: list[Trigger] = []
        if policy.on_drift and verdict.decision.alert:
            fired.append(Trigger("drift", verdict.decision.reason))
        if policy.schedule is not None:
            first = policy.schedule.next_after(
                window.start.to_pydatetime() - timedelta(microseconds=1)
            )
            if first < window.end.to_pydatetime():
                fired.append(Trigger("schedule", f"{policy.schedule.expression} at {first}"))
        baseline = serving.fit.score
        checks: tuple[tuple[TriggerKind, float, float | None], ...] = (
            ("performance", policy.performance_drop, realised),
            ("estimated_performance", policy.estimated_drop, estimated),
        )
        for kind, threshold, value in checks:
            if threshold > 0 and value is not None and baseline is not None:
                check = PerformanceCheck(
                    policy.metric, baseline, value, threshold, policy.higher_is_better, window.n
                )
                if check.dropped:
                    fired.append(Trigger(kind, _drop_detail(check)))
        return tuple(fired)

    # -- retraining ---------------------------------------------------------------------------

    def _data_ranges(self, window: Window) -> tuple[tuple[int, int], ...]:
        end = window.hi
        traffic = (max(self.first_row, end - self.policy.traffic_rows), end)
        rule = self.policy.retrain_data
        if rule == "loader":
            return ((0, end),)
        if rule == "traffic":
            return (traffic,)
        return ((0, end), traffic)

    def _traffic_shortfall(self, ranges: tuple[tuple[int, int], ...]) -> str:
        if self.policy.retrain_data == "loader":
            return ""
        lo, hi = ranges[-1]
        if hi - lo >= self.policy.min_labelled_rows:
            return ""
        return (
            f"only {hi - lo} labelled traffic rows; a traffic retrain needs "
            f"{self.policy.min_labelled_rows} (agent.min_labelled_rows)"
        )

    def _retrain_policy(self, window: Window) -> Retrain:
        ranges = self._data_ranges(window)
        shortfall = self._traffic_shortfall(ranges)
        if shortfall:
            return Retrain(None, ranges[-1][1] - ranges[-1][0], 0, 0, None, False, shortfall)
        candidate = self._fit(ranges)
        self.candidates[POLICY] += 1
        number = self.candidates[POLICY]
        base = Retrain(
            number, candidate.n_rows, candidate.n_train, len(candidate.y_holdout), None, False
        )
        try:
            decision = gate(self.policy, candidate, self.serving[POLICY].fit)
        except InvalidInputError as exc:  # a model that cannot be scored on these rows
            return replace(base, note=f"not gated: {exc.message}")
        if decision.passed:
            self.serving[POLICY] = _Serving(number, candidate)
            self.outcomes = []  # the streak and the cooldown are per version
        return replace(base, gate=decision, promoted=decision.passed)

    def _retrain_every_window(self, window: Window) -> None:
        ranges = self._data_ranges(window)
        if self._traffic_shortfall(ranges):
            return
        self.candidates[EVERY_WINDOW] += 1
        self.serving[EVERY_WINDOW] = _Serving(self.candidates[EVERY_WINDOW], self._fit(ranges))

    def _fit(self, ranges: tuple[tuple[int, int], ...]) -> _Fit:
        cached = self._fits.get(ranges)
        if cached is None:
            cached = self._fits[ranges] = self._run_pipeline(ranges)
        return cached

    def _run_pipeline(self, ranges: tuple[tuple[int, int], ...]) -> _Fit:
        policy = self.policy
        parts = [self._rows(lo, hi) for lo, hi in ranges]
        X = pd.concat([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        y = pd.concat([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
        frame = X.assign(**{policy.target: y.to_numpy()}).reset_index(drop=True)
        train, holdout = self.pipeline.split(
            frame, policy.target, policy.holdout_fraction, policy.seed
        )
        X_train = train.drop(columns=[policy.target])
        estimator = self.pipeline.train(X_train, train[policy.target])
        X_hold, y_hold = holdout.drop(columns=[policy.target]), holdout[policy.target]
        held_out = predict(estimator, X_hold)
        self._next_key += 1
        return _Fit(
            key=self._next_key,
            estimator=estimator,
            holdout=holdout,
            X_holdout=X_hold,
            y_holdout=y_hold,
            outputs=held_out,
            score=_score(policy.metric, y_hold, held_out),
            reference=_reference(X_train, policy.reference_rows),
            n_rows=len(frame),
            n_train=len(train),
            calibrator=self._calibrator(held_out, y_hold),
        )

    def _calibrator(self, held_out: Outputs, y: pd.Series) -> Any:
        if self.policy.estimated_drop <= 0:
            return None
        from closedloop.domain.performance import ESTIMATED_METRICS, fit_calibrator

        if self.policy.metric not in ESTIMATED_METRICS:
            raise ConfigError(
                f"agent.estimated_drop needs pipeline.metric to be one of "
                f"{', '.join(ESTIMATED_METRICS)}. Got {self.policy.metric!r} instead."
            )
        if held_out.scores is None or np.ndim(held_out.scores) != 1:
            raise ConfigError(
                "agent.estimated_drop needs a binary classifier with predict_proba.",
                hint="Set agent.estimated_drop = 0 for this model.",
            )
        return fit_calibrator(held_out.scores, y)


def drift_check(
    reference: pd.DataFrame, current: pd.DataFrame, policy: BacktestPolicy
) -> tuple[bool, tuple[str, ...], bool | None]:
    """The monitor's drift check (``assess`` with its defaults; the data-quality signals,
    which do not count in the verdict, are skipped): ``(drifted, drifted columns,
    multivariate verdict)``."""
    from closedloop.domain.checks.assessment import assess

    report = assess(
        reference, current, alpha=policy.alpha, correction=policy.correction, quality=False
    )
    multivariate = report.multivariate.get("drifted") if report.multivariate else None
    return report.drifted, tuple(report.drifted_columns), multivariate


def _reference(features: pd.DataFrame, rows: int) -> pd.DataFrame:
    """The drift reference as the registry stores it: at most ``rows`` rows, seed 0."""
    sample = features.sample(n=rows, random_state=0) if len(features) > rows else features
    return sample.reset_index(drop=True)


def _drop_detail(check: PerformanceCheck) -> str:
    return (
        f"{check.metric} {check.current:.4f} is {check.drop:.4f} below the held-out "
        f"{check.baseline:.4f} (threshold {check.threshold:g})"
    )


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------


def summarise(
    windows: Sequence[WindowResult], metric: str, drift_point: pd.Timestamp | None = None
) -> dict[str, Any]:
    """Mean metric per strategy (overall, after the first alert, before/after a known drift
    point), retrains and promotions, and how many windows the policy needed from the first
    drifted window to its alert and to its promotion."""
    first_drift = _first(windows, lambda w: w.drift.drifted)
    first_alert = _first(windows, lambda w: w.alert)
    first_promotion = _first(
        windows, lambda w: w.promoted and (first_alert is None or w.window.index >= first_alert)
    )
    after_alert = [w for w in windows if first_alert is not None and w.window.index > first_alert]
    summary: dict[str, Any] = {
        "metric": metric,
        "higher_is_better": higher_is_better(metric),
        "windows": len(windows),
        "mean": _means(windows),
        "mean_after_first_alert": _means(after_alert) if first_alert is not None else None,
        "retrains": {
            POLICY: sum(1 for w in windows if w.retrain and w.retrain.candidate_version),
            NEVER: 0,
            EVERY_WINDOW: max(0, len(windows) - 1),
        },
        "promotions": {
            POLICY: sum(1 for w in windows if w.promoted),
            NEVER: 0,
            EVERY_WINDOW: max(0, len(windows) - 1),
        },
        "alerts": sum(1 for w in windows if w.alert),
        "first_drifted_window": first_drift,
        "first_alert_window": first_alert,
        "first_promotion_window": first_promotion,
        "windows_to_alert": _gap(first_drift, first_alert),
        "windows_to_promotion": _gap(first_drift, first_promotion),
    }
    if drift_point is not None:
        summary["mean_before_drift"] = _means([w for w in windows if w.window.end <= drift_point])
        summary["mean_after_drift"] = _means([w for w in windows if w.window.start >= drift_point])
    return summary


def _first(windows: Sequence[WindowResult], test: Callable[[WindowResult], bool]) -> int | None:
    return next((w.window.index for w in windows if test(w)), None)


def _gap(start: int | None, end: int | None) -> int | None:
    return None if start is None or end is None else end - start


def _means(windows: Sequence[WindowResult]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name in STRATEGIES:
        values = [v for w in windows if (v := w.metrics.get(name)) is not None]
        out[name] = float(np.mean(values)) if values else None
    return out


def summary_lines(summary: dict[str, Any], strategies: Sequence[str] = STRATEGIES) -> list[str]:
    """:func:`summarise`'s figures as short sentences (the CLI and the HTML page print them)."""
    metric = summary["metric"]

    def means(key: str) -> str:
        values = summary.get(key)
        if not values:
            return "—"
        return ", ".join(f"{STRATEGY_LABELS[s]} {_fmt(values[s])}" for s in strategies)

    lines = [f"mean {metric} per window: {means('mean')}"]
    if "mean_before_drift" in summary:
        lines.append(f"before the drift point: {means('mean_before_drift')}")
        lines.append(f"after the drift point: {means('mean_after_drift')}")
    lines.append(f"after the first alert: {means('mean_after_first_alert')}")
    retrains, promotions = summary["retrains"], summary["promotions"]
    lines.append(
        "retrains / promotions: "
        + ", ".join(f"{STRATEGY_LABELS[s]} {retrains[s]} / {promotions[s]}" for s in strategies)
    )
    lines.append(
        f"first drifted window {_opt(summary['first_drifted_window'])}; first alert "
        f"{_opt(summary['first_alert_window'])} ({_windows(summary['windows_to_alert'])} "
        f"later); first promotion from then on after window "
        f"{_opt(summary['first_promotion_window'])} "
        f"({_windows(summary['windows_to_promotion'])} after the first drifted one)"
    )
    return lines


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def _opt(value: int | None) -> str:
    return "—" if value is None else str(value)


def _windows(count: int | None) -> str:
    if count is None:
        return "—"
    return f"{count} window" if count == 1 else f"{count} windows"


__all__ = [
    "EVERY_WINDOW",
    "NEVER",
    "POLICY",
    "STRATEGIES",
    "STRATEGY_LABELS",
    "BacktestPolicy",
    "BacktestResult",
    "History",
    "Pipeline",
    "Window",
    "WindowResult",
    "gate",
    "plan_windows",
    "replay",
    "summarise",
    "summary_lines",
]
