"""Backtest a retraining policy on labelled history (``closedloop backtest``).

The service reads the data (:func:`closedloop.storage.datafiles.read_table`) or generates the
built-in simulator's stream, checks the time and target columns, builds the policy from the
settings (the project's, or a ``--policy`` file read *instead* of them: that file's settings
over the defaults, no environment variables), picks the trainer (:func:`choose_trainer`: the
project's ``pipeline.trainer``, imported the way the pipeline does, unless told otherwise),
plans the windows, reports what it is about to run (:class:`Setup`) and runs
:func:`closedloop.domain.backtest.replay`.

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
    WindowResult,
    plan_windows,
    replay,
)
from closedloop.domain.checks.drift import CORRECTIONS
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
from closedloop.settings import PROJECT_FILE, Settings, read_project_file

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

BUILTIN_TRAINER = "builtin"
"""``--trainer builtin``: :func:`simulator_trainer` instead of the project's trainer."""
BUILTIN_TRAINER_NAME = "built-in logistic regression"

Progress = Callable[[int, int, WindowResult], None]
"""Called after each window with (windows done, windows in all, that window's result)."""


@dataclass(frozen=True)
class Setup:
    """What a backtest runs on, known before the replay starts: the trainer, the data, the
    policy and the windows, each with where it came from."""

    trainer: str
    trainer_source: str
    data: str
    policy_source: str
    windows: int
    window: str

    def lines(self) -> list[str]:
        return [
            f"trainer: {self.trainer} ({self.trainer_source})",
            f"data: {self.data}; {self.windows} windows of {self.window}",
            f"policy: {self.policy_source}",
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "trainer": self.trainer,
            "trainer_source": self.trainer_source,
            "data": self.data,
            "policy_source": self.policy_source,
            "windows": self.windows,
            "window": self.window,
        }


@dataclass(frozen=True)
class ChosenTrainer:
    """The trainer a backtest retrains with, its name and why it was chosen."""

    train: Trainer
    name: str
    source: str


@dataclass(frozen=True)
class Backtest:
    """A finished backtest: the replay and where its data and windows came from."""

    result: BacktestResult
    setup: Setup
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
        return {"setup": self.setup.to_dict(), "data": data, **body}


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
    trainer: str | None = None,
    progress: Progress | None = None,
    on_start: Callable[[Setup], None] | None = None,
) -> Backtest:
    """Backtest the policy on a Parquet or CSV file of labelled history. ``trainer`` is
    :func:`choose_trainer`'s choice; ``on_start`` gets the :class:`Setup` before the replay."""
    from closedloop.storage.datafiles import read_table

    settings = policy_settings(ws, policy_file)
    policy = policy_from_settings(settings)
    span, rows = _window_choice(windowing, settings.monitor.window_rows)
    chosen = choose_trainer(ws, settings, trainer, policy_file=policy_file)
    frame = read_table(data)
    history = history_from_frame(frame, time_column, policy.target, source=str(data))
    return _run(
        history,
        policy,
        chosen,
        windowing,
        span,
        rows,
        str(data),
        time_column,
        _policy_source(ws, policy_file),
        progress,
        on_start,
    )


def backtest_simulated(
    ws: Workspace,
    *,
    rows: int = SIMULATED_ROWS,
    drift_at: int | None = None,
    seed: int = 0,
    windowing: Windowing = Windowing(),
    policy_file: Path | None = None,
    trainer: str | None = None,
    progress: Progress | None = None,
    on_start: Callable[[Setup], None] | None = None,
) -> Backtest:
    """Backtest the policy on the simulator's seeded stream with drift at row ``drift_at``
    (default: half-way). The trainer is :func:`choose_trainer`'s choice; the target is the
    simulator's."""
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
    chosen = choose_trainer(ws, settings, trainer, policy_file=policy_file)
    frame = simulator.stream(rows)
    source = f"simulator (seed {seed}, {rows:,} rows, drift from row {at:,})"
    history = history_from_frame(frame, SIMULATED_TIME_COLUMN, policy.target, source=source)
    drift_point = history.times[at]
    return _run(
        history,
        policy,
        chosen,
        windowing,
        span,
        count,
        source,
        SIMULATED_TIME_COLUMN,
        _policy_source(ws, policy_file),
        progress,
        on_start,
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


def choose_trainer(
    ws: Workspace, settings: Settings, choice: str | None, *, policy_file: Path | None = None
) -> ChosenTrainer:
    """The trainer to retrain with. ``choice`` (``--trainer``) is ``builtin`` or a
    ``module:function``; without it, the policy file's ``pipeline.trainer``, else the project's
    (the user's code is what a backtest evaluates), else the built-in
    :func:`simulator_trainer`."""
    if choice is not None and choice.strip().lower() in (BUILTIN_TRAINER, "built-in"):
        return ChosenTrainer(simulator_trainer, BUILTIN_TRAINER_NAME, "--trainer builtin")
    if choice is not None:
        spec = choice.strip()
        module, _, function = spec.partition(":")
        if not module or not function:
            raise InvalidInputError(
                f"--trainer must be 'builtin' or module:function. Got {choice!r} instead.",
                hint="e.g. --trainer pipeline:train (a module in the project folder).",
            )
        return ChosenTrainer(_user_trainer(ws, spec), spec, "--trainer")
    if policy_file is not None and settings.pipeline.trainer:
        spec = settings.pipeline.trainer
        where = f"pipeline.trainer in {Path(policy_file).name}"
    else:
        spec, where = ws.settings.pipeline.trainer, "the project's pipeline.trainer"
    if spec:
        return ChosenTrainer(
            _user_trainer(ws, spec), spec, f"{where}; --trainer builtin for the built-in one"
        )
    return ChosenTrainer(
        simulator_trainer,
        BUILTIN_TRAINER_NAME,
        "no pipeline.trainer is set; --trainer module:function for yours",
    )


def _policy_source(ws: Workspace, policy_file: Path | None) -> str:
    if policy_file is not None:
        return f"{policy_file} (--policy: its settings over the defaults)"
    project_file = ws.settings.project_dir / PROJECT_FILE
    if project_file.is_file():
        return f"{project_file} (the project's settings)"
    return f"the defaults (no {PROJECT_FILE} in {ws.settings.project_dir} or above)"


def _user_trainer(ws: Workspace, spec: str) -> Trainer:
    from closedloop.services.pipeline import call_user, import_function

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
    trainer: ChosenTrainer,
    windowing: Windowing,
    span: pd.Timedelta | None,
    rows: int | None,
    source: str,
    time_column: str,
    policy_source: str,
    progress: Progress | None,
    on_start: Callable[[Setup], None] | None,
    *,
    drift_point: pd.Timestamp | None = None,
) -> Backtest:
    from closedloop.services.pipeline import split_holdout

    label = windowing.window or f"{rows} rows"
    first, start, rule = _cut_off(history, windowing)
    windows = _windows(history, first, start, span, rows, label)
    setup = Setup(
        trainer=trainer.name,
        trainer_source=trainer.source,
        data=source,
        policy_source=policy_source,
        windows=len(windows),
        window=label if span is not None else f"{rows} rows",
    )
    if on_start is not None:
        on_start(setup)
    result = replay(
        history,
        windows,
        first,
        policy,
        Pipeline(train=trainer.train, split=split_holdout),
        drift_point=drift_point,
        progress=progress,
    )
    return Backtest(
        result=result,
        setup=setup,
        source=source,
        rows=len(history),
        time_column=time_column,
        features=tuple(str(c) for c in history.features.columns),
        window=label if span is not None else f"{rows} rows",
        train_rule=rule,
    )


__all__ = [
    "BUILTIN_TRAINER",
    "Backtest",
    "ChosenTrainer",
    "Setup",
    "Windowing",
    "backtest_file",
    "backtest_simulated",
    "choose_trainer",
    "parse_times",
    "parse_window",
    "policy_from_settings",
    "policy_settings",
    "simulator_trainer",
]
