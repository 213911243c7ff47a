"""Throughput and latency of ``closedloop serve`` vs ``mlflow models serve`` on the same model.

    .venv/bin/python benchmarks/serving.py --json --duration 10 --concurrency 1,8,32 --rows 1,100

Trains one LogisticRegression (20 numeric features, seeded synthetic data), registers it in a
temporary closedloop project (production -> v1) and saves the same fitted estimator with
``mlflow.sklearn.save_model`` from ``.venv-mlflow``. Starts both servers (closedloop with its
always-on prediction logging; MLflow with ``--env-manager local --workers 1``), then drives each
with the same bounded closed-loop load (``benchmarks/_load.py``: raw asyncio keep-alive HTTP/1.1,
``concurrency`` connections, identical ``dataframe_split`` bodies to ``POST /invocations``),
alternating servers cell by cell and repeat by repeat. Reports medians over repeats per cell:
successful requests/s, p50, p99, errors, ratios closedloop/MLflow, and whole-process-tree RSS
(peak, polled with psutil). ``--profile N`` instead runs N in-process requests against the
closedloop app under cProfile and prints where the time goes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _load

ROOT = Path(__file__).resolve().parents[1]
CLOSEDLOOP = ROOT / ".venv" / "bin" / "closedloop"
MLFLOW_VENV = ROOT / ".venv-mlflow"
MODEL = "bench"
N_FEATURES = 20
HOST = "127.0.0.1"

MLFLOW_SAVE = """
import json, pickle, sys
import pandas as pd
import mlflow.sklearn
from mlflow.models import infer_signature
model = pickle.load(open(sys.argv[1], "rb"))
spec = json.load(open(sys.argv[2]))
X = pd.DataFrame(spec["data"], columns=spec["columns"])
sig = infer_signature(X, model.predict(X))
mlflow.sklearn.save_model(model, sys.argv[3], signature=sig, serialization_format="cloudpickle")
"""


def make_data(rows: int = 5000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, N_FEATURES))
    w = rng.normal(size=N_FEATURES)
    y = (X @ w + rng.normal(scale=0.5, size=rows) > 0).astype(int)
    return pd.DataFrame(X, columns=[f"x{j:02d}" for j in range(N_FEATURES)]), y


def train() -> tuple[object, pd.DataFrame]:
    from sklearn.linear_model import LogisticRegression

    X, y = make_data()
    return LogisticRegression(max_iter=1000).fit(X, y), X


def body_for(X: pd.DataFrame, rows: int) -> bytes:
    part = X.iloc[:rows].round(6)
    payload = {"dataframe_split": {"columns": list(part.columns), "data": part.values.tolist()}}
    return json.dumps(payload, separators=(",", ":")).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before {url} was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout} s")


def tree_rss(pid: int) -> int:
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


class RssPoller(threading.Thread):
    def __init__(self, pids: dict[str, int], interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pids, self.interval = pids, interval
        self.peak = dict.fromkeys(pids, 0)
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], tree_rss(pid))


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM the process group this script created for ``proc``, then SIGKILL if needed."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def register(folder: Path, model: object, X: pd.DataFrame) -> None:
    from closedloop.services import registry
    from closedloop.services.workspace import Workspace
    from closedloop.settings import load_settings

    ws = Workspace(load_settings(folder))
    try:
        registry.register_version(ws, MODEL, model, X)
        registry.set_alias(ws, MODEL, "production", 1)
    finally:
        ws.close()


def profile(n: int, rows: int) -> None:
    """cProfile ``n`` in-process /invocations calls straight into the closedloop ASGI app.

    One event loop, no sockets and no HTTP parsing (uvicorn/h11 costs are not included). The app
    runs with batching off (``batch_max_rows=1``) and the threadpool hop replaced by a direct
    call *in this script only*, so cProfile, which sees one thread, covers parsing, prediction
    and logging of each request. The log's background flush thread is not profiled.
    """
    import asyncio
    import cProfile
    import pstats

    import closedloop.server.context as context_module
    from closedloop.server import create_app
    from closedloop.services.serving import RegistryModelHost
    from closedloop.services.workspace import Workspace
    from closedloop.settings import load_settings

    async def inline(func, *a, **k):  # type: ignore[no-untyped-def]
        return func(*a, **k)

    model, X = train()
    body = body_for(X, rows)
    folder = Path(tempfile.mkdtemp(prefix="cl-serve-prof-"))
    try:
        register(folder, model, X)
        ws = Workspace(load_settings(folder))
        host = RegistryModelHost(ws, poll_interval=0.5)
        host.start()
        log = ws.prediction_log()
        app = create_app(host, prediction_log=log, feedback_log=ws.feedback_log(), batch_max_rows=1)
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/invocations",
            "raw_path": b"/invocations",
            "root_path": "",
            "query_string": b"",
            "headers": [
                (b"host", b"127.0.0.1"),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 8080),
        }

        async def call() -> int:
            status = 0

            async def receive() -> dict:
                return {"type": "http.request", "body": body, "more_body": False}

            async def send(message: dict) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]

            await app(dict(scope), receive, send)
            return status

        async def drive() -> tuple[float, float, cProfile.Profile]:
            for _ in range(200):
                assert await call() == 200
            started = time.perf_counter()
            for _ in range(n):
                await call()
            plain = (time.perf_counter() - started) / n
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(n):
                await call()
            prof.disable()
            return plain, 0.0, prof

        original = context_module.run_in_threadpool
        context_module.run_in_threadpool = inline  # type: ignore[assignment]
        try:
            plain, _, prof = asyncio.run(drive())
        finally:
            context_module.run_in_threadpool = original
        host.stop()
        log.close()
        ws.close()
        print(f"{rows} row(s): {plain * 1e6:.0f} us/request in-process (no HTTP, no threadpool)")
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)
        pstats.Stats(prof).sort_stats("cumulative").print_stats(45)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per cell and repeat")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--rows", default="1,100")
    ap.add_argument("--repeat", type=int, default=1, help="alternating repeats per cell")
    ap.add_argument("--warmup", type=float, default=1.0, help="unrecorded seconds per cell")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--profile", type=int, default=0, help="cProfile N in-process requests")
    args = ap.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    row_counts = [int(r) for r in args.rows.split(",")]
    if args.profile:
        for rows in row_counts:
            profile(args.profile, rows)
        return

    model, X = train()
    folder = Path(tempfile.mkdtemp(prefix="cl-serve-bench-"))
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs = []
    poller: RssPoller | None = None
    try:
        register(folder, model, X)
        (folder / "model.pkl").write_bytes(pickle.dumps(model))
        sample = X.iloc[:100].round(6)
        (folder / "sample.json").write_text(
            json.dumps({"columns": list(sample.columns), "data": sample.values.tolist()})
        )
        mlflow_dir = folder / "mlflow-model"
        subprocess.run(
            [
                str(MLFLOW_VENV / "bin" / "python"),
                "-c",
                MLFLOW_SAVE,
                str(folder / "model.pkl"),
                str(folder / "sample.json"),
                str(mlflow_dir),
            ],
            check=True,
            cwd=folder,
            timeout=300,
        )
        ports = {"closedloop": free_port(), "mlflow": free_port()}
        mlflow_env = dict(os.environ)
        mlflow_env["PATH"] = f"{MLFLOW_VENV / 'bin'}{os.pathsep}{mlflow_env.get('PATH', '')}"
        mlflow_env["MLFLOW_TRACKING_URI"] = (folder / "mlruns").as_uri()
        commands = {
            "closedloop": (
                [str(CLOSEDLOOP), "serve", "--host", HOST, "--port", str(ports["closedloop"])],
                dict(os.environ),
                "/v2/health/ready",
            ),
            "mlflow": (
                [
                    str(MLFLOW_VENV / "bin" / "mlflow"),
                    "models",
                    "serve",
                    "-m",
                    str(mlflow_dir),
                    "--env-manager",
                    "local",
                    "-h",
                    HOST,
                    "-p",
                    str(ports["mlflow"]),
                    "--workers",
                    "1",
                ],
                mlflow_env,
                "/ping",
            ),
        }
        for name, (cmd, env, _) in commands.items():
            log = open(folder / f"{name}.log", "wb")  # noqa: SIM115 - closed in finally
            logs.append(log)
            procs[name] = subprocess.Popen(
                cmd,
                cwd=folder,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        for name, (_, _, ready) in commands.items():
            wait_ready(f"http://{HOST}:{ports[name]}{ready}", procs[name])
        idle_rss = {name: tree_rss(p.pid) for name, p in procs.items()}
        poller = RssPoller({name: p.pid for name, p in procs.items()})
        poller.start()

        runs: dict[tuple[int, int, str], list[dict[str, float | int]]] = {}
        flip = False
        for repeat in range(args.repeat):
            for rows in row_counts:
                body = body_for(X, rows)
                for conc in concurrencies:
                    order = ["mlflow", "closedloop"] if flip else ["closedloop", "mlflow"]
                    flip = not flip
                    for name in order:
                        target = [(HOST, ports[name])]
                        if args.warmup > 0:
                            _load.run_load(
                                target, "/invocations", body, concurrency=conc, duration=args.warmup
                            )
                        stats = _load.summarize(
                            _load.run_load(
                                target,
                                "/invocations",
                                body,
                                concurrency=conc,
                                duration=args.duration,
                            )
                        )
                        runs.setdefault((rows, conc, name), []).append(stats)
                        print(
                            f"repeat {repeat + 1} rows={rows} c={conc} {name}: "
                            f"{stats['rps']:.0f} req/s p50 {stats['p50_ms']:.2f} ms "
                            f"p99 {stats['p99_ms']:.2f} ms errors {stats['errors']}",
                            file=sys.stderr,
                        )
        poller.stop_event.set()
        poller.join()

        cells = []
        for rows in row_counts:
            for conc in concurrencies:
                cell: dict[str, object] = {"rows": rows, "concurrency": conc}
                for name in ("closedloop", "mlflow"):
                    reps = runs[(rows, conc, name)]
                    cell[name] = {
                        "rps": statistics.median(r["rps"] for r in reps),
                        "p50_ms": statistics.median(r["p50_ms"] for r in reps),
                        "p99_ms": statistics.median(r["p99_ms"] for r in reps),
                        "errors": sum(int(r["errors"]) for r in reps),
                        "requests": sum(int(r["requests"]) for r in reps),
                    }
                cl, ml = cell["closedloop"], cell["mlflow"]
                cell["throughput_ratio"] = cl["rps"] / ml["rps"] if ml["rps"] else None  # type: ignore[index]
                cell["p99_ratio"] = cl["p99_ms"] / ml["p99_ms"] if ml["p99_ms"] else None  # type: ignore[index]
                cells.append(cell)
        result = {
            "duration_s": args.duration,
            "repeat": args.repeat,
            "cells": cells,
            "rss_mb": {
                name: {"idle": idle_rss[name] / 2**20, "peak": poller.peak[name] / 2**20}
                for name in procs
            },
        }
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print("rows conc | closedloop rps p50 p99 err | mlflow rps p50 p99 err | x rps  p99")
            for c in cells:
                cl, ml = c["closedloop"], c["mlflow"]
                print(
                    f"{c['rows']:>4} {c['concurrency']:>4} | {cl['rps']:8.0f} {cl['p50_ms']:6.2f} "
                    f"{cl['p99_ms']:6.2f} {cl['errors']:3d} | {ml['rps']:7.0f} {ml['p50_ms']:6.2f} "
                    f"{ml['p99_ms']:6.2f} {ml['errors']:3d} | {c['throughput_ratio']:.2f} "
                    f"{c['p99_ratio']:.2f}"
                )
            print(json.dumps(result["rss_mb"]))
    except BaseException:
        for log in logs:
            log.flush()
            tail = Path(log.name).read_text(errors="replace")[-3000:]
            print(f"--- {log.name} ---\n{tail}", file=sys.stderr)
        raise
    finally:
        if poller is not None:
            poller.stop_event.set()
        for proc in procs.values():
            stop(proc)
        for log in logs:
            log.close()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
