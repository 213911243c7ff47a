"""The narrated demo: train → register → serve → traffic → drift → retrain → gate → promote →
a bad version in production → rollback under load → history.

Everything is real: the store is SQLite in ``<folder>/.closedloop``, the server is a separate
``closedloop serve`` process on loopback, and traffic goes over HTTP.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from closedloop.errors import ConfigError, StoreError
from closedloop.settings import (
    AgentSettings,
    AlertSettings,
    MonitorSettings,
    PipelineSettings,
    Settings,
    load_settings,
)

MODEL = "loans"
MARKER = "CREATED_BY_CLOSEDLOOP_DEMO"
BATCH = 100


def _step(number: int, title: str) -> None:
    bold, plain = ("\033[1m", "\033[0m") if sys.stdout.isatty() else ("", "")
    print(f"\n{bold}[{number}] {title}{plain}", flush=True)


@contextmanager
def _timed(what: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    print(f"    ⏱  {what}: {time.perf_counter() - start:.2f} s", flush=True)


def _fresh_store(folder: Path) -> None:
    store = folder / ".closedloop"
    if store.exists():
        if not (store / MARKER).exists():
            raise ConfigError(
                f"{store} holds a store that the demo did not create; the demo will not touch it.",
                hint="Run the demo in another folder: closedloop demo --folder /tmp/demo",
            )
        shutil.rmtree(store)
    store.mkdir(parents=True)
    (store / MARKER).write_text("this store was written by `closedloop demo`\n")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _settings(folder: Path) -> Settings:
    base = load_settings(folder)
    pipeline = PipelineSettings(
        model=MODEL,
        loader="",
        trainer="closedloop.demo.pipeline:train",
        target="default",
        metric="roc_auc",
        gate_margin=0.0,
        holdout_fraction=0.25,
        seed=0,
    )
    # The agent's policy, sped up for a demo: windows of 5,000 rows, two drifted windows in a
    # row before an alert, retraining on the last 10,000 labelled rows of traffic, and a canary
    # that serves half the traffic before the guardrails may promote it.
    agent = AgentSettings(
        interval_seconds=1,
        lease_seconds=60,
        retrain_data="traffic",
        traffic_rows=10_000,
        min_labelled_rows=1000,
        canary_steps=(0.5, 1.0),
        step_seconds=1,
    )
    return Settings(
        project_dir=folder,
        store=base.store,
        pipeline=pipeline,
        server=base.server,
        monitor=MonitorSettings(window_rows=5000, min_rows=1000, persistence=2),
        agent=agent,
        gate=base.gate,
        alerts=AlertSettings(log_file=str(folder / ".closedloop" / "alerts.log")),
    )


@dataclass
class Traffic:
    """Sends rows to the server over the Open Inference Protocol and keeps what came back.

    Each request carries its own ``X-Request-ID``; :meth:`send` with ``labels`` then posts the
    true labels of every row to ``/models/{name}/feedback`` (as the business would, later), so
    monitoring, guardrails and retraining on traffic can use them.
    """

    base_url: str
    features: list[str]
    versions: list[int] = field(default_factory=list)
    failures: int = 0
    requests: int = 0
    labelled: int = 0

    def send(
        self, frame: Any, batch: int = BATCH, labels: Any = None
    ) -> tuple[list[int], list[float]]:
        """Send ``frame`` in batches; returns per-row answering version and positive score."""
        import httpx

        versions: list[int] = []
        scores: list[float] = []
        feedback: list[dict[str, Any]] = []
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            for start in range(0, len(frame), batch):
                part = frame.iloc[start : start + batch]
                request_id = f"demo-{self.requests}"
                v, s = self._infer(client, part, request_id)
                versions.extend(v)
                scores.extend(s)
                if labels is not None and v:
                    truth = labels.iloc[start : start + batch].tolist()
                    feedback.extend(
                        {"request_id": request_id, "row": i, "label": int(y)}
                        for i, y in enumerate(truth)
                    )
            if feedback:
                response = client.post(f"/models/{MODEL}/feedback", json={"labels": feedback})
                response.raise_for_status()
                self.labelled += len(feedback)
        return versions, scores

    def _infer(self, client: Any, part: Any, request_id: str) -> tuple[list[int], list[float]]:
        inputs = [_tensor(name, part[name]) for name in self.features]
        self.requests += 1
        try:
            response = client.post(
                f"/v2/models/{MODEL}/infer",
                json={"inputs": inputs},
                headers={"X-Request-ID": request_id},
            )
        except Exception:
            self.failures += 1
            return [], []
        if response.status_code != 200:
            self.failures += 1
            return [], []
        body = response.json()
        version = int(body["model_version"])
        outputs = {o["name"]: o["data"] for o in body["outputs"]}
        scores = outputs.get("predict_proba") or outputs["predict"]
        self.versions.append(version)
        return [version] * len(part), [float(s) for s in scores]


def _tensor(name: str, column: Any) -> dict[str, Any]:
    kind = column.dtype.kind
    if kind == "f":
        return {
            "name": name,
            "shape": [len(column)],
            "datatype": "FP64",
            "data": column.astype(float).tolist(),
        }
    if kind in "iu":
        return {
            "name": name,
            "shape": [len(column)],
            "datatype": "INT64",
            "data": column.astype("int64").tolist(),
        }
    if kind == "b":
        return {"name": name, "shape": [len(column)], "datatype": "BOOL", "data": column.tolist()}
    return {
        "name": name,
        "shape": [len(column)],
        "datatype": "BYTES",
        "data": column.astype(str).tolist(),
    }


def _auc(labels: Any, scores: list[float]) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def _start_server(folder: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CLOSEDLOOP_SERVER_FLUSH_INTERVAL": "0.2"}
    log = (folder / ".closedloop" / "demo-server.log").open("wb")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "closedloop",
            "serve",
            "--port",
            str(port),
            "--poll-interval",
            "0.2",
        ],
        cwd=folder,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _wait_ready(base_url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StoreError("The demo server exited early; see .closedloop/demo-server.log.")
        try:
            if httpx.get(f"{base_url}/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise StoreError(f"The demo server did not become ready within {timeout:.0f} s.")


def _wait_version(traffic: Traffic, frame: Any, version: int, timeout: float = 10) -> float:
    """Send small batches until the server answers with ``version``; returns the seconds taken."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        answered, _ = traffic.send(frame.head(5))
        if answered and answered[-1] == version:
            return time.perf_counter() - start
        time.sleep(0.05)
    raise StoreError(f"The server did not switch to version {version} within {timeout} s.")


def run_demo(folder: Path, *, port: int = 0) -> None:
    """Run the narrated loop in ``folder`` (its store is left there for later commands)."""
    import logging

    from closedloop.demo import story

    # The narration reports what the agent does; keep its log lines off the console.
    logging.getLogger("closedloop").addHandler(logging.NullHandler())
    folder.mkdir(parents=True, exist_ok=True)
    _fresh_store(folder)
    settings = _settings(folder)
    port = port or _free_port()
    started = time.perf_counter()
    story.run(folder, settings, port)
    took = time.perf_counter() - started
    print(f"\ndone in {took:.1f} s. The store is in {folder / '.closedloop'}.")
    for line in next_steps(folder, Path.cwd()):
        print(line)


NEXT_COMMANDS = (
    ("models", "models and their aliases"),
    (f"versions {MODEL}", "metrics, and the gate's figures on the same rows"),
    (f"history {MODEL} --all", "every event: who, when, why"),
    ("runs", "tracked runs; --compare RUN shows every param and metric"),
    (f"report {MODEL}", "an HTML report of the drift checks"),
    ("serve", "serve production again (Ctrl-C stops it)"),
)


def next_steps(folder: Path, cwd: Path) -> list[str]:
    """The exact commands that read the store the demo left in ``folder``, as typed from
    ``cwd``: the ``closedloop`` of this environment (``.venv/bin/closedloop`` when it is not on
    PATH, or ``python -m closedloop``), with ``--project`` unless ``folder`` is ``cwd``."""
    import shlex

    scripts = Path(sys.executable).parent
    script = scripts / "closedloop"
    on_path = shutil.which("closedloop")
    if on_path and script.exists() and Path(on_path).resolve() == script.resolve():
        command = "closedloop"
    elif script.exists():
        command = shlex.quote(_shown(script, cwd))
    else:
        command = f"{shlex.quote(sys.executable)} -m closedloop"
    if folder.resolve() != cwd.resolve():
        command += f" --project {shlex.quote(_shown(folder, cwd))}"
    width = max(len(f"{command} {args}") for args, _ in NEXT_COMMANDS)
    lines = ["next, look around (run these from this folder):"]
    for args, what in NEXT_COMMANDS:
        text = f"{command} {args}"
        lines.append(f"    {text:<{width}}  # {what}")
    activate = scripts / "activate"
    if command != "closedloop" and script.exists() and activate.exists():
        lines.append(
            f"(or `source {shlex.quote(_shown(activate, cwd))}` once, then plain "
            f"`closedloop {NEXT_COMMANDS[0][0]}` and so on)"
        )
    return lines


def _shown(path: Path, cwd: Path) -> str:
    """``path`` relative to ``cwd`` when it lies inside it (``.venv/bin/closedloop``), else
    absolute."""
    absolute = Path(os.path.abspath(path))
    try:
        relative = absolute.relative_to(Path(os.path.abspath(cwd)))
    except ValueError:
        return str(absolute)
    return str(relative) if str(relative) != "." else "."


__all__ = ["MODEL", "Traffic", "run_demo"]


class BackgroundLoad:
    """Steady traffic from a thread while something changes; counts failed requests."""

    def __init__(self, traffic: Traffic, frame: Any) -> None:
        self.traffic = traffic
        self.frame = frame
        self.timeline: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> BackgroundLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set() and i < 100_000:
            rows = self.frame.iloc[(i * 10) % (len(self.frame) - 10) :][:10]
            answered, _ = self.traffic.send(rows)
            if answered:
                self.timeline.append((time.perf_counter(), answered[-1]))
            i += 1
