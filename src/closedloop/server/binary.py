"""The Open Inference Protocol's binary tensor data extension (what Triton clients send by default).

A request or response body is a JSON header of ``Inference-Header-Content-Length`` bytes followed
by the raw tensors, in order, each announced in its JSON entry as
``"parameters": {"binary_data_size": n}``. Numbers are little-endian; BOOL is one byte per value;
each BYTES element is a 4-byte little-endian length followed by that many bytes.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

from closedloop.errors import InvalidInputError, SchemaError

HEADER = "inference-header-content-length"

NUMPY_TYPES = {
    "BOOL": np.dtype("?"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON part, binary part) of a request body; the whole body is JSON without the header."""
    if header_length is None:
        return body, b""
    try:
        size = int(header_length)
    except ValueError:
        size = -1
    if not 0 <= size <= len(body):
        raise InvalidInputError(
            f"{HEADER} must be an integer between 0 and the body size ({len(body)}). "
            f"Got {header_length!r} instead."
        )
    return body[:size], body[size:]


class BinaryReader:
    """Hands out consecutive tensors from the binary part of a request."""

    def __init__(self, blob: bytes) -> None:
        self.blob = blob
        self.offset = 0

    def take(self, name: str, datatype: str, shape: tuple[int, ...], size: object) -> list[Any]:
        """The ``size`` bytes of input ``name`` decoded as a flat list."""
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise SchemaError(f"input {name!r}: binary_data_size must be a non-negative integer")
        end = self.offset + size
        if end > len(self.blob):
            raise SchemaError(
                f"input {name!r} announces {size} bytes of binary data but only "
                f"{len(self.blob) - self.offset} remain in the request body",
                details={"input": name, "expected": size, "got": len(self.blob) - self.offset},
            )
        chunk = self.blob[self.offset : end]
        self.offset = end
        count = math.prod(shape)
        values = (
            _decode_bytes(name, chunk) if datatype == "BYTES" else _decode(name, datatype, chunk)
        )
        if len(values) != count:
            raise SchemaError(
                f"input {name!r}: shape {list(shape)} holds {count} values but its binary data "
                f"has {len(values)}",
                details={"input": name, "expected": count, "got": len(values)},
            )
        return values

    def check_consumed(self) -> None:
        if self.offset != len(self.blob):
            raise SchemaError(
                f"the request body has {len(self.blob) - self.offset} bytes of binary data that "
                "no input announced with binary_data_size"
            )


def _decode(name: str, datatype: str, chunk: bytes) -> list[Any]:
    dtype = NUMPY_TYPES[datatype]
    if len(chunk) % dtype.itemsize:
        raise SchemaError(
            f"input {name!r}: {len(chunk)} bytes is not a whole number of {datatype} values"
        )
    values: list[Any] = np.frombuffer(chunk, dtype=dtype).tolist()
    return values


def _decode_bytes(name: str, chunk: bytes) -> list[Any]:
    values: list[Any] = []
    offset = 0
    while offset < len(chunk):
        if offset + 4 > len(chunk):
            raise SchemaError(f"input {name!r}: truncated BYTES element length")
        (length,) = struct.unpack_from("<I", chunk, offset)
        offset += 4
        if offset + length > len(chunk):
            raise SchemaError(f"input {name!r}: a BYTES element runs past its binary data")
        raw = chunk[offset : offset + length]
        offset += length
        try:
            values.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise SchemaError(f"input {name!r}: a BYTES element is not valid UTF-8") from None
    return values


def encode(array: np.ndarray[Any, Any], datatype: str) -> bytes:
    """The binary form of an output tensor."""
    if datatype == "BYTES":
        parts = []
        for value in array.ravel().tolist():
            raw = str(value).encode("utf-8")
            parts.append(struct.pack("<I", len(raw)) + raw)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=NUMPY_TYPES[datatype]).tobytes()
