"""Self-contained HTML drift reports: one file that opens offline, in any browser.

:func:`render_drift_report` renders one :class:`~closedloop.domain.checks.drift.DriftReport`
with the frames it compared; :func:`render_model_report` renders a model's latest recorded check
with its recent history, loading everything from the workspace.

The page embeds plotly.js once (from the installed ``plotly`` wheel: 4.8 MB, packed with gzip
and base64 to ~2 MB and unpacked by the browser's ``DecompressionStream``) and references nothing
on the network: no CDN script, stylesheet, font or image. Plots carry binned summaries only,
never raw rows, so the page stays small whatever the frames' size (about 1-2 KB per column on top
of plotly.js). Chart titles are left-aligned and the plotly toolbar appears on hover only, at
the top right, so it never covers a title:

* numeric columns: reference and current frequencies on shared, equal-width bins (at most
  :data:`MAX_BINS`, spanning the pooled 0.1-99.9 % quantiles; values beyond fall in the first
  or last bin; integer columns with a small range get one bin per integer), overlaid;
* categorical columns: the frequencies of the :data:`MAX_CATEGORIES` most frequent categories
  (nulls as ``<null>``, the rest summed as one "other" bar), grouped.

Every user-provided string (title, model and column names, categories, series names) is
HTML-escaped in the markup, escaped again for plotly's own markup in the figures, and the
figure JSON cannot close its ``<script>`` element (``<``, ``>``, ``&`` are ``\\u`` escaped).
"""

from __future__ import annotations

import base64
import functools
import gzip
import html
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from closedloop.domain.checks.drift import ColumnDrift, DriftReport
from closedloop.domain.checks.profiles import NULL_LABEL
from closedloop.errors import InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from closedloop.services.workspace import Workspace

MAX_BINS = 40
MAX_CATEGORIES = 30
TAIL_QUANTILE = 0.001
_DIGITS = 6
REFERENCE_COLOR = "#1f77b4"
CURRENT_COLOR = "#d62728"
_CONFIG = {
    "displaylogo": False,
    "responsive": True,
    "showLink": False,
    "displayModeBar": "hover",
    "modeBarButtonsToRemove": ["select2d", "lasso2d", "zoomIn2d", "zoomOut2d", "autoScale2d"],
}

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem;
       color: #222; max-width: 1200px; }
h1 { font-size: 1.6rem; }
h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
.verdict { display: inline-block; padding: .3rem .8rem; border-radius: .3rem; font-weight: 600; }
.verdict.drift { background: #fde2e1; color: #a11; }
.verdict.ok { background: #e1f5e4; color: #175c25; }
dl.summary { display: grid; grid-template-columns: max-content auto; gap: .25rem 1.5rem; }
dl.summary dt { color: #555; } dl.summary dd { margin: 0; }
table { border-collapse: collapse; font-size: .9rem; } th, td { padding: .3rem .6rem;
        border-bottom: 1px solid #eee; text-align: right; } th { background: #f6f6f6; }
td.name, th.name, td.text { text-align: left; } tr.drifted td { background: #fff4f4; }
tr.minor td { background: #fffbea; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 1rem; }
.plot { min-height: 320px; } .note { color: #666; font-size: .9rem; }
"""

_RENDER_JS = """
(function () {
  var figures = JSON.parse(document.getElementById("closedloop-figures").textContent);
  var config = JSON.parse(document.getElementById("closedloop-config").textContent);
  function draw() {
    figures.forEach(function (f) { Plotly.newPlot(f.id, f.data, f.layout, config); });
  }
  if (typeof DecompressionStream === "undefined") {
    document.getElementById("closedloop-nocharts").hidden = false;
    return;
  }
  var packed = atob(document.getElementById("closedloop-plotly").textContent);
  var bytes = new Uint8Array(packed.length);
  for (var i = 0; i < packed.length; i++) { bytes[i] = packed.charCodeAt(i); }
  var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  new Response(stream).text().then(function (source) {
    var script = document.createElement("script");
    script.text = source;
    document.head.appendChild(script);
    draw();
  });
})();
"""


@functools.cache
def packed_plotlyjs() -> str:
    """plotly.js from the installed wheel, gzip-compressed and base64-encoded (~2 MB instead of
    ~4.8 MB); the page unpacks it with the browser's ``DecompressionStream``."""
    from plotly.offline import get_plotlyjs  # type: ignore[import-untyped]

    packed = gzip.compress(get_plotlyjs().encode("utf-8"), compresslevel=9, mtime=0)
    return base64.b64encode(packed).decode("ascii")


def page_scripts(figures: list[dict[str, Any]]) -> str:
    """The end of a report's ``<body>``: plotly.js once (packed), the figures, the renderer,
    and a note shown instead of the charts by browsers without ``DecompressionStream``."""
    return "".join(
        [
            '<p id="closedloop-nocharts" class="note" hidden>This browser cannot unpack the '
            "embedded charts (it needs DecompressionStream: Chrome 80, Firefox 113, Safari 16.4 "
            "or newer); the tables above hold every number.</p>\n",
            '<script type="application/octet-stream" id="closedloop-plotly">',
            packed_plotlyjs(),
            '</script>\n<script type="application/json" id="closedloop-figures">',
            _script_json(figures),
            '</script>\n<script type="application/json" id="closedloop-config">',
            _script_json(_CONFIG),
            f"</script>\n<script>{_RENDER_JS}</script>\n",
        ]
    )


# --------------------------------------------------------------------------------------------
# Escaping and formatting
# --------------------------------------------------------------------------------------------


def _esc(value: object) -> str:
    """Escape for HTML text and attribute values."""
    return html.escape(str(value), quote=True)


def _plot_text(value: object) -> str:
    """Escape for plotly's text rendering (it interprets a subset of HTML tags and entities)."""
    return html.escape(str(value), quote=False)


def _script_json(value: Any) -> str:
    """JSON that is safe inside a ``<script>`` element (no ``</script>``, no ``<!--``)."""
    text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _num(value: float | None, digits: int = 4) -> str:
    """A table cell for a number: ``—`` for missing, else ``digits`` significant digits."""
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.{digits}g}"


def _round(values: np.ndarray) -> list[float]:
    return [float(f"{v:.{_DIGITS}g}") for v in values.tolist()]


# --------------------------------------------------------------------------------------------
# Binned summaries (numpy only; never the raw rows)
# --------------------------------------------------------------------------------------------


def _finite(series: pd.Series[Any]) -> np.ndarray:
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    out: np.ndarray = values[np.isfinite(values)]
    return out


def numeric_histogram(
    reference: pd.Series[Any], current: pd.Series[Any], *, max_bins: int = MAX_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(edges, reference_frequency, current_frequency)`` on shared equal-width bins.

    Frequencies are shares of each side's finite values (each sums to 1). The bins span the
    pooled ``[0.1 %, 99.9 %]`` quantiles and values outside are counted in the first or last bin;
    integer-valued data with a range below ``max_bins`` gets one bin per integer. None when
    neither side has a finite value.
    """
    ref, cur = _finite(reference), _finite(current)
    pooled = np.concatenate([ref, cur])
    if pooled.size == 0:
        return None
    lo, hi = (float(q) for q in np.quantile(pooled, [TAIL_QUANTILE, 1 - TAIL_QUANTILE]))
    if hi <= lo:
        lo, hi = float(pooled.min()), float(pooled.max())
    integral = bool(np.all(np.floor(pooled) == pooled))
    if integral and hi - lo < max_bins:
        lo, hi = math.floor(lo), math.ceil(hi)
        edges = np.arange(lo - 0.5, hi + 1.0, 1.0)
    else:
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        edges = np.linspace(lo, hi, max_bins + 1)
    freqs = []
    for side in (ref, cur):
        counts, _ = np.histogram(np.clip(side, edges[0], edges[-1]), bins=edges)
        freqs.append(counts / side.size if side.size else counts.astype(np.float64))
    return edges, freqs[0], freqs[1]


def _is_null(value: object) -> bool:
    try:
        return bool(pd.isna(value))  # type: ignore[call-overload]
    except (TypeError, ValueError):  # an unhashable or array-like category
        return False


def _category_counts(series: pd.Series[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for key, count in series.value_counts(dropna=False, sort=False).items():
        label = NULL_LABEL if _is_null(key) else str(key)
        counts[label] = counts.get(label, 0) + int(count)
    return counts


def category_frequencies(
    reference: pd.Series[Any], current: pd.Series[Any], *, max_categories: int = MAX_CATEGORIES
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(labels, reference_frequency, current_frequency)`` of the most frequent categories.

    Categories are ordered by their pooled frequency; beyond ``max_categories`` the rest are
    summed into one ``"(k other categories)"`` entry. Nulls are the category ``<null>``.
    """
    ref, cur = _category_counts(reference), _category_counts(current)
    n_ref, n_cur = max(sum(ref.values()), 1), max(sum(cur.values()), 1)
    labels = sorted(
        set(ref) | set(cur), key=lambda k: (-(ref.get(k, 0) / n_ref + cur.get(k, 0) / n_cur), k)
    )
    shown, rest = labels[:max_categories], labels[max_categories:]
    ref_freq = [ref.get(k, 0) / n_ref for k in shown]
    cur_freq = [cur.get(k, 0) / n_cur for k in shown]
    if rest:
        shown = [*shown, f"({len(rest)} other categories)"]
        ref_freq.append(sum(ref.get(k, 0) for k in rest) / n_ref)
        cur_freq.append(sum(cur.get(k, 0) for k in rest) / n_cur)
    return shown, np.asarray(ref_freq), np.asarray(cur_freq)


# --------------------------------------------------------------------------------------------
# Figures (plain plotly JSON: data + layout, no template)
# --------------------------------------------------------------------------------------------


def _layout(title: str, *, x_title: str, y_title: str, **extra: Any) -> dict[str, Any]:
    return {
        "title": {"text": title, "font": {"size": 14}, "x": 0, "xanchor": "left"},
        "xaxis": {"title": {"text": x_title}},
        "yaxis": {"title": {"text": y_title}},
        "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
        "height": 340,
        "legend": {"orientation": "h", "y": -0.2},
        **extra,
    }


def _marked(figure: dict[str, Any], markers: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``figure`` with a dotted vertical line and a label at each marker's ``ts`` (a version
    promoted, rolled back or set in production)."""
    layout = figure["layout"]
    for index, marker in enumerate(markers):
        x = str(marker["ts"])
        layout.setdefault("shapes", []).append(
            {
                "type": "line",
                "xref": "x",
                "yref": "paper",
                "x0": x,
                "x1": x,
                "y0": 0,
                "y1": 1,
                "line": {"dash": "dot", "color": "#6a3d9a", "width": 1.5},
            }
        )
        layout.setdefault("annotations", []).append(
            {
                "x": x,
                "xref": "x",
                "yref": "paper",
                "y": 1,
                "yanchor": "bottom",
                "yshift": 14 * (index % 2),  # moves close in time do not print over each other
                "text": _plot_text(marker["label"]),
                "showarrow": False,
                "font": {"size": 11, "color": "#6a3d9a"},
            }
        )
    return figure


def _distribution_figure(
    column: ColumnDrift, reference: pd.DataFrame, current: pd.DataFrame
) -> dict[str, Any] | None:
    name = column.column
    if name not in reference.columns or name not in current.columns:
        return None
    title = _plot_text(f"{name} ({'drifted' if column.drifted else 'no drift'})")
    labels = {"reference": "reference", "current": "current"}
    if column.kind == "numeric":
        summary = numeric_histogram(reference[name], current[name])
        if summary is None:
            return None
        edges, ref_freq, cur_freq = summary
        width = float(edges[1] - edges[0])
        x0 = float(edges[0]) + width / 2
        data = [
            {
                "type": "bar",
                "name": labels[side],
                "x0": x0,
                "dx": width,
                "width": width,
                "y": _round(freq),
                "opacity": 0.55,
                "marker": {"color": color},
                "hovertemplate": "%{x:.4g}: %{y:.2%}<extra>" + labels[side] + "</extra>",
            }
            for side, freq, color in (
                ("reference", ref_freq, REFERENCE_COLOR),
                ("current", cur_freq, CURRENT_COLOR),
            )
        ]
        layout = _layout(title, x_title=_plot_text(name), y_title="share of rows")
        layout.update(barmode="overlay", bargap=0)
        layout["yaxis"]["tickformat"] = ".0%"
        return {"data": data, "layout": layout}
    cats, ref_freq, cur_freq = category_frequencies(reference[name], current[name])
    x = [_plot_text(c) for c in cats]
    data = [
        {
            "type": "bar",
            "name": labels[side],
            "x": x,
            "y": _round(freq),
            "marker": {"color": color},
            "hovertemplate": "%{x}: %{y:.2%}<extra>" + labels[side] + "</extra>",
        }
        for side, freq, color in (
            ("reference", ref_freq, REFERENCE_COLOR),
            ("current", cur_freq, CURRENT_COLOR),
        )
    ]
    layout = _layout(title, x_title=_plot_text(name), y_title="share of rows", barmode="group")
    layout["yaxis"]["tickformat"] = ".0%"
    layout["xaxis"]["type"] = "category"
    return {"data": data, "layout": layout}


def _history_figures(history: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Share of drifted columns per window and each column's effect size per window."""
    items = []
    for index, item in enumerate(history):
        if not isinstance(item, Mapping) or "ts" not in item:
            raise InvalidInputError(
                f"history[{index}] must be a check dict with a 'ts' (as list_checks returns). "
                f"Got {item!r} instead."
            )
        items.append(item)
    items.sort(key=lambda item: str(item["ts"]))
    xs, share, drifted, hover, alerted = [], [], [], [], []
    effects: dict[str, dict[str, Any]] = {}
    floors: set[float] = set()
    for item in items:
        result = item.get("result") or {}
        columns = result.get("columns") or []
        share_value = result.get("share_drifted")
        if share_value is None:
            share_value = (
                sum(1 for c in columns if c.get("drifted")) / len(columns)
                if columns
                else float(bool(item.get("drifted")))
            )
        x = str(item["ts"])
        xs.append(x)
        share.append(float(share_value))
        drifted.append(bool(item.get("drifted", result.get("drifted", False))))
        alerted.append(bool(item.get("alerted", False)))
        hover.append(
            _plot_text(
                f"check {item.get('number', item.get('check_id', '?'))} · "
                f"version {item.get('version', '?')} · "
                f"{item.get('n_current', result.get('n_current', '?'))} rows"
            )
        )
        for column in columns:
            effect = (
                column.get("statistic") if column.get("kind") == "numeric" else column.get("tvd")
            )
            trace = effects.setdefault(str(column.get("column")), {"x": [], "y": []})
            trace["x"].append(x)
            trace["y"].append(None if effect is None else float(effect))
            if column.get("effect_floor") is not None:
                floors.add(float(column["effect_floor"]))
    share_trace = {
        "type": "scatter",
        "mode": "lines+markers",
        "name": "share of drifted columns",
        "x": xs,
        "y": _round(np.asarray(share)),
        "text": hover,
        "hovertemplate": "%{x}<br>%{y:.0%} drifted<br>%{text}<extra></extra>",
        "marker": {
            "size": [14 if a else 9 for a in alerted],
            "symbol": ["star" if a else "circle" for a in alerted],
            "color": [CURRENT_COLOR if d else "#2ca02c" for d in drifted],
        },
        "line": {"color": "#888"},
    }
    share_layout = _layout(
        "Share of drifted columns per window (red: drift, star: alert)",
        x_title="check time",
        y_title="drifted columns",
    )
    share_layout["yaxis"].update(tickformat=".0%", range=[-0.05, 1.05])
    figures = [{"data": [share_trace], "layout": share_layout}]
    if effects:
        data: list[dict[str, Any]] = [
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": _plot_text(name),
                "x": trace["x"],
                "y": trace["y"],
                "hovertemplate": "%{x}<br>%{y:.4g}<extra>" + _plot_text(name) + "</extra>",
            }
            for name, trace in effects.items()
        ]
        shapes = [
            {
                "type": "line",
                "xref": "paper",
                "x0": 0,
                "x1": 1,
                "y0": floor,
                "y1": floor,
                "line": {"dash": "dash", "color": "#999"},
            }
            for floor in sorted(floors)
        ]
        layout = _layout(
            "Effect size per column per window (KS D or TVD; dashed: floor)",
            x_title="check time",
            y_title="effect size",
            shapes=shapes,
        )
        layout["legend"] = {"orientation": "v"}
        layout["height"] = 420
        figures.append({"data": data, "layout": layout})
    return figures


def _series_values(name: str, key: str, values: object) -> list[float | None]:
    if isinstance(values, str | bytes) or not isinstance(values, Sequence | np.ndarray):
        raise InvalidInputError(
            f"performance[{name!r}]{key} must be a list of numbers. Got {values!r} instead."
        )
    out: list[float | None] = []
    for value in values:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            out.append(None)
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            if not math.isfinite(float(value)):
                raise InvalidInputError(
                    f"performance[{name!r}]{key} must hold finite numbers. Got {value!r}."
                )
            out.append(float(value))
        else:
            raise InvalidInputError(
                f"performance[{name!r}]{key} must hold numbers or None. Got {value!r} instead."
            )
    return out


def _performance_figure(performance: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(performance, Mapping):
        raise InvalidInputError(
            f"performance must be a dict of series. Got {type(performance).__name__} instead."
        )
    metric = performance.get("metric", "performance")
    if not isinstance(metric, str):
        raise InvalidInputError(f"performance['metric'] must be a string. Got {metric!r}.")
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"]
    data: list[dict[str, Any]] = []
    for index, (name, series) in enumerate((k, v) for k, v in performance.items() if k != "metric"):
        color = palette[index % len(palette)]
        if isinstance(series, Mapping):
            y = _series_values(name, "['y']", series.get("y"))
            raw_x = series.get("x")
            if raw_x is None:
                x: list[Any] = list(range(1, len(y) + 1))
            elif isinstance(raw_x, str | bytes) or not isinstance(raw_x, Sequence | np.ndarray):
                raise InvalidInputError(f"performance[{name!r}]['x'] must be a list.")
            else:
                x = [v if isinstance(v, int | float) else _plot_text(v) for v in list(raw_x)]
            if len(x) != len(y):
                raise InvalidInputError(
                    f"performance[{name!r}] has {len(x)} x values and {len(y)} y values."
                )
            band = [series.get("lower"), series.get("upper")]
        else:
            y = _series_values(name, "", series)
            x, band = list(range(1, len(y) + 1)), [None, None]
        label = _plot_text(name)
        if band[0] is not None and band[1] is not None:
            lower = _series_values(name, "['lower']", band[0])
            upper = _series_values(name, "['upper']", band[1])
            if not len(lower) == len(upper) == len(y):
                raise InvalidInputError(
                    f"performance[{name!r}]'s lower and upper must have one value per y."
                )
            data.append(
                {
                    "type": "scatter",
                    "mode": "lines",
                    "x": x + x[::-1],
                    "y": upper + lower[::-1],
                    "fill": "toself",
                    "fillcolor": color,
                    "opacity": 0.15,
                    "line": {"width": 0},
                    "hoverinfo": "skip",
                    "name": f"{label} interval",
                    "showlegend": False,
                }
            )
        data.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": label,
                "x": x,
                "y": y,
                "line": {"color": color},
            }
        )
    if not data:
        raise InvalidInputError("performance must hold at least one series.")
    title = f"{_plot_text(metric)}: estimated vs realised per window"
    timed = all(isinstance(x, str) for trace in data for x in trace["x"])
    x_title = "check time" if timed else "window"
    return {"data": data, "layout": _layout(title, x_title=x_title, y_title=_plot_text(metric))}


# --------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------


def _summary(report: DriftReport, reference: pd.DataFrame, current: pd.DataFrame) -> str:
    from closedloop.domain.checks.verdict import verdict_reasons

    n_columns = len(report.columns)
    if report.drifted:
        labels = [r.label for r in verdict_reasons(report) if r.counted]
        verdict = f'<span class="verdict drift">DRIFT: {_esc(", ".join(labels))}</span>'
    else:
        verdict = f'<span class="verdict ok">No drift in {n_columns} columns</span>'
    drifted = ", ".join(f"<code>{_esc(c)}</code>" for c in report.drifted_columns) or "none"
    items = [
        ("Rows", f"{report.n_reference:,} reference · {report.n_current:,} current"),
        ("Alpha", _esc(_num(report.alpha))),
        ("Correction", _esc(report.correction)),
        ("Method", _esc(getattr(report, "method", "exact"))),
        ("Share drifted", f"{report.share_drifted:.0%}"),
        ("Drifted columns", drifted),
    ]
    if report.minor_columns:
        minor = ", ".join(f"<code>{_esc(c)}</code>" for c in report.minor_columns)
        items.append(
            (
                "Minor columns",
                f'{minor} <span class="note">(significant after the correction but below the '
                "effect floor; not counted)</span>",
            )
        )
    if len(reference) != report.n_reference or len(current) != report.n_current:
        items.append(
            (
                "Plotted rows",
                f"{len(reference):,} reference · {len(current):,} current "
                '<span class="note">(the frames passed for the plots)</span>',
            )
        )
    body = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items)
    return f'<p id="verdict">{verdict}</p><dl class="summary">{body}</dl>'


def _why(report: DriftReport, outputs: Mapping[str, Any] | None) -> str:
    """The "Why" section: each signal that fired, whether it counts in the verdict."""
    from closedloop.domain.checks.verdict import verdict_reasons

    reasons = verdict_reasons(report, outputs)
    counted = [r for r in reasons if r.counted]
    other = [r for r in reasons if not r.counted]
    parts = ['<section id="why"><h2>Why</h2>']
    if counted:
        items = "".join(
            f'<li class="reason counted" data-signal="{r.signal}">{_esc(r.text)}</li>'
            for r in counted
        )
        parts.append(f"<p>The verdict is DRIFT because of:</p><ul>{items}</ul>")
    else:
        parts.append(
            f"<p>No signal counted: no column drifted after the {_esc(report.correction)} "
            "correction"
            + (
                ""
                if report.multivariate is None
                else " and the domain classifier did not tell "
                "current rows from reference rows apart"
            )
            + ".</p>"
        )
    if other:
        items = "".join(
            f'<li class="reason" data-signal="{r.signal}">{_esc(r.text)}</li>' for r in other
        )
        parts.append(f"<p>Also seen (not counted in the verdict):</p><ul>{items}</ul>")
    parts.append("</section>")
    return "".join(parts)


_TABLE_HEAD = (
    "column",
    "kind",
    "test",
    "statistic",
    "p-value",
    "adjusted p-value",
    "threshold (alpha)",
    "effect size",
    "effect floor",
    "PSI",
    "drifted",
    "severity",
    "note",
)


def _table(report: DriftReport) -> str:
    head = "".join(
        f'<th class="name">{h}</th>' if h == "column" else f"<th>{h}</th>" for h in _TABLE_HEAD
    )
    rows = []
    for c in report.columns:
        note = c.note or ""
        if c.unseen_categories:
            unseen = ", ".join(c.unseen_categories)
            note = f"{note} unseen: {unseen}".strip()
        cells = [
            f'<td class="name">{_esc(c.column)}</td>',
            f'<td class="text">{_esc(c.kind)}</td>',
            f'<td class="text">{_esc(c.test)}</td>',
            f"<td>{_num(c.statistic)}</td>",
            f"<td>{_num(c.p_value)}</td>",
            f"<td>{_num(c.p_value_adjusted)}</td>",
            f"<td>{_num(c.threshold)}</td>",
            f"<td>{_num(c.effect_size)}</td>",
            f"<td>{_num(c.effect_floor)}</td>",
            f"<td>{_num(c.psi)}</td>",
            f"<td>{'yes' if c.drifted else 'no'}</td>",
            f'<td class="text">{c.severity}</td>',
            f'<td class="text">{_esc(note)}</td>',
        ]
        css = {"drift": ' class="drifted"', "minor": ' class="minor"', "stable": ""}[c.severity]
        rows.append(f'<tr{css} data-column="{_esc(c.column)}">{"".join(cells)}</tr>')
    return (
        f'<table id="columns"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def render_drift_report(
    report: DriftReport,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    title: str,
    history: list[dict[str, Any]] | None = None,
    performance: dict[str, Any] | None = None,
    notes: Sequence[str] = (),
    outputs: Mapping[str, Any] | None = None,
    markers: Sequence[Mapping[str, Any]] = (),
) -> str:
    """A self-contained HTML page (a ``str``) for one drift report.

    ``reference``/``current`` are the frames the report compared (any size: only binned
    summaries go into the page). ``history`` is a list of check dicts as
    :func:`closedloop.services.monitoring.list_checks` returns them, each with its stored
    ``result`` (:meth:`DriftReport.to_dict`) and optionally ``alerted`` — as
    :func:`closedloop.services.monitors.check_history` returns them; any order.
    ``performance`` plots estimated vs realised performance per window::

        {
            "metric": "roc_auc",                      # optional: the y-axis title
            "estimated": [0.81, 0.80, 0.74],           # a series: numbers (None = gap),
            "realised": {                              # or x/y with an optional interval
                "x": ["2030-01-01T00:00:00+00:00", ...],   # timestamps, labels or numbers
                "y": [0.82, 0.79, None],
                "lower": [...], "upper": [...],        # optional band, one value per y
            },
        }

    Series without ``x`` are plotted against the window number 1..n. ``notes`` are extra
    paragraphs shown under the title (plain text, escaped). ``outputs`` is a monitor check's
    prediction drift and performance: the "Why" section then states those signals too.
    ``markers`` (``{"ts": ISO time, "label": text}``) draw a labelled vertical line on the
    history and performance charts when their x axis is clock time (a version promoted or
    rolled back).
    """
    if not isinstance(report, DriftReport):
        raise InvalidInputError(
            f"The 'report' parameter must be a DriftReport. Got {type(report).__name__} instead."
        )
    for label, frame in (("reference", reference), ("current", current)):
        if not isinstance(frame, pd.DataFrame):
            raise InvalidInputError(
                f"The {label!r} parameter must be a pandas DataFrame. "
                f"Got {type(frame).__name__} instead."
            )
    figures: list[dict[str, Any]] = []
    plot_divs = []
    for index, column in enumerate(report.columns):
        figure = _distribution_figure(column, reference, current)
        name = _esc(column.column)
        if figure is None:
            plot_divs.append(
                f'<div class="plot distribution empty" data-column="{name}">'
                f'<p class="note">No data to plot for <code>{name}</code>.</p></div>'
            )
            continue
        div_id = f"distribution-{index}"
        figures.append({"id": div_id, **figure})
        plot_divs.append(
            f'<div class="plot distribution" id="{div_id}" data-column="{name}"></div>'
        )
    sections = [
        f"<h1>{_esc(title)}</h1>",
        *(f'<p class="note">{_esc(n)}</p>' for n in notes),
        '<section id="summary"><h2>Summary</h2>',
        _summary(report, reference, current),
        "</section>",
        _why(report, outputs),
        '<section id="tests"><h2>Tests per column</h2>',
        _table(report),
        "</section>",
        '<section id="distributions"><h2>Reference vs current distributions</h2>',
        f'<div class="plots">{"".join(plot_divs)}</div></section>',
    ]
    if history:
        history_figures = _history_figures(history)
        divs = []
        for index, figure in enumerate(history_figures):
            div_id = f"history-{index}"
            figures.append({"id": div_id, **_marked(figure, markers)})
            divs.append(f'<div class="plot history" id="{div_id}"></div>')
        sections += [
            '<section id="history"><h2>Drift over recent windows</h2>',
            *divs,
            "</section>",
        ]
    if performance:
        figure = _performance_figure(performance)
        if figure["layout"]["xaxis"]["title"]["text"] == "check time":
            figure = _marked(figure, markers)
        figures.append({"id": "performance-0", **figure})
        sections += [
            '<section id="performance"><h2>Estimated vs realised performance</h2>',
            '<div class="plot performance" id="performance-0"></div></section>',
        ]
    return "".join(
        [
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_esc(title)}</title><style>{_CSS}</style>\n",
            "</head><body>\n",
            "\n".join(sections),
            "\n",
            page_scripts(figures),
            "</body></html>\n",
        ]
    )


def render_model_report(ws: Workspace, model: str, *, checks: int = 20) -> str:
    """The HTML report of ``model``'s latest recorded check, with its last ``checks`` checks.

    The report is the stored result of the latest check (never recomputed). Its plots compare
    the version's reference sample (:func:`closedloop.services.registry.load_reference`) with
    the latest ``n_current`` logged rows of that version
    (:func:`closedloop.services.monitoring.current_window`), read now: if traffic arrived
    since the check, the plotted window is newer than the tested one (the page says so).
    Raises :class:`NotFoundError` when the model has no recorded check.
    """
    from closedloop.services import monitoring, monitors, registry

    history = monitors.check_history(ws, model, limit=checks)
    if not history:
        raise NotFoundError(
            f"Model {model!r} has no recorded drift check.",
            hint=f"Run `closedloop monitor {model}` first.",
        )
    latest = history[0]
    report = DriftReport.from_dict(latest["result"])
    version = int(latest["version"])
    names = [c.column for c in report.columns]
    reference = registry.load_reference(ws, model, version)
    current = monitoring.current_window(ws, model, version, int(latest["n_current"]))
    reference = reference[[c for c in names if c in reference.columns]]
    current = current[[c for c in names if c in current.columns]]
    notes = [
        f"Check {latest.get('number', latest['check_id'])} of {model} (version {version}), "
        f"recorded {latest['ts']}" + (" (raised an alert)." if latest.get("alerted") else "."),
        f"Plots: the version's reference sample vs the last {len(current):,} logged rows of "
        "version "
        f"{version}, read when this page was rendered (newer than the check if traffic arrived "
        "since).",
    ]
    return render_drift_report(
        report,
        reference,
        current,
        title=f"{model} v{version} drift report",
        history=history,
        notes=notes,
        performance=_performance_series(history),
        outputs=latest["result"].get("outputs"),
        markers=_production_moves(ws, model, since=str(history[-1]["ts"])),
    )


def _production_moves(ws: Workspace, model: str, *, since: str) -> list[dict[str, Any]]:
    """The moves of ``model``'s production alias at or after ``since`` (an ISO time), as
    chart markers: "v2 in production", "rollback to v1"."""
    from datetime import datetime

    from closedloop.services import events

    start = datetime.fromisoformat(since)
    moves = events.list_events(ws, model=model, kinds=("alias.set", "alias.rollback"))
    markers = []
    for move in moves:
        if move.payload.get("alias") != "production" or move.ts < start:
            continue
        to = move.payload.get("to_version")
        label = f"rollback to v{to}" if move.kind == "alias.rollback" else f"v{to} in production"
        markers.append({"ts": move.ts.isoformat(), "label": label})
    return markers


def _performance_series(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Estimated (with its band) and realised ROC AUC per check, oldest first."""
    estimated: dict[str, list[Any]] = {"x": [], "y": [], "lower": [], "upper": []}
    realised: dict[str, list[Any]] = {"x": [], "y": []}
    for check in reversed(history):
        performance = (check.get("result") or {}).get("outputs", {}).get("performance", {})
        auc = (performance.get("estimated") or {}).get("metrics", {}).get("roc_auc")
        if isinstance(auc, dict) and auc.get("value") is not None:
            estimated["x"].append(str(check["ts"]))
            estimated["y"].append(auc["value"])
            estimated["lower"].append(auc.get("lower", auc["value"]))
            estimated["upper"].append(auc.get("upper", auc["value"]))
        value = (performance.get("realised") or {}).get("roc_auc")
        if value is not None:
            realised["x"].append(str(check["ts"]))
            realised["y"].append(value)
    series: dict[str, Any] = {"metric": "ROC AUC"}
    if estimated["x"]:
        series["estimated (no labels)"] = estimated
    if realised["x"]:
        series["realised (labels)"] = realised
    return series if len(series) > 1 else None
