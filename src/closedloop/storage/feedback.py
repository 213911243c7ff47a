"""The append-only feedback log: true labels that arrive after the prediction, as Parquet.

Layout under ``root_url`` (a local folder or any fsspec URL such as ``s3://bucket/prefix``)::

    {root}/model={model}/part-{utc timestamp}-{uuid}.parquet

One file per :meth:`FeedbackLog.append` call. Each row holds ``_request_id`` (string, the id
the prediction was logged under), ``_label`` (the true label), ``_feedback_ts`` (UTC,
millisecond precision: the ``ts`` given to ``append``, by default the time of the call) and,
when the caller gave row positions, ``_row`` (int: the row's position within its request,
for batch requests; see :func:`closedloop.domain.performance.match_feedback`). A file written
otherwise (by hand, or by an older version: a missing column, a ``_row`` of another type) is
read as it is, never refused; the join leaves out and counts the labels it cannot use.

Files appear atomically, as in the prediction log: on a local disk a file is written under a
hidden temporary name (``.part-….tmp``, fsynced) and renamed into place; object stores get
one PUT of the complete object. Readers only look at ``part-*.parquet`` names and no file is
modified after it is written. Unlike the prediction log, ``append`` writes synchronously
(feedback arrives in batches, far less often than predictions).

Corrections: labels are never overwritten in place. When a key (``_request_id``, plus
``_row`` when present) received several labels, :meth:`FeedbackLog.read` returns only the one
with the latest ``_feedback_ts``; on equal timestamps the one written last wins.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from closedloop.errors import ConfigError, InvalidInputError, StoreError
from closedloop.storage.names import check_model_name
from closedloop.storage.parts import PartFolder, is_part

FEEDBACK_COLUMNS: tuple[str, ...] = ("_request_id", "_label", "_feedback_ts")
"""Columns of every frame :meth:`FeedbackLog.read` returns (plus ``_row`` when used)."""

_LABEL_KINDS = frozenset({"integer", "floating", "boolean", "string", "mixed-integer-float"})


class FeedbackLog:
    """Append-only log of late labels, joined to predictions by request id."""

    def __init__(self, root_url: str, storage_options: dict[str, Any] | None = None) -> None:
        if not isinstance(root_url, str | os.PathLike) or not str(root_url).strip():
            raise ConfigError(
                "The 'root_url' parameter must be a folder path or fsspec URL. "
                f"Got {root_url!r} instead."
            )
        self.root_url = str(root_url)
        self._parts = PartFolder(self.root_url, storage_options, what="feedback log")

    def append(
        self,
        model: str,
        request_ids: Sequence[str],
        labels: Sequence[object],
        *,
        ts: datetime | None = None,
        rows: Sequence[int] | None = None,
    ) -> int:
        """Write one Parquet file with a label per request id; returns the number of rows.

        ``ts`` is when the labels became known (naive datetimes are taken as UTC; default:
        now). ``rows`` optionally gives each label's row position within its request (for
        requests that predicted several rows). Raises :class:`InvalidInputError` for an empty
        call, unequal lengths, request ids that are not non-empty strings, or missing labels,
        and :class:`StoreError` when the file cannot be written.
        """
        check_model_name(model)
        ids = _sequence(request_ids, "request_ids")
        values = _sequence(labels, "labels")
        if len(ids) == 0:
            raise InvalidInputError("The 'request_ids' parameter must not be empty. Got 0 ids.")
        if len(values) != len(ids):
            raise InvalidInputError(
                "request_ids and labels must have the same length. "
                f"Got {len(ids)} and {len(values)} instead."
            )
        id_array = np.asarray(ids, dtype=object)
        if pd.api.types.infer_dtype(id_array, skipna=False) != "string":
            bad = next(v for v in ids if not isinstance(v, str))
            raise InvalidInputError(
                f"Every request id must be a non-empty string. Got {bad!r} ({type(bad).__name__})."
            )
        if bool((pd.Series(id_array, dtype=object).str.len() == 0).any()):
            raise InvalidInputError("Every request id must be a non-empty string. Got ''.")
        label_array = _labels(values)
        stamp = _utc_ms("ts", ts if ts is not None else datetime.now(UTC))
        data: dict[str, Any] = {
            "_request_id": id_array,
            "_label": label_array,
            "_feedback_ts": pd.Series(
                np.full(len(ids), stamp.value // 1_000_000, dtype="datetime64[ms]")
            ).dt.tz_localize("UTC"),
        }
        if rows is not None:
            data["_row"] = _row_array(rows, len(ids))
        self._write_part(model, pd.DataFrame(data))
        return len(ids)

    def read(self, model: str, since: datetime | None = None) -> pd.DataFrame:
        """The current label of every key of ``model``, oldest ``_feedback_ts`` first.

        Columns ``_request_id``, ``_label``, ``_feedback_ts`` (and ``_row`` when any call
        gave row positions; missing positions are null). Several labels for one key: the
        latest ``_feedback_ts`` wins (equal times: the one written last). ``since`` (naive =
        UTC) keeps labels with ``_feedback_ts >= since``. An unknown model gives an empty
        frame.
        """
        check_model_name(model)
        since_ts = None if since is None else _utc_ms("since", since)
        tables = []
        for path in self._list_parts(model):
            try:
                tables.append(self._parts.read(path))
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as exc:
                raise StoreError(
                    f"Could not read the feedback log file {path!r}: {exc}",
                    hint="Files written by closedloop are never partial; this one was changed "
                    "or damaged by something else. Move it away to read the rest.",
                ) from exc
        frame = _combine(tables)
        if frame.empty:
            return frame
        keys = ["_request_id", "_row"] if "_row" in frame.columns else ["_request_id"]
        # Files are listed in write order (their names start with the write time), so a
        # stable sort on the feedback time keeps the last written label last among equals.
        frame = frame.sort_values("_feedback_ts", kind="stable")
        frame = frame.drop_duplicates(keys, keep="last")
        if since_ts is not None:
            frame = frame.loc[frame["_feedback_ts"] >= since_ts]
        return frame.reset_index(drop=True)

    # -- internals -------------------------------------------------------------------------

    def _write_part(self, model: str, frame: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pa.Table.from_pandas(frame, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise InvalidInputError(
                f"The labels of one append call must share one type (e.g. all int or all str): "
                f"{exc}"
            ) from exc
        ts_index = table.schema.get_field_index("_feedback_ts")
        table = table.set_column(
            ts_index,
            "_feedback_ts",
            table.column(ts_index).cast(pa.timestamp("ms", tz="UTC")),
        ).replace_schema_metadata(None)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        data = sink.getvalue().to_pybytes()
        folder = f"{self._parts.root}/model={model}"
        try:
            self._parts.publish(folder, data)
        except OSError as exc:
            raise StoreError(
                f"Could not write {frame.shape[0]} feedback rows under {folder!r}: {exc}",
                hint="Nothing was written; call append again once the storage is writable.",
            ) from exc

    def _list_parts(self, model: str) -> list[str]:
        return [p for p in self._parts.entries(f"{self._parts.root}/model={model}") if is_part(p)]


def _sequence(values: object, name: str) -> list[Any]:
    if isinstance(values, str | bytes) or values is None:
        raise InvalidInputError(
            f"The '{name}' parameter must be a sequence with one entry per label. "
            f"Got {type(values).__name__} instead."
        )
    try:
        items: list[Any] = list(values)  # type: ignore[call-overload]
        return items
    except TypeError as exc:
        raise InvalidInputError(
            f"The '{name}' parameter must be a sequence. Got {type(values).__name__} instead."
        ) from exc


def _labels(values: list[Any]) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    missing = pd.isna(pd.Series(array, dtype=object)).to_numpy()
    if bool(missing.any()):
        position = int(np.flatnonzero(missing)[0])
        raise InvalidInputError(
            f"Labels must not be missing (None/NaN). Got {int(missing.sum())} missing, the "
            f"first at position {position}."
        )
    kind = pd.api.types.infer_dtype(array, skipna=False)
    if kind not in _LABEL_KINDS:
        raise InvalidInputError(
            "Labels must be numbers, booleans or strings, all of one kind per call. "
            f"Got {kind} values."
        )
    if kind == "mixed-integer-float":
        return array.astype(np.float64)
    return array


def _row_array(rows: Sequence[int], count: int) -> np.ndarray:
    values = _sequence(rows, "rows")
    if len(values) != count:
        raise InvalidInputError(
            f"rows must have one position per label ({count}). Got {len(values)} instead."
        )
    if any(isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 0 for v in values):
        raise InvalidInputError(
            "rows must hold ints >= 0 (each label's row position within its request)."
        )
    return np.asarray(values, dtype=np.int64)


def _utc_ms(name: str, value: datetime) -> pd.Timestamp:
    if not isinstance(value, datetime):
        raise InvalidInputError(f"The '{name}' parameter must be a datetime. Got {value!r}.")
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.floor("ms")


def _combine(tables: list[Any]) -> pd.DataFrame:
    import pyarrow as pa

    tables = [t for t in tables if t.num_rows]
    if not tables:
        return pd.DataFrame(
            {
                "_request_id": pd.Series([], dtype=object),
                "_label": pd.Series([], dtype=object),
                "_feedback_ts": pd.Series([], dtype="datetime64[ms, UTC]"),
            }
        )
    try:
        combined = pa.concat_tables(tables, promote_options="permissive")
        frame: pd.DataFrame = combined.to_pandas(ignore_metadata=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        # Labels of different types across calls (e.g. ints, then strings): keep each as is.
        frame = pd.concat(
            [t.to_pandas(ignore_metadata=True) for t in tables], ignore_index=True
        ).astype({"_label": object})
    # Files written by hand or by an older version may lack a column or hold another type:
    # read them as they are (the join leaves out and counts labels it cannot use).
    for column in FEEDBACK_COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    if frame["_feedback_ts"].dtype != "datetime64[ms, UTC]":
        stamps = pd.to_datetime(frame["_feedback_ts"], utc=True, errors="coerce", format="mixed")
        frame["_feedback_ts"] = stamps.astype("datetime64[ms, UTC]")
    if "_row" in frame.columns:
        try:
            frame["_row"] = frame["_row"].astype("Int64")
        except (TypeError, ValueError):
            frame["_row"] = frame["_row"].astype(object)
    return frame


__all__ = ["FEEDBACK_COLUMNS", "FeedbackLog"]
