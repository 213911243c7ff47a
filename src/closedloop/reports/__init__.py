"""Reports for people: self-contained HTML pages of drift checks (an interface layer).

``render_drift_report`` renders one drift report with the frames it compared;
``render_model_report`` renders a model's latest recorded check and its recent history.
"""

from __future__ import annotations

from closedloop.reports.html import render_drift_report, render_model_report

__all__ = ["render_drift_report", "render_model_report"]
