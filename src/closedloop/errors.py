"""One error hierarchy for closedloop.

Every error a user can meet is a :class:`ClosedloopError`. Each class has a stable ``code``
(used in JSON error bodies and ``--json`` CLI output), an HTTP status and a CLI exit code::

    ClosedloopError                       code            HTTP  exit
    ├── ConfigError                       config_error     400     2
    ├── InvalidInputError                 invalid_input    400     2
    │   ├── SchemaError                   schema_error     422     2
    │   ├── TooLargeError                 too_large        413     2
    │   └── UnsupportedMediaTypeError     unsupported_media_type 415 2
    ├── NotFoundError                     not_found        404     2
    ├── ConflictError                     conflict         409     2
    ├── StoreError                        store_error      503     2
    │   └── SchemaVersionError            schema_outdated  503     2
    ├── IntegrityError                    artifact_integrity 500   2
    ├── ModelLoadError                    model_load_error 503     2
    ├── UserCodeError                     user_code_error  500     2
    └── GateRejectedError                 gate_rejected    409     2

The JSON error shape is ``{"error": {"code": ..., "message": ..., "hint": ..., "details": {...}}}``.
Exit code 1 is reserved for "the check found drift" in ``closedloop drift`` and ``monitor``.
"""

from __future__ import annotations

from typing import Any


class ClosedloopError(Exception):
    """Base class of every closedloop error."""

    code = "error"
    http_status = 500
    exit_code = 2

    def __init__(
        self, message: str, *, hint: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        """The one JSON error shape used by the HTTP API and ``--json`` CLI output."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.hint:
            body["hint"] = self.hint
        if self.details:
            body["details"] = self.details
        return {"error": body}


class ConfigError(ClosedloopError):
    """A setting, project file or command-line argument is invalid."""

    code = "config_error"
    http_status = 400


class InvalidInputError(ClosedloopError):
    """An external input (request body, data file, argument) is malformed."""

    code = "invalid_input"
    http_status = 400


class SchemaError(InvalidInputError):
    """Input does not match a version's signature (missing/unknown column, wrong type or shape)."""

    code = "schema_error"
    http_status = 422


class TooLargeError(InvalidInputError):
    """A request is larger than the server takes (body bytes, rows)."""

    code = "too_large"
    http_status = 413


class UnsupportedMediaTypeError(InvalidInputError):
    """A request body's Content-Type is not one the route reads."""

    code = "unsupported_media_type"
    http_status = 415


class NotFoundError(ClosedloopError):
    """A model, version, alias, run or file does not exist."""

    code = "not_found"
    http_status = 404


class ConflictError(ClosedloopError):
    """The request conflicts with the current state (e.g. nothing to roll back to)."""

    code = "conflict"
    http_status = 409


class StoreError(ClosedloopError):
    """The metadata or artifact store cannot be reached or used."""

    code = "store_error"
    http_status = 503


class SchemaVersionError(StoreError):
    """The metadata store's schema is older (or newer) than this closedloop expects."""

    code = "schema_outdated"


class IntegrityError(ClosedloopError):
    """An artifact's content does not match its recorded sha256: it is never loaded."""

    code = "artifact_integrity"
    http_status = 500


class ModelLoadError(ClosedloopError):
    """A version's model could not be loaded or is not usable for prediction."""

    code = "model_load_error"
    http_status = 503


class UserCodeError(ClosedloopError):
    """The user's loader or trainer raised; the traceback is in ``details``."""

    code = "user_code_error"
    http_status = 500


class GateRejectedError(ClosedloopError):
    """A candidate did not pass the promotion gate."""

    code = "gate_rejected"
    http_status = 409


__all__ = [
    "ClosedloopError",
    "ConfigError",
    "ConflictError",
    "GateRejectedError",
    "IntegrityError",
    "InvalidInputError",
    "ModelLoadError",
    "NotFoundError",
    "SchemaError",
    "SchemaVersionError",
    "StoreError",
    "TooLargeError",
    "UnsupportedMediaTypeError",
    "UserCodeError",
]
