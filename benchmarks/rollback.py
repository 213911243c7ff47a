"""How fast a ``closedloop rollback`` reaches every serving replica, and whether requests fail.

    .venv/bin/python benchmarks/rollback.py --json [--runs 3] [--postgres postgresql://postgres@127.0.0.1:5432/test]

Per run: a fresh temporary project (SQLite metadata; with ``--postgres ADMIN_URL`` also a fresh
PostgreSQL database created from that admin database and dropped afterwards), versions v1 and
v2 of ``bench`` registered, production -> v1 -> v2 (so v1 is the last known-good). Two
``closedloop serve`` replicas on the same store (``--poll-interval``, default 0.5 s) take steady
bounded load (``benchmarks/_load.py``, ``--concurrency`` keep-alive connections per replica, for
``--duration`` s); ``--at`` s in, ``closedloop rollback bench`` runs as a subprocess. Every
response's ``X-Model-Version`` and timestamps are kept. Reported per run: seconds from issuing
the rollback (subprocess start) until every later response of each replica came from v1 (and
from the rollback command's exit), failed requests (non-200 or connection errors) over the whole
run, total requests; then medians over runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _load
import serving

ROOT = serving.ROOT
CLOSEDLOOP = serving.CLOSEDLOOP
HOST = serving.HOST
MODEL = serving.MODEL
ENV_URL = "CLOSEDLOOP_STORE_METADATA_URL"


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def admin(url: str, statement: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)  # type: ignore[arg-type]


def setup_project(folder: Path, env: dict[str, str]) -> None:
    from sklearn.linear_model import LogisticRegression

    from closedloop.services import registry
    from closedloop.services.workspace import Workspace
    from closedloop.settings import load_settings

    X, y = serving.make_data()
    ws = Workspace(load_settings(folder, env=env))
    try:
        registry.register_version(ws, MODEL, LogisticRegression(max_iter=1000).fit(X, y), X)
        registry.register_version(ws, MODEL, LogisticRegression(C=0.01, max_iter=1000).fit(X, y), X)
        registry.set_alias(ws, MODEL, "production", 1)
        registry.set_alias(ws, MODEL, "production", 2)
    finally:
        ws.close()


def analyse(result: _load.LoadResult, issued: float, done: float, replicas: int) -> dict:
    per: dict[str, dict[str, float | int | None]] = {}
    for r in range(replicas):
        mine = sorted((s for s in result.samples if s.target == r), key=lambda s: s.finished)
        ok = [s for s in mine if s.status == 200]
        old = [s for s in ok if s.header != "1"]
        last_old = old[-1].finished if old else None
        first_new = next((s.finished for s in ok if s.header == "1"), None)
        flaps = sum(1 for s in ok if s.header != "1" and first_new and s.finished > first_new)
        new_after = sum(1 for s in ok if s.header == "1" and s.finished >= issued)
        per[f"replica{r + 1}"] = {
            "converged_s": max(0.0, last_old - issued) if last_old is not None else 0.0,
            "converged_after_command_s": (
                max(0.0, last_old - done) if last_old is not None else 0.0
            ),
            "first_v1_s": first_new - issued if first_new is not None else None,
            "v2_after_first_v1": flaps,
            "v1_responses": new_after,
            "requests": len(mine),
            "failed": len(mine) - len(ok),
        }
    all_ok = all(p["v1_responses"] for p in per.values())  # each replica did switch
    return {
        "converged_s": max(float(p["converged_s"] or 0) for p in per.values()) if all_ok else None,
        "converged_after_command_s": (
            max(float(p["converged_after_command_s"] or 0) for p in per.values())
            if all_ok
            else None
        ),
        "rollback_command_s": done - issued,
        "failed": sum(int(p["failed"] or 0) for p in per.values()),
        "requests": len(result.samples),
        "rps": len(result.samples) / result.elapsed,
        "replicas": per,
    }


def one_run(args: argparse.Namespace, backend: str, run: int) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="cl-rollback-bench-"))
    env = dict(os.environ)
    database = None
    procs = []
    logs = []
    try:
        if backend == "postgres":
            database = f"closedloop_rollback_bench_{os.getpid()}_{run}"
            admin(args.postgres, f'CREATE DATABASE "{database}"')
            env[ENV_URL] = with_database(args.postgres, database)
        else:
            env.pop(ENV_URL, None)
        setup_project(folder, env)
        ports = [serving.free_port() for _ in range(args.replicas)]
        for i, port in enumerate(ports):
            log = open(folder / f"replica{i + 1}.log", "wb")  # noqa: SIM115 - closed in finally
            logs.append(log)
            cmd = [str(CLOSEDLOOP), "serve", "--host", HOST, "--port", str(port)]
            cmd += ["--poll-interval", str(args.poll_interval)]
            procs.append(
                subprocess.Popen(
                    cmd,
                    cwd=folder,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        for proc, port in zip(procs, ports, strict=True):
            serving.wait_ready(f"http://{HOST}:{port}/v2/health/ready", proc)
        X, _ = serving.make_data()
        body = serving.body_for(X, 1)
        targets = [(HOST, p) for p in ports]
        _load.run_load(targets, "/invocations", body, concurrency=args.concurrency, duration=1.0)
        marks: dict[str, float] = {}

        def rollback() -> None:
            marks["issued"] = time.monotonic()
            out = subprocess.run(
                [str(CLOSEDLOOP), "rollback", MODEL],
                cwd=folder,
                env=env,
                capture_output=True,
                timeout=60,
            )
            marks["done"] = time.monotonic()
            marks["rc"] = out.returncode
            if out.returncode:
                print(out.stdout.decode(), out.stderr.decode(), file=sys.stderr)

        result = _load.run_load(
            targets,
            "/invocations",
            body,
            concurrency=args.concurrency,
            duration=args.duration,
            watch_header="X-Model-Version",
            at=(args.at, rollback),
        )
        if marks.get("rc"):
            raise RuntimeError(f"closedloop rollback exited with {marks['rc']}")
        report = analyse(result, marks["issued"], marks["done"], len(procs))
        report["backend"] = backend
        return report
    except BaseException:
        for log in logs:
            log.flush()
            print(f"--- {log.name} ---\n{Path(log.name).read_text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        for proc in procs:
            serving.stop(proc)
        for log in logs:
            log.close()
        serving.shutil.rmtree(folder, ignore_errors=True)
        if database is not None:
            admin(args.postgres, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=4, help="connections per replica")
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--at", type=float, default=5.0, help="seconds into the load to roll back")
    ap.add_argument("--poll-interval", type=float, default=0.5)
    ap.add_argument("--postgres", default=None, help="admin URL, e.g. .../test")
    ap.add_argument("--no-sqlite", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    backends = ([] if args.no_sqlite else ["sqlite"]) + (["postgres"] if args.postgres else [])
    out: dict[str, dict] = {}
    for backend in backends:
        runs = []
        for run in range(args.runs):
            report = one_run(args, backend, run)
            print(
                f"{backend} run {run + 1}: converged {report['converged_s']} s after issue, "
                f"command {report['rollback_command_s']:.2f} s, failed {report['failed']}/"
                f"{report['requests']}",
                file=sys.stderr,
            )
            runs.append(report)
        converged = [r["converged_s"] for r in runs if r["converged_s"] is not None]
        out[backend] = {
            "median_converged_s": statistics.median(converged) if converged else None,
            "median_converged_after_command_s": statistics.median(
                r["converged_after_command_s"] for r in runs if r["converged_s"] is not None
            )
            if converged
            else None,
            "median_rollback_command_s": statistics.median(r["rollback_command_s"] for r in runs),
            "failed_total": sum(r["failed"] for r in runs),
            "requests_total": sum(r["requests"] for r in runs),
            "runs": runs,
        }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for backend, o in out.items():
            print(
                f"{backend}: median converged {o['median_converged_s']} s, failed "
                f"{o['failed_total']}/{o['requests_total']}"
            )


if __name__ == "__main__":
    main()
