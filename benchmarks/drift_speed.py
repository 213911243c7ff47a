"""Whole-process speed and peak memory of ``closedloop drift`` vs Evidently, scipy and the floor.

    python benchmarks/drift_speed.py --rows 100000 --repeat 3 --json

``--timeout`` (default 900 s) kills a run that takes longer; it is reported in ``notes``.

Writes seeded parquet files once (``benchmarks/_data.py``: 20 numeric + 5 string columns, 7
planted drifted columns) under ``--data-dir``, then times each tool as a separate process,
alternating tools within every repeat, and reports medians. Peak RSS is polled with psutil.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _data

ROOT = Path(__file__).resolve().parents[1]
CLOSEDLOOP = ROOT / ".venv" / "bin" / "closedloop"
PYTHON = ROOT / ".venv" / "bin" / "python"
EVIDENTLY_PYTHON = ROOT / ".venv-evidently" / "bin" / "python"

EVIDENTLY_SCRIPT = """
import json, sys
import pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset
ref = pd.read_parquet(sys.argv[1]); cur = pd.read_parquet(sys.argv[2])
snap = Report([DataDriftPreset()]).run(cur, ref)
flagged = []
for m in snap.dict()["metrics"]:
    cfg = m.get("config", {})
    if not str(cfg.get("type", "")).endswith("ValueDrift"):
        continue
    method = str(cfg.get("method", "")).lower()
    pvalue = "p_value" in method or "test" in method
    v, t = float(m["value"]), float(cfg["threshold"])
    if (v < t) if pvalue else (v >= t):
        flagged.append(cfg["column"])
print(json.dumps(sorted(flagged)))
"""

SCIPY_SCRIPT = """
import json, sys
import numpy as np, pandas as pd
from scipy import stats
ref = pd.read_parquet(sys.argv[1]); cur = pd.read_parquet(sys.argv[2])
p = {}
for name in ref.columns:
    if ref[name].dtype.kind == "f":
        p[name] = stats.ks_2samp(ref[name].to_numpy(), cur[name].to_numpy()).pvalue
    else:
        t = pd.concat([ref[name].value_counts(), cur[name].value_counts()], axis=1).fillna(0)
        p[name] = stats.chi2_contingency(t.to_numpy().T, correction=False).pvalue
print(json.dumps(sorted(k for k, v in p.items() if v * len(p) < 0.05)))
"""

FLOOR_SCRIPT = """
import json, sys
import numpy as np, pyarrow.parquet as pq
for path in sys.argv[1:]:
    table = pq.read_table(path)
    for name in table.column_names:
        if name.startswith("n"):
            np.sort(table[name].to_numpy())
print(json.dumps(None))
"""


def run(cmd: list[str], cwd: Path, timeout: float | None = None) -> tuple[float, int, str]:
    """Wall seconds, peak RSS bytes (process tree, polled every 5 ms) and stdout; raises
    :class:`TimeoutError` (after killing the process) past ``timeout`` seconds."""
    start = time.perf_counter()
    proc = psutil.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        if timeout is not None and time.perf_counter() - start > timeout:
            for child in proc.children(recursive=True):
                child.kill()
            proc.kill()
            proc.communicate()
            raise TimeoutError(f"{cmd[0]} did not finish within {timeout:.0f} s")
        try:
            rss = proc.memory_info().rss + sum(
                c.memory_info().rss for c in proc.children(recursive=True)
            )
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.005)
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 1) or not out.strip():
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {err[-2000:]}")
    return wall, peak, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--evidently-max-rows", type=int, default=1_000_000)
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "cl_bench")
    parser.add_argument("--skip", nargs="*", default=[], help="tools to skip")
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="seconds before a run is killed"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    ref, cur = _data.write_pair(args.data_dir / str(args.rows), args.rows)
    work = Path(tempfile.mkdtemp(prefix="cl_speed_"))
    scripts = {}
    for name, text in (("evidently", EVIDENTLY_SCRIPT), ("scipy", SCIPY_SCRIPT)):
        scripts[name] = work / f"run_{name}.py"
        scripts[name].write_text(text)
    scripts["floor"] = work / "run_floor.py"
    scripts["floor"].write_text(FLOOR_SCRIPT)
    tools = {
        "closedloop": [str(CLOSEDLOOP), "drift", str(ref), str(cur), "--json"],
        "floor": [str(PYTHON), str(scripts["floor"]), str(ref), str(cur)],
        "scipy": [str(PYTHON), str(scripts["scipy"]), str(ref), str(cur)],
        "evidently": [str(EVIDENTLY_PYTHON), str(scripts["evidently"]), str(ref), str(cur)],
    }
    notes = []
    if args.rows > args.evidently_max_rows:
        tools.pop("evidently")
        notes.append(f"evidently skipped above --evidently-max-rows={args.evidently_max_rows}")
    for name in args.skip:
        tools.pop(name, None)
        notes.append(f"{name} skipped (--skip)")
    samples: dict[str, list[tuple[float, int]]] = {name: [] for name in tools}
    timed_out: set[str] = set()
    flagged: dict[str, object] = {}
    for _ in range(args.repeat):
        for name, cmd in tools.items():  # alternate tools within each repeat
            if name in timed_out:
                continue
            try:
                wall, peak, out = run(cmd, work, args.timeout)
            except TimeoutError as exc:
                timed_out.add(name)
                notes.append(f"{name}: {exc}")
                continue
            samples[name].append((wall, peak))
            if name == "closedloop":
                report = json.loads(out)
                flagged[name] = sorted(c["column"] for c in report["columns"] if c["drifted"])
            else:
                flagged[name] = json.loads(out.strip().splitlines()[-1])
    result: dict[str, object] = {"rows": args.rows, "repeat": args.repeat, "notes": notes}
    samples = {n: s for n, s in samples.items() if s}
    med = {n: statistics.median(w for w, _ in s) for n, s in samples.items()}
    for name, s in samples.items():
        result[name] = {
            "wall_s": round(med[name], 3),
            "runs": [round(w, 3) for w, _ in s],
            "peak_rss_mb": round(statistics.median(p for _, p in s) / 2**20, 1),
            "vs_closedloop": round(med[name] / med["closedloop"], 2)
            if "closedloop" in med
            else None,
            "vs_floor": round(med[name] / med["floor"], 2) if "floor" in med else None,
            "flagged_exactly_planted": None
            if flagged.get(name) is None
            else flagged[name] == sorted(_data.PLANTED),
            "flagged": flagged.get(name),
        }
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
