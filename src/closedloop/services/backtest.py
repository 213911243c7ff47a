"""Backtest a retraining policy on labelled history (``closedloop backtest``).

The service reads the data (:func:`closedloop.storage.datafiles.read_table`) or generates the
built-in simulator's stream, checks the time and target columns, builds the policy from the
settings (the project's, or a ``--policy`` file read *instead* of them: that file's settings
over the defaults, no environment variables), imports the user's trainer the way the pipeline
does, plans the windows and runs :func:`closedloop.domain.backtest.replay`.

The first model is trained on the rows before ``--train-until``; without it, on the first 20 %
of the rows (:data:`DEFAULT_TRAIN_SHARE`; rows sharing the cut-off's time go to the first
window). Windows are ``--window`` time spans from the cut-off, or ``--window-rows`` rows
(default ``monitor.window_rows``; the simulator defaults to one-day windows).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from closedloop.domain.backtest import (
    MIN_TRAINING_ROWS,
    BacktestPolicy,
    BacktestResult,
    History,
    Pipeline,
    Trainer,
    Window,
    plan_windows,
    replay,
)
from closedloop.domain.drift import CORRECTIONS
from closedloop.domain.gate import GateRules
from closedloop.domain.model import check_model
from closedloop.domain.policy import MonitorPolicy, format_duration
from closedloop.domain.triggers import CronSchedule
from closedloop.errors import (
    ConfigError,
    InvalidInputError,
    SchemaError,
    UserCodeError,
)
from closedloop.services.workspace import Workspace
from closedloop.settings import Settings, read_project_file

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_TRAIN_SHARE = 0.2
"""Share of the rows the first model is trained on when ``--train-until`` is not given."""
SIMULATED_ROWS = 50_000
SIMULATED_WINDOW = "1d"
SIMULATED_TIME_COLUMN = "applied_at"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86_400, "w": 604_800}
_WINDOW_HINT = "Use a duration such as 7d, 12h, 30m or 1w (units s, m, h, d, w)."

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Backtest:
    """A finished backtest: the replay and where its data and windows came from."""

    result: BacktestResult
    source: str
    rows: int
    time_column: str
    features: tuple[str, ...]
    window: str
    train_rule: str

    def to_dict(self) -> dict[str, Any]:
        body = self.result.to_dict()
        data = {
            "source": self.source,
            "rows": self.rows,
            "time_column": self.time_column,
            "target": self.result.policy.target,
            "features": list(self.features),
            "window": self.window,
            "train_rule": self.train_rule,
        }
        return {"data": data, **body}


@dataclass(frozen=True)
class Windowing:
    """What the command line asked for: a window span or row count, and a training cut-off."""

    window: str | None = None
    window_rows: int | None = None
    train_until: str | None = None


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def backtest_file(
    ws: Workspace,
    data: Path,
    *,
    time_column: str,
    windowing: Windowing = Windowing(),
    policy_file: Path | None = None,
    progress: Progress | None = None,
) -> Backtest:
    """Backtest the policy on a Parquet or CSV file of labelled history."""
    from closedloop.storage.datafiles import read_table

    settings = policy_settings(ws, policy_file)
    policy = policy_from_settings(settings)
    span, rows = _window_choice(windowing, settings.monitor.window_rows)
    frame = read_table(data)
    history = history_from_frame(frame, time_column, policy.target, source=str(data))
    trainer = _user_trainer(ws, settings)
    return _run(history, policy, trainer, windowing, span, rows, str(data), time_column, progress)


def backtest_simulated(
    ws: Workspace,
    *,
    rows: int = SIMULATED_ROWS,
    drift_at: int | None = None,
    seed: int = 0,
    windowing: Windowing = Windowing(),
    policy_file: Path | None = None,
    progress: Progress | None = None,
) -> Backtest:
    """Backtest the policy on the simulator's seeded stream with drift at row ``drift_at``
    (default: half-way). The trainer is ``pipeline.trainer`` when set, else
    :func:`simulator_trainer`; the target is the simulator's."""
    from closedloop.domain.simulate import LoanSimulator

    if rows < 2 * MIN_TRAINING_ROWS:
        raise InvalidInputError(f"--rows must be at least {2 * MIN_TRAINING_ROWS}. Got {rows}.")
    at = rows // 2 if drift_at is None else drift_at
    if not 0 <= at < rows:
        raise InvalidInputError(f"--drift-at must be a row in 0..{rows - 1}. Got {at} instead.")
    simulator = LoanSimulator(seed=seed, drift_at=at)
    settings = policy_settings(ws, policy_file)
    policy = policy_from_settings(settings, target=simulator.target)
    if windowing.window is None and windowing.window_rows is None:
        windowing = replace(windowing, window=SIMULATED_WINDOW)
    span, count = _window_choice(windowing, settings.monitor.window_rows)
    frame = simulator.stream(rows)
    source = f"simulator (seed {seed}, {rows:,} rows, drift from row {at:,})"
    history = history_from_frame(frame, SIMULATED_TIME_COLUMN, policy.target, source=source)
    trainer = _user_trainer(ws, settings) if settings.pipeline.trainer else simulator_trainer
    drift_point = history.times[at]
    return _run(
        history,
        policy,
        trainer,
        windowing,
        span,
        count,
        source,
        SIMULATED_TIME_COLUMN,
        progress,
        drift_point=drift_point,
    )


def simulator_trainer(X: pd.DataFrame, y: pd.Series) -> Any:
    """The simulator's default model: one-hot categories, standardised numbers and a logistic
    regression (fast and single-threaded, so retraining on every window of a 50,000-row
    backtest takes seconds)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    categorical = [c for c in X.columns if X[c].dtype.kind not in "biuf"]
    numeric = [c for c in X.columns if c not in categorical]
    encode = ColumnTransformer(
        [
            ("categories", OneHotEncoder(handle_unknown="ignore"), categorical),
            ("numbers", StandardScaler(), numeric),
        ]
    )
    return make_pipeline(encode, LogisticRegression(max_iter=1000)).fit(X, y)


# --------------------------------------------------------------------------------------------
# Policy and trainer
# --------------------------------------------------------------------------------------------


def policy_settings(ws: Workspace, policy_file: Path | None) -> Settings:
    """The project's settings, or those of ``policy_file`` over the defaults."""
    if policy_file is None:
        return ws.settings
    path = Path(policy_file)
    if not path.is_file():
        raise ConfigError(
            f"Cannot read the policy file {str(path)!r}: "
            + ("it is a directory." if path.is_dir() else "the file does not exist."),
            hint="--policy names a closedloop.toml file with [pipeline], [monitor], [agent].",
        )
    settings = Settings(project_dir=ws.settings.project_dir)
    for name, values in read_project_file(path).items():
        if values:
            settings = replace(settings, **{name: replace(getattr(settings, name), **values)})
    return settings


def policy_from_settings(settings: Settings, *, target: str | None = None) -> BacktestPolicy:
    """The policy under test from ``[pipeline]``, ``[monitor]`` and ``[agent]``."""
    from closedloop.services.registry import REFERENCE_SAMPLE_ROWS

    pipeline, monitor, agent = settings.pipeline, settings.monitor, settings.agent
    gate = settings.gate
    target = target or pipeline.target
    if not target:
        raise ConfigError(
            "The setting pipeline.target is not set: the backtest needs the label column.",
            hint='Add target = "<column>" to [pipeline] in closedloop.toml.',
        )
    if not 0 < pipeline.holdout_fraction < 1:
        raise ConfigError(
            "pipeline.holdout_fraction must be a float in (0, 1). "
            f"Got {pipeline.holdout_fraction!r} instead."
        )
    if monitor.correction not in CORRECTIONS:
        raise ConfigError(
            f"monitor.correction must be one of {', '.join(CORRECTIONS)}. "
            f"Got {monitor.correction!r} instead."
        )
    try:
        watch = MonitorPolicy(
            min_rows=monitor.min_rows,
            persistence=monitor.persistence,
            cooldown=timedelta(seconds=monitor.cooldown_seconds),
        )
    except InvalidInputError as exc:
        raise ConfigError(f"[monitor] in the settings: {exc.message}") from exc
    return BacktestPolicy(
        target=target,
        metric=pipeline.metric,
        gate_margin=pipeline.gate_margin,
        holdout_fraction=pipeline.holdout_fraction,
        seed=pipeline.seed,
        alpha=monitor.alpha,
        correction=monitor.correction,  # type: ignore[arg-type]  # checked above
        monitor=watch,
        schedule=CronSchedule.parse(agent.schedule) if agent.schedule.strip() else None,
        on_drift=agent.on_drift,
        performance_drop=agent.performance_drop,
        estimated_drop=agent.estimated_drop,
        retrain_data=agent.retrain_data,  # type: ignore[arg-type]  # checked by the policy
        traffic_rows=agent.traffic_rows,
        min_labelled_rows=agent.min_labelled_rows,
        reference_rows=REFERENCE_SAMPLE_ROWS,
        gate_rules=GateRules(
            bootstrap=gate.bootstrap,
            confidence=gate.confidence,
            seed=gate.seed,
            slice_tolerance=gate.slice_tolerance,
            min_slice_rows=gate.min_slice_rows,
            latency_tolerance=gate.latency_tolerance,
        ),
        gate_slices=tuple(gate.slices),
    )


def _user_trainer(ws: Workspace, settings: Settings) -> Trainer:
    from closedloop.services.pipeline import call_user, import_function

    spec = settings.pipeline.trainer
    if not spec:
        raise ConfigError(
            "The setting pipeline.trainer is not set: the backtest retrains with it.",
            hint='Add trainer = "module:function" to [pipeline] in closedloop.toml.',
        )
    function = import_function(spec, setting="trainer", ws=ws)

    def train(X: pd.DataFrame, y: pd.Series) -> Any:
        model = call_user(
            function, f"trainer {spec}", X, y, hint="Fix the error in your pipeline code."
        )
        problems = check_model(model)
        if problems:
            raise UserCodeError(
                f"The trainer {spec} returned a {type(model).__name__}: {'; '.join(problems)}.",
                hint="Return the fitted model, e.g. a scikit-learn estimator.",
            )
        return model

    return train


# --------------------------------------------------------------------------------------------
# Data, time and windows
# --------------------------------------------------------------------------------------------


def history_from_frame(
    frame: pd.DataFrame, time_column: str, target: str, *, source: str
) -> History:
    """The labelled rows sorted by ``time_column`` (stable), features without time and target."""
    import numpy as np

    columns = [str(c) for c in frame.columns]
    for role, name in (("time", time_column), ("target", target)):
        if name not in columns:
            raise SchemaError(
                f"{source} has no {role} column {name!r}; its columns are {columns}.",
                hint="Pass --time-column" if role == "time" else "Set pipeline.target",
                details={"missing": name, "columns": columns},
            )
    if time_column == target:
        raise InvalidInputError(f"The time column and the target are both {target!r}.")
    times = parse_times(frame[time_column], time_column)
    missing = int(frame[target].isna().sum())
    if missing:
        raise InvalidInputError(
            f"The target column {target!r} has {missing} missing value(s); a backtest needs "
            "a label on every row."
        )
    features = frame.drop(columns=[time_column, target])
    if features.shape[1] == 0:
        raise InvalidInputError(f"{source} has no feature column besides time and target.")
    order = np.argsort(times.as_unit("ns").asi8, kind="stable")
    return History(
        features=features.iloc[order].reset_index(drop=True),
        target=frame[target].iloc[order].reset_index(drop=True),
        times=times[order],
    )


def parse_times(values: pd.Series, name: str) -> pd.DatetimeIndex:
    """UTC timestamps from a datetime column (naive ones are taken as UTC) or ISO-8601 text."""
    import numpy as np
    import pandas as pd

    expected = (
        "expected timestamps: a datetime column or ISO-8601 text such as 2024-01-31T12:00:00Z"
    )
    if values.dtype.kind in "biufc":
        raise InvalidInputError(
            f"The time column {name!r} holds {values.dtype} values, not timestamps; {expected}."
        )
    if values.dtype.kind == "M":
        parsed = values
    else:
        try:
            parsed = pd.to_datetime(values, utc=True, format="ISO8601", errors="coerce")
        except (ValueError, TypeError, OverflowError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InvalidInputError(
                f"The time column {name!r} cannot be parsed ({first}); {expected}."
            ) from exc
        bad = parsed.isna() & values.notna()
        if bad.any():
            raise InvalidInputError(
                f"The time column {name!r} cannot be parsed: {int(bad.sum())} value(s) such as "
                f"{values[bad].iloc[0]!r} are not timestamps; {expected}."
            )
    times = pd.DatetimeIndex(parsed)
    times = times.tz_localize("UTC") if times.tz is None else times.tz_convert("UTC")
    missing = int(np.count_nonzero(np.asarray(times.isna())))
    if missing:
        raise InvalidInputError(
            f"The time column {name!r} has {missing} missing value(s); every row needs a time."
        )
    return times


def parse_window(text: str) -> pd.Timedelta:
    """``7d``, ``12h``, ``30m``/``30min``, ``90s``, ``2w`` as a positive duration."""
    import pandas as pd

    match = _DURATION.match(text or "")
    if not match:
        raise InvalidInputError(f"--window {text!r} is not a duration.", hint=_WINDOW_HINT)
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
    if seconds <= 0:
        raise InvalidInputError(f"--window must be longer than 0. Got {text!r}.", hint=_WINDOW_HINT)
    return pd.Timedelta(seconds=seconds)


def parse_train_until(text: str) -> pd.Timestamp:
    import pandas as pd

    try:
        moment = pd.Timestamp(text)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(
            f"--train-until {text!r} is not a timestamp; expected ISO-8601 such as 2024-01-08 "
            "or 2024-01-08T12:00:00Z (UTC when no zone is given)."
        ) from exc
    if pd.isna(moment):
        raise InvalidInputError(f"--train-until {text!r} is not a timestamp.")
    return moment.tz_localize("UTC") if moment.tz is None else moment.tz_convert("UTC")


def _window_choice(
    windowing: Windowing, default_rows: int
) -> tuple[pd.Timedelta | None, int | None]:
    if windowing.window is not None and windowing.window_rows is not None:
        raise InvalidInputError("Pass either --window or --window-rows, not both.")
    if windowing.window is not None:
        return parse_window(windowing.window), None
    rows = windowing.window_rows if windowing.window_rows is not None else default_rows
    if rows < 1:
        raise InvalidInputError(f"--window-rows must be at least 1. Got {rows} instead.")
    return None, rows


def _cut_off(history: History, windowing: Windowing) -> tuple[int, pd.Timestamp, str]:
    """The first row of the first window, its start time, and how it was chosen."""
    import numpy as np

    times = history.times
    if windowing.train_until is not None:
        start = parse_train_until(windowing.train_until)
        first = int(np.searchsorted(times.as_unit("ns").asi8, start.as_unit("ns").value))
        return first, start, f"rows before --train-until {start.isoformat()}"
    first = min(
        max(MIN_TRAINING_ROWS, math.ceil(DEFAULT_TRAIN_SHARE * len(history))), len(history) - 1
    )
    start = times[first]
    first = int(np.searchsorted(times.as_unit("ns").asi8, start.as_unit("ns").value))
    return first, start, f"the first {DEFAULT_TRAIN_SHARE:.0%} of rows (before {start.isoformat()})"


def _windows(
    history: History,
    first: int,
    start: pd.Timestamp,
    span: pd.Timedelta | None,
    rows: int | None,
    label: str,
) -> list[Window]:
    if first < MIN_TRAINING_ROWS:
        raise InvalidInputError(
            f"Only {first} row(s) lie before the training cut-off {start.isoformat()}; the first "
            f"model needs at least {MIN_TRAINING_ROWS}.",
            hint="Pass a later --train-until.",
        )
    remaining = len(history) - first
    if rows is not None and remaining < rows:
        raise InvalidInputError(
            f"Too few rows for one window: {remaining} row(s) after the {first} training rows; "
            f"a backtest needs at least one window of {rows} rows.",
            hint="Pass a smaller --window-rows or an earlier --train-until.",
        )
    if span is not None:
        covered = max(history.times[-1] - start, span * 0).to_pytimedelta()
        if remaining == 0 or covered < span:
            raise InvalidInputError(
                f"Too few rows for one window: the data after the training cut-off "
                f"{start.isoformat()} spans {format_duration(covered)}; a "
                f"backtest needs at least one {label} window.",
                hint="Pass a shorter --window or an earlier --train-until.",
            )
    return plan_windows(history.times, first, start=start, span=span, rows=rows)


def _run(
    history: History,
    policy: BacktestPolicy,
    trainer: Trainer,
    windowing: Windowing,
    span: pd.Timedelta | None,
    rows: int | None,
    source: str,
    time_column: str,
    progress: Progress | None,
    *,
    drift_point: pd.Timestamp | None = None,
) -> Backtest:
    from closedloop.services.pipeline import split_holdout

    label = windowing.window or f"{rows} rows"
    first, start, rule = _cut_off(history, windowing)
    windows = _windows(history, first, start, span, rows, label)
    result = replay(
        history,
        windows,
        first,
        policy,
        Pipeline(train=trainer, split=split_holdout),
        drift_point=drift_point,
        progress=progress,
    )
    return Backtest(
        result=result,
        source=source,
        rows=len(history),
        time_column=time_column,
        features=tuple(str(c) for c in history.features.columns),
        window=label if span is not None else f"{rows} rows",
        train_rule=rule,
    )


__all__ = [
    "Backtest",
    "Windowing",
    "backtest_file",
    "backtest_simulated",
    "parse_times",
    "parse_window",
    "policy_from_settings",
    "policy_settings",
    "simulator_trainer",
]
