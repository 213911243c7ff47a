"""The inference HTTP server: Open Inference Protocol v2 and MLflow scoring over a ModelHost."""

from __future__ import annotations

from closedloop.server.app import create_app
from closedloop.server.context import PredictionSink

__all__ = ["PredictionSink", "create_app"]
