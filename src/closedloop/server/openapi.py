"""Request-body schemas for the OpenAPI document (the routes parse bodies themselves)."""

from __future__ import annotations

from typing import Any

_SCALAR: dict[str, Any] = {"type": ["number", "integer", "string", "boolean", "null"]}
_ROWS = {"type": "array", "items": {"type": "array", "items": _SCALAR}}
_RECORDS = {"type": "array", "items": {"type": "object", "additionalProperties": _SCALAR}}
_COLUMNS = {"type": "object", "additionalProperties": {"type": "array", "items": _SCALAR}}

_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {
            "type": "string",
            "enum": [
                "BOOL",
                "INT8",
                "INT16",
                "INT32",
                "INT64",
                "UINT8",
                "UINT16",
                "UINT32",
                "UINT64",
                "FP16",
                "FP32",
                "FP64",
                "BYTES",
            ],
        },
        "parameters": {"type": "object"},
        "data": {"type": "array"},
    },
}

INFER_REQUEST: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {"type": "object"},
                        "inputs": {"type": "array", "items": _TENSOR},
                        "outputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "parameters": {"type": "object"},
                                },
                            },
                        },
                    },
                }
            }
        },
    }
}

INVOCATIONS_REQUEST: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "dataframe_split": {
                            "type": "object",
                            "properties": {
                                "columns": {"type": "array", "items": {"type": "string"}},
                                "index": {"type": "array"},
                                "data": _ROWS,
                            },
                        },
                        "dataframe_records": _RECORDS,
                        "instances": {"oneOf": [_RECORDS, _ROWS]},
                        "inputs": {"oneOf": [_COLUMNS, _RECORDS, _ROWS]},
                        "params": {
                            "type": "object",
                            "properties": {
                                "predict_method": {
                                    "type": "string",
                                    "enum": ["predict", "predict_proba"],
                                    "description": "predict_proba: every class's probability "
                                    "per row, in the order of the model's classes",
                                }
                            },
                            "additionalProperties": False,
                        },
                    },
                }
            },
            "text/csv": {"schema": {"type": "string"}},
        },
    }
}
