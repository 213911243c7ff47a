"""Reading user data files (reference windows, current windows, training data) into pandas.

:func:`read_table` accepts Parquet (``.parquet``, ``.pq``, read with pyarrow) and CSV (``.csv``,
read with pandas). Every failure is an :class:`~closedloop.errors.InvalidInputError` naming the
path and the reason: missing file, unknown extension, unreadable or corrupt content, an empty
file, or requested columns that the file does not have.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from closedloop.errors import InvalidInputError, SchemaError

PARQUET_EXTENSIONS = (".parquet", ".pq")
CSV_EXTENSIONS = (".csv",)
ACCEPTED_EXTENSIONS = PARQUET_EXTENSIONS + CSV_EXTENSIONS


def read_table(path: str | Path, *, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read a Parquet or CSV file into a DataFrame, optionally only ``columns`` (in that order).

    Raises :class:`InvalidInputError` (its subclass :class:`SchemaError` for missing columns)
    with the path and the reason when the file cannot be used.
    """
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix not in ACCEPTED_EXTENSIONS:
        raise InvalidInputError(
            f"Cannot read {str(file)!r}: unknown file extension {file.suffix or '(none)'!r}; "
            f"expected one of {list(ACCEPTED_EXTENSIONS)}.",
            details={"path": str(file)},
        )
    if not file.is_file():
        reason = "it is a directory" if file.is_dir() else "the file does not exist"
        raise InvalidInputError(
            f"Cannot read {str(file)!r}: {reason}.",
            hint="Check the path (relative paths are resolved from the working directory).",
            details={"path": str(file)},
        )
    if columns is not None and isinstance(columns, str):
        raise InvalidInputError(
            f"columns must be a list of column names. Got the string {columns!r} instead."
        )
    if file.stat().st_size == 0:
        raise InvalidInputError(
            f"Cannot read {str(file)!r}: the file is empty.", details={"path": str(file)}
        )
    wanted = None if columns is None else list(columns)
    if suffix in PARQUET_EXTENSIONS:
        frame = _read_parquet(file, wanted)
    else:
        frame = _read_csv(file)
        if wanted is not None:
            _check_columns(file, [str(c) for c in frame.columns], wanted)
            frame = frame[wanted]
    if len(frame.columns) == 0:
        raise InvalidInputError(
            f"Cannot read {str(file)!r}: the file has no columns.", details={"path": str(file)}
        )
    return frame


def _check_columns(file: Path, available: list[str], wanted: list[str]) -> None:
    missing = [name for name in wanted if name not in available]
    if missing:
        raise SchemaError(
            f"Cannot read {str(file)!r}: it has no column(s) {missing}; "
            f"its columns are {available}.",
            details={"path": str(file), "missing": missing},
        )


def _read_parquet(file: Path, wanted: list[str] | None) -> pd.DataFrame:
    try:
        if wanted is not None:  # only the requested columns are read from disk
            _check_columns(file, list(pq.read_schema(file).names), wanted)
        table = pq.read_table(file, columns=wanted)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InvalidInputError(
            f"Cannot read {str(file)!r}: not a readable Parquet file ({exc}).",
            details={"path": str(file)},
        ) from exc
    frame: pd.DataFrame = table.to_pandas()
    return frame


def _read_csv(file: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(file)
    except pd.errors.EmptyDataError as exc:
        raise InvalidInputError(
            f"Cannot read {str(file)!r}: the CSV file has no header or data.",
            details={"path": str(file)},
        ) from exc
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise InvalidInputError(
            f"Cannot read {str(file)!r}: not a readable CSV file ({exc}).",
            details={"path": str(file)},
        ) from exc
