"""The inference HTTP server: Open Inference Protocol v2 and MLflow scoring over a ModelHost."""

from __future__ import annotations

from closedloop.server.app import PredictionSink, create_app

__all__ = ["PredictionSink", "create_app"]
