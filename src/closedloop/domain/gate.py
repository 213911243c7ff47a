"""The promotion gate: may a freshly trained candidate replace the model in production?

Both models are scored on the *same* held-out rows. :func:`judge` runs three checks and
:func:`decide` turns their figures into one :class:`GateDecision`:

1. **Improvement, with its uncertainty.** ``improvement = candidate - incumbent`` in the metric's
   good direction (sign-flipped for ``log_loss``, ``rmse``, ``mae``). A paired bootstrap draws
   ``bootstrap`` resamples of the row indices (seeded), recomputes both models' metric on each
   (vectorised, see :class:`~closedloop.domain.metrics.RowTerms`) and takes the percentile
   interval of the improvement at ``confidence``. The candidate passes only if the interval's
   lower end is **strictly above** the margin, so a tie never passes, even with ``margin=0``.
   Resamples where the metric is undefined (e.g. one class only for ``roc_auc``) are dropped and
   counted; if more than :data:`MAX_UNDEFINED_SHARE` of them are, the held-out rows cannot support
   a decision and the candidate fails, saying so.
2. **Slices.** For each declared column, each of its values in the held-out rows is a slice. The
   candidate fails if on any judged slice it is worse than the incumbent by more than
   ``slice_tolerance``. Slices with fewer than ``min_slice_rows`` rows, or where the metric is
   undefined, are reported but not judged.
3. **Latency.** The service measures both models' prediction time on the held-out rows; the
   candidate fails if its time per row exceeds the incumbent's times ``1 + latency_tolerance``
   plus an absolute slack of :data:`LATENCY_SLACK_PER_ROW` per row and
   :data:`LATENCY_SLACK_PER_PASS` per timed pass over the rows, so that timer noise and the
   fixed per-call overhead of tiny, fast models do not fail the gate.

No incumbent in production → the candidate passes without comparison. ``passed`` is true only
when every check passes; ``reasons`` says why, one sentence per check, and ``reason`` joins them.
The decision round-trips through :meth:`GateDecision.to_dict` / :meth:`GateDecision.from_dict`,
which also reads the older shape (``passed, metric, candidate, incumbent, margin, improvement,
reason``) still held in version lineage and ``gate.decided`` events. Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from closedloop.domain.metrics import (
    Outputs,
    RowTerms,
    check_metric,
    higher_is_better,
    outputs_terms,
    score_outputs,
)
from closedloop.errors import ConfigError, InvalidInputError

if TYPE_CHECKING:
    import pandas as pd

# Absolute slack when comparing figures, so that float rounding (0.81 - 0.78 is
# 0.030000000000000027) neither creates nor hides a difference.
_TOLERANCE = 1e-12

MAX_UNDEFINED_SHARE = 0.1
"""More undefined resamples than this share and the interval is not trusted: the gate fails."""
MAX_SLICE_VALUES = 100
"""A slice column with more distinct held-out values than this is refused (bin it first)."""
LATENCY_SLACK_PER_ROW = 1e-6
"""Seconds per row the candidate may exceed its latency allowance by (timer and cache noise)."""
LATENCY_SLACK_PER_PASS = 0.010
"""Seconds per timed pass (``predict`` and, for classifiers, ``predict_proba`` over the held-out
rows: 5 ms for each call) likewise: on small held-out sets, fixed per-call overhead (input
checks, column selection, one-hot encoders) dominates and is noisy on a busy machine."""
_MAX_SLICE_KEY = 180  # run metric names hold at most 200 characters
_BLOCK_ELEMENTS = 1_000_000  # resample weights are built this many (resample, row) cells at a time


@dataclass(frozen=True)
class GateRules:
    """The gate's statistics (the ``[gate]`` settings; the margin is passed on its own)."""

    bootstrap: int = 1000
    confidence: float = 0.95
    seed: int = 0
    slice_tolerance: float = 0.05
    min_slice_rows: int = 30
    latency_tolerance: float = 0.5

    def __post_init__(self) -> None:
        _check_setting("bootstrap", self.bootstrap, "an int >= 1", integer=True, low=1)
        _check_setting("seed", self.seed, "an int >= 0", integer=True, low=0)
        _check_setting("min_slice_rows", self.min_slice_rows, "an int >= 1", integer=True, low=1)
        for name in ("slice_tolerance", "latency_tolerance"):
            _check_setting(name, getattr(self, name), "a float >= 0", low=0)
        conf = self.confidence
        if not (_is_real(conf) and 0 < float(conf) < 1):
            raise ConfigError(
                f"The setting gate.confidence must be a float in (0, 1). Got {conf!r}."
            )


@dataclass(frozen=True)
class Interval:
    """The paired-bootstrap percentile interval of the improvement (good direction)."""

    low: float | None
    high: float | None
    confidence: float
    n_bootstrap: int
    n_undefined: int
    seed: int

    @property
    def trusted(self) -> bool:
        """Whether enough resamples were defined for the interval to be judged."""
        return self.low is not None and self.n_undefined <= MAX_UNDEFINED_SHARE * self.n_bootstrap

    def describe(self) -> str:
        level = f"{self.confidence * 100:g}%"
        if self.low is None or self.high is None:
            return f"{level} interval undefined"
        text = f"{level} interval {_fmt(self.low)} to {_fmt(self.high)}"
        if self.n_undefined:
            text += f", {self.n_undefined} of {self.n_bootstrap} resamples undefined"
        return text

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Interval:
        return cls(
            low=_optional_float(data["low"]),
            high=_optional_float(data["high"]),
            confidence=float(data["confidence"]),
            n_bootstrap=int(data["n_bootstrap"]),
            n_undefined=int(data["n_undefined"]),
            seed=int(data.get("seed", 0)),
        )


@dataclass(frozen=True)
class SliceCheck:
    """Both models' metric on the held-out rows where ``column == value``.

    ``judged`` is False when the slice is too small or the metric is undefined on it (then
    ``candidate``/``incumbent`` may be None); ``passed`` is False only for a judged slice on
    which the candidate is worse than the incumbent by more than the tolerance. ``note`` says
    which of these happened.
    """

    column: str
    value: Any
    n: int
    candidate: float | None
    incumbent: float | None
    judged: bool
    passed: bool
    note: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SliceCheck:
        return cls(
            column=str(data["column"]),
            value=data["value"],
            n=int(data["n"]),
            candidate=_optional_float(data["candidate"]),
            incumbent=_optional_float(data["incumbent"]),
            judged=bool(data["judged"]),
            passed=bool(data["passed"]),
            note=str(data.get("note", "")),
        )


@dataclass(frozen=True)
class LatencyCheck:
    """Both models' median prediction time per held-out row, and whether the candidate's is
    within ``incumbent * (1 + tolerance)`` plus the absolute slack (``allowed``)."""

    candidate_seconds_per_row: float
    incumbent_seconds_per_row: float
    ratio: float | None
    tolerance: float
    allowed_seconds_per_row: float
    passed: bool

    def describe(self) -> str:
        ratio = "n/a" if self.ratio is None else f"{self.ratio:.2f}x"
        figures = (
            f"{_micro(self.candidate_seconds_per_row)} vs production's "
            f"{_micro(self.incumbent_seconds_per_row)} per row ({ratio}; allowed "
            f"{1 + self.tolerance:.2f}x plus slack = {_micro(self.allowed_seconds_per_row)})"
        )
        return ("latency " if self.passed else "candidate too slow: ") + figures

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyCheck:
        return cls(
            candidate_seconds_per_row=float(data["candidate_seconds_per_row"]),
            incumbent_seconds_per_row=float(data["incumbent_seconds_per_row"]),
            ratio=_optional_float(data["ratio"]),
            tolerance=float(data["tolerance"]),
            allowed_seconds_per_row=float(data["allowed_seconds_per_row"]),
            passed=bool(data["passed"]),
        )


_OLD_KEYS = ("passed", "metric", "candidate", "incumbent", "margin", "improvement", "reason")


@dataclass(frozen=True)
class GateDecision:
    """The outcome of one promotion-gate check, with every figure it rests on."""

    passed: bool
    metric: str
    candidate: float
    incumbent: float | None
    margin: float
    improvement: float | None
    reason: str
    interval: Interval | None = None
    slices: tuple[SliceCheck, ...] = ()
    latency: LatencyCheck | None = None
    reasons: tuple[str, ...] = ()

    @property
    def failing_slices(self) -> tuple[SliceCheck, ...]:
        return tuple(s for s in self.slices if not s.passed)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with every field (nested checks as dicts, None when not run)."""
        return {
            "passed": self.passed,
            "metric": self.metric,
            "candidate": self.candidate,
            "incumbent": self.incumbent,
            "margin": self.margin,
            "improvement": self.improvement,
            "reason": self.reason,
            "reasons": list(self.reasons),
            "interval": None if self.interval is None else self.interval.to_dict(),
            "slices": [s.to_dict() for s in self.slices],
            "latency": None if self.latency is None else self.latency.to_dict(),
        }

    def metrics(self) -> dict[str, float]:
        """Every figure the gate computed, as flat run metrics (``roc_auc`` stands for the
        metric):

        * ``roc_auc``: the candidate on the held-out rows;
        * ``gate.incumbent.roc_auc``: production on the same rows; ``gate.improvement``: their
          difference in the good direction; ``gate.improvement.low`` / ``.high``: its bootstrap
          interval; ``gate.bootstrap.undefined``: resamples where the metric was undefined;
        * ``gate.slice.<column>=<value>.candidate`` / ``.incumbent`` / ``.rows`` per slice;
        * ``gate.latency.candidate_seconds_per_row``, ``.incumbent_seconds_per_row``,
          ``.allowed_seconds_per_row`` and ``.ratio``;
        * ``gate.passed``: 1.0 or 0.0.

        A figure that was not computed (no incumbent, an undefined slice) is left out.
        """
        figures: dict[str, float | None] = {
            self.metric: self.candidate,
            f"gate.incumbent.{self.metric}": self.incumbent,
            "gate.improvement": self.improvement,
            "gate.passed": 1.0 if self.passed else 0.0,
        }
        if self.interval is not None:
            figures["gate.improvement.low"] = self.interval.low
            figures["gate.improvement.high"] = self.interval.high
            figures["gate.bootstrap.undefined"] = float(self.interval.n_undefined)
        for s in self.slices:
            name = f"gate.slice.{s.column}={s.value}"[:_MAX_SLICE_KEY]
            figures[f"{name}.candidate"] = s.candidate
            figures[f"{name}.incumbent"] = s.incumbent
            figures[f"{name}.rows"] = float(s.n)
        if self.latency is not None:
            lat = self.latency
            figures["gate.latency.candidate_seconds_per_row"] = lat.candidate_seconds_per_row
            figures["gate.latency.incumbent_seconds_per_row"] = lat.incumbent_seconds_per_row
            figures["gate.latency.allowed_seconds_per_row"] = lat.allowed_seconds_per_row
            figures["gate.latency.ratio"] = lat.ratio
        return {
            k: float(v) for k, v in figures.items() if v is not None and math.isfinite(float(v))
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateDecision:
        """Rebuild a decision from :meth:`to_dict` output, or from the older shape without
        ``reasons``/``interval``/``slices``/``latency`` (InvalidInputError when malformed)."""
        if not isinstance(data, dict):
            raise InvalidInputError(
                f"A gate decision must be a dict. Got {type(data).__name__} instead."
            )
        missing = [key for key in _OLD_KEYS if key not in data]
        if missing:
            raise InvalidInputError(
                f"A gate decision needs the keys {', '.join(_OLD_KEYS)}. "
                f"Missing: {', '.join(missing)}."
            )
        try:
            return cls(
                passed=bool(data["passed"]),
                metric=str(data["metric"]),
                candidate=float(data["candidate"]),
                incumbent=_optional_float(data["incumbent"]),
                margin=float(data["margin"]),
                improvement=_optional_float(data["improvement"]),
                reason=str(data["reason"]),
                interval=_nested(Interval, data.get("interval")),
                slices=tuple(SliceCheck.from_dict(s) for s in data.get("slices") or ()),
                latency=_nested(LatencyCheck, data.get("latency")),
                reasons=tuple(str(r) for r in data.get("reasons") or (data["reason"],)),
            )
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise InvalidInputError(f"A gate decision has a malformed field: {exc!r}.") from exc


# -- the checks -------------------------------------------------------------------------------


def judge(
    metric: str,
    y_true: Any,
    candidate: Outputs,
    incumbent: Outputs | None,
    *,
    margin: float = 0.0,
    rules: GateRules | None = None,
    slices: Mapping[str, Any] | None = None,
    latency: LatencyCheck | None = None,
) -> GateDecision:
    """Run the gate on both models' outputs on the same held-out rows ``y_true``.

    ``slices`` maps each slice column to its held-out values (see :func:`select_slices`);
    ``latency`` is the measured :func:`judge_latency` (None: not measured, not judged). Raises
    :class:`ConfigError` for an unknown metric or invalid rules, :class:`InvalidInputError` when
    the candidate or incumbent cannot be scored on ``y_true``.
    """
    check_metric(metric)
    margin_value = _check_margin(margin)
    rules = rules or GateRules()
    candidate_score = score_outputs(metric, y_true, candidate)
    if incumbent is None:
        return decide(metric, candidate_score, None, margin_value)
    incumbent_score = score_outputs(metric, y_true, incumbent)
    candidate_terms = outputs_terms(metric, y_true, candidate)
    incumbent_terms = outputs_terms(metric, y_true, incumbent)
    interval = bootstrap_interval(
        candidate_terms, incumbent_terms, higher_is_better=higher_is_better(metric), rules=rules
    )
    checks = slice_checks(metric, candidate_terms, incumbent_terms, slices or {}, rules=rules)
    return decide(
        metric,
        candidate_score,
        incumbent_score,
        margin_value,
        interval=interval,
        slices=checks,
        latency=latency,
    )


def bootstrap_resamples(n_rows: int, n_bootstrap: int, seed: int) -> Iterator[np.ndarray]:
    """The gate's paired resamples of ``n_rows`` held-out rows, in blocks: each block is an int
    array of shape ``(k, n_rows)`` holding row indices drawn with replacement; the blocks hold
    ``n_bootstrap`` resamples in all. The same arguments always give the same resamples."""
    rng = np.random.default_rng(seed)
    block = max(1, min(n_bootstrap, _BLOCK_ELEMENTS // max(n_rows, 1)))
    done = 0
    while done < n_bootstrap:
        size = min(block, n_bootstrap - done)
        yield rng.integers(0, n_rows, size=(size, n_rows))
        done += size


def bootstrap_interval(
    candidate: RowTerms, incumbent: RowTerms, *, higher_is_better: bool, rules: GateRules
) -> Interval:
    """The percentile interval of the improvement over :func:`bootstrap_resamples`."""
    n_rows = candidate.n_rows
    if incumbent.n_rows != n_rows:
        raise InvalidInputError(
            "The candidate and the incumbent must be scored on the same rows. "
            f"Got {n_rows} and {incumbent.n_rows} rows."
        )
    blocks = []
    for indices in bootstrap_resamples(n_rows, rules.bootstrap, rules.seed):
        weights = _multiplicities(indices, n_rows)
        difference = candidate.weighted(weights) - incumbent.weighted(weights)
        blocks.append(difference if higher_is_better else -difference)
    improvements = np.concatenate(blocks)
    defined = improvements[np.isfinite(improvements)]
    low = high = None
    if defined.size:
        tail = 100 * (1 - rules.confidence) / 2
        low, high = (float(v) + 0.0 for v in np.percentile(defined, [tail, 100 - tail]))
    return Interval(
        low=low,
        high=high,
        confidence=float(rules.confidence),
        n_bootstrap=rules.bootstrap,
        n_undefined=int(improvements.size - defined.size),
        seed=rules.seed,
    )


def _multiplicities(indices: np.ndarray, n_rows: int) -> np.ndarray:
    """How often each row was drawn in each resample: shape ``(k, n_rows)``, as floats."""
    k = indices.shape[0]
    flat = (indices + (np.arange(k) * n_rows)[:, None]).ravel()
    return np.bincount(flat, minlength=k * n_rows).reshape(k, n_rows).astype(float)


def select_slices(names: Sequence[str], holdout: pd.DataFrame) -> dict[str, np.ndarray]:
    """The held-out values of each slice column; :class:`ConfigError` when a column is missing
    (naming the available ones) or has more than :data:`MAX_SLICE_VALUES` distinct values."""
    import pandas as pd

    available = [str(c) for c in holdout.columns]
    missing = [name for name in names if name not in available]
    if missing:
        raise ConfigError(
            f"gate.slices names {', '.join(map(repr, missing))}, which the held-out data does "
            f"not have. Available columns: {', '.join(available)}.",
            hint="Fix [gate] slices in closedloop.toml (or CLOSEDLOOP_GATE_SLICES).",
            details={"missing": missing, "available": available},
        )
    columns = {name: holdout[name].to_numpy() for name in dict.fromkeys(names)}
    for name, values in columns.items():
        distinct = int(pd.Series(values).nunique(dropna=False))
        if distinct > MAX_SLICE_VALUES:
            raise ConfigError(
                f"gate.slices column {name!r} has {distinct} distinct values in the held-out "
                f"rows; a slice column must be categorical (at most {MAX_SLICE_VALUES} values).",
                hint="Bin it into a categorical column in your loader and slice on that.",
            )
    return columns


def slice_checks(
    metric: str,
    candidate: RowTerms,
    incumbent: RowTerms,
    columns: Mapping[str, Any],
    *,
    rules: GateRules,
) -> tuple[SliceCheck, ...]:
    """Both models' metric on every value of every slice column, judged against the rules."""
    better_high = higher_is_better(metric)
    checks = []
    for column, values in columns.items():
        if len(values) != candidate.n_rows:
            raise InvalidInputError(
                f"Slice column {column!r} has {len(values)} values for {candidate.n_rows} rows."
            )
        for value, rows in _groups(values):
            ones = np.ones((1, rows.size))
            scores = (
                candidate.take(rows).weighted(ones)[0],
                incumbent.take(rows).weighted(ones)[0],
            )
            checks.append(
                _slice_check(metric, column, value, scores, rows.size, better_high, rules)
            )
    return tuple(checks)


def _slice_check(
    metric: str,
    column: str,
    value: Any,
    scores: tuple[float, float],
    n: int,
    better_high: bool,
    rules: GateRules,
) -> SliceCheck:
    cand, inc = (float(s) if math.isfinite(s) else None for s in scores)
    if n < rules.min_slice_rows:
        note, judged, passed = f"not judged: fewer than {rules.min_slice_rows} rows", False, True
    elif cand is None or inc is None:
        note, judged, passed = f"not judged: {metric} undefined on this slice", False, True
    else:
        deficit = (inc - cand) if better_high else (cand - inc)
        judged, passed = True, deficit <= rules.slice_tolerance + _TOLERANCE
        verdict = "within" if passed else f"worse by {_fmt(deficit)} >"
        note = (
            f"candidate {_fmt(cand)} vs incumbent {_fmt(inc)}, {verdict} slice tolerance "
            f"{_fmt(rules.slice_tolerance)}"
        )
    return SliceCheck(column, _plain(value), n, cand, inc, judged, passed, note)


def _groups(values: Any) -> list[tuple[Any, np.ndarray]]:
    """Each distinct value (missing values as one group) with the positions holding it."""
    import pandas as pd

    series = pd.Series(values)
    try:
        codes, uniques = pd.factorize(series, sort=True, use_na_sentinel=False)
    except TypeError:  # values of several types do not sort: keep order of appearance
        codes, uniques = pd.factorize(series, sort=False, use_na_sentinel=False)
    order = np.argsort(codes, kind="stable")
    bounds = np.cumsum(np.bincount(codes, minlength=len(uniques)))[:-1]
    return list(zip(list(uniques), np.split(order, bounds), strict=True))


def judge_latency(
    candidate_seconds: float, incumbent_seconds: float, *, n_rows: int, tolerance: float
) -> LatencyCheck:
    """Judge measured latencies: ``*_seconds`` is each model's median time of one pass
    (``predict`` and ``predict_proba``) over the same ``n_rows`` held-out rows. The candidate
    may take up to ``incumbent * (1 + tolerance)`` plus :data:`LATENCY_SLACK_PER_ROW` per row
    and :data:`LATENCY_SLACK_PER_PASS` per pass."""
    for name, value in (
        ("candidate_seconds", candidate_seconds),
        ("incumbent_seconds", incumbent_seconds),
    ):
        if not (_is_real(value) and math.isfinite(float(value)) and float(value) >= 0):
            raise InvalidInputError(f"{name} must be a finite number >= 0. Got {value!r}.")
    if not (isinstance(n_rows, int) and n_rows >= 1):
        raise InvalidInputError(f"n_rows must be an int >= 1. Got {n_rows!r}.")
    _check_setting("latency_tolerance", tolerance, "a float >= 0", low=0)
    cand = float(candidate_seconds) / n_rows
    inc = float(incumbent_seconds) / n_rows
    allowed = inc * (1 + tolerance) + LATENCY_SLACK_PER_ROW + LATENCY_SLACK_PER_PASS / n_rows
    return LatencyCheck(
        candidate_seconds_per_row=cand,
        incumbent_seconds_per_row=inc,
        ratio=cand / inc if inc > 0 else None,
        tolerance=float(tolerance),
        allowed_seconds_per_row=allowed,
        passed=cand <= allowed,
    )


# -- the decision ------------------------------------------------------------------------------


def decide(
    metric: str,
    candidate: float,
    incumbent: float | None,
    margin: float = 0.0,
    *,
    interval: Interval | None = None,
    slices: Sequence[SliceCheck] = (),
    latency: LatencyCheck | None = None,
) -> GateDecision:
    """Decide from figures already computed (:func:`judge` computes them from predictions).

    With an ``interval`` the improvement passes only if its lower end is strictly above
    ``margin``; without one (``interval=None``) the point improvement itself must be strictly
    above it. ``slices`` and ``latency`` fail the candidate when any of them failed. Without an
    incumbent the candidate passes and the other figures are not recorded.

    Raises :class:`~closedloop.errors.ConfigError` for an unknown metric and
    :class:`~closedloop.errors.InvalidInputError` for a NaN/infinite/non-numeric score or a
    negative margin.
    """
    check_metric(metric)
    candidate_value = _finite("candidate", candidate)
    incumbent_value = None if incumbent is None else _finite("incumbent", incumbent)
    margin_value = _check_margin(margin)
    if incumbent_value is None:
        sentence = (
            f"no incumbent in production: candidate {metric} {_fmt(candidate_value)} "
            "passes without comparison"
        )
        return GateDecision(
            True, metric, candidate_value, None, margin_value, None, sentence, reasons=(sentence,)
        )
    better_high = higher_is_better(metric)
    difference = candidate_value - incumbent_value
    improvement = difference if better_high else -difference
    score_ok, score_reason = _improvement_verdict(
        metric, candidate_value, incumbent_value, improvement, margin_value, interval
    )
    slices_ok, slice_reasons = _slice_verdict(tuple(slices))
    latency_ok = latency is None or latency.passed
    reasons = (score_reason, *slice_reasons, *([latency.describe()] if latency else []))
    return GateDecision(
        passed=score_ok and slices_ok and latency_ok,
        metric=metric,
        candidate=candidate_value,
        incumbent=incumbent_value,
        margin=margin_value,
        improvement=improvement,
        reason="; ".join(reasons),
        interval=interval,
        slices=tuple(slices),
        latency=latency,
        reasons=reasons,
    )


def _improvement_verdict(
    metric: str,
    candidate: float,
    incumbent: float,
    improvement: float,
    margin: float,
    interval: Interval | None,
) -> tuple[bool, str]:
    head = f"candidate {metric} {_fmt(candidate)}"
    tail = f"incumbent {_fmt(incumbent)}"
    direction = "higher" if higher_is_better(metric) else "lower"
    span = "point estimate only" if interval is None else interval.describe()
    if improvement == 0.0:
        return False, (
            f"{head} ties {tail}; a tie does not pass (the candidate must strictly improve, "
            f"by more than margin {_fmt(margin)})"
        )
    if improvement < 0.0:
        return False, (
            f"{head} is worse than {tail} by {_fmt(-improvement)} "
            f"({direction} is better; {span}; margin {_fmt(margin)})"
        )
    if improvement <= margin + _TOLERANCE:
        return False, (
            f"{head} beats {tail} by only {_fmt(improvement)} ≤ margin {_fmt(margin)} ({span})"
        )
    if interval is None:
        return True, f"{head} beats {tail} by {_fmt(improvement)} > margin {_fmt(margin)}"
    if not interval.trusted:
        return False, (
            f"{head} beats {tail} by {_fmt(improvement)}, but {metric} was undefined on "
            f"{interval.n_undefined} of {interval.n_bootstrap} bootstrap resamples (more than "
            f"{MAX_UNDEFINED_SHARE:.0%}): the held-out rows are too few or too unbalanced to judge"
        )
    if interval.low is None or interval.low <= margin + _TOLERANCE:
        return False, (
            f"{head} beats {tail} by {_fmt(improvement)}, but not clearly: the {span} of the "
            f"improvement does not lie above margin {_fmt(margin)}"
        )
    return True, (
        f"{head} beats {tail} by {_fmt(improvement)}; its {span} lies above margin {_fmt(margin)}"
    )


def _slice_verdict(slices: tuple[SliceCheck, ...]) -> tuple[bool, list[str]]:
    if not slices:
        return True, []
    failing = [s for s in slices if not s.passed]
    if failing:
        return False, [f"slice {s.column}={s.value} (n={s.n}): {s.note}" for s in failing]
    judged = sum(s.judged for s in slices)
    return True, [
        f"no slice regresses beyond tolerance ({judged} judged, "
        f"{len(slices) - judged} too small or undefined)"
    ]


# -- small helpers -----------------------------------------------------------------------------


def _nested(cls: Any, data: Any) -> Any:
    return None if data is None else cls.from_dict(data)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _plain(value: Any) -> Any:
    """A JSON-ready slice value: numpy scalars unwrapped, missing values as None."""
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str | int | float | bool):
        return value
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def _is_real(value: object) -> bool:
    # numbers.Real covers int, float and numpy numeric scalars; bools are rejected.
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_setting(
    name: str, value: object, expected: str, *, integer: bool = False, low: float
) -> None:
    ok = _is_real(value) and math.isfinite(float(value)) and float(value) >= low  # type: ignore[arg-type]
    if integer:
        ok = ok and isinstance(value, numbers.Integral)
    if not ok:
        raise ConfigError(f"The setting gate.{name} must be {expected}. Got {value!r} instead.")


def _finite(name: str, value: object) -> float:
    number = float(value) if _is_real(value) else math.nan  # type: ignore[arg-type]
    if not math.isfinite(number):
        raise InvalidInputError(
            f"The {name} score must be a finite number. Got {value!r} instead.",
            hint="A NaN score usually means the evaluation set was empty or had a single class.",
        )
    return number


def _check_margin(margin: object) -> float:
    number = float(margin) if _is_real(margin) else math.nan  # type: ignore[arg-type]
    if not math.isfinite(number) or number < 0:
        raise InvalidInputError(
            f"The 'margin' parameter must be a float >= 0. Got {margin!r} instead."
        )
    return number


def _fmt(value: float) -> str:
    """Three decimals, unless that would hide a small non-zero value or a large one."""
    magnitude = abs(value)
    if magnitude == 0 or 1e-3 <= magnitude < 1e6:
        return f"{value:.3f}"
    return f"{value:.3g}"


def _micro(seconds: float) -> str:
    return f"{seconds * 1e6:.3g} µs"


__all__ = [
    "LATENCY_SLACK_PER_PASS",
    "LATENCY_SLACK_PER_ROW",
    "MAX_SLICE_VALUES",
    "MAX_UNDEFINED_SHARE",
    "GateDecision",
    "GateRules",
    "Interval",
    "LatencyCheck",
    "SliceCheck",
    "bootstrap_interval",
    "bootstrap_resamples",
    "decide",
    "judge",
    "judge_latency",
    "select_slices",
    "slice_checks",
]
