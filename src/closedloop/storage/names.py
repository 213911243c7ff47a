"""The one rule for model names, checked wherever a name enters: registration in the registry,
the prediction and feedback logs, and the server.

A model's name becomes a folder name in the prediction and feedback logs (``model={name}/``), on
local disks and object stores alike, so it is held to what every filesystem accepts: 1 to 128
ASCII letters, digits, ``.``, ``_`` or ``-``, starting with a letter or digit.
"""

from __future__ import annotations

import re

from closedloop.errors import InvalidInputError

MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""Matched in full (``fullmatch``): a trailing newline is not allowed either."""
MODEL_NAME_RULE = "1 to 128 ASCII letters, digits, '.', '_' or '-', starting with a letter or digit"


def is_model_name(name: object) -> bool:
    """True when ``name`` follows the model name rule."""
    return isinstance(name, str) and MODEL_NAME.fullmatch(name) is not None


def check_model_name(name: object) -> None:
    """InvalidInputError naming the rule unless ``name`` follows it."""
    if not is_model_name(name):
        shown = repr(name) if not isinstance(name, str) or len(name) <= 60 else repr(name[:60])
        raise InvalidInputError(
            f"model name {shown} is not allowed: a model name is {MODEL_NAME_RULE}",
            hint="Model names become folder names in the prediction and feedback logs; "
            "choose one like 'churn', 'loans-eu' or 'price_v2'.",
            details={"rule": MODEL_NAME.pattern},
        )


__all__ = ["MODEL_NAME", "MODEL_NAME_RULE", "check_model_name", "is_model_name"]
