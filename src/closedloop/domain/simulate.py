"""A seeded simulator of loan-default data with a known drift point.

:class:`LoanSimulator` produces a realistic tabular binary-classification problem (target
``default``) with numeric and categorical features and an ``applied_at`` timestamp, and a
time-ordered *stream* whose rows from index ``drift_at`` on come from a changed world. It is
what the demo, the benchmarks and the end-to-end tests use to show the whole loop: a model
trained before the drift degrades after it, drift monitoring notices, retraining on post-drift
data recovers.

The drift (an economic downturn) is both a covariate and a concept shift:

* covariate shift (the columns in :attr:`LoanSimulator.drifted_columns`): ``income`` falls by
  about 20 %, ``debt_to_income`` rises (lower incomes, more borrowing) and the ``purpose`` mix
  moves towards ``debt_consolidation`` and away from ``home``/``car``;
* concept shift (the relationship between the features and ``default`` changes): debt
  becomes the dominant risk factor with a sharp threshold above 45 % debt-to-income, the
  credit score — built in good times — loses most of its predictive value, ``education`` and
  ``debt_consolidation`` loans turn risky while ``business`` loans (risky before) become safe,
  and the ``east`` region (a local industry collapse) defaults far more often, especially
  among short-tenure employees.

Columns ``age``, ``credit_score``, ``months_employed``, ``loan_amount`` and ``region`` keep
exactly the same distribution before and after the drift; only ``default`` and the drifted
columns change. The default rate is about 20 % before and 25 % after the drift.

Rows are generated in fixed-size blocks, each from its own seeded generator, so a row's
values depend only on ``(seed, position)``: ``stream(100, start=50)`` equals rows 50..149 of
``stream(1000)``, and the same call always returns an identical frame. Pure numpy/pandas.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd

from closedloop.errors import InvalidInputError

_BLOCK = 4096
_REFERENCE_STREAM = 1
_LIVE_STREAM = 2

PURPOSES: tuple[str, ...] = ("car", "home", "education", "business", "debt_consolidation")
REGIONS: tuple[str, ...] = ("north", "south", "east", "west")

_PURPOSE_P_BEFORE = np.array([0.25, 0.22, 0.13, 0.12, 0.28])
_PURPOSE_P_AFTER = np.array([0.15, 0.10, 0.17, 0.10, 0.48])
_PURPOSE_NAMES = np.array(PURPOSES, dtype=object)
_REGION_NAMES = np.array(REGIONS, dtype=object)
_REGION_P = np.array([0.28, 0.24, 0.22, 0.26])

# Log-odds contributions of each purpose (order of PURPOSES) and region (order of REGIONS).
_PURPOSE_EFFECT_BEFORE = np.array([0.0, -0.5, 0.1, 0.9, 0.3])
_PURPOSE_EFFECT_AFTER = np.array([0.0, 0.0, 0.9, -0.6, 0.8])
_REGION_EFFECT_BEFORE = np.array([0.0, 0.1, 0.0, -0.1])
_REGION_EFFECT_AFTER = np.array([-0.3, 0.0, 1.3, -0.2])

_INTERCEPT_BEFORE = -1.3
_INTERCEPT_AFTER = -2.15

_EPOCH = pd.Timestamp("2024-01-01T00:00:00Z")
_SPACING_MS = 60_000  # one application a minute on average


@dataclass(frozen=True)
class LoanSimulator:
    """Seeded loan-default data: a pre-drift reference sample and a drifting stream.

    ``seed`` fixes every value; ``drift_at`` is the stream row index where the drift starts
    (``stream`` rows with index ``>= drift_at`` are drifted; ``reference`` is never drifted).
    """

    seed: int = 0
    drift_at: int = 10_000

    drifted_columns: ClassVar[tuple[str, ...]] = ("income", "debt_to_income", "purpose")
    """Feature columns whose distribution changes at the drift point."""
    feature_columns: ClassVar[tuple[str, ...]] = (
        "income",
        "loan_amount",
        "age",
        "credit_score",
        "debt_to_income",
        "months_employed",
        "purpose",
        "region",
    )
    """The model inputs (``applied_at`` is a timestamp, ``default`` the target)."""
    numeric_columns: ClassVar[tuple[str, ...]] = (
        "income",
        "loan_amount",
        "age",
        "credit_score",
        "debt_to_income",
        "months_employed",
    )
    categorical_columns: ClassVar[tuple[str, ...]] = ("purpose", "region")
    target: ClassVar[str] = "default"

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer):
            raise InvalidInputError(
                f"The 'seed' parameter must be an int. Got {self.seed!r} instead."
            )
        if self.seed < 0:
            raise InvalidInputError(
                f"The 'seed' parameter must be an int >= 0. Got {self.seed} instead."
            )
        if (
            isinstance(self.drift_at, bool)
            or not isinstance(self.drift_at, int | np.integer)
            or self.drift_at < 0
        ):
            raise InvalidInputError(
                f"The 'drift_at' parameter must be an int >= 0. Got {self.drift_at!r} instead."
            )

    def reference(self, n: int) -> pd.DataFrame:
        """``n`` pre-drift rows (features, ``applied_at`` and ``default``) for training.

        The reference sample is independent of the stream (a different random sequence) and
        its ``applied_at`` times lie in the ``n`` minutes before the stream starts.
        """
        count = _check_count("n", n)
        frame, jitter = self._generate(_REFERENCE_STREAM, 0, count, drift_from=None)
        offsets = np.arange(count, dtype=np.int64) - count
        frame.insert(0, "applied_at", _timestamps(offsets, jitter))
        return frame

    def stream(self, n: int, start: int = 0) -> pd.DataFrame:
        """Rows ``start .. start + n - 1`` of the time-ordered stream; rows ``>= drift_at``
        are drifted. The index of the returned frame is the stream row index."""
        count = _check_count("n", n)
        first = _check_count("start", start)
        frame, jitter = self._generate(_LIVE_STREAM, first, count, drift_from=self.drift_at)
        positions = np.arange(first, first + count, dtype=np.int64)
        frame.insert(0, "applied_at", _timestamps(positions, jitter))
        frame.index = pd.RangeIndex(first, first + count)
        return frame

    def drift_time(self) -> pd.Timestamp:
        """The ``applied_at`` time of the first drifted stream row (approximately)."""
        return _EPOCH + pd.Timedelta(milliseconds=self.drift_at * _SPACING_MS)

    # -- internals -----------------------------------------------------------------------

    def _generate(
        self, stream_id: int, start: int, count: int, drift_from: int | None
    ) -> tuple[pd.DataFrame, np.ndarray]:
        """The rows ``start .. start + count - 1`` of one random sequence, and per-row
        sub-minute time offsets (ms) so timestamps look irregular yet stay ordered."""
        if count == 0:
            return _assemble({}, 0), np.empty(0, dtype=np.int64)
        first_block = start // _BLOCK
        last_block = (start + count - 1) // _BLOCK
        parts = [self._block(stream_id, b) for b in range(first_block, last_block + 1)]
        raw = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
        offset = start - first_block * _BLOCK
        raw = {key: values[offset : offset + count] for key, values in raw.items()}
        positions = np.arange(start, start + count, dtype=np.int64)
        drifted = positions >= drift_from if drift_from is not None else np.zeros(count, dtype=bool)
        jitter = np.floor(raw["jitter"] * _SPACING_MS).astype(np.int64)
        return _assemble(_realise(raw, drifted), count), jitter

    def _block(self, stream_id: int, block: int) -> dict[str, np.ndarray]:
        """Uniform/normal draws for one block; the drift is applied afterwards per row, so a
        row's randomness does not depend on whether it is drifted."""
        rng = np.random.default_rng([self.seed, stream_id, block])
        size = _BLOCK
        return {
            "age": rng.standard_normal(size),
            "income": rng.standard_normal(size),
            "months": rng.random(size),
            "credit": rng.standard_normal(size),
            "loan": rng.standard_normal(size),
            "dti": rng.standard_normal(size),
            "purpose": rng.random(size),
            "region": rng.random(size),
            "default": rng.random(size),
            "jitter": rng.random(size),
        }


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise InvalidInputError(
            f"The '{name}' parameter must be an int >= 0. Got {value!r} instead."
        )
    return int(value)


def _timestamps(minutes: np.ndarray, jitter: np.ndarray) -> pd.Series:
    millis = _EPOCH.value // 1_000_000 + minutes * _SPACING_MS + jitter
    return pd.Series(pd.to_datetime(millis, unit="ms", utc=True))


def _categorical(uniform: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Index of the category for each uniform draw (inverse-CDF sampling)."""
    cumulative = np.cumsum(probabilities)
    cumulative[-1] = 1.0
    return np.searchsorted(cumulative, uniform, side="right")


def _realise(raw: dict[str, np.ndarray], drifted: np.ndarray) -> dict[str, np.ndarray]:
    """Turn the block's base draws into feature values and the target."""
    age = np.clip(np.round(41 + 12 * raw["age"]), 18, 80)
    # Tenure grows with age: up to (age - 18) years, mostly a fraction of it.
    months = np.floor(raw["months"] ** 1.6 * (age - 17) * 12 * 0.8)
    credit = np.clip(np.round(680 + 55 * raw["credit"] + 1.2 * (age - 41)), 300, 850)
    loan = np.round(np.exp(9.55 + 0.65 * raw["loan"]), -2)

    income_log = 10.9 + 0.45 * raw["income"] + 0.006 * (age - 41)
    income_log = np.where(drifted, income_log - 0.22, income_log)
    income = np.round(np.exp(income_log), -2)

    dti_base = 0.12 + 0.9 * loan / income * 0.25 + 0.09 * raw["dti"]
    dti_base = np.where(drifted, dti_base + 0.08, dti_base)
    dti = np.round(np.clip(dti_base, 0.01, 0.95), 3)

    purpose_before = _categorical(raw["purpose"], _PURPOSE_P_BEFORE)
    purpose_after = _categorical(raw["purpose"], _PURPOSE_P_AFTER)
    purpose = np.where(drifted, purpose_after, purpose_before)
    region = _categorical(raw["region"], _REGION_P)

    z_credit = (credit - 680) / 55
    tenure_years = months / 12
    logit_before = (
        _INTERCEPT_BEFORE
        - 1.0 * z_credit
        + 3.5 * (dti - 0.30)
        - 0.35 * (income_log - 10.9) / 0.45
        - 0.06 * np.minimum(tenure_years, 10)
        + _PURPOSE_EFFECT_BEFORE[purpose]
        + _REGION_EFFECT_BEFORE[region]
    )
    logit_after = (
        _INTERCEPT_AFTER
        - 0.35 * z_credit
        + 2.0 * (dti - 0.30)
        + 14.0 * np.maximum(dti - 0.45, 0.0)
        + 0.10 * (income_log - 10.9) / 0.45
        + _PURPOSE_EFFECT_AFTER[purpose]
        + _REGION_EFFECT_AFTER[region]
        + np.where((region == 2) & (tenure_years < 3), 1.0, 0.0)
    )
    logit = np.where(drifted, logit_after, logit_before)
    probability = 1.0 / (1.0 + np.exp(-logit))
    default = (raw["default"] < probability).astype(np.int64)

    return {
        "income": income,
        "loan_amount": loan,
        "age": age.astype(np.int64),
        "credit_score": credit.astype(np.int64),
        "debt_to_income": dti,
        "months_employed": months.astype(np.int64),
        "purpose": purpose,
        "region": region,
        "default": default,
    }


def _assemble(values: dict[str, np.ndarray], count: int) -> pd.DataFrame:
    if count == 0:
        values = {
            "income": np.empty(0),
            "loan_amount": np.empty(0),
            "age": np.empty(0, dtype=np.int64),
            "credit_score": np.empty(0, dtype=np.int64),
            "debt_to_income": np.empty(0),
            "months_employed": np.empty(0, dtype=np.int64),
            "purpose": np.empty(0, dtype=np.int64),
            "region": np.empty(0, dtype=np.int64),
            "default": np.empty(0, dtype=np.int64),
        }
    return pd.DataFrame(
        {
            "income": values["income"],
            "loan_amount": values["loan_amount"],
            "age": values["age"],
            "credit_score": values["credit_score"],
            "debt_to_income": values["debt_to_income"],
            "months_employed": values["months_employed"],
            "purpose": _PURPOSE_NAMES[values["purpose"]],
            "region": _REGION_NAMES[values["region"]],
            "default": values["default"],
        }
    )


__all__ = ["PURPOSES", "REGIONS", "LoanSimulator"]
