"""Self-contained HTML drift reports: parseable, offline, escaped, small whatever the data."""

from __future__ import annotations

import base64
import gzip
import html
import json
import re
from html.parser import HTMLParser
from typing import Any

import numpy as np
import pandas as pd
import pytest
from tests.support import features, fit_model, loans

from closedloop.domain.checks.drift import DriftReport, compare_frames, rank_key
from closedloop.domain.simulate import LoanSimulator
from closedloop.errors import InvalidInputError, NotFoundError
from closedloop.reports import render_drift_report, render_model_report
from closedloop.reports.html import MAX_BINS, category_frequencies, numeric_histogram
from closedloop.services.workspace import Workspace

EVIL = "<script>alert(1)</script>"


class Page(HTMLParser):
    """Collects what the tests look at: scripts, external references, divs, table rows."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.urls: list[str] = []
        self.divs: list[dict[str, str | None]] = []
        self.rows: dict[str, list[str]] = {}
        self.title = ""
        self._script: dict[str, str | None] | None = None
        self._row: str | None = None
        self._cell: list[str] | None = None
        self._in_title = False
        self._text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for key in ("src", "href", "data", "action", "poster"):
            if found.get(key):
                self.urls.append(str(found[key]))
        if tag == "script":
            self._script, self._text = found, []
        elif tag == "div":
            self.divs.append(found)
        elif tag == "tr" and found.get("data-column") is not None:
            self._row = str(found["data-column"])
            self.rows[self._row] = []
        elif tag == "td" and self._row is not None:
            self._cell = []
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._script is not None:
            self.scripts.append((self._script, "".join(self._text)))
            self._script = None
        elif tag == "td" and self._cell is not None and self._row is not None:
            self.rows[self._row].append("".join(self._cell))
            self._cell = None
        elif tag == "tr":
            self._row = None
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            self._text.append(data)
        if self._cell is not None:
            self._cell.append(data)
        if self._in_title:
            self.title += data

    def figures(self) -> list[dict[str, Any]]:
        [text] = [t for a, t in self.scripts if a.get("id") == "closedloop-figures"]
        figures: list[dict[str, Any]] = json.loads(text)
        return figures

    def plot_columns(self) -> list[str]:
        return [
            str(d["data-column"])
            for d in self.divs
            if "distribution" in str(d.get("class")) and "empty" not in str(d.get("class"))
        ]


@pytest.fixture(scope="module")
def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    sim = LoanSimulator(seed=3, drift_at=0)
    reference = loans(2000)[list(LoanSimulator.feature_columns)]
    current = sim.stream(1500)[list(LoanSimulator.feature_columns)]
    return reference, current


@pytest.fixture(scope="module")
def report(frames: tuple[pd.DataFrame, pd.DataFrame]) -> DriftReport:
    return compare_frames(*frames)


def history_of(report: DriftReport, n: int = 4) -> list[dict[str, Any]]:
    """Check dicts as monitors.check_history returns them (newest first)."""
    clean = DriftReport.from_dict({**report.to_dict(), "drifted": False})
    for column in clean.columns:
        column.drifted = False
    return [
        {
            "check_id": n - i,
            "version": 1,
            "ts": f"2030-01-01T{12 + n - i:02d}:00:00+00:00",
            "drifted": i < 2,
            "n_reference": report.n_reference,
            "n_current": report.n_current,
            "result": (report if i < 2 else clean).to_dict(),
            "alerted": i == 0,
        }
        for i in range(n)
    ]


def test_the_page_parses_and_holds_summary_plots_and_table(
    frames: tuple[pd.DataFrame, pd.DataFrame], report: DriftReport
) -> None:
    text = render_drift_report(report, *frames, title="loans v1")
    page = Page(text)
    assert text.startswith("<!DOCTYPE html>")
    assert page.title == "loans v1"
    assert report.drifted and set(report.drifted_columns) == set(LoanSimulator.drifted_columns)
    label = f"{report.n_drifted} of {len(report.columns)} columns"
    assert f'<span class="verdict drift">DRIFT: {label}</span>' in text
    assert f'<li class="reason counted" data-signal="columns">per-column drift in {label}' in text
    assert f"{report.n_reference:,} reference" in text and f"{report.n_current:,} current" in text
    assert "bonferroni" in text

    names = [c.column for c in report.columns]
    assert page.plot_columns() == names
    figures = page.figures()
    assert [f["id"] for f in figures] == [f"distribution-{i}" for i in range(len(names))]
    for column, figure in zip(report.columns, figures, strict=True):
        reference, current = figure["data"]
        assert (reference["name"], current["name"]) == ("reference", "current")
        assert sum(reference["y"]) == pytest.approx(1, abs=1e-4)
        assert sum(current["y"]) == pytest.approx(1, abs=1e-4)
        if column.kind == "numeric":
            assert len(reference["y"]) <= MAX_BINS + 1 and "x" not in reference
        else:
            assert set(reference["x"]) == set(frames[0][column.column].astype(str))

    assert set(page.rows) == set(names)
    for column in report.columns:
        cells = page.rows[column.column]
        assert cells[0] == column.column
        assert cells[3] == f"{column.statistic:.4g}"
        assert cells[4] == f"{column.p_value:.4g}"
        assert cells[5] == f"{column.p_value_adjusted:.4g}"
        assert cells[6] == f"{column.threshold:.4g}"
        assert cells[8] == f"{column.effect_floor:.4g}"
        assert cells[10] == ("yes" if column.drifted else "no")
        assert cells[11] == column.severity
    assert list(page.rows) == [c.column for c in sorted(report.columns, key=rank_key)]


def test_minor_columns_are_marked_in_the_table_and_named_in_the_summary(
    frames: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    report = compare_frames(*frames, ks_floor=0.99, chi2_floor=0.99)  # every change is minor
    assert not report.drifted and report.minor_columns
    text = render_drift_report(report, *frames, title="loans v1")
    page = Page(text)
    for name in report.minor_columns:
        assert page.rows[name][11] == "minor"
        assert f'<tr class="minor" data-column="{name}">' in text
    assert "<dt>Minor columns</dt>" in text
    assert list(page.rows)[: len(report.minor_columns)] == report.minor_columns


def test_the_page_is_self_contained(
    frames: tuple[pd.DataFrame, pd.DataFrame], report: DriftReport
) -> None:
    from plotly.offline import get_plotlyjs

    text = render_drift_report(
        report, *frames, title="t", history=history_of(report), performance={"x": [0.5]}
    )
    page = Page(text)
    assert page.urls == []  # no element has a src/href at all: nothing is fetched
    [packed] = [t for a, t in page.scripts if a.get("id") == "closedloop-plotly"]
    assert gzip.decompress(base64.b64decode(packed)).decode() == get_plotlyjs()
    assert [len(t) > 1_000_000 for a, t in page.scripts].count(True) == 1  # plotly.js, once
    # plotly.js itself mentions URLs (map tiles, its logo link: both unused here); the rest
    # of the page mentions none.
    outside = text.replace(packed, "")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", outside, re.IGNORECASE)
    assert "http://" not in outside and "https://" not in outside
    assert "@import" not in outside and "url(" not in outside


def test_user_strings_are_escaped(frames: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    reference, current = (f.copy() for f in frames)
    for frame in (reference, current):
        frame[EVIL] = frame["income"]
        frame["purpose"] = frame["purpose"].replace("car", '<img src=x onerror="alert(2)">')
    reference[EVIL] = reference[EVIL] * 0.5
    report = compare_frames(reference, current)
    evil_title = "<b>model</b> & </title><script>alert(3)</script>"
    text = render_drift_report(
        report,
        reference,
        current,
        title=evil_title,
        history=history_of(report),
        performance={"metric": EVIL, EVIL: [0.7, 0.8]},
    )
    for raw in (EVIL, "<img", "alert(3)</script>", "<b>model"):
        assert raw not in text
    page = Page(text)
    assert page.title == evil_title
    assert EVIL in page.plot_columns()
    assert page.rows[EVIL][0] == EVIL
    assert len(page.scripts) == 4  # plotly.js (packed), the figures, the config, the renderer
    figures = page.figures()  # the JSON decodes back to plotly-escaped text
    evil_plot = next(f for f in figures if html.escape(EVIL) in json.dumps(f))
    assert evil_plot["layout"]["xaxis"]["title"]["text"] == "&lt;script&gt;alert(1)&lt;/script&gt;"
    purpose = figures[[c.column for c in report.columns].index("purpose")]
    assert '&lt;img src=x onerror="alert(2)"&gt;' in purpose["data"][0]["x"]


def test_history_and_performance_sections(
    frames: tuple[pd.DataFrame, pd.DataFrame], report: DriftReport
) -> None:
    performance = {
        "metric": "roc_auc",
        "estimated": [0.81, 0.80, None, 0.74],
        "realised": {
            "x": ["2030-01-01T13:00:00+00:00", "2030-01-01T14:00:00+00:00"],
            "y": [0.8, 0.7],
            "lower": [0.78, 0.66],
            "upper": [0.82, 0.74],
        },
    }
    page = Page(
        render_drift_report(
            report, *frames, title="t", history=history_of(report), performance=performance
        )
    )
    figures = {f["id"]: f for f in page.figures()}
    share = figures["history-0"]["data"][0]
    assert share["x"] == sorted(share["x"])  # oldest first whatever the input order
    drifted_share = pytest.approx(report.share_drifted)
    assert share["y"] == [0.0, 0.0, drifted_share, drifted_share]
    assert share["marker"]["symbol"] == ["circle", "circle", "circle", "star"]
    effects = figures["history-1"]["data"]
    assert [t["name"] for t in effects] == [c.column for c in report.columns]
    assert all(len(t["y"]) == 4 for t in effects)
    perf = figures["performance-0"]
    assert [t["name"] for t in perf["data"]] == ["estimated", "realised interval", "realised"]
    assert perf["data"][0]["x"] == [1, 2, 3, 4] and perf["data"][0]["y"][2] is None
    assert perf["data"][1]["y"] == [0.82, 0.74, 0.66, 0.78]
    assert perf["layout"]["yaxis"]["title"]["text"] == "roc_auc"

    import plotly.graph_objects as go

    for figure in figures.values():  # plotly's own schema accepts every trace and layout
        go.Figure(data=figure["data"], layout=figure["layout"])

    plain = Page(render_drift_report(report, *frames, title="t"))
    assert [f["id"] for f in plain.figures()] == [f"distribution-{i}" for i in range(8)]


@pytest.mark.parametrize(
    "performance, message",
    [
        ({"a": "0.5"}, "must be a list of numbers"),
        ({"a": [0.5, "x"]}, "must hold numbers or None"),
        ({"a": [float("inf")]}, "finite numbers"),
        ({"a": {"x": [1, 2], "y": [0.5]}}, "2 x values and 1 y values"),
        ({"a": {"y": [0.5], "lower": [0.4], "upper": []}}, "one value per y"),
        ({"metric": "auc"}, "at least one series"),
        ({"metric": 3, "a": [1.0]}, "must be a string"),
    ],
)
def test_bad_performance_is_refused(
    frames: tuple[pd.DataFrame, pd.DataFrame],
    report: DriftReport,
    performance: dict[str, Any],
    message: str,
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        render_drift_report(report, *frames, title="t", performance=performance)


def test_bad_arguments_are_refused(
    frames: tuple[pd.DataFrame, pd.DataFrame], report: DriftReport
) -> None:
    with pytest.raises(InvalidInputError, match="must be a check dict with a 'ts'"):
        render_drift_report(report, *frames, title="t", history=[{"check_id": 1}])
    with pytest.raises(InvalidInputError, match="'report' parameter must be a DriftReport"):
        render_drift_report(report.to_dict(), *frames, title="t")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="'current' parameter must be a pandas"):
        render_drift_report(report, frames[0], [1], title="t")  # type: ignore[arg-type]


def test_a_column_without_data_gets_a_note_not_a_plot(
    frames: tuple[pd.DataFrame, pd.DataFrame], report: DriftReport
) -> None:
    reference, current = frames
    page = Page(render_drift_report(report, reference, current.drop(columns=["age"]), title="t"))
    assert "age" not in page.plot_columns()
    assert len(page.plot_columns()) == len(report.columns) - 1
    assert any(d.get("data-column") == "age" and "empty" in str(d["class"]) for d in page.divs)


def test_the_page_stays_small_for_large_frames() -> None:
    rows, n_numeric = 1_000_000, 23
    base = np.random.default_rng(0).standard_normal(rows, dtype=np.float32)
    steps = np.arange(n_numeric, dtype=np.float32)
    numbers = base[:, None] * (1 + steps / 10) + steps  # one float32 block, no per-column copy
    numbers[:, 1] = np.round(base * 3)  # integer-valued, small range
    numbers[:, 2] = np.exp(base * 3)  # heavy tail
    numbers[::7, 3] = np.nan
    names = [f"x{i}" for i in range(n_numeric)]
    reference = pd.DataFrame(numbers, columns=names, copy=False)
    current = pd.DataFrame(numbers[::-1] + np.float32(0.3), columns=names, copy=False)
    labels = np.array([f"category-{i}" for i in range(200)])
    for frame, seed in ((reference, 1), (current, 2)):
        codes = np.random.default_rng(seed).zipf(1.5, rows) % 200
        frame["city"] = pd.Categorical.from_codes(codes, categories=labels)
        frame["flag"] = codes % 2 == 0
    columns = [
        {"column": n, "kind": "numeric", "test": "ks", "statistic": 0.1, "p_value": 1e-30}
        | {"p_value_adjusted": 1e-29, "drifted": True, "effect_floor": 0.05}
        for n in names
    ] + [
        {"column": n, "kind": "categorical", "test": "chi2", "statistic": 5.0, "p_value": 0.2}
        | {"drifted": False, "tvd": 0.01, "effect_floor": 0.05}
        for n in ("city", "flag")
    ]
    report = DriftReport.from_dict(
        {"drifted": True, "n_reference": rows, "n_current": rows, "columns": columns}
    )
    text = render_drift_report(report, reference, current, title="big", history=None)
    assert len(text.encode()) < 5_000_000
    page = Page(text)
    assert len(page.plot_columns()) == 25
    city = page.figures()[-2]["data"][0]["x"]
    assert len(city) == 31 and city[-1] == "(170 other categories)"


def test_binned_summaries() -> None:
    ref = pd.Series([1, 2, 2, 3, None], dtype="float64")
    cur = pd.Series([3, 3, 4, np.inf])
    edges, rf, cf = numeric_histogram(ref, cur)  # type: ignore[misc]
    assert edges.tolist() == [0.5, 1.5, 2.5, 3.5, 4.5]
    assert rf.tolist() == [0.25, 0.5, 0.25, 0.0]
    assert cf.tolist() == pytest.approx([0, 0, 2 / 3, 1 / 3])
    constant = numeric_histogram(pd.Series([0.5] * 3), pd.Series([0.5]))
    assert constant is not None and constant[1].sum() == 1
    assert numeric_histogram(pd.Series([np.nan]), pd.Series([], dtype=float)) is None
    wide = numeric_histogram(pd.Series(np.linspace(0, 1, 1000)), pd.Series([1e9]))
    assert wide is not None and len(wide[0]) == MAX_BINS + 1 and wide[0][-1] < 2e6
    assert wide[2][-1] == 1.0  # the outlier is counted in the last bin

    labels, rf, cf = category_frequencies(
        pd.Series(["a", "a", "b", None]), pd.Series(["b", "c"]), max_categories=2
    )
    assert labels == ["b", "a", "(2 other categories)"]
    assert rf.tolist() == [0.25, 0.5, 0.25] and cf.tolist() == [0.5, 0, 0.5]


def test_render_model_report_from_the_store(sqlite_ws: Workspace) -> None:
    from closedloop.services import monitoring, registry

    ws = sqlite_ws
    with pytest.raises(NotFoundError, match="no recorded drift check"):
        render_model_report(ws, "loans")
    frame = loans(1500)
    registry.register_version(ws, "loans", fit_model(frame), features(frame))
    registry.set_alias(ws, "loans", "production", 1, actor="test")
    sim = LoanSimulator(seed=5, drift_at=600)
    log = ws.prediction_log()
    try:
        inputs = sim.stream(1200)[list(LoanSimulator.feature_columns)]
        log.append("loans", 1, "r", inputs, np.zeros(1200, dtype=np.int64), None)
    finally:
        log.close()
    first = monitoring.monitor(ws, "loans", window_rows=1200)
    registry.register_version(ws, "loans", fit_model(frame), features(frame))
    registry.set_alias(ws, "loans", "production", 2, actor="test")
    registry.rollback(ws, "loans", actor="test")
    latest = monitoring.monitor(ws, "loans", version=1, window_rows=600)

    text = render_model_report(ws, "loans", checks=5)
    page = Page(text)
    assert page.title == "loans v1 drift report"
    assert "Check 2 of loans (version 1)" in text
    moves = page.figures()[len(latest.report.columns)]["layout"]["annotations"]
    assert [a["text"] for a in moves] == ["v2 in production", "rollback to v1"]
    assert page.plot_columns() == [c.column for c in latest.report.columns]
    figures = {f["id"]: f for f in page.figures()}
    share = figures["history-0"]["data"][0]
    assert len(share["x"]) == 2
    assert share["y"][-1] == pytest.approx(latest.report.share_drifted)
    assert first.id < latest.id
    for column in latest.report.columns:
        assert page.rows[column.column][3] == f"{column.statistic:.4g}"


def test_a_report_with_history_and_performance_is_small_and_embeds_plotly_once(
    frames: tuple[pd.DataFrame, pd.DataFrame], report: DriftReport
) -> None:
    from plotly.offline import get_plotlyjs

    history = history_of(report, n=20)
    performance = {
        "metric": "roc_auc",
        "estimated": {"x": [h["ts"] for h in history], "y": [0.8] * 20},
    }
    text = render_drift_report(report, *frames, title="t", history=history, performance=performance)
    assert len(text.encode()) < 2_500_000  # plotly.js alone is 4.8 MB unpacked
    assert len(text.encode()) < len(get_plotlyjs().encode()) / 2
    page = Page(text)
    assert [a.get("id") for a, _ in page.scripts].count("closedloop-plotly") == 1
    config = json.loads(next(t for a, t in page.scripts if a.get("id") == "closedloop-config"))
    assert config["displayModeBar"] == "hover"  # the toolbar does not sit over the titles
    for figure in page.figures():
        assert figure["layout"]["title"]["xanchor"] == "left"


def test_time_charts_use_clock_time_and_mark_production_moves(
    frames: tuple[pd.DataFrame, pd.DataFrame], report: DriftReport
) -> None:
    history = history_of(report)
    performance = {
        "metric": "roc_auc",
        "estimated": {"x": [h["ts"] for h in history], "y": [0.8, 0.8, 0.7, 0.6]},
    }
    moved = {"ts": "2030-01-01T14:30:00+00:00", "label": "v2 in production"}
    page = Page(
        render_drift_report(
            report, *frames, title="t", history=history, performance=performance, markers=[moved]
        )
    )
    figures = {f["id"]: f for f in page.figures()}
    for name in ("history-0", "history-1", "performance-0"):
        layout = figures[name]["layout"]
        assert layout["xaxis"]["title"]["text"] == "check time"
        [line] = [x for x in layout["shapes"] if x.get("x0") == moved["ts"]]
        assert (line["yref"], line["x1"]) == ("paper", moved["ts"])
        assert [a["text"] for a in layout["annotations"]] == ["v2 in production"]
    share = figures["history-0"]["data"][0]
    assert share["text"][0].startswith("check 1 · version 1")


def test_an_estimate_that_disagrees_with_the_labels_is_said_on_the_page(
    frames: tuple[pd.DataFrame, pd.DataFrame], report: DriftReport
) -> None:
    outputs = {
        "performance": {
            "estimated": {
                "n": 1500,
                "metrics": {"roc_auc": {"value": 0.82, "lower": 0.8, "upper": 0.84}},
            },
            "realised": {"roc_auc": 0.63, "n_labelled": 1500},
        }
    }
    text = render_drift_report(report, *frames, title="t", outputs=outputs)
    why = text[text.index('<section id="why">') :]
    why = why[: why.index("</section>")]
    assert 'data-signal="performance"' in why
    assert "estimated ROC AUC 0.82" in why and "realised 0.63" in why
    assert "concept drift" in why
    assert "concept drift" not in render_drift_report(report, *frames, title="t")
