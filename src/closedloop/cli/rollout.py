"""Rollout commands: canary and shadow releases with guardrails (``closedloop rollout …``)."""

from __future__ import annotations

import itertools
import math
import re
from datetime import timedelta
from typing import Any

import click

from closedloop.cli.output import (
    command_runner,
    dump_json,
    json_option,
    model_argument,
    resolve_model,
    say,
    table,
    workspace,
)
from closedloop.errors import InvalidInputError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """``30s``, ``10m``, ``1h``, ``1d`` (also ``1.5h``) as a positive timedelta."""
    match = _DURATION.match(text or "")
    if match is None:
        raise InvalidInputError(
            f"--step-duration must be a number followed by s, m, h or d (e.g. 30s, 10m, 1h). "
            f"Got {text!r} instead."
        )
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise InvalidInputError(f"--step-duration must be longer than 0. Got {text!r} instead.")
    return timedelta(seconds=seconds)


def parse_percent(text: str, option: str) -> float:
    """A percentage in (0, 100] as a weight in (0, 1]."""
    try:
        value = float(text.strip().rstrip("%"))
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0 < value <= 100:
        raise InvalidInputError(f"{option} must be a percentage in (0, 100]. Got {text!r} instead.")
    return value / 100


def parse_steps(text: str) -> tuple[float, ...]:
    """``10,25,50,100`` as weights; strictly increasing, ending at 100."""
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise InvalidInputError("--steps must list percentages, e.g. 10,25,50,100.")
    steps = tuple(parse_percent(p, "Every --steps value") for p in parts)
    if any(b <= a for a, b in itertools.pairwise(steps)) or steps[-1] != 1.0:
        raise InvalidInputError(
            f"--steps must be strictly increasing and end at 100 (promotion). Got {text!r}."
        )
    return steps


@click.group("rollout")
def rollout_group() -> None:
    """Release a version gradually (canary) or silently (shadow), with guardrails."""


@rollout_group.command("start")
@click.argument("model")
@click.argument("version", type=click.IntRange(min=1))
@click.option("--canary", "canary", default=None, help="Initial traffic share in percent [10].")
@click.option("--steps", default=None, help="Canary weights in percent, e.g. 10,25,50,100.")
@click.option("--step-duration", default=None, help="Time per step: 30s, 10m, 1h [10m].")
@click.option("--shadow", is_flag=True, help="Mirror traffic to VERSION instead (no answers).")
@click.option("--reason", default="", help="Why (recorded in the event log).")
@json_option
@command_runner
def start_cmd(
    model: str,
    version: int,
    canary: str | None,
    steps: str | None,
    step_duration: str | None,
    shadow: bool,
    reason: str,
    as_json: bool,
) -> None:
    """Start a canary (default) or a shadow of VERSION of MODEL."""
    from closedloop.services import rollout

    if shadow:
        given = [
            name
            for name, value in (
                ("--canary", canary),
                ("--steps", steps),
                ("--step-duration", step_duration),
            )
            if value is not None
        ]
        if given:
            raise InvalidInputError(f"--shadow cannot be combined with {', '.join(given)}.")
        result = rollout.start_shadow(workspace(), resolve_model(model), version, reason=reason)
    else:
        weight = 0.1 if canary is None else parse_percent(canary, "--canary")
        schedule = rollout.DEFAULT_STEPS if steps is None else parse_steps(steps)
        duration = (
            rollout.DEFAULT_STEP_DURATION
            if step_duration is None
            else parse_duration(step_duration)
        )
        result = rollout.start_canary(
            workspace(),
            resolve_model(model),
            version,
            weight=weight,
            steps=schedule,
            step_duration=duration,
            reason=reason,
        )
    _report(result, as_json)


@rollout_group.command("status")
@model_argument
@json_option
@command_runner
def status_cmd(model: str | None, as_json: bool) -> None:
    """Show MODEL's rollout: mode, versions, traffic share in percent, steps and timing.

    With --json, ``weight``/``steps`` are fractions of the traffic and ``percent``/
    ``steps_percent`` the same figures in percent.
    """
    from closedloop.services import rollout

    model = resolve_model(model)
    body = rollout.status(workspace(), model)
    if as_json:
        dump_json(body)
        return
    for line in describe_status(body):
        say(line)


def describe_status(body: dict[str, Any]) -> list[str]:
    """``rollout status`` in sentences, traffic shares in percent."""
    model, mode, production = body["model"], body["mode"], body["production"]
    serving = f"production v{production}" if production is not None else "no production version"
    if mode == "idle":
        return [f"{model}: no rollout; {serving} serves all traffic"]
    since = str(body.get("started_at") or "")[:19].replace("T", " ")
    if mode == "shadow":
        return [
            f"{model}: shadow v{body['candidate']} receives a copy of all traffic "
            f"since {since} UTC (its answers are logged, never returned)",
            f"{serving} answers every request",
        ]
    steps = body["steps_percent"]
    share = body["percent"]
    timing = (
        f"for {_duration(body['step_seconds'])} of {_duration(body['step_duration_seconds'])}"
        if "step_seconds" in body
        else f"steps of {_duration(body['step_duration_seconds'])}"
    )
    lines = [
        f"{model}: canary v{body['candidate']} at {_pct(share)} "
        f"(step {body['step_index'] + 1} of {len(steps)}: "
        f"{' → '.join(f'{s:g}' for s in steps)} %), {timing}",
        f"{serving} serves the other {_pct(100 - share)}; canary started {since} UTC",
    ]
    if "next_step_at" in body:
        nxt = (
            "promotes"
            if body["promotes_next"]
            else f"moves to {_pct(steps[body['step_index'] + 1])}"
        )
        when = (
            "now, once the guardrails pass"
            if body["step_elapsed"]
            else f"at {str(body['next_step_at'])[:19].replace('T', ' ')} UTC at the earliest, "
            "if the guardrails pass"
        )
        lines.append(f"next step: {nxt} {when} (`closedloop rollout evaluate {model}`)")
    return lines


def _pct(value: float) -> str:
    return f"{value:g} %"


def _duration(seconds: float) -> str:
    """45 s, 3 min, 1.5 h, 2 d."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.3g} h"
    return f"{seconds / 86400:.3g} d"


@rollout_group.command("evaluate")
@model_argument
@json_option
@command_runner
def evaluate_cmd(model: str | None, as_json: bool) -> None:
    """Run the guardrails on the canary's traffic and apply the verdict."""
    from closedloop.services import rollout

    model = resolve_model(model)
    result = rollout.evaluate(workspace(), model)
    if as_json:
        dump_json(result)
        return
    verdict = result["verdict"]
    rows = [
        (
            c["name"],
            _show(c["canary"]),
            _show(c["production"]),
            _show(c["threshold"]),
            {True: "pass", False: "FAIL", None: "not judged"}[c["passed"]],
            c.get("note", ""),
        )
        for c in verdict["checks"]
    ]
    table(
        f"guardrails of {model}",
        ["check", "canary", "production", "threshold", "result", "note"],
        rows,
    )
    say(f"{model}: {verdict['action']} — {'; '.join(verdict['reasons'])}")


def _simple(name: str, help_text: str, action: str) -> click.Command:
    @click.command(name, help=help_text)
    @model_argument
    @click.option("--reason", default="", help="Why (recorded in the event log).")
    @json_option
    @command_runner
    def command(model: str | None, reason: str, as_json: bool) -> None:
        from closedloop.services import rollout

        model = resolve_model(model)
        function = getattr(rollout, action)
        _report(function(workspace(), model, reason=reason), as_json)

    return command


for _command in (
    _simple("promote", "Make MODEL's canary production now.", "promote"),
    _simple("abort", "End MODEL's canary; production never moved.", "abort"),
    _simple("advance", "Move MODEL's canary to its next step now.", "advance"),
    _simple("stop-shadow", "Stop mirroring MODEL's traffic to its shadow.", "stop_shadow"),
):
    rollout_group.add_command(_command)


def _report(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        dump_json(result)
        return
    model, after = result["model"], result["state"]
    moves = ", ".join(
        f"{m['alias']}→{'removed' if m['version'] is None else 'v' + str(m['version'])}"
        for m in result.get("alias_moves", [])
    )
    weight = f" at {_pct(after['percent'])}" if after["mode"] == "canary" else ""
    version = f" v{after['candidate']}" if after["candidate"] is not None else ""
    say(
        f"{model}: {result['transition']}; now {after['mode']}{version}{weight}, "
        f"production v{after['production']}" + (f" ({moves})" if moves else "")
    )


def _show(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def register(cli: click.Group) -> None:
    cli.add_command(rollout_group)
