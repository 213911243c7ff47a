"""A self-contained HTML page of a backtest: one file that opens offline, in any browser.

:func:`render_backtest` takes the JSON-able result (:meth:`closedloop.services.backtest.Backtest.
to_dict`) and draws the metric per window for each strategy (the policy, never retraining,
retraining on every window), with markers where the policy alerted, retrained and promoted and
a line at the known drift point (simulated data), then the summary and the per-window table.
plotly.js is embedded once from the installed ``plotly`` wheel, as in :mod:`.html`; nothing is
fetched from the network. Every user-provided string is escaped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from closedloop.domain.backtest import STRATEGIES, STRATEGY_LABELS, summary_lines
from closedloop.errors import InvalidInputError
from closedloop.reports.html import _CSS, _esc, _layout, _num, page_scripts

COLORS = {"policy": "#1f77b4", "never": "#7f7f7f", "every_window": "#2ca02c"}
_MARKERS = (  # (name, symbol, colour, which windows)
    ("alert", "x", "#d62728"),
    ("retrain", "triangle-up", "#ff7f0e"),
    ("promotion", "star", "#9467bd"),
)
_TABLE_CSS = "tr.alert td { background: #fff4f4; } tr.promoted td { background: #f3effa; }"


def render_backtest(result: Mapping[str, Any], *, title: str = "Backtest") -> str:
    """The page (a ``str``) for one backtest result dict."""
    for key in ("windows", "summary", "strategies", "data", "initial"):
        if key not in result:
            raise InvalidInputError(f"A backtest result needs the key {key!r}; it is missing.")
    windows = list(result["windows"])
    strategies = [s for s in result["strategies"] if s in STRATEGIES]
    figure = {"id": "metric-0", **_metric_figure(result, windows, strategies)}
    sections = [
        f"<h1>{_esc(title)}</h1>",
        f'<p class="note">{_esc(_intro(result))}</p>',
        '<section id="metric"><h2>Metric per window</h2>',
        '<div class="plot" id="metric-0"></div></section>',
        '<section id="summary"><h2>Summary</h2><ul>',
        *(f"<li>{_esc(line)}</li>" for line in summary_lines(result["summary"], strategies)),
        "</ul></section>",
        '<section id="windows"><h2>Windows</h2>',
        _table(windows, strategies),
        "</section>",
    ]
    return "".join(
        [
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_esc(title)}</title><style>{_CSS}{_TABLE_CSS}</style>\n",
            "</head><body>\n",
            "\n".join(sections),
            "\n",
            page_scripts([figure]),
            "</body></html>\n",
        ]
    )


def _intro(result: Mapping[str, Any]) -> str:
    data, initial = result["data"], result["initial"]
    setup = result.get("setup") or {}
    made = (
        f"Trainer: {setup.get('trainer')} ({setup.get('trainer_source')}). "
        f"Policy: {setup.get('policy_source')}. "
        if setup
        else ""
    )
    return made + (
        f"{data.get('source', 'data')}: {data.get('rows', 0):,} rows, time column "
        f"{data.get('time_column')}, target {data.get('target')}. The first model is trained on "
        f"{initial.get('n_rows', 0):,} rows ({data.get('train_rule')}); windows of "
        f"{data.get('window')}. A model promoted after a window serves from the next one."
    )


def _metric_figure(
    result: Mapping[str, Any], windows: list[Mapping[str, Any]], strategies: Sequence[str]
) -> dict[str, Any]:
    x = [w["start"] for w in windows]
    traces: list[dict[str, Any]] = [
        {
            "type": "scatter",
            "mode": "lines+markers",
            "name": STRATEGY_LABELS[name],
            "x": x,
            "y": [w["metrics"].get(name) for w in windows],
            "line": {"color": COLORS[name]},
            "marker": {"size": 5},
        }
        for name in strategies
    ]
    for name, symbol, color in _MARKERS:
        chosen = [w for w in windows if _marks(w, name)]
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": f"policy {name}",
                "x": [w["start"] for w in chosen],
                "y": [w["metrics"].get("policy") for w in chosen],
                "text": [_hover(w, name) for w in chosen],
                "hoverinfo": "text",
                "marker": {"symbol": symbol, "size": 13, "color": color},
            }
        )
    metric = str(result["summary"].get("metric", "metric"))
    layout = _layout(f"{metric} per window", x_title="window start", y_title=metric, height=420)
    drift_point = result.get("drift_point")
    if drift_point:
        layout["shapes"] = [
            {
                "type": "line",
                "xref": "x",
                "yref": "paper",
                "x0": drift_point,
                "x1": drift_point,
                "y0": 0,
                "y1": 1,
                "line": {"dash": "dot", "color": "#d62728"},
            }
        ]
        layout["annotations"] = [
            {"x": drift_point, "y": 1, "xref": "x", "yref": "paper", "text": "drift point"}
        ]
    return {"data": traces, "layout": layout}


def _marks(window: Mapping[str, Any], kind: str) -> bool:
    retrain = window.get("retrain") or {}
    if kind == "alert":
        return bool(window.get("alert"))
    if kind == "retrain":
        return retrain.get("candidate_version") is not None
    return bool(retrain.get("promoted"))


def _hover(window: Mapping[str, Any], kind: str) -> str:
    retrain = window.get("retrain") or {}
    gate = retrain.get("gate") or {}
    if kind == "alert":
        detail = ", ".join(window["drift"].get("columns") or []) or "joint drift"
    elif kind == "retrain":
        detail = f"candidate v{retrain.get('candidate_version')}: {gate.get('reason', '')}"
    else:
        detail = f"v{retrain.get('candidate_version')} serves from the next window"
    return _esc(f"window {window['index']}: {kind} — {detail}")


_HEAD = ("#", "start", "end", "rows", "versions")
_TAIL = ("drift", "monitor", "triggers", "retrain and gate")


def _table(windows: list[Mapping[str, Any]], strategies: Sequence[str]) -> str:
    head = [*_HEAD, *(STRATEGY_LABELS[s] for s in strategies), *_TAIL]
    rows = ["<table><thead><tr>", *(f"<th>{_esc(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for window in windows:
        rows.append(_row(window, strategies))
    rows.append("</tbody></table>")
    return "".join(rows)


def _row(window: Mapping[str, Any], strategies: Sequence[str]) -> str:
    drift = window["drift"]
    retrain = window.get("retrain")
    classes = " ".join(
        c
        for c, on in (("alert", window.get("alert")), ("promoted", retrain and retrain["promoted"]))
        if on
    )
    verdict = "drift" if drift["drifted"] else ("ok" if drift["checked"] else "not checked")
    if drift.get("columns"):
        verdict += f" ({', '.join(drift['columns'])})"
    cells = [
        str(window["index"]),
        window["start"],
        window["end"],
        str(window["n"]),
        " / ".join(f"v{window['versions'][s]}" for s in strategies),
        *(_num(window["metrics"].get(s)) for s in strategies),
        verdict,
        f"{drift['state']}: {drift['reason']}",
        "; ".join(f"{t['kind']}: {t['detail']}" for t in window["triggers"]),
        _retrain_cell(retrain),
    ]
    body = "".join(f'<td class="text">{_esc(c)}</td>' for c in cells)
    return f'<tr class="{classes}">{body}</tr>'


def _retrain_cell(retrain: Mapping[str, Any] | None) -> str:
    if not retrain:
        return ""
    if retrain.get("candidate_version") is None:
        return f"not run: {retrain.get('note', '')}"
    gate = retrain.get("gate") or {}
    outcome = "promoted" if retrain.get("promoted") else "not promoted"
    reason = gate.get("reason") or retrain.get("note", "")
    return f"v{retrain['candidate_version']} {outcome} ({retrain['n_rows']:,} rows): {reason}"


__all__ = ["render_backtest"]
