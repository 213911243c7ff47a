"""Request bodies in, JSON bytes out: the parsing shared by the OIP and MLflow routes.

Parsers turn a body into ``{column: values}`` and leave type checking to
:meth:`Signature.coerce_columns`, so both protocols validate and coerce identically; ``*_rows``
return the validated :class:`Rows`. An all-numeric body for an all-float signature (the common
case) skips the per-column work: it becomes one float64 matrix after the same checks. Every
malformed body raises an :class:`InvalidInputError` (400) or :class:`SchemaError` (422) that
names what was wrong and what was expected.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np
import orjson
from starlette.responses import Response

from closedloop.domain.model import Rows
from closedloop.domain.signature import Signature
from closedloop.errors import InvalidInputError, SchemaError, UnsupportedMediaTypeError
from closedloop.server.binary import BinaryReader

Columns = dict[str, Sequence[object] | np.ndarray[Any, Any]]

MLFLOW_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
OIP_DATATYPES = frozenset(
    {"BOOL", "FP16", "FP32", "FP64", "BYTES"}
    | {f"INT{b}" for b in (8, 16, 32, 64)}
    | {f"UINT{b}" for b in (8, 16, 32, 64)}
)


def _default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps(content: object) -> bytes:
    """orjson with numpy support (arrays and scalars, including object arrays).

    Values orjson cannot represent (integers beyond 64 bits echoed from a request) fall back to
    the standard library, so an error about a huge number is still a JSON answer.
    """
    try:
        return orjson.dumps(content, default=_default, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:
        import json

        return json.dumps(content, default=lambda v: str(_plain(v))).encode()


def _plain(value: object) -> object:
    try:
        return _default(value)
    except TypeError:
        return value


class OrjsonResponse(Response):
    """A JSON response rendered with :func:`dumps`."""

    media_type = "application/json"

    def render(self, content: object) -> bytes:
        return dumps(content)


def parse_json(body: bytes) -> Any:
    """Decode a JSON body; 400 naming the problem when it is empty or malformed."""
    if not body.strip():
        raise InvalidInputError("the request body is empty; expected a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(
            f"the request body is not valid JSON: {exc}",
            hint="Send a JSON object with Content-Type: application/json.",
        ) from exc


JSON = "application/json"
CSV = "text/csv"
OCTET_STREAM = "application/octet-stream"


def media_type(content_type: str | None) -> str | None:
    """The media type of a ``Content-Type`` header, without parameters (None when absent)."""
    if not content_type:
        return None
    return content_type.split(";", 1)[0].strip().lower() or None


def require_media(content_type: str | None, accepted: Sequence[str]) -> None:
    """415 unless the body's ``Content-Type`` is one of ``accepted`` (an absent one is taken as
    the first: clients that send raw JSON keep working)."""
    media = media_type(content_type)
    if media is not None and media not in accepted:
        raise UnsupportedMediaTypeError(
            f"unsupported Content-Type {media!r}; this route reads {' or '.join(accepted)}",
            hint=f"Send the body with Content-Type: {accepted[0]}.",
            details={"accepted": list(accepted), "got": media},
        )


def _type_name(value: object) -> str:
    return {dict: "object", list: "array", str: "string", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def require_object(doc: object, expected: str) -> dict[str, Any]:
    """Return ``doc`` if it is a JSON object, else 400 saying what was expected."""
    if not isinstance(doc, dict):
        raise InvalidInputError(
            f"the request body must be a JSON object {expected}, got a JSON {_type_name(doc)}"
        )
    return doc


# --- tabular shapes shared by both protocols --------------------------------------------------


def rows_to_columns(rows: object, names: Sequence[str], what: str) -> Columns:
    """Columns from a list of equal-length rows whose values follow ``names``."""
    if not isinstance(rows, list):
        raise InvalidInputError(f"{what} must be an array of rows, got a JSON {_type_name(rows)}")
    width = len(names)
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != width:
            got = f"{len(row)} values" if isinstance(row, list) else f"a JSON {_type_name(row)}"
            raise SchemaError(
                f"{what}: row {i} has {got}; expected {width} values for columns {list(names)}",
                details={"row": i, "expected": list(names), "got": got},
            )
    if not rows:
        return {name: [] for name in names}
    return dict(zip(names, zip(*rows, strict=True), strict=True))


def records_to_columns(records: list[Any], what: str) -> Columns:
    """Columns from a list of ``{column: value}`` records (a key absent from a record is null)."""
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise InvalidInputError(
                f"{what}: record {i} must be a JSON object, got a JSON {_type_name(record)}"
            )
    if not records:
        raise SchemaError(f"{what} is empty; send at least one row")
    keys = list(records[0])
    if all(len(r) == len(keys) and r.keys() == records[0].keys() for r in records):
        if not keys:
            return {}  # no columns at all: the signature check names the missing ones
        if len(keys) == 1:
            return {keys[0]: [r[keys[0]] for r in records]}
        return dict(zip(keys, zip(*map(itemgetter(*keys), records), strict=True), strict=True))
    union = list(dict.fromkeys(chain.from_iterable(records)))
    return {key: [r.get(key) for r in records] for key in union}


def _list_rows(values: list[Any], signature: Signature, what: str) -> Columns:
    """``instances``/``inputs`` given as a list: records, positional rows or one column."""
    if not values:
        raise SchemaError(f"{what} is empty; send at least one row")
    if isinstance(values[0], dict):
        return records_to_columns(values, what)
    if isinstance(values[0], list):
        return rows_to_columns(values, signature.names(), what)
    if len(signature.columns) == 1:
        return {signature.columns[0].name: values}
    raise SchemaError(
        f"{what} must be a list of records or rows for columns {signature.names()}",
        details={"expected": signature.names()},
    )


# --- MLflow scoring protocol ------------------------------------------------------------------


def validated_rows(columns: Columns, signature: Signature) -> Rows:
    """Coerce parsed request columns through the signature (422 naming any bad column)."""
    coerced = signature.coerce_columns(columns)
    return Rows.from_columns(signature.names(), list(coerced.values()))


def numeric_matrix(values: object, names: Sequence[str], signature: Signature) -> Rows | None:
    """The rows of an all-float signature as one float64 matrix, or None to take the general path.

    ``values`` are rows of JSON numbers for the columns ``names``. Only a body that the general
    path would accept unchanged qualifies: every column is a float column, the names are the
    signature's in order, and every value is an int or float (no null, string or boolean —
    ``numpy`` would silently turn ``true`` into 1.0, so the caller rules booleans out first).
    """
    if (
        not isinstance(values, list)
        or not values
        or list(names) != signature.names()
        or not all(c.dtype == "float" for c in signature.columns)
    ):
        return None
    try:
        matrix = np.array(values)
    except (ValueError, TypeError, OverflowError):
        return None
    if matrix.ndim != 2 or matrix.shape[1] != len(names) or matrix.dtype.kind not in "fiu":
        return None
    return Rows.from_matrix(names, matrix.astype(np.float64, copy=False))


def _has_booleans(body: bytes) -> bool:
    return b"true" in body or b"false" in body


def mlflow_rows(body: bytes, content_type: str | None, signature: Signature) -> Rows:
    """Validated rows from an ``/invocations`` body (JSON in any MLflow format, or CSV)."""
    return mlflow_request(body, content_type, signature)[0]


def mlflow_request(
    body: bytes, content_type: str | None, signature: Signature
) -> tuple[Rows, dict[str, Any]]:
    """Validated rows and the ``params`` object (empty when absent) of an ``/invocations``
    body."""
    parsed, params = _mlflow_parse(body, content_type, signature)
    if isinstance(parsed, Rows):
        return parsed, params
    return validated_rows(parsed, signature), params


def mlflow_columns(body: bytes, content_type: str | None, signature: Signature) -> Columns:
    """Columns from an ``/invocations`` body (JSON in any MLflow format, or CSV)."""
    parsed, _ = _mlflow_parse(body, content_type, signature, fast=False)
    assert not isinstance(parsed, Rows)
    return parsed


def _mlflow_parse(
    body: bytes, content_type: str | None, signature: Signature, *, fast: bool = True
) -> tuple[Columns | Rows, dict[str, Any]]:
    require_media(content_type, (JSON, CSV))
    if media_type(content_type) == CSV:
        return csv_columns(body, signature), {}
    doc = require_object(parse_json(body), f"with exactly one of the keys {list(MLFLOW_KEYS)}")
    present = [key for key in MLFLOW_KEYS if key in doc]
    unknown = sorted(set(doc) - set(MLFLOW_KEYS) - {"params"})
    if len(present) != 1 or unknown:
        found = present + unknown
        raise InvalidInputError(
            f"the JSON body must have exactly one of the keys {list(MLFLOW_KEYS)} "
            f"(plus optional 'params'); found {found or 'none'}",
            details={"accepted": list(MLFLOW_KEYS), "found": found},
        )
    params = doc.get("params", {})
    if not isinstance(params, dict):
        raise InvalidInputError("'params' must be a JSON object")
    return _mlflow_data(body, doc, present[0], signature, fast=fast), params


def _mlflow_data(
    body: bytes, doc: dict[str, Any], key: str, signature: Signature, *, fast: bool
) -> Columns | Rows:
    value = doc[key]
    if key == "dataframe_split":
        split = require_object(value, "under 'dataframe_split' with 'columns' and 'data'")
        names = split.get("columns", signature.names())
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InvalidInputError("'dataframe_split.columns' must be an array of strings")
        if fast and not _has_booleans(body):
            matrix = numeric_matrix(split.get("data"), names, signature)
            if matrix is not None:
                return matrix
        return rows_to_columns(split.get("data"), names, "'dataframe_split.data'")
    if key == "dataframe_records":
        if not isinstance(value, list):
            raise InvalidInputError(
                f"'dataframe_records' must be an array of objects, got a JSON {_type_name(value)}"
            )
        return records_to_columns(value, "'dataframe_records'")
    if key == "inputs" and isinstance(value, dict):
        return value
    if not isinstance(value, list):
        raise InvalidInputError(
            f"'{key}' must be an array of records or rows"
            + (" or an object of columns" if key == "inputs" else "")
            + f", got a JSON {_type_name(value)}"
        )
    return _list_rows(value, signature, f"'{key}'")


_ARROW_TYPES = {"float": "float64", "integer": "int64", "boolean": "bool_", "string": "string"}


def csv_columns(body: bytes, signature: Signature) -> Columns:
    """Columns from a CSV body with a header row, parsed with the signature's types."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if not body.strip():
        raise InvalidInputError("the CSV body is empty; expected a header row and data rows")
    types = {c.name: getattr(pa, _ARROW_TYPES[c.dtype])() for c in signature.columns}
    options = pacsv.ConvertOptions(column_types=types, strings_can_be_null=True)
    try:
        table = pacsv.read_csv(io.BytesIO(body), convert_options=options)
    except pa.ArrowInvalid as exc:
        message = str(exc)
        details: dict[str, Any] = {}
        match = re.search(r"column #(\d+)", message)
        if match:
            header = body.split(b"\n", 1)[0].decode("utf-8", "replace").strip().split(",")
            index = int(match.group(1))
            if index < len(header):
                details["column"] = header[index]
                message = f"column {header[index]!r}: {message}"
        raise SchemaError(f"the CSV body could not be parsed: {message}", details=details) from exc
    names = table.column_names
    if len(set(names)) != len(names):
        raise SchemaError(f"the CSV header repeats column names: {names}")
    return {n: table.column(n).to_numpy(zero_copy_only=False) for n in names}


# --- Open Inference Protocol v2 ---------------------------------------------------------------


@dataclass(frozen=True)
class Tensor:
    """One validated OIP input tensor with its data flattened."""

    name: str
    shape: tuple[int, ...]
    datatype: str
    data: list[Any]


def oip_tensors(doc: object, binary: bytes = b"") -> list[Tensor]:
    """Validate the ``inputs`` of an OIP inference request (``binary``: the body's binary part)."""
    request = require_object(doc, "with an 'inputs' array of tensors")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInputError(
            "'inputs' must be a non-empty array of tensors {name, shape, datatype, data}"
        )
    reader = BinaryReader(binary)
    tensors = [_tensor(i, raw, reader) for i, raw in enumerate(inputs)]
    reader.check_consumed()
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise SchemaError(f"input tensor names repeat: {names}", details={"inputs": names})
    return tensors


def _tensor(index: int, raw: object, reader: BinaryReader) -> Tensor:
    if not isinstance(raw, dict):
        raise InvalidInputError(f"inputs[{index}] must be a JSON object, got {_type_name(raw)}")
    name, shape, datatype, data = (raw.get(k) for k in ("name", "shape", "datatype", "data"))
    where = f"input {name!r}" if isinstance(name, str) else f"inputs[{index}]"
    if not isinstance(name, str):
        raise InvalidInputError(f"{where} needs a string 'name'")
    if not (
        isinstance(shape, list)
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise SchemaError(f"{where}: 'shape' must be an array of non-negative integers")
    if not isinstance(datatype, str) or datatype not in OIP_DATATYPES:
        raise SchemaError(
            f"{where}: unknown datatype {datatype!r}; expected one of {sorted(OIP_DATATYPES)}",
            details={"input": name, "expected": sorted(OIP_DATATYPES), "got": datatype},
        )
    parameters = raw.get("parameters")
    if data is None and isinstance(parameters, dict) and "binary_data_size" in parameters:
        data = reader.take(name, datatype, tuple(shape), parameters["binary_data_size"])
    if not isinstance(data, list):
        raise SchemaError(f"{where}: 'data' must be an array, got a JSON {_type_name(data)}")
    flat = data
    while flat and isinstance(flat[0], list):
        try:
            flat = list(chain.from_iterable(flat))
        except TypeError:
            raise SchemaError(f"{where}: 'data' mixes nested arrays and scalars") from None
    size = math.prod(shape)
    if len(flat) != size:
        raise SchemaError(
            f"{where}: shape {shape} holds {size} values but 'data' has {len(flat)}",
            details={"input": name, "expected": size, "got": len(flat)},
        )
    return Tensor(name, tuple(shape), datatype, flat)


def oip_rows(tensors: Sequence[Tensor], signature: Signature) -> Rows:
    """Validated rows from OIP tensors."""
    return validated_rows(oip_columns(tensors, signature), signature)


def oip_columns(tensors: Sequence[Tensor], signature: Signature) -> Columns:
    """Columns from OIP tensors: one [n] or [n, 1] tensor per column, or one [n, k] tensor."""
    names = signature.names()
    first = tensors[0]
    if len(tensors) == 1 and len(first.shape) == 2 and (first.shape[1] > 1 or len(names) == 1):
        width = first.shape[1]
        if width != len(names):
            raise SchemaError(
                f"input {first.name!r} has {width} columns; the model expects {len(names)}: "
                f"{names}",
                details={"input": first.name, "expected": names, "got": width},
            )
        return {name: first.data[j::width] for j, name in enumerate(names)}
    for tensor in tensors:
        if not (len(tensor.shape) == 1 or (len(tensor.shape) == 2 and tensor.shape[1] == 1)):
            raise SchemaError(
                f"input {tensor.name!r} has shape {list(tensor.shape)}; a column tensor must "
                "have shape [n] or [n, 1] (or send one [n, k] tensor in signature order)",
                details={"input": tensor.name, "expected": "[n] or [n, 1]"},
            )
    return {tensor.name: tensor.data for tensor in tensors}


def oip_datatype(array: np.ndarray[Any, Any]) -> str:
    """The OIP datatype naming a numpy array's dtype."""
    kind, size = array.dtype.kind, array.dtype.itemsize * 8
    if kind == "b":
        return "BOOL"
    if kind in "iu":
        return f"{'U' if kind == 'u' else ''}INT{size}"
    if kind == "f" and size in (16, 32, 64):
        return f"FP{size}"
    return "BYTES"


def signature_tensors(signature: Signature) -> list[dict[str, Any]]:
    """OIP metadata ``inputs`` for a signature."""
    datatypes = {"float": "FP64", "integer": "INT64", "boolean": "BOOL", "string": "BYTES"}
    return [
        {"name": c.name, "datatype": datatypes[c.dtype], "shape": [-1]} for c in signature.columns
    ]


def output_tensor(name: str, values: np.ndarray[Any, Any]) -> dict[str, Any]:
    """An OIP output tensor (flattened row-major data)."""
    array = np.asarray(values)
    return {
        "name": name,
        "shape": list(array.shape),
        "datatype": oip_datatype(array),
        "data": array.ravel().tolist(),
    }
