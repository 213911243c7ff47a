"""`closedloop rollout …` as a user runs it: real subprocesses on a trained project."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.test_cli import as_json, assert_clean_error, cli, ok


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project after `init` with two registered versions, v1 in production.

    The versions are registered in-process: `train` on the demo data takes half a minute."""
    from tests.support import features, fit_model, loans

    from closedloop.services import registry
    from closedloop.services.workspace import Workspace

    folder = tmp_path_factory.mktemp("rollout-template")
    ok(folder, "init")
    ws = Workspace.open(folder)
    frame = loans(300)
    estimator = fit_model(frame)
    for _ in range(2):
        registry.register_version(ws, "loans", estimator, features(frame))
    registry.set_alias(ws, "loans", "production", 1, reason="first version")
    ws.close()
    return folder


@pytest.fixture
def project(template: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    shutil.copytree(template, folder)
    return folder


def _registry(project: Path) -> Any:
    from closedloop.services.workspace import Workspace

    return Workspace.open(project)


def test_canary_start_status_evaluate_promote(project: Path) -> None:
    from closedloop.services import events, registry

    started = as_json(
        ok(
            project,
            "rollout",
            "start",
            "loans",
            "2",
            "--canary",
            "20",
            "--steps",
            "20,50,100",
            "--step-duration",
            "30s",
            "--reason",
            "new model",
            "--json",
        )
    )
    assert started["transition"] == "canary_started"
    assert started["state"]["steps"] == [0.2, 0.5, 1.0]
    assert started["state"]["step_duration_seconds"] == 30

    status = as_json(ok(project, "rollout", "status", "loans", "--json"))
    assert status["mode"] == "canary" and status["candidate"] == 2 and status["production"] == 1

    evaluated = as_json(ok(project, "rollout", "evaluate", "loans", "--json"))
    assert evaluated["action"] == "wait"
    assert {c["name"] for c in evaluated["verdict"]["checks"]} >= {"error_rate"}

    assert_clean_error(cli(project, "rollout", "start", "loans", "2"), "canary of v2 is running")

    promoted = ok(project, "rollout", "promote", "loans").stdout
    assert "promoted" in promoted and "production v2" in promoted
    ws = _registry(project)
    try:
        assert registry.resolve_alias(ws, "loans") == 2
        assert registry.resolve_alias(ws, "loans", "canary") is None
        found = [e for e in events.list_events(ws, model="loans") if e.kind.startswith("rollout.")]
        assert [e.kind for e in found] == [
            "rollout.canary_started",
            "rollout.evaluated",
            "rollout.promoted",
        ]
        assert found[0].reason == "new model"
    finally:
        ws.close()


def test_shadow_start_stop_and_a_conflict_as_json(project: Path) -> None:
    text = ok(project, "rollout", "start", "loans", "2", "--shadow").stdout
    assert "shadow v2" in text
    stopped = as_json(ok(project, "rollout", "stop-shadow", "loans", "--json"))
    assert stopped["transition"] == "shadow_stopped"
    assert stopped["state"]["mode"] == "idle"
    error = cli(project, "rollout", "abort", "loans", "--reason", "x", "--json")
    assert_clean_error(error, "no rollout is running")
    assert as_json(error)["error"]["code"] == "conflict"


def test_a_bad_duration_is_one_clear_error(project: Path) -> None:
    result = cli(project, "rollout", "start", "loans", "2", "--step-duration", "10x")
    assert_clean_error(result, "--step-duration must be a number followed by s, m, h or d")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--step-duration", "0s"], "longer than 0"),
        (["--step-duration", "ten minutes"], "e.g. 30s, 10m, 1h"),
        (["--canary", "0"], "(0, 100]"),
        (["--canary", "150"], "(0, 100]"),
        (["--canary", "abc"], "(0, 100]"),
        (["--steps", "50,25,100"], "strictly increasing"),
        (["--steps", "10,50"], "end at 100"),
        (["--shadow", "--canary", "10"], "--shadow cannot be combined with --canary"),
    ],
)
def test_bad_arguments_are_refused_before_touching_the_project(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    """In-process (the arguments are checked before the workspace is opened)."""
    from click.testing import CliRunner

    from closedloop.cli.main import cli as root
    from closedloop.cli.rollout import rollout_group

    root.add_command(rollout_group)
    result = CliRunner().invoke(
        root, ["--project", str(tmp_path), "rollout", "start", "loans", "2", *args]
    )
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert not (tmp_path / ".closedloop").exists()


def test_durations_and_percentages_parse() -> None:
    from datetime import timedelta

    from closedloop.cli.rollout import parse_duration, parse_percent, parse_steps

    assert parse_duration("30s") == timedelta(seconds=30)
    assert parse_duration("10m") == timedelta(minutes=10)
    assert parse_duration("1.5h") == timedelta(minutes=90)
    assert parse_percent("12.5%", "--canary") == 0.125
    assert parse_steps("10, 25,50,100") == (0.1, 0.25, 0.5, 1.0)
