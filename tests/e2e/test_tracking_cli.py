"""`closedloop runs` and `closedloop versions` as a user reads them: metric values to four
significant figures (``--json`` keeps full precision), a metric's history step by step, and each
version's own held-out metric beside the gate's head-to-head figures on the same rows."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from tests.e2e.test_cli import MODEL, _clean_env, as_json, assert_clean_error, cli, ok


@pytest.fixture(autouse=True)
def _no_closedloop_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process helpers (the tracking API) must see the project only."""
    for key in [k for k in os.environ if k.startswith("CLOSEDLOOP_")]:
        monkeypatch.delenv(key)


@pytest.fixture(scope="module")
def trained_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project after `init`, `train` (v1, production) and `train` again (v2, rejected)."""
    folder = tmp_path_factory.mktemp("template")
    ok(folder, "init")
    ok(folder, "train")
    ok(folder, "train")
    return folder


@pytest.fixture
def project(trained_template: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    shutil.copytree(trained_template, folder)
    return folder


LOSSES = [0.912345678901, 0.523456789012, 0.301234567891]
NUMBER = re.compile(r"(?<![\w.])\d+\.\d+(?:e[+-]\d+)?")


def most_significant_digits(output: str) -> int:
    """The most significant digits of any decimal number printed (0.0001531 has 4)."""
    counts = [
        len(m.group().split("e")[0].replace(".", "").lstrip("0")) for m in NUMBER.finditer(output)
    ]
    return max(counts, default=0)


def log_a_sweep(project: Path) -> str:
    """A run of the user's own, logged through the Python API: a loss at three steps."""
    from closedloop import start_run
    from closedloop.services.workspace import Workspace

    ws = Workspace.open(project)
    try:
        with start_run(ws, name="sweep", experiment="tuning") as run:
            run.log_params({"alpha": 3.0})
            for step, loss in enumerate(LOSSES):
                run.log_metric("loss", loss, step=step)
            run.log_metric("auc", 0.87654321, step=2)
        return run.id
    finally:
        ws.close()


def row(output: str, first_cell: str) -> list[str]:
    """The cells of the table row whose first cell is ``first_cell``."""
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("│┃").split("│")]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in:\n{output}")


def test_runs_show_four_significant_figures_and_json_keeps_full_precision(
    project: Path,
) -> None:
    sweep = log_a_sweep(project)
    listed = ok(project, "runs")
    assert most_significant_digits(listed.stdout) <= 4, listed.stdout
    sweep_row = row(listed.stdout, sweep[:8])
    # the last value of a metric logged at several steps, with its step count
    assert "loss=0.3012 (3 steps)" in sweep_row[5]
    assert "auc=0.8765" in sweep_row[5]

    runs = {r["id"]: r for r in as_json(ok(project, "runs", "--json"))}
    assert runs[sweep]["metrics"]["loss"] == LOSSES[-1]
    assert runs[sweep]["metric_history"]["loss"] == [[s, v] for s, v in enumerate(LOSSES)]
    train_run = next(r for r in runs.values() if r["name"] == "train-loans")

    compared = ok(project, "runs", "--compare", train_run["id"])
    assert most_significant_digits(compared.stdout) <= 4, compared.stdout
    for name in ("roc_auc", "gate.incumbent.roc_auc", "gate.improvement.low"):
        value = train_run["metrics"][name]
        assert row(compared.stdout, f"metric:{name}")[1] == f"{value:.4g}"
    # the estimator's own parameters are there to compare, beside the pipeline's
    assert row(compared.stdout, "param:trainer")[1] == "pipeline:train"
    booster = "param:model.histgradientboostingclassifier__max_iter"
    assert row(compared.stdout, booster)[1] == "150"

    sweep_compared = ok(project, "runs", "--compare", sweep)
    assert row(sweep_compared.stdout, "metric:loss")[1] == "0.3012 (3 steps)"
    assert row(sweep_compared.stdout, "param:alpha")[1] == "3.0"


def test_runs_metric_lists_every_step(project: Path) -> None:
    sweep = log_a_sweep(project)

    steps = ok(project, "runs", "--metric", "loss")
    rows = [row_ for row_ in _rows(steps.stdout) if row_[0] == sweep[:8]]
    assert [(r[2], r[3]) for r in rows] == [("0", "0.9123"), ("1", "0.5235"), ("2", "0.3012")]

    data = as_json(ok(project, "runs", "--metric", "loss", "--json"))
    assert data == [
        {
            "id": sweep,
            "name": "sweep",
            "metric": "loss",
            "history": [{"step": s, "value": v} for s, v in enumerate(LOSSES)],
        }
    ]
    # the pipeline's runs have the gate's figures; the sweep has none
    gate = as_json(ok(project, "runs", "--metric", "gate.passed", "--json"))
    assert sorted(r["history"][0]["value"] for r in gate) == [0.0, 1.0]  # v2 tied: rejected

    missing = cli(project, "runs", "--metric", "nosuch")
    assert_clean_error(missing, "'nosuch'")
    assert "loss" in missing.stderr  # the hint names the metrics there are


def test_versions_show_the_gates_same_row_figures_beside_each_versions_own(
    project: Path,
) -> None:
    versions = {v["number"]: v for v in as_json(ok(project, "versions", MODEL, "--json"))}
    gate = versions[2]["lineage"]["gate"]

    shown = ok(project, "versions", MODEL, env=_clean_env(COLUMNS="200")).stdout
    assert most_significant_digits(shown) <= 4, shown
    first, second = row(shown, "1"), row(shown, "2")
    assert first[2] == f"roc_auc={versions[1]['metrics']['roc_auc']:.4g}"
    assert first[4] == "no production then"
    assert second[2] == f"roc_auc={versions[2]['metrics']['roc_auc']:.4g}"
    assert second[4] == f"v2 {gate['candidate']:.4g} vs v1 {gate['incumbent']:.4g}"
    note = [line for line in shown.splitlines() if line.startswith("note:")]
    assert len(note) == 1
    assert "own held-out rows" in note[0]
    assert "both scored on the candidate's held-out rows" in note[0]


def _rows(output: str) -> list[list[str]]:
    return [
        [c.strip() for c in line.strip().strip("│").split("│")]
        for line in output.splitlines()
        if line.startswith("│")
    ]
