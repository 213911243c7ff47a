"""Drift checks: two data files, or a model's latest logged traffic against its reference.

A monitor check compares the most recent window of the prediction log for a model's production
version with the reference sample stored when that version was registered (never recomputed), and
records the result as a check in the store with an event.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from closedloop.errors import ConflictError, InvalidInputError

# The store (SQLAlchemy, ~0.3 s to import) is only needed by `monitor` and `list_checks`, not by
# `closedloop drift`, so it is imported inside them.
if TYPE_CHECKING:
    import pandas as pd

    from closedloop.domain.checks.drift import DriftReport
    from closedloop.domain.checks.verdict import Reason
    from closedloop.services.workspace import Workspace


@dataclass(frozen=True)
class DriftOptions:
    alpha: float = 0.01
    correction: str = "bonferroni"
    columns: tuple[str, ...] | None = None
    categorical: tuple[str, ...] | None = None
    multivariate: bool = True
    """Also run the domain-classifier test (it counts in the verdict)."""
    quality: bool = True
    """Also report data-quality signals (not counted in the verdict)."""
    weights: dict[str, float] | None = None
    """Feature-importance weight per column: the report gives the drifted columns' share."""
    min_weighted_share: float = 0.0
    """With weights: per-column drift counts only when the drifted columns carry this share."""


def compare(reference: pd.DataFrame, current: pd.DataFrame, options: DriftOptions) -> DriftReport:
    from closedloop.domain.checks.assessment import assess

    if options.correction not in ("bonferroni", "bh"):
        raise InvalidInputError(
            f"correction must be 'bonferroni' or 'bh'. Got {options.correction!r} instead."
        )
    return assess(
        reference,
        current,
        columns=list(options.columns) if options.columns else None,
        categorical=list(options.categorical) if options.categorical else None,
        alpha=options.alpha,
        correction="bh" if options.correction == "bh" else "bonferroni",
        multivariate=options.multivariate,
        quality=options.quality,
        weights=options.weights,
        min_weighted_share=options.min_weighted_share,
    )


_IMPORTANCE: dict[tuple[str, str, int, str], dict[str, float]] = {}
"""Computed importances per (store, model, version, metric): a version never changes."""


def version_importance(ws: Workspace, model: str, number: int) -> dict[str, float]:
    """Permutation importance of each input column of a version, on its held-out rows.

    ``pipeline.metric`` is the score; ConflictError when the version has no stored evaluation.
    Computed once per process for each version (versions are immutable).
    """
    key = (ws.settings.metadata_url, model, number, ws.settings.pipeline.metric)
    if key not in _IMPORTANCE:
        if len(_IMPORTANCE) >= 64:
            _IMPORTANCE.clear()
        _IMPORTANCE[key] = _version_importance(ws, model, number)
    return dict(_IMPORTANCE[key])


def _version_importance(ws: Workspace, model: str, number: int) -> dict[str, float]:
    from closedloop.domain.checks.importance import permutation_importance
    from closedloop.services import registry

    evaluation = registry.load_evaluation(ws, model, number)
    if evaluation is None or len(evaluation) < 2:
        raise ConflictError(
            f"Version {number} of {model!r} has no held-out rows to measure feature importance "
            "on (versions registered by `closedloop train` have them).",
            hint="Set monitor.min_weighted_share = 0 to check this version unweighted.",
        )
    loaded = registry.load_version(ws, model, number)
    names = loaded.signature.names()
    rows = evaluation.head(2000)
    return permutation_importance(
        loaded.estimator, rows[names], rows["_label"], ws.settings.pipeline.metric, columns=names
    )


def drift_files(
    reference: Path, current: Path, options: DriftOptions, *, stream: bool | None = None
) -> DriftReport:
    """Compare two data files (parquet or csv).

    ``stream=False`` reads both files into memory and runs the exact tests
    (:func:`~closedloop.domain.checks.drift.compare_frames`, report ``method="exact"``).
    ``stream=True`` streams them in record batches into KLL sketches
    (:func:`~closedloop.domain.checks.sketches.compare_sketches`, ``method="sketch"``, memory
    bounded by the sketch size). ``None`` (default) streams when ``CLOSEDLOOP_DRIFT_STREAM`` is
    ``1`` (``0`` forces the exact path) or when the two files together are larger than
    :data:`STREAM_FILE_FRACTION` of the available memory (in-memory data is several times
    larger than compressed files).
    """
    import os

    columns = list(options.columns) if options.columns else None
    if stream is None:
        flag = os.environ.get("CLOSEDLOOP_DRIFT_STREAM", "").strip()
        if flag in ("0", "1"):
            stream = flag == "1"
        else:
            size = sum(p.stat().st_size for p in (Path(reference), Path(current)) if p.is_file())
            stream = size > STREAM_FILE_FRACTION * _available_memory()
    if stream:
        return _drift_files_streaming(Path(reference), Path(current), options, columns)

    import pyarrow as pa

    from closedloop.storage.datafiles import read_table

    # Arrow's allocator keeps the decoding buffers of a read for reuse; handing them back after
    # each file keeps them out of the peak memory of the second read and of the tests.
    ref = read_table(reference, columns=columns, strings_as_categories=True)
    pa.default_memory_pool().release_unused()
    cur = read_table(current, columns=columns, strings_as_categories=True)
    pa.default_memory_pool().release_unused()
    return compare(ref, cur, options)


STREAM_FILE_FRACTION = 0.125
"""``drift_files`` streams when the files' combined size exceeds this share of free memory."""
STREAM_BATCH_ROWS = 262_144


def _available_memory() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30  # unknown platform: assume 8 GiB


def _drift_files_streaming(
    reference: Path, current: Path, options: DriftOptions, columns: list[str] | None
) -> DriftReport:
    import pyarrow as pa

    from closedloop.domain.checks.profiles import ColumnKind
    from closedloop.domain.checks.sketches import TableSketch, compare_sketches
    from closedloop.errors import SchemaError
    from closedloop.storage.datafiles import iter_batches

    if options.correction not in ("bonferroni", "bh"):
        raise InvalidInputError(
            f"correction must be 'bonferroni' or 'bh'. Got {options.correction!r} instead."
        )
    forced = set(options.categorical or ())
    sketches: list[TableSketch] = []
    kinds: dict[str, ColumnKind] | None = None
    for path in (reference, current):
        sketch: TableSketch | None = None
        for batch in iter_batches(path, columns, STREAM_BATCH_ROWS):
            if kinds is None:
                kinds = {}
                for f in batch.schema:
                    numeric = pa.types.is_integer(f.type) or pa.types.is_floating(f.type)
                    kinds[f.name] = "numeric" if numeric and f.name not in forced else "categorical"
            if sketch is None:
                missing = [name for name in kinds if name not in batch.schema.names]
                if missing:
                    raise SchemaError(
                        f"The current file is missing column(s) {missing} that the reference "
                        "file has; expected every compared column in both files.",
                        details={"missing": missing, "frame": "current"},
                    )
                sketch = TableSketch(kinds)
            sketch.update(batch)
        if sketch is None or sketch.n_rows == 0:
            raise InvalidInputError(
                f"{str(path)!r} has no rows; drift needs at least one row in each window."
            )
        sketches.append(sketch)
    report = compare_sketches(
        sketches[0],
        sketches[1],
        alpha=options.alpha,
        correction="bh" if options.correction == "bh" else "bonferroni",
    )
    if options.weights is None:
        return report
    from closedloop.domain.checks.assessment import weighted_verdict

    return weighted_verdict(report, options.weights, options.min_weighted_share)


def read_weights(path: Path) -> dict[str, float]:
    """A JSON object mapping column names to importance weights (finite numbers >= 0)."""
    import json
    import math

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidInputError(
            f"Cannot read the weights file {str(path)!r}: {exc.strerror}."
        ) from exc
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"The weights file {str(path)!r} is not valid JSON ({exc.msg}, line {exc.lineno}); "
            'expected an object such as {"income": 0.4, "age": 0.1}.'
        ) from exc
    if not isinstance(data, dict) or not data:
        raise InvalidInputError(
            f"The weights file {str(path)!r} must hold a non-empty JSON object of column: weight; "
            f"got {type(data).__name__}."
        )
    out: dict[str, float] = {}
    for column, weight in data.items():
        number = (
            weight if isinstance(weight, int | float) and not isinstance(weight, bool) else None
        )
        if number is None or not math.isfinite(number) or number < 0:
            raise InvalidInputError(
                f"The weight of column {column!r} in {str(path)!r} must be a finite number >= 0. "
                f"Got {weight!r} instead."
            )
        out[str(column)] = float(number)
    return out


@dataclass(frozen=True)
class CheckResult:
    id: int
    model: str
    version: int
    ts: datetime
    report: DriftReport
    outputs: dict[str, Any] = field(default_factory=dict)
    """Prediction drift, label drift and performance (:mod:`.outputs`)."""
    window: dict[str, Any] = field(default_factory=dict)
    """The checked rows: ``rows`` and the ``start``/``end`` of their log timestamps."""
    number: int = 0
    """The check's number among the model's checks (1, 2, 3 …); ``id`` is unique in the store."""

    def reasons(self) -> list[Reason]:
        """Why the verdict is what it is
        (:func:`closedloop.domain.checks.verdict.verdict_reasons`)."""
        from closedloop.domain.checks.verdict import verdict_reasons

        return verdict_reasons(self.report, self.outputs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "check_id": self.id,
            "number": self.number,
            "model": self.model,
            "version": self.version,
            "ts": self.ts.isoformat(),
            **self.report.to_dict(),
            "outputs": self.outputs,
            "window": self.window,
        }


def current_window(ws: Workspace, model: str, version: int, rows: int) -> pd.DataFrame:
    """The most recent ``rows`` logged inputs that ``version`` of ``model`` answered."""
    log = ws.prediction_log()
    try:
        return log.read(model, last_rows=rows, version=version)
    finally:
        log.close()


def monitor(
    ws: Workspace,
    model: str,
    *,
    version: int | None = None,
    window_rows: int | None = None,
    options: DriftOptions | None = None,
    actor: str | None = None,
) -> CheckResult:
    """Check the latest traffic window of ``model`` against its version's reference; record it."""
    from closedloop.services import events, registry
    from closedloop.services.events import utcnow
    from closedloop.services.outputs import check_outputs
    from closedloop.services.workspace import default_actor
    from closedloop.storage.metadata.tables import checks

    cfg = ws.settings.monitor
    options = options or DriftOptions(alpha=cfg.alpha, correction=cfg.correction)
    rows = window_rows or cfg.window_rows
    if rows < 1:
        raise InvalidInputError(f"The window must be at least 1 row. Got {rows} instead.")
    number = version or registry.resolve_alias(ws, model)
    if number is None:
        raise ConflictError(
            f"Model {model!r} has no production version to monitor.",
            hint="Pass --version N or set the production alias.",
        )
    reference = registry.load_reference(ws, model, number)
    window = current_window(ws, model, number, rows)
    if len(window) < cfg.min_rows:
        raise ConflictError(
            f"Only {len(window)} logged rows for {model!r} version {number}; a check needs at "
            f"least {cfg.min_rows} (monitor.min_rows).",
            hint="Send more traffic, or lower monitor.min_rows in closedloop.toml.",
        )
    primary = window[window["_role"] != "shadow"] if "_role" in window else window
    features = [c for c in reference.columns if c in primary.columns]
    if cfg.min_weighted_share > 0 and options.weights is None:
        options = replace(
            options,
            weights=version_importance(ws, model, number),
            min_weighted_share=cfg.min_weighted_share,
        )
    report = compare(reference, primary[features], options)
    outputs = check_outputs(ws, model, number, primary)
    window_info = {
        "rows": len(primary),
        "start": primary["_ts"].min().isoformat() if len(primary) else None,
        "end": primary["_ts"].max().isoformat() if len(primary) else None,
    }
    now = utcnow()
    with ws.metadata.write() as conn:
        result = conn.execute(
            checks.insert().values(
                model=model,
                version=number,
                ts=now,
                kind="drift",
                n_reference=report.n_reference,
                n_current=report.n_current,
                drifted=report.drifted,
                result={**report.to_dict(), "outputs": outputs, "window": window_info},
            )
        )
        key = result.inserted_primary_key
        assert key is not None
        check_id = int(key[0])
        ordinal = count_checks(conn, model, check_id)
        drifted_columns = [c.column for c in report.columns if c.drifted]
        events.record(
            conn,
            "check.recorded",
            actor=actor or default_actor(),
            model=model,
            version=number,
            payload={
                "check_id": check_id,
                "drifted": report.drifted,
                "drifted_columns": drifted_columns,
                "n_current": report.n_current,
            },
            reason="drift detected" if report.drifted else "no drift",
            ts=now,
        )
    return CheckResult(
        id=check_id,
        model=model,
        version=number,
        ts=now,
        report=report,
        outputs=outputs,
        window=window_info,
        number=ordinal,
    )


def list_checks(ws: Workspace, model: str, *, limit: int = 20) -> list[dict[str, Any]]:
    """The most recent checks of a model, newest first."""
    from sqlalchemy import select

    from closedloop.storage.metadata.tables import checks

    with ws.metadata.read() as conn:
        rows = list(
            conn.execute(
                select(checks)
                .where(checks.c.model == model)
                .order_by(checks.c.id.desc())
                .limit(limit)
            )
        )
        total = count_checks(conn, model)
    return [check_summary(r, total - i) for i, r in enumerate(rows)]


def count_checks(conn: Any, model: str, up_to: int | None = None) -> int:
    """How many checks ``model`` has (with an id up to ``up_to``): a check's number is this
    count at its id, so users see checks numbered 1, 2, 3 … per model."""
    from sqlalchemy import func, select

    from closedloop.storage.metadata.tables import checks

    query = select(func.count()).select_from(checks).where(checks.c.model == model)
    if up_to is not None:
        query = query.where(checks.c.id <= up_to)
    return int(conn.execute(query).scalar_one())


def check_summary(row: Any, number: int) -> dict[str, Any]:
    """A ``checks`` row as the JSON-friendly summary ``list_checks`` returns. ``check_id`` is
    the store's id (unique across models); ``number`` counts the model's checks from 1."""
    from closedloop.services.events import as_utc

    return {
        "check_id": row.id,
        "number": number,
        "version": row.version,
        "ts": as_utc(row.ts).isoformat(),
        "drifted": row.drifted,
        "n_reference": row.n_reference,
        "n_current": row.n_current,
    }
