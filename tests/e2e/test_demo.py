"""`closedloop demo` end to end: the narrated loop, the store it leaves, and a store it must not
touch."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from closedloop.domain.simulate import LoanSimulator

pytestmark = pytest.mark.slow

MODEL = "loans"


def cli(folder: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOSEDLOOP_")}
    return subprocess.run(
        [sys.executable, "-m", "closedloop", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def ok_json(folder: Path, *args: str) -> Any:
    result = cli(folder, *args, "--json")
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return json.loads(result.stdout)


def line_with(output: str, pattern: str) -> re.Match[str]:
    """The single narration line matching ``pattern``."""
    matches = [m for m in (re.search(pattern, line) for line in output.splitlines()) if m]
    assert len(matches) == 1, (pattern, output)
    return matches[0]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Run the demo once (in a folder of its own, from yet another working directory)."""
    base = tmp_path_factory.mktemp("demo")
    folder = base / "demo-project"
    result = cli(base, "demo", "--folder", str(folder), timeout=300)
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return folder, result.stdout


def test_demo_narrates_the_whole_loop(demo: tuple[Path, str]) -> None:
    _, out = demo

    assert line_with(out, r"^\s+agent: drift check — no drift$")
    first = line_with(out, r"^\s+agent: drift check — DRIFTED; flagged columns: ([^(]+) \(1 window")
    assert {c.strip() for c in first.group(1).split(",")} == set(LoanSimulator.drifted_columns)
    alert = line_with(
        out, r"^\s+agent: drift check — DRIFTED again; flagged columns: (.+): drift alert raised$"
    )
    assert {c.strip() for c in alert.group(1).split(",")} == set(LoanSimulator.drifted_columns)
    assert line_with(out, r"^\s+agent: retrain requested by the drift trigger$")
    assert line_with(out, r"^\s+agent: v2 trained on traffic: last \d+ labelled rows$")
    assert line_with(
        out, r"^\s+v2: gate PASSED — .* its 95% interval [0-9.]+ to [0-9.]+ lies above"
    )
    assert line_with(out, r"^\s+agent: canary v2 started at 50% of traffic; production unchanged$")
    assert line_with(out, r"^\s+guardrails: PROMOTE — every guardrail passed: .*label_roc_auc")
    shadow = line_with(
        out, r"^\s+shadow v3 agrees with production v2 on (\d+)% .* only ever got v2$"
    )
    assert int(shadow.group(1)) < 50  # the sabotaged model disagrees, and nobody saw it
    assert line_with(out, r"^\s+guardrails: ABORT — .*label_roc_auc: canary [0-9.]+ worse than")
    assert line_with(out, r"^\s+production is still v2$")
    collapse = line_with(out, r"^\s+v3 ROC AUC on labelled traffic: ([0-9.]+) — quality collapsed")
    assert float(collapse.group(1)) < 0.5

    assert line_with(out, r"^\s+production v3 → v2 \(last known-good\)")
    during = line_with(out, r"^\s+requests during the rollback: (\d+), failed: (\d+)$")
    assert int(during.group(1)) > 0
    assert during.group(2) == "0"
    v1 = line_with(out, r"^\s+v1: roc_auc=([0-9.]+) gate=passed aliases=—$")
    v2 = line_with(
        out,
        r"^\s+v2: roc_auc=([0-9.]+) gate=passed \(on v2's held-out rows: "
        r"v2 ([0-9.]+) vs v1 ([0-9.]+)\) aliases=production$",
    )
    # each version's own figure is on its own held-out rows; the gate's on the same rows
    assert v2.group(1) == v2.group(2)
    assert float(v2.group(2)) > float(v2.group(3))
    assert float(v1.group(1)) > 0.5
    assert line_with(
        out,
        r"^\s+note: each roc_auc above is on that version's own held-out rows "
        r"\(v1 on simulator:history; v2 on traffic: .*\).* same rows$",
    )
    assert line_with(out, r"^\s+v3: roc_auc=— gate=not gated aliases=—$")
    # events without a version show a dash, never "v-"
    assert not re.search(r"\bv-", out), out
    assert line_with(out, r"^\s+alerts raised: drift, canary_aborted, rollback_done ")
    assert re.search(r"^done in [0-9.]+ s\. The store is in .*demo-project", out, re.MULTILINE)


def test_demo_ends_with_the_exact_commands_to_look_around(demo: tuple[Path, str]) -> None:
    folder, out = demo
    lines = out.splitlines()
    start = lines.index("next, look around (run these from this folder):")
    commands = [
        line.split("#")[0].strip() for line in lines[start + 1 :] if line.startswith("    ")
    ]
    programs = {shlex.split(c)[0] for c in commands}
    assert len(programs) == 1
    # this environment's own closedloop: the script beside its python, by name only when that
    # is the one on PATH
    script = Path(sys.executable).parent / "closedloop"
    on_path = shutil.which("closedloop")
    if on_path and Path(on_path).resolve() == script.resolve():
        assert programs == {"closedloop"}
    else:
        assert programs == {str(script)}
    activate = Path(sys.executable).parent / "activate"
    if activate.exists() and programs != {"closedloop"}:
        assert lines[-1] == (
            f"(or `source {activate}` once, then plain `closedloop models` and so on)"
        )
    ran = []
    for command in commands:
        args = shlex.split(command)
        assert args[1:3] == ["--project", folder.name], command  # typed from the demo's cwd
        if args[3] == "serve":
            continue
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLOSEDLOOP_")}
        done = subprocess.run(
            args, cwd=folder.parent, capture_output=True, text=True, timeout=120, env=env
        )
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        ran.append(args[3])
    assert ran == ["models", "versions", "history", "runs", "report"]


def test_demo_leaves_a_store_the_cli_can_read(demo: tuple[Path, str]) -> None:
    folder, _ = demo

    models = {m["name"]: m for m in ok_json(folder, "models")}
    assert models[MODEL]["aliases"] == {"production": 2}
    assert models[MODEL]["latest_version"] == 3

    history = ok_json(folder, "history", MODEL)
    rollbacks = [e for e in history if e["kind"] == "alias.rollback"]
    assert len(rollbacks) == 1
    rollback = rollbacks[0]
    assert rollback["payload"] == {"alias": "production", "from_version": 3, "to_version": 2}
    assert rollback["actor"] == "demo"
    assert rollback["reason"] == "v3 quality collapsed"
    assert history[-1] == rollback

    checks = [
        e for e in ok_json(folder, "history", MODEL, "--all") if e["kind"] == "check.recorded"
    ]
    # the agent's checks: the calm window, then the two drifted windows that raised the alert
    assert [e["payload"]["drifted"] for e in checks][:3] == [False, True, True]
    retrains = [
        e for e in ok_json(folder, "history", MODEL, "--all") if e["kind"] == "retrain.finished"
    ]
    assert [(e["version"], e["payload"]["status"]) for e in retrains] == [(2, "canary")]


def _snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(folder)): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mtime_ns,
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_demo_refuses_a_store_it_did_not_create(tmp_path: Path) -> None:
    init = cli(tmp_path, "init")
    assert init.returncode == 0, init.stderr
    upgrade = cli(tmp_path, "db", "upgrade")  # creates the project's (empty) store
    assert upgrade.returncode == 0, upgrade.stderr
    assert ok_json(tmp_path, "models") == []
    store = tmp_path / ".closedloop"
    assert (store / "metadata.db").is_file()
    before = _snapshot(tmp_path)

    result = cli(tmp_path, "demo", "--folder", str(tmp_path), timeout=120)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert str(store) in errors[0]
    assert "did not create" in errors[0]
    assert "hint:" in result.stderr

    assert _snapshot(tmp_path) == before
    assert ok_json(tmp_path, "models") == []
