"""False alarms and detection of ``assess()`` at its defaults, beside Evidently's defaults.

    .venv/bin/python benchmarks/drift_quality.py --part false-alarms --json
    .venv/bin/python benchmarks/drift_quality.py --part detection --json
    .venv/bin/python benchmarks/drift_quality.py --part quality --no-evidently --json

``assess()`` (per-column KS / chi-square with Bonferroni and effect floors, plus the domain
classifier; data quality reported, not counted) is what ``closedloop drift`` and ``closedloop
monitor`` run, so that is what is measured. Data: ``benchmarks/_data.py`` (25 columns: 20
numeric of mixed shapes + 5 string columns with 4-50 categories).

* False alarms: seeded no-drift reference/current pairs of equal size at 500, 5,000, 50,000 and
  1,000,000 rows (``--windows`` pairs at 500 and 5,000, ``--windows-50k``, ``--windows-1m``). A
  pair alarms when the dataset verdict is drifted; alarms are attributed to the per-column tests
  (with the flagged columns) and to the domain classifier. 95% Clopper-Pearson upper bounds are
  given beside the rates.
* Detection: a 50,000-row reference and ``--streams`` streams of 10 current windows of 5,000
  rows each (every window is assessed, no early stop): a mean shift of 0.1, 0.2 or 0.5 sd in
  ``n00``; 15% of ``c0``'s mass moved; a correlation break (``n00``/``n05`` correlated at
  rho = 0.8 in the reference, independent in the windows, marginals unchanged). Reported: the
  share of windows alarmed (dataset verdict), attributed to the shifted column(s) and to the
  classifier; the delay (1-based index of the first alarmed window of a stream).
* Quality (reported, not counted): every false-alarm window also records whether the data-quality
  section flagged (``quality_flag_not_counted``, with the reasons) and whether the former rule
  (any out-of-range / unseen share >= 1%, no test) would have (``quality_flag_old_rule``),
  from the same report. ``--part quality``: ``--quality-windows`` clean pairs per size (500,
  5,000, 50,000 of ``--sizes``) with one planted problem each (a column 30% missing, 5% of a
  column's values far beyond the reference range, text in a numeric column, a new category
  holding 5% of the rows): the share of windows whose quality section flags that column.
* Alternative settings: the per-column verdict at another ``alpha`` and the classifier verdict
  at another margin ``max(0.02, c / sqrt(n))`` follow exactly from what every report holds
  (Bonferroni-adjusted p-values, effect sizes, the AUC's ``ci_low`` and ``n``), so each run
  also reports the alarm rates for ``alpha`` in ``ALT_ALPHAS`` x ``c`` in ``ALT_COEFS``.
  ``--alpha`` and ``--margin-coef`` run ``assess()`` itself with a setting (the margin by
  replacing ``assessment._multivariate`` in this process) to verify one of them.
* Evidently (``--evidently-python``, default ``.venv-evidently/bin/python``; ``--no-evidently``
  to skip): ``Report([DataDriftPreset()])`` at its defaults on the same windows (the first
  ``--evidently-windows`` / ``--evidently-windows-50k`` pairs per size, none at 1,000,000 rows;
  the first ``--evidently-streams`` streams of each detection scenario), in one persistent
  worker process fed parquet files through a temp dir, running beside closedloop's loop.
  Dataset drift = share of drifted columns >= 0.5 (its default); "any column" = at least one
  column flagged. ``--evidently-budget`` seconds bound the worker; pairs not reached are
  counted as skipped.
"""

from __future__ import annotations

import argparse
import json
import math
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _data

from closedloop.domain.checks import assessment
from closedloop.domain.checks.assessment import assess
from closedloop.domain.checks.drift import DriftReport
from closedloop.domain.checks.quality import data_quality

ROOT = Path(__file__).resolve().parent.parent
ALT_ALPHAS = (0.05, 0.01, 0.005)
ALT_COEFS = (1.5, 2.0, 2.5, 3.0)
CURRENT = (0.01, 1.5)  # assess() defaults: alpha, margin coefficient
OLD_QUALITY_FLOOR = 0.01  # the former rule: flag any out-of-range / unseen share >= 1%
QUALITY_PROBLEMS = (
    "n03 30% missing",
    "n07 5% far out of range",
    "n07 text values",
    "c4 new category 5%",
)
DETECTION_REFERENCE_ROWS = 50_000
DETECTION_WINDOW_ROWS = 5_000
WINDOWS_PER_STREAM = 10
CORRELATED = ("n00", "n05")  # both N(0, 1) columns in _data.make_frame

# --------------------------------------------------------------------------------------------
# Evidently worker (runs in the Evidently venv; one job per stdin line, one JSON line out)
# --------------------------------------------------------------------------------------------

WORKER = r"""
import json, math, sys, time, warnings
warnings.filterwarnings("ignore")
import pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset

budget = float(sys.argv[1])
start = time.monotonic()
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    job = json.loads(line)
    if job.get("stop"):
        break
    if time.monotonic() - start > budget:
        print(json.dumps({"id": job["id"], "skipped": True}), flush=True)
        continue
    ref = pd.read_parquet(job["ref"])
    cur = pd.read_parquet(job["cur"])
    t0 = time.perf_counter()
    body = Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref).dict()
    seconds = time.perf_counter() - t0
    count = share = None
    flagged, methods = [], set()
    for metric in body["metrics"]:
        config = metric["config"]
        kind = config["type"]
        if kind.endswith("DriftedColumnsCount"):
            count, share = metric["value"]["count"], metric["value"]["share"]
        elif kind.endswith("ValueDrift"):
            method, threshold, value = config["method"], config["threshold"], metric["value"]
            methods.add(method)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            if method.startswith("K-S"):  # ks_stattest: p <= threshold
                hit = value <= threshold
            elif "p_value" in method:  # chi-square, Z: p < threshold
                hit = value < threshold
            else:  # Wasserstein (normed), Jensen-Shannon: distance >= threshold
                hit = value >= threshold
            if hit:
                flagged.append(config["column"])
    print(json.dumps({
        "id": job["id"], "count": count, "share": share, "flagged": flagged,
        "methods": sorted(methods), "seconds": seconds,
    }), flush=True)
"""


class Evidently:
    """A persistent Evidently worker; jobs are queued and run while the caller keeps working."""

    def __init__(self, python: str, folder: Path, budget: float) -> None:
        self.folder = folder
        script = folder / "evidently_worker.py"
        script.write_text(WORKER)
        self._stderr = (folder / "worker.stderr").open("w")
        self.proc = subprocess.Popen(
            [python, str(script), str(budget)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self.results: dict[str, dict[str, Any]] = {}
        self._jobs: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._feeder = threading.Thread(target=self._feed, daemon=True)
        self._reader.start()
        self._feeder.start()
        self._count = 0

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            body = json.loads(line)
            if "id" in body:
                self.results[body["id"]] = body

    def _feed(self) -> None:
        assert self.proc.stdin is not None
        while True:
            line = self._jobs.get()
            if line is None:
                self.proc.stdin.close()
                return
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()

    def write(self, frame: pd.DataFrame) -> Path:
        self._count += 1
        path = self.folder / f"w{self._count:06d}.parquet"
        frame.to_parquet(path, index=False)
        return path

    def submit(self, job_id: str, ref: Path, cur: Path) -> None:
        self._jobs.put(json.dumps({"id": job_id, "ref": str(ref), "cur": str(cur)}))

    def finish(self, timeout: float) -> dict[str, dict[str, Any]]:
        self._jobs.put(json.dumps({"stop": True}))
        self._jobs.put(None)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=10)
        self._stderr.close()
        return self.results


# --------------------------------------------------------------------------------------------
# closedloop
# --------------------------------------------------------------------------------------------


def use_margin_coef(coef: float) -> None:
    """Run ``assess()`` with margin ``max(0.02, coef / sqrt(n))`` in this process."""
    from closedloop.domain.checks.multivariate import domain_classifier_drift

    def patched(reference, current, names, forced, seed):  # type: ignore[no-untyped-def]
        per_side = min(len(reference), len(current), assessment.CLASSIFIER_ROWS)
        margin = max(0.02, coef / math.sqrt(max(per_side, 1)))
        if per_side < 50:
            return {"drifted": False, "note": "too few rows"}
        result = domain_classifier_drift(
            reference,
            current,
            columns=names,
            categorical=forced,
            auc_margin=min(margin, 0.45),
            seed=seed,
        )
        return result.to_dict()

    assessment._multivariate = patched


def summarise(report: DriftReport, targets: tuple[str, ...] = ()) -> dict[str, Any]:
    """What one report says, plus what it would say at the alternative settings."""
    multi = report.multivariate or {}
    columns = [c.column for c in report.columns if c.drifted]
    quality = report.quality or {}
    out: dict[str, Any] = {
        "dataset": bool(report.drifted),
        "columns": columns,
        "classifier": bool(multi.get("drifted")),
        "auc": multi.get("auc"),
        "quality_flag": bool(quality.get("flagged")),
        "quality_reasons": sorted(
            {r for c in quality.get("columns", []) for r in c.get("reasons", [])}
        ),
        "quality_flag_old_rule": old_quality_rule(quality),
        "target": any(c in columns for c in targets),
    }
    ci_low, n = multi.get("ci_low"), multi.get("n_reference_used")
    alt: dict[str, bool] = {}
    for alpha in ALT_ALPHAS:
        per_column = any(
            c.p_value_adjusted is not None
            and c.p_value_adjusted < alpha
            and c.effect_size is not None
            and c.effect_size >= c.effect_floor
            for c in report.columns
        )
        for coef in ALT_COEFS:
            margin = min(max(0.02, coef / math.sqrt(max(n or 1, 1))), 0.45)
            classifier = ci_low is not None and ci_low > 0.5 + margin
            alt[f"alpha={alpha},c={coef}"] = per_column or classifier
    out["alt"] = alt
    return out


def old_quality_rule(quality: dict[str, Any]) -> bool:
    """Whether the former rule (before sample-size-aware tests) would have flagged: any
    out-of-range or unseen share >= 1%, a significant missing increase >= 5 points (unadjusted
    p < alpha), any type violation. Computed from the same report."""
    alpha = quality.get("thresholds", {}).get("alpha", 0.05)
    for c in quality.get("columns", []):
        shares = (c.get("out_of_range_share"), c.get("unseen_share"))
        if any(share is not None and share >= OLD_QUALITY_FLOOR for share in shares):
            return True
        change, p_value = c.get("missing_rate_change") or 0.0, c.get("missing_p_value")
        if change >= 0.05 and p_value is not None and p_value < alpha:
            return True
        if c.get("type_violation_count"):
            return True
    return False


def progress(body: dict[str, Any]) -> None:
    """One JSON line per assessed window on stderr (partial results survive an interrupted run)."""
    print(json.dumps(body), file=sys.stderr, flush=True)


def upper95(k: int, n: int) -> float:
    from scipy import stats

    return 1.0 if k >= n else float(stats.beta.ppf(0.975, k + 1, n - k))


def rate(k: int, n: int) -> dict[str, Any]:
    return {
        "k": k,
        "n": n,
        "rate": round(k / n, 4) if n else None,
        "upper95": round(upper95(k, n), 4) if n else None,
    }


def evidently_summary(
    results: list[dict[str, Any] | None], targets: tuple[str, ...] = ()
) -> dict[str, Any]:
    done = [r for r in results if r is not None and not r.get("skipped")]
    n = len(done)
    out: dict[str, Any] = {
        "pairs_run": n,
        "pairs_skipped": len(results) - n,
        "dataset_drift": rate(sum(r["share"] >= 0.5 for r in done), n),
        "any_column": rate(sum(len(r["flagged"]) > 0 for r in done), n),
        "mean_share_drifted": round(float(np.mean([r["share"] for r in done])), 4) if n else None,
        "count_check_ok": all(len(r["flagged"]) == round(r["count"]) for r in done),
        "methods": sorted({m for r in done for m in r["methods"]}),
        "seconds_per_pair": round(float(np.median([r["seconds"] for r in done])), 2) if n else None,
    }
    if targets:
        out["target_column"] = rate(sum(any(c in r["flagged"] for c in targets) for r in done), n)
    return out


def false_alarms(
    rows: int, windows: int, seed: int, alpha: float, ev: Evidently | None, ev_windows: int
) -> dict[str, Any]:
    summaries, seconds, jobs = [], [], []
    for w in range(windows):
        ref = _data.make_frame(rows, seed + 2 * w)
        cur = _data.make_frame(rows, seed + 2 * w + 1)
        if ev is not None and w < ev_windows:
            job = f"fa-{rows}-{w}"
            ev.submit(job, ev.write(ref), ev.write(cur))
            jobs.append(job)
        t0 = time.perf_counter()
        summaries.append(summarise(assess(ref, cur, alpha=alpha)))
        seconds.append(time.perf_counter() - t0)
        progress({"rows": rows, "window": w, **summaries[-1], "seconds": seconds[-1]})
        del ref, cur
    n = len(summaries)
    per_column = sum(bool(s["columns"]) for s in summaries)
    flagged = Counter(c for s in summaries for c in s["columns"])
    return {
        "rows": rows,
        "windows": n,
        "dataset": rate(sum(s["dataset"] for s in summaries), n),
        "per_column": rate(per_column, n),
        "classifier": rate(sum(s["classifier"] for s in summaries), n),
        "both": sum(bool(s["columns"]) and s["classifier"] for s in summaries),
        "flagged_columns": dict(flagged.most_common()),
        "quality_flag_not_counted": rate(sum(s["quality_flag"] for s in summaries), n),
        "quality_flag_old_rule": rate(sum(s["quality_flag_old_rule"] for s in summaries), n),
        "quality_reasons": dict(Counter(r for s in summaries for r in s["quality_reasons"])),
        "auc_max": round(max(s["auc"] or 0.5 for s in summaries), 4),
        "alternatives": {
            key: sum(s["alt"][key] for s in summaries) / n for key in summaries[0]["alt"]
        },
        "seconds_per_window": round(float(np.median(seconds)), 2),
        "_evidently_jobs": jobs,
    }


def plant_quality_problem(frame: pd.DataFrame, problem: str, seed: int) -> pd.DataFrame:
    """One of :data:`QUALITY_PROBLEMS` planted in a clean window."""
    rng = np.random.default_rng(seed)
    frame = frame.copy()
    rows = len(frame)
    if problem == "n03 30% missing":
        frame.loc[rng.random(rows) < 0.3, "n03"] = np.nan
    elif problem == "n07 5% far out of range":
        hit = rng.random(rows) < 0.05
        frame.loc[hit, "n07"] = frame["n07"].max() + 10 * frame["n07"].std() * rng.random(hit.sum())
    elif problem == "n07 text values":
        values = frame["n07"].astype(object)
        values[rng.random(rows) < 0.01] = "n/a"
        frame["n07"] = values
    elif problem == "c4 new category 5%":
        values = frame["c4"].astype(object)
        values[rng.random(rows) < 0.05] = "c4_new"
        frame["c4"] = values
    return frame


def quality_detection(rows: int, windows: int, seed: int, alpha: float) -> dict[str, Any]:
    """How often each planted quality problem is flagged (and in which column)."""
    out: dict[str, Any] = {"rows": rows, "windows": windows}
    targets = {p: p.split()[0] for p in QUALITY_PROBLEMS}
    for problem in QUALITY_PROBLEMS:
        hits = 0
        for w in range(windows):
            ref = _data.make_frame(rows, seed + 2 * w)
            cur = plant_quality_problem(_data.make_frame(rows, seed + 2 * w + 1), problem, w)
            # data_quality() as assess() runs it (assess() itself refuses a numeric column
            # that holds text, before the quality signals could report it)
            flagged = data_quality(ref, cur, alpha=alpha).flagged_columns
            hits += targets[problem] in flagged
            progress({"quality_problem": problem, "rows": rows, "window": w, "flagged": flagged})
        out[problem] = rate(hits, windows)
    return out


def correlated_reference(rows: int, seed: int) -> pd.DataFrame:
    frame = _data.make_frame(rows, seed)
    a, b = CORRELATED
    frame[b] = 0.8 * frame[a] + 0.6 * frame[b]  # still N(0, 1); rho = 0.8
    return frame


def detection(
    name: str,
    shift: dict[str, float] | None,
    streams: int,
    seed: int,
    alpha: float,
    ev: Evidently | None,
    ev_streams: int,
) -> dict[str, Any]:
    if shift is None:
        ref = correlated_reference(DETECTION_REFERENCE_ROWS, seed)
        targets = CORRELATED
    else:
        ref = _data.make_frame(DETECTION_REFERENCE_ROWS, seed)
        targets = tuple(shift)
    ref_path = ev.write(ref) if ev is not None and ev_streams > 0 else None
    per_stream: list[list[dict[str, Any]]] = []
    jobs: list[list[str]] = []
    for s in range(streams):
        stream, stream_jobs = [], []
        for w in range(WINDOWS_PER_STREAM):
            cur = _data.make_frame(
                DETECTION_WINDOW_ROWS, seed + 1000 * (s + 1) + w, shifts=shift or {}
            )
            if ev is not None and ref_path is not None and s < ev_streams:
                job = f"det-{name}-{s}-{w}"
                ev.submit(job, ref_path, ev.write(cur))
                stream_jobs.append(job)
            stream.append(summarise(assess(ref, cur, alpha=alpha), targets))
            progress({"scenario": name, "stream": s, "window": w, **stream[-1]})
        per_stream.append(stream)
        jobs.append(stream_jobs)
    flat = [x for stream in per_stream for x in stream]
    n = len(flat)

    def delays(key: str) -> dict[str, Any]:
        firsts = [
            next((i + 1 for i, x in enumerate(stream) if _get(x, key)), None)
            for stream in per_stream
        ]
        found = sorted(d for d in firsts if d is not None)
        return {
            "streams_detected": f"{len(found)}/{len(firsts)}",
            "median_delay": found[len(found) // 2] if found else None,
            "max_delay": max(found) if found else None,
        }

    return {
        "scenario": name,
        "targets": list(targets),
        "windows": n,
        "dataset": rate(sum(x["dataset"] for x in flat), n),
        "target_column": rate(sum(x["target"] for x in flat), n),
        "classifier": rate(sum(x["classifier"] for x in flat), n),
        "mean_auc": round(float(np.mean([x["auc"] for x in flat if x["auc"] is not None])), 4),
        "delay_dataset": delays("dataset"),
        "alternatives": {
            key: {"rate": sum(x["alt"][key] for x in flat) / n, **delays("alt:" + key)}
            for key in flat[0]["alt"]
        },
        "_evidently_jobs": jobs,
    }


def _get(summary: dict[str, Any], key: str) -> bool:
    if key.startswith("alt:"):
        return bool(summary["alt"][key[4:]])
    return bool(summary[key])


def attach_evidently(results: list[dict[str, Any]], ev_results: dict[str, dict[str, Any]]) -> None:
    for item in results:
        jobs = item.pop("_evidently_jobs")
        if "scenario" not in item:
            if jobs:
                item["evidently"] = evidently_summary([ev_results.get(j) for j in jobs])
            continue
        streams = [[ev_results.get(j) for j in stream] for stream in jobs if stream]
        if not streams:
            continue
        targets = tuple(item["targets"])
        flat = [r for stream in streams for r in stream]
        summary = evidently_summary(flat, targets)
        for label, test in (
            ("target_column", lambda r, t=targets: any(c in r["flagged"] for c in t)),
            ("any_column", lambda r: bool(r["flagged"])),
            ("dataset_drift", lambda r: r["share"] >= 0.5),
        ):
            firsts = []
            for stream in streams:
                ok = [r for r in stream if r is not None and not r.get("skipped")]
                if len(ok) < len(stream):
                    continue
                firsts.append(next((i + 1 for i, r in enumerate(ok) if test(r)), None))
            found = sorted(d for d in firsts if d is not None)
            summary[f"delay_{label}"] = {
                "streams_detected": f"{len(found)}/{len(firsts)}",
                "median_delay": found[len(found) // 2] if found else None,
                "max_delay": max(found) if found else None,
            }
        item["evidently"] = summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--part", choices=("false-alarms", "detection", "quality", "all"), default="all"
    )
    parser.add_argument("--quality-windows", type=int, default=50)
    parser.add_argument("--sizes", default="500,5000,50000,1000000")
    parser.add_argument("--windows", type=int, default=200)
    parser.add_argument("--windows-50k", type=int, default=50)
    parser.add_argument("--windows-1m", type=int, default=3)
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--alpha", type=float, default=CURRENT[0])
    parser.add_argument("--margin-coef", type=float, default=None)
    parser.add_argument("--no-evidently", action="store_true")
    parser.add_argument(
        "--evidently-python", default=str(ROOT / ".venv-evidently" / "bin" / "python")
    )
    parser.add_argument("--evidently-windows", type=int, default=100)
    parser.add_argument("--evidently-windows-50k", type=int, default=10)
    parser.add_argument("--evidently-streams", type=int, default=3)
    parser.add_argument("--evidently-budget", type=float, default=480.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.margin_coef is not None:
        use_margin_coef(args.margin_coef)
    sizes = {int(s) for s in args.sizes.split(",")}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="drift_quality_") as tmp:
        ev = None
        if not args.no_evidently:
            ev = Evidently(args.evidently_python, Path(tmp), args.evidently_budget)
        result: dict[str, Any] = {
            "settings": {
                "alpha": args.alpha,
                "margin_coef": args.margin_coef if args.margin_coef is not None else CURRENT[1],
            }
        }
        if args.part in ("false-alarms", "all"):
            plan = [
                (500, args.windows, 1, args.evidently_windows),
                (5_000, args.windows, 100_000, args.evidently_windows),
                (50_000, args.windows_50k, 200_000, args.evidently_windows_50k),
                (1_000_000, args.windows_1m, 300_000, 0),
            ]
            result["false_alarms"] = [
                false_alarms(rows, n, seed, args.alpha, ev, ev_n)
                for rows, n, seed, ev_n in plan
                if rows in sizes and n > 0
            ]
        if args.part in ("detection", "all"):
            scenarios: list[tuple[str, dict[str, float] | None, int]] = [
                ("n00 +0.1 sd", {"n00": 0.1}, 7),
                ("n00 +0.2 sd", {"n00": 0.2}, 8),
                ("n00 +0.5 sd", {"n00": 0.5}, 9),
                ("c0 15% mass moved", {"c0": 0.15}, 10),
                ("n00/n05 correlation 0.8 -> 0", None, 11),
            ]
            result["detection"] = [
                detection(name, shift, args.streams, seed, args.alpha, ev, args.evidently_streams)
                for name, shift, seed in scenarios
            ]
        if args.part in ("quality", "all"):
            result["quality_detection"] = [
                quality_detection(rows, args.quality_windows, 400_000 + rows, args.alpha)
                for rows in sorted(sizes)
                if rows <= 50_000
            ]
        closedloop_seconds = time.perf_counter() - started
        wait = max(60.0, args.evidently_budget + 60 - closedloop_seconds)
        ev_results = ev.finish(timeout=wait) if ev else {}
        for key in ("false_alarms", "detection"):
            attach_evidently(result.get(key, []), ev_results)
        result["seconds"] = {
            "closedloop_loop": round(closedloop_seconds, 1),
            "total": round(time.perf_counter() - started, 1),
        }
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
