"""Experiment tracking: runs with params, metrics (with steps), tags, artifacts and datasets.

There is no hidden "active run": :func:`start_run` returns a :class:`Run` object and every call
goes through it, so runs in different threads never mix::

    with start_run(ws, name="baseline") as run:
        run.log_params({"C": 1.0})
        run.log_metric("auc", 0.81, step=0)
"""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import sys
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from closedloop.errors import InvalidInputError, NotFoundError
from closedloop.services.events import as_utc, utcnow
from closedloop.services.workspace import Workspace
from closedloop.storage.metadata.tables import (
    datasets,
    run_artifacts,
    run_datasets,
    run_metrics,
    runs,
)

if TYPE_CHECKING:
    import pandas as pd

KEY_PACKAGES = ("numpy", "pandas", "scikit-learn", "scipy", "lightgbm", "xgboost", "closedloop")
MAX_METRIC_NAME = 200
"""The longest metric name the store holds."""
MAX_ESTIMATOR_PARAMS = 300
"""At most this many of an estimator's parameters are recorded; the count of the others is
recorded under ``<prefix>_omitted``."""
MAX_PARAM_CHARS = 200
"""A parameter value described by a longer text is cut to this many characters (ending "…")."""


def code_version(folder: Path) -> dict[str, Any]:
    """The git commit of ``folder`` and whether the work tree has uncommitted changes."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=folder, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {"git_commit": None, "git_dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": bool(status)}


def environment() -> dict[str, Any]:
    """Python and key package versions."""
    packages = {}
    for name in KEY_PACKAGES:
        try:
            packages[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return {"python": sys.version.split()[0], "packages": packages}


def frame_hash(frame: pd.DataFrame) -> str:
    """A content hash of a frame: its column names, dtypes and values (not its index)."""
    import pandas as pd

    digest = hashlib.sha256()
    digest.update(repr([(str(c), str(t)) for c, t in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


@dataclass
class Run:
    """One tracked execution. Use through :func:`start_run`."""

    ws: Workspace
    id: str
    name: str
    experiment: str

    def log_param(self, key: str, value: Any) -> None:
        self.log_params({key: value})

    def log_params(self, params: dict[str, Any]) -> None:
        self._merge("params", {str(k): _plain(v) for k, v in params.items()})

    def log_estimator_params(self, estimator: Any, prefix: str = "model.") -> dict[str, Any]:
        """Record ``estimator.get_params(deep=True)`` (see :func:`estimator_params`) under
        ``prefix``; returns what was recorded. Does nothing for an object without
        ``get_params``."""
        params = {f"{prefix}{k}": v for k, v in estimator_params(estimator).items()}
        if params:
            self._merge("params", params)
        return params

    def set_tags(self, tags: dict[str, str]) -> None:
        self._merge("tags", {str(k): str(v) for k, v in tags.items()})

    def _merge(self, column: str, values: dict[str, Any]) -> None:
        with self.ws.metadata.write() as conn:
            current = conn.execute(select(runs.c[column]).where(runs.c.id == self.id)).scalar()
            merged = {**dict(current or {}), **values}
            conn.execute(runs.update().where(runs.c.id == self.id).values({column: merged}))

    def log_metric(self, key: str, value: float, step: int = 0) -> None:
        self.log_metrics({key: value}, step=step)

    def log_metrics(self, values: dict[str, float], step: int = 0) -> None:
        import math

        rows = []
        for key, value in values.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = math.nan
            if isinstance(value, bool) or not math.isfinite(number):
                raise InvalidInputError(f"Metric {key!r} must be a finite number. Got {value!r}.")
            if not key or len(key) > MAX_METRIC_NAME:
                raise InvalidInputError(
                    f"A metric name must have 1 to {MAX_METRIC_NAME} characters. "
                    f"Got {len(key)} characters: {key[:40]!r}."
                )
            rows.append(
                {"run_id": self.id, "key": key, "value": number, "step": int(step), "ts": utcnow()}
            )
        if rows:
            with self.ws.metadata.write() as conn:
                conn.execute(run_metrics.insert(), rows)

    def log_artifact(self, name: str, data: bytes) -> str:
        """Store bytes under ``name`` for this run; returns their sha256."""
        sha = self.ws.artifacts.put(data)
        with self.ws.metadata.write() as conn:
            conn.execute(
                run_artifacts.delete().where(
                    run_artifacts.c.run_id == self.id, run_artifacts.c.name == name
                )
            )
            conn.execute(
                run_artifacts.insert().values(run_id=self.id, name=name, sha256=sha, size=len(data))
            )
        return sha

    def log_dataset(self, frame: pd.DataFrame, *, source: str, role: str = "training") -> str:
        """Record a dataset the run used (content hash, source, schema, rows); returns the hash."""
        sha = frame_hash(frame)
        schema = {str(c): str(t) for c, t in frame.dtypes.items()}
        with self.ws.metadata.write() as conn:
            exists = conn.execute(select(datasets.c.sha256).where(datasets.c.sha256 == sha)).first()
            if exists is None:
                conn.execute(
                    datasets.insert().values(
                        sha256=sha,
                        source=source,
                        schema=schema,
                        n_rows=len(frame),
                        created_at=utcnow(),
                    )
                )
            linked = conn.execute(
                select(run_datasets).where(
                    run_datasets.c.run_id == self.id,
                    run_datasets.c.dataset_sha256 == sha,
                    run_datasets.c.role == role,
                )
            ).first()
            if linked is None:
                conn.execute(
                    run_datasets.insert().values(run_id=self.id, dataset_sha256=sha, role=role)
                )
        return sha


def _plain(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return repr(value)


def estimator_params(estimator: Any) -> dict[str, Any]:
    """An estimator's parameters as a flat, JSON-ready dict, nested ones included.

    ``get_params(deep=True)`` names a nested parameter ``step__param`` (a Pipeline's steps, a
    ColumnTransformer's transformers, a meta-estimator's ``estimator``), as scikit-learn does.
    Values are kept when they are plain (numpy scalars become Python numbers, non-finite floats
    text); an estimator becomes its class name, a function or class its qualified name, and
    anything else a text of at most :data:`MAX_PARAM_CHARS` characters. At most
    :data:`MAX_ESTIMATOR_PARAMS` parameters are kept; ``_omitted`` counts the others. An object
    without ``get_params``, or whose ``get_params`` fails, gives ``{}`` (params are informational).
    """
    get_params = getattr(estimator, "get_params", None)
    if isinstance(estimator, type) or not callable(get_params):
        return {}
    try:
        params = dict(get_params(deep=True))
    except Exception:  # a third-party get_params may fail; params are informational
        return {}
    out = {str(k): _param_value(v) for k, v in list(params.items())[:MAX_ESTIMATOR_PARAMS]}
    if len(params) > MAX_ESTIMATOR_PARAMS:
        out["_omitted"] = len(params) - MAX_ESTIMATOR_PARAMS
    return out


def _param_value(value: Any) -> Any:
    import math

    if hasattr(value, "item") and type(value).__module__ == "numpy" and not callable(value):
        with contextlib.suppress(ValueError, TypeError):
            value = value.item()  # numpy scalar → Python number (arrays raise)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    return _cut(value if isinstance(value, str) else _describe(value))


def _describe(value: Any, depth: int = 0) -> str:
    """A short text for a parameter value: estimators by class, callables by qualified name."""
    if isinstance(value, type) or (callable(value) and not hasattr(value, "get_params")):
        return _qualified_name(value)
    if hasattr(value, "get_params"):
        return type(value).__name__
    if isinstance(value, list | tuple) and depth < 3:
        inner = ", ".join(_describe(v, depth + 1) for v in value[:20])
        more = ", …" if len(value) > 20 else ""
        return f"[{inner}{more}]" if isinstance(value, list) else f"({inner}{more})"
    if isinstance(value, dict) and depth < 3:
        inner = ", ".join(f"{k!r}: {_describe(v, depth + 1)}" for k, v in list(value.items())[:20])
        return "{" + inner + (", …" if len(value) > 20 else "") + "}"
    return _cut(repr(value))


def _qualified_name(value: Any) -> str:
    name = getattr(value, "__qualname__", None) or getattr(value, "__name__", None)
    if not isinstance(name, str):
        return _cut(repr(value))
    module = getattr(value, "__module__", None) or type(value).__module__
    return name if module in (None, "builtins") else f"{module}.{name}"


def _cut(text: str) -> str:
    return text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 1] + "…"


@contextmanager
def start_run(
    ws: Workspace,
    *,
    name: str = "",
    experiment: str = "default",
    tags: dict[str, str] | None = None,
) -> Iterator[Run]:
    """Start a run; it ends FINISHED, or FAILED with the traceback if the block raises."""
    run_id = uuid.uuid4().hex
    with ws.metadata.write() as conn:
        conn.execute(
            runs.insert().values(
                id=run_id,
                name=name or run_id[:8],
                experiment=experiment,
                status="RUNNING",
                started_at=utcnow(),
                params={},
                tags=tags or {},
                code=code_version(ws.settings.project_dir),
                environment=environment(),
            )
        )
    run = Run(ws=ws, id=run_id, name=name or run_id[:8], experiment=experiment)
    try:
        yield run
    except BaseException:
        _finish(ws, run_id, "FAILED", traceback.format_exc())
        raise
    _finish(ws, run_id, "FINISHED", None)


def _finish(ws: Workspace, run_id: str, status: str, error: str | None) -> None:
    with ws.metadata.write() as conn:
        conn.execute(
            runs.update()
            .where(runs.c.id == run_id)
            .values(status=status, ended_at=utcnow(), error=error)
        )


@dataclass(frozen=True)
class RunInfo:
    id: str
    name: str
    experiment: str
    status: str
    started_at: datetime
    ended_at: datetime | None
    params: dict[str, Any]
    tags: dict[str, str]
    code: dict[str, Any]
    environment: dict[str, Any]
    metrics: dict[str, float]
    metric_history: dict[str, list[tuple[int, float]]]
    datasets: list[dict[str, Any]]
    artifacts: dict[str, str]
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["started_at"] = self.started_at.isoformat()
        out["ended_at"] = self.ended_at.isoformat() if self.ended_at else None
        out["metric_history"] = {k: [list(p) for p in v] for k, v in self.metric_history.items()}
        return out


def _run_info(conn: Any, row: Any) -> RunInfo:
    history: dict[str, list[tuple[int, float]]] = {}
    for m in conn.execute(
        select(run_metrics).where(run_metrics.c.run_id == row.id).order_by(run_metrics.c.id)
    ):
        history.setdefault(m.key, []).append((m.step, m.value))
    used = conn.execute(
        select(datasets, run_datasets.c.role)
        .select_from(
            run_datasets.join(datasets, datasets.c.sha256 == run_datasets.c.dataset_sha256)
        )
        .where(run_datasets.c.run_id == row.id)
    )
    arts = conn.execute(select(run_artifacts).where(run_artifacts.c.run_id == row.id))
    return RunInfo(
        id=row.id,
        name=row.name,
        experiment=row.experiment,
        status=row.status,
        started_at=as_utc(row.started_at),
        ended_at=as_utc(row.ended_at) if row.ended_at else None,
        params=dict(row.params),
        tags=dict(row.tags),
        code=dict(row.code),
        environment=dict(row.environment),
        metrics={k: v[-1][1] for k, v in history.items()},
        metric_history=history,
        datasets=[
            {
                "sha256": d.sha256,
                "source": d.source,
                "role": d.role,
                "n_rows": d.n_rows,
                "schema": d.schema,
            }
            for d in used
        ],
        artifacts={a.name: a.sha256 for a in arts},
        error=row.error,
    )


def list_runs(ws: Workspace, *, experiment: str | None = None, limit: int = 50) -> list[RunInfo]:
    """The most recent runs first."""
    with ws.metadata.read() as conn:
        stmt = select(runs).order_by(runs.c.started_at.desc()).limit(limit)
        if experiment:
            stmt = stmt.where(runs.c.experiment == experiment)
        return [_run_info(conn, r) for r in conn.execute(stmt).all()]


def get_run(ws: Workspace, run_id: str) -> RunInfo:
    with ws.metadata.read() as conn:
        row = conn.execute(select(runs).where(runs.c.id.startswith(run_id, autoescape=True))).all()
        if len(row) != 1:
            raise NotFoundError(
                f"No run {'matches' if not row else 'uniquely matches'} {run_id!r}.",
                hint="List runs with `closedloop runs`.",
            )
        return _run_info(conn, row[0])
