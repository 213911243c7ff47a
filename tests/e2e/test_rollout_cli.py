"""`closedloop rollout …` as a user runs it: real subprocesses on a trained project."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.test_cli import _clean_env, as_json, assert_clean_error, cli, ok


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


def _cells(text: str, first: str) -> list[str]:
    """The cells of the table row (or header) whose first cell is ``first``."""
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"[┃│]", line)[1:-1]]
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row starting with {first!r} in:\n{text}")


def test_status_speaks_percent_and_evaluate_has_headers(project: Path) -> None:
    assert ok(project, "rollout", "status", "loans").stdout.splitlines() == [
        "loans: no rollout; production v1 serves all traffic"
    ]
    ok(project, "rollout", "start", "loans", "2", "--canary", "10", "--steps", "25,50,100")

    lines = ok(project, "rollout", "status", "loans").stdout.splitlines()
    assert re.fullmatch(
        r"loans: canary v2 at 10 % \(step 1 of 4: 10 → 25 → 50 → 100 %\), "
        r"for \d+ s of 10 min",
        lines[0],
    ), lines
    assert re.fullmatch(
        r"production v1 serves the other 90 %; canary started \d{4}-\d\d-\d\d [\d:]{8} UTC",
        lines[1],
    )
    assert re.fullmatch(
        r"next step: moves to 25 % at .* UTC at the earliest, if the guardrails pass "
        r"\(`closedloop rollout evaluate loans`\)",
        lines[2],
    )
    assert "False" not in "\n".join(lines) and "0.1" not in "\n".join(lines)

    status = as_json(ok(project, "rollout", "status", "loans", "--json"))
    assert (status["weight"], status["percent"]) == (0.1, 10.0)
    assert status["steps"] == [0.1, 0.25, 0.5, 1.0]
    assert status["steps_percent"] == [10.0, 25.0, 50.0, 100.0]
    assert status["step_number"] == 1

    advanced = ok(project, "rollout", "advance", "loans").stdout
    assert "now canary v2 at 25 %, production v1" in advanced

    table = ok(project, "rollout", "evaluate", "loans").stdout
    assert _cells(table, "check") == [
        "check",
        "canary",
        "production",
        "threshold",
        "result",
        "note",
    ]
    assert _cells(table, "error_rate")[4] in ("pass", "not judged")
    assert "loans: wait — " in table


def test_rollback_during_a_canary_ends_it(project: Path) -> None:
    """The issue: production v2, a canary of v1, then `rollback` → canary→v1, production→v1
    and the rollout still in canary mode. Now the rollout ends with the rollback."""
    from closedloop.services import events

    ok(project, "alias", "set", "loans", "production", "2", "--reason", "v2 goes live")
    ok(project, "rollout", "start", "loans", "1", "--canary", "10")

    back = ok(project, "rollback", "loans", "--reason", "incident")
    assert back.stdout.splitlines() == [
        "loans: production rolled back from v2 to v1 (servers pick it up without restart)",
        "loans: the canary of v1 ended with the rollback",
    ]
    models = as_json(ok(project, "models", "--json"))
    assert models[0]["aliases"] == {"production": 1}
    status = as_json(ok(project, "rollout", "status", "loans", "--json"))
    assert (status["mode"], status["production"], status["candidate"]) == ("idle", 1, None)
    ws = _registry(project)
    try:
        found = [e for e in events.list_events(ws, model="loans") if e.id > 0]
        rollback = next(e for e in found if e.kind == "alias.rollback")
        after = [e.kind for e in found if e.id > rollback.id]
        assert after == ["alias.deleted", "rollout.rolled_back", "alert.raised"]
        ended = next(e for e in found if e.kind == "rollout.rolled_back")
        assert ended.payload["rollback_event"] == rollback.id
        assert ended.ts == rollback.ts and ended.reason == "incident"
    finally:
        ws.close()
    # a new rollout can start straight away
    ok(project, "rollout", "start", "loans", "2", "--canary", "5")


def test_alias_list_shows_version_actor_time_and_reason(project: Path) -> None:
    env = _clean_env(CLOSEDLOOP_ACTOR="alice")
    ok(project, "alias", "set", "loans", "champion", "2", "--reason", "best offline", env=env)
    listed = as_json(ok(project, "alias", "list", "loans", "--json"))
    assert [(a["alias"], a["version"], a["actor"], a["reason"]) for a in listed] == [
        ("champion", 2, "alice", "best offline"),
        ("production", 1, listed[1]["actor"], "first version"),
    ]
    assert all(a["updated_at"] for a in listed)
    text = ok(project, "alias", "list", "loans").stdout
    assert _cells(text, "alias") == ["alias", "version", "moved (UTC)", "by", "how", "reason"]
    champion = _cells(text, "champion")
    assert champion[:2] == ["champion", "v2"]
    assert champion[3:] == ["alice", "set", "best offline"]
    assert_clean_error(cli(project, "alias", "list", "nosuch"), "No model named 'nosuch'")


def test_alias_delete_is_recorded_and_guards_what_is_served(project: Path) -> None:
    from closedloop.services import registry

    env = _clean_env(CLOSEDLOOP_ACTOR="bob")
    ok(project, "alias", "set", "loans", "champion", "2", env=env)
    gone = ok(project, "alias", "delete", "loans", "champion", "--reason", "retired", env=env)
    assert gone.stdout.strip() == "loans@champion deleted (it pointed at v2)"
    last = as_json(ok(project, "history", "loans", "--json"))[-1]
    assert (last["kind"], last["actor"], last["reason"]) == ("alias.deleted", "bob", "retired")
    assert last["payload"] == {"alias": "champion", "from_version": 2, "to_version": None}
    assert_clean_error(cli(project, "alias", "delete", "loans", "champion"), "no alias 'champion'")

    served = cli(project, "alias", "delete", "loans", "production")
    assert_clean_error(served, "production (v1) is what servers answer")
    assert "--force" in served.stderr

    ok(project, "rollout", "start", "loans", "2", "--canary", "10")
    canary = cli(project, "alias", "delete", "loans", "canary", "--force")
    assert_clean_error(canary, "belongs to the running canary")
    assert "hint: End the canary with `closedloop rollout abort loans`" in canary.stderr
    ok(project, "rollout", "abort", "loans")
    ok(project, "rollout", "start", "loans", "2", "--shadow")
    shadow = cli(project, "alias", "delete", "loans", "shadow")
    assert_clean_error(shadow, "belongs to the running shadow")
    assert "`closedloop rollout stop-shadow loans`" in shadow.stderr
    ok(project, "rollout", "stop-shadow", "loans")

    forced = as_json(ok(project, "alias", "delete", "loans", "production", "--force", "--json"))
    assert forced == {
        "model": "loans",
        "alias": "production",
        "from_version": 1,
        "to_version": None,
    }
    ws = _registry(project)
    try:
        assert registry.resolve_alias(ws, "loans") is None
        assert registry.alias_history(ws, "loans", "production")[-1].payload["forced"] is True
    finally:
        ws.close()
