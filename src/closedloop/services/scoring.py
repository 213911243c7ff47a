"""Batch scoring: a registered version predicts every row of a Parquet or CSV file.

:func:`score_file` resolves the version (the production alias unless a version or another alias
is named), loads it as the server does (sha256-verified, its call plan calibrated on its own
rows), then streams INPUT in batches of at most ``batch_rows`` rows: each batch's feature
columns are checked and coerced by the signature exactly as a request's are, predicted, and
written to OUTPUT with the input's other columns (pass-through columns such as an id), the
``prediction`` and, for a classifier with ``predict_proba``, one ``probability_<class>``
column per class. Memory holds one batch at a time.

OUTPUT appears only when every row is scored (see
:class:`~closedloop.storage.datafiles.AtomicTableWriter`): a bad row, a failing model or an
unreadable file leaves no file behind. With ``log=True`` the scored rows are recorded in the
prediction log once OUTPUT is complete, one request id per batch (``<job>-<batch number>``), so
``closedloop monitor`` checks batch traffic like served traffic; until then they wait in a
local temporary file, so a failed run logs nothing.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from closedloop.errors import (
    ClosedloopError,
    ConfigError,
    InvalidInputError,
    NotFoundError,
    SchemaError,
    UserCodeError,
)
from closedloop.services import registry
from closedloop.services.workspace import Workspace

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from closedloop.domain.model import LoadedVersion, Prediction
    from closedloop.domain.signature import Signature

DEFAULT_BATCH_ROWS = 100_000
PREDICTION = "prediction"
PROBABILITY = "probability_"
"""Prefix of the per-class probability columns (``probability_<class>``)."""

Progress = Callable[[int, int | None], None]
"""Called with (rows scored so far, total rows when the file says so) before the first batch
and after each one."""


@dataclass(frozen=True)
class ScoringResult:
    """What one batch-scoring run did."""

    model: str
    version: int
    input: str
    output: str
    rows: int
    batches: int
    seconds: float
    """The whole run, loading the version included."""
    scoring_seconds: float
    """Reading, checking, predicting and writing the rows (and logging them)."""
    columns: list[str]
    logged_rows: int = 0
    request_id_prefix: str | None = None

    @property
    def rows_per_second(self) -> float | None:
        """Rows scored per second of :attr:`scoring_seconds`."""
        return self.rows / self.scoring_seconds if self.scoring_seconds > 0 else None

    def to_dict(self) -> dict[str, Any]:
        rate = self.rows_per_second
        return {
            "model": self.model,
            "version": self.version,
            "input": self.input,
            "output": self.output,
            "rows": self.rows,
            "batches": self.batches,
            "seconds": round(self.seconds, 3),
            "scoring_seconds": round(self.scoring_seconds, 3),
            "rows_per_second": None if rate is None else round(rate),
            "columns": self.columns,
            "logged_rows": self.logged_rows,
            "request_id_prefix": self.request_id_prefix,
        }


def resolve_version(
    ws: Workspace, model: str, *, version: int | None = None, alias: str | None = None
) -> int:
    """The version to score with: ``version``, else the one ``alias`` (default production)
    points to. NotFoundError for an unknown model, version or unset alias."""
    if version is not None and alias is not None:
        raise ConfigError(
            f"Give a version or an alias, not both (got version {version} and alias {alias!r}).",
            hint="Drop --version or --alias.",
        )
    if version is not None:
        return registry.get_version(ws, model, version).number
    name = alias or registry.PRODUCTION
    number = registry.resolve_alias(ws, model, name)
    if number is None:
        raise NotFoundError(
            f"Model {model!r} has no {name!r} alias.",
            hint=f"Pass --version N, or point the alias at a version: "
            f"`closedloop alias set {model} {name} N`.",
            details={"model": model, "alias": name},
        )
    return number


def load_for_scoring(ws: Workspace, model: str, number: int) -> LoadedVersion:
    """The version loaded as the server loads it: verified, and its call plan calibrated on its
    reference and held-out rows (plain calls when that cannot be checked)."""
    from closedloop.services.serving import calibration_sample

    loaded = registry.load_version(ws, model, number)
    with contextlib.suppress(Exception):  # shortcuts are an optimisation, never a requirement
        loaded.calibrate(calibration_sample(ws, loaded, registry.load_reference(ws, model, number)))
    return loaded


def score_file(
    ws: Workspace,
    model: str,
    input: str | Path,
    output: str | Path,
    *,
    version: int | None = None,
    alias: str | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    keep_features: bool = False,
    log: bool = False,
    progress: Progress | None = None,
) -> ScoringResult:
    """Score every row of ``input`` into ``output`` (see the module docstring).

    Raises :class:`SchemaError` naming the batch, the row of the file and the column of the
    first value the signature refuses (no output is written), :class:`NotFoundError` for an
    unknown model, version or alias and :class:`InvalidInputError` for a file that cannot be
    read or written.
    """
    from closedloop.storage.datafiles import AtomicTableWriter, open_batches

    started = time.perf_counter()
    source_name, target_name = str(input), str(output)
    if os.path.abspath(source_name) == os.path.abspath(target_name):
        raise ConfigError(
            f"INPUT and OUTPUT are the same file ({source_name!r}).",
            hint="Write the scores to another file.",
        )
    number = resolve_version(ws, model, version=version, alias=alias)
    loaded = load_for_scoring(ws, model, number)
    signature = loaded.signature
    source = open_batches(source_name, batch_rows, csv_types=_csv_types(signature))
    loaded_at = time.perf_counter()
    try:
        names = signature.names()
        _require_features(source.schema, names, source_name, loaded)
        kept = [n for n in source.schema.names if keep_features or n not in set(names)]
        classes = _probability_classes(loaded)
        added = [PREDICTION, *(f"{PROBABILITY}{c}" for c in classes or ())]
        clashes = [n for n in added if n in kept]
        if clashes:
            raise SchemaError(
                f"{source_name!r} already has column(s) {clashes}, which the scores are "
                "written to.",
                hint="Rename those columns in the input.",
                details={"path": source_name, "columns": clashes},
            )
        spool = _LogSpool() if log else None
        writer: AtomicTableWriter | None = None
        rows = batches = 0
        if progress is not None:
            progress(0, source.total_rows)
        try:
            for batch in source:
                if batch.num_rows == 0:
                    continue
                batches += 1
                frame, prediction = _predict(
                    loaded, batch, rows, batches, source_name, frame_needed=spool is not None
                )
                scored = _scored_batch(batch, kept, prediction, classes)
                if writer is None:
                    writer = AtomicTableWriter(target_name, scored.schema)
                writer.write(scored)
                if spool is not None:
                    spool.add(frame, prediction)
                rows += batch.num_rows
                if progress is not None:
                    progress(rows, source.total_rows)
            if writer is None:
                raise InvalidInputError(
                    f"{source_name!r} has no rows; there is nothing to score.",
                    details={"path": source_name},
                )
            writer.commit()
            columns = list(writer.schema.names)
            writer = None
            logged, prefix = 0, None
            if spool is not None:
                prefix = f"batch-{uuid.uuid4().hex[:12]}"
                logged = spool.replay(ws, loaded, prefix, batch_rows)
        finally:
            if writer is not None:
                writer.abort()
            if spool is not None:
                spool.close()
    finally:
        source.close()
    finished = time.perf_counter()
    return ScoringResult(
        model=model,
        version=number,
        input=source_name,
        output=target_name,
        rows=rows,
        batches=batches,
        seconds=finished - started,
        scoring_seconds=finished - loaded_at,
        columns=columns,
        logged_rows=logged,
        request_id_prefix=prefix,
    )


def _csv_types(signature: Signature) -> dict[str, pa.DataType]:
    """A CSV file's feature columns are read as the signature's types (not guessed)."""
    import pyarrow as pa

    kinds = {"float": pa.float64(), "integer": pa.int64(), "boolean": pa.bool_()}
    kinds["string"] = pa.string()
    return {c.name: kinds[c.dtype] for c in signature.columns}


def _require_features(
    schema: pa.Schema, names: list[str], path: str, loaded: LoadedVersion
) -> None:
    missing = [n for n in names if n not in schema.names]
    if missing:
        raise SchemaError(
            f"{path!r} has no column(s) {missing}, which {loaded.model!r} version "
            f"{loaded.version} needs; its columns are {list(schema.names)}",
            hint="Give the file every column the model was trained on.",
            details={"path": path, "missing": missing, "expected": names},
        )


def _probability_classes(loaded: LoadedVersion) -> list[Any] | None:
    """The classes a probability column is written for (None: the model has no
    ``predict_proba``)."""
    if not callable(getattr(loaded.estimator, "predict_proba", None)):
        return None
    classes = getattr(loaded.estimator, "classes_", None)
    if classes is None:
        target = loaded.target()
        classes = None if target is None else target.classes
    if classes is None:
        return None
    return [c.item() if hasattr(c, "item") else c for c in list(classes)]


def _column(batch: pa.RecordBatch, name: str) -> np.ndarray:
    """One column as numpy, as a request's values would be (nulls: NaN or None)."""
    import numpy as np
    import pyarrow as pa

    column = batch.column(name)
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    return np.asarray(column.to_numpy(zero_copy_only=False))


def _predict(
    loaded: LoadedVersion,
    batch: pa.RecordBatch,
    offset: int,
    number: int,
    path: str,
    *,
    frame_needed: bool,
) -> tuple[Any, Prediction]:
    """Check and coerce the batch's features as the server does; predict them. Returns the
    features as a frame too when ``frame_needed`` (or the model takes one anyway)."""
    from closedloop.domain.model import Rows

    names = loaded.signature.names()
    try:
        coerced = loaded.signature.coerce_columns({n: _column(batch, n) for n in names})
    except SchemaError as exc:
        raise _at_row(exc, path, number, offset, batch.num_rows) from exc
    rows = Rows.from_columns(names, list(coerced.values()))
    frame = rows.frame() if frame_needed or not loaded.plan.array_input else None
    try:
        prediction = loaded.predict_rows(rows, frame)
        _require_answers(prediction, rows.count)
    except ClosedloopError:
        raise
    except Exception as exc:
        raise UserCodeError(
            f"{loaded.model!r} version {loaded.version} failed to predict batch {number} "
            f"(rows {offset}-{offset + rows.count - 1} of {path!r}): {type(exc).__name__}: {exc}",
            hint="The estimator raised on well-formed input; run with --debug for the traceback.",
            details={"model": loaded.model, "version": loaded.version, "batch": number},
        ) from exc
    return frame, prediction


def _at_row(exc: SchemaError, path: str, number: int, offset: int, count: int) -> SchemaError:
    """The signature's error, located in the file: its batch, and the row counted from the
    file's first row (``batch_row`` keeps the row within the batch)."""
    details = dict(exc.details)
    message = exc.message
    row = details.get("row")
    if isinstance(row, int):
        details["batch_row"] = row
        details["row"] = offset + row
        message = re.sub(rf"\brow {row}\b", f"row {offset + row}", message, count=1)
    details.update({"path": path, "batch": number})
    return SchemaError(
        f"{path!r} (batch {number}, rows {offset}-{offset + count - 1}): {message}",
        hint=exc.hint or "Fix the value in the file, or drop the row; no output was written.",
        details=details,
    )


def _require_answers(prediction: Prediction, count: int) -> None:
    lengths = {len(prediction.labels)}
    if prediction.probabilities is not None:
        lengths.add(len(prediction.probabilities))
    if lengths != {count}:
        raise ValueError(f"the model returned {sorted(lengths)} answers for {count} rows")


def _scored_batch(
    batch: pa.RecordBatch, kept: list[str], prediction: Prediction, classes: list[Any] | None
) -> pa.RecordBatch:
    import numpy as np
    import pyarrow as pa

    arrays = [batch.column(n) for n in kept]
    names = list(kept)
    arrays.append(pa.array(np.asarray(prediction.labels)))
    names.append(PREDICTION)
    if classes is not None and prediction.probabilities is not None:
        matrix = np.asarray(prediction.probabilities, dtype=np.float64)
        for j, label in enumerate(classes):
            arrays.append(pa.array(matrix[:, j]))
            names.append(f"{PROBABILITY}{label}")
    return pa.RecordBatch.from_arrays(arrays, names=names)


class _LogSpool:
    """Scored rows waiting (in a local temporary Parquet file) to be logged once the output is
    complete, so memory stays bounded and a failed run logs nothing."""

    def __init__(self) -> None:
        descriptor, self.path = tempfile.mkstemp(suffix=".parquet", prefix="closedloop-log-")
        os.close(descriptor)
        self._writer: Any = None

    def add(self, frame: Any, prediction: Prediction) -> None:
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False)
        table = table.append_column("_prediction", pa.array(np.asarray(prediction.labels)))
        scores = prediction.scores
        table = table.append_column(
            "_score",
            pa.array(np.full(len(frame), np.nan) if scores is None else np.asarray(scores, float)),
        )
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, table.schema)
        elif table.schema != self._writer.schema:
            table = table.cast(self._writer.schema)
        self._writer.write_table(table, row_group_size=max(len(frame), 1))

    def replay(self, ws: Workspace, loaded: LoadedVersion, prefix: str, batch_rows: int) -> int:
        """Append every spooled batch to the prediction log (``<prefix>-<batch>`` ids)."""
        import numpy as np
        import pyarrow.parquet as pq

        from closedloop.storage.predictions import PredictionLog

        if self._writer is None:
            return 0
        self._writer.close()
        self._writer = None
        sink = PredictionLog(ws.settings.predictions_url, max_batch_rows=batch_rows)
        logged = 0
        try:
            spooled = pq.ParquetFile(self.path)
            for group in range(spooled.num_row_groups):  # one row group per scored batch
                frame = spooled.read_row_group(group).to_pandas()
                scores = frame.pop("_score").to_numpy(dtype=float)
                labels = frame.pop("_prediction").to_numpy()
                sink.append(
                    loaded.model,
                    loaded.version,
                    f"{prefix}-{group + 1}",
                    frame,
                    labels,
                    None if bool(np.isnan(scores).all()) else scores,
                )
                sink.flush()  # one batch in memory at a time
                logged += len(frame)
        finally:
            sink.close()
        return logged

    def close(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
        with contextlib.suppress(OSError):
            os.remove(self.path)
