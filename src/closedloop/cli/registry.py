"""Registry and tracking commands: models, versions, history, alias, rollback, runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from closedloop.cli.output import (
    command_runner,
    dump_json,
    figure,
    json_option,
    model_argument,
    resolve_model,
    say,
    table,
    workspace,
)
from closedloop.errors import ConfigError

if TYPE_CHECKING:
    from closedloop.services.tracking import RunInfo

VERSIONS_NOTE = (
    "note: `metrics` scores each version on its own held-out rows, so versions trained on "
    "different data are scored on different rows and their figures are not comparable; "
    "`gate (same rows)` is the candidate vs the production version of the time, both scored on "
    "the candidate's held-out rows."
)


@click.command("models")
@json_option
@command_runner
def models_cmd(as_json: bool) -> None:
    """List registered models with their latest version and aliases."""
    from closedloop.services import registry

    found = registry.list_models(workspace())
    if as_json:
        dump_json([m.to_dict() for m in found])
        return
    rows = [
        (
            m.name,
            m.latest_version,
            ", ".join(f"{a}→v{v}" for a, v in sorted(m.aliases.items())),
            m.created_at.strftime("%Y-%m-%d %H:%M"),
        )
        for m in found
    ]
    table("models", ["model", "latest", "aliases", "created"], rows)


@click.command("versions")
@model_argument
@json_option
@command_runner
def versions_cmd(model: str | None, as_json: bool) -> None:
    """List the versions of MODEL with metrics, lineage and aliases."""
    from closedloop.services import registry

    model = resolve_model(model)
    found = registry.list_versions(workspace(), model)
    if as_json:
        dump_json([v.to_dict() for v in found])
        return
    rows = []
    for v in found:
        metrics = ", ".join(f"{k}={figure(val)}" for k, val in v.metrics.items())
        gate = v.lineage.get("gate", {})
        data = v.lineage.get("dataset", {})
        rows.append(
            (
                v.number,
                ", ".join(v.aliases),
                metrics,
                "passed" if gate.get("passed") else ("rejected" if gate else ""),
                head_to_head(gate, v.number),
                str(data.get("sha256", ""))[:12],
                (v.lineage.get("git_commit") or "")[:10],
                v.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            )
        )
    table(
        f"versions of {model}",
        ["version", "aliases", "metrics", "gate", "gate (same rows)", "data", "commit", "created"],
        rows,
    )
    if any(v.lineage.get("gate") for v in found):
        say(VERSIONS_NOTE)


def head_to_head(gate: dict[str, Any], number: int) -> str:
    """The gate's figures from a version's lineage: ``v2 0.8123 vs v1 0.7681``, both scored on
    the candidate's held-out rows; empty when the version was not gated."""
    if not gate:
        return ""
    candidate, incumbent = gate.get("candidate"), gate.get("incumbent")
    if candidate is None:
        return ""
    if incumbent is None:
        return "no production then"
    against = gate.get("incumbent_version")
    return f"v{number} {figure(candidate)} vs v{against or '?'} {figure(incumbent)}"


@click.command("history")
@model_argument
@click.option("--alias", default=None, help="Only this alias's moves.")
@click.option(
    "--all", "everything", is_flag=True, help="Every event of the model, not only alias moves."
)
@json_option
@command_runner
def history_cmd(model: str | None, alias: str | None, everything: bool, as_json: bool) -> None:
    """Show the recorded history of MODEL: who moved which alias, when and why."""
    from closedloop.services import events, registry

    model = resolve_model(model)
    ws = workspace()
    found = (
        events.list_events(ws, model=model)
        if everything
        else registry.alias_history(ws, model, alias)
    )
    if as_json:
        dump_json([e.to_dict() for e in found])
        return
    rows = []
    for e in found:
        p = e.payload
        what = (
            f"{p.get('alias')}: {_v(p.get('from_version'))} → {_v(p.get('to_version'))}"
            if "alias" in p
            else (f"v{e.version}" if e.version else "")
        )
        rows.append((e.ts.strftime("%Y-%m-%d %H:%M:%S"), e.kind, what, e.actor, e.reason))
    table(f"history of {model}", ["time (UTC)", "event", "change", "actor", "reason"], rows)


@click.group("alias")
def alias_group() -> None:
    """Move aliases (production, canary, shadow or any name)."""


@alias_group.command("set")
@click.argument("model")
@click.argument("alias")
@click.argument("version", type=click.IntRange(min=1))
@click.option("--reason", default="", help="Why (recorded in the event log).")
@click.option(
    "--force",
    is_flag=True,
    help="Move production to a version the gate rejected or that was rolled back from "
    "(needs --reason; recorded as forced).",
)
@json_option
@command_runner
def alias_set_cmd(
    model: str, alias: str, version: int, reason: str, force: bool, as_json: bool
) -> None:
    """Point ALIAS of MODEL at VERSION (recorded; servers follow it without restart).

    Production is not moved to a version the gate rejected, or one it was rolled back from,
    unless --force is given with a --reason.
    """
    from closedloop.services import registry

    model = resolve_model(model)
    before = registry.set_alias(workspace(), model, alias, version, reason=reason, force=force)
    if as_json:
        dump_json({"model": model, "alias": alias, "from_version": before, "to_version": version})
        return
    say(f"{model}@{alias}: v{before} → v{version}" if before else f"{model}@{alias} → v{version}")


@alias_group.command("list")
@click.argument("model")
@json_option
@command_runner
def alias_list_cmd(model: str, as_json: bool) -> None:
    """List MODEL's aliases: version, who moved each last, when and why."""
    from closedloop.services import registry

    found = registry.list_aliases(workspace(), model)
    if as_json:
        dump_json([a.to_dict() for a in found])
        return
    if not found:
        say(f"{model} has no aliases; set one with `closedloop alias set {model} production N`")
        return
    rows = [
        (
            a.alias,
            f"v{a.version}",
            a.updated_at.strftime("%Y-%m-%d %H:%M:%S"),
            a.actor,
            a.kind.removeprefix("alias."),
            a.reason,
        )
        for a in found
    ]
    table(
        f"aliases of {model}",
        ["alias", "version", "moved (UTC)", "by", "how", "reason"],
        rows,
    )


@alias_group.command("delete")
@click.argument("model")
@click.argument("alias")
@click.option("--reason", default="", help="Why (recorded in the event log).")
@click.option(
    "--force", is_flag=True, help="Delete production even though it is what servers answer with."
)
@json_option
@command_runner
def alias_delete_cmd(model: str, alias: str, reason: str, force: bool, as_json: bool) -> None:
    """Remove ALIAS of MODEL (recorded as alias.deleted).

    Deleting production stops serving MODEL and needs --force. The canary or shadow alias of a
    running rollout is removed by `closedloop rollout abort` / `stop-shadow`, not here.
    """
    from closedloop.services import registry

    before = registry.delete_alias(workspace(), model, alias, reason=reason, force=force)
    if as_json:
        dump_json({"model": model, "alias": alias, "from_version": before, "to_version": None})
        return
    say(f"{model}@{alias} deleted (it pointed at v{before})")


@click.command("rollback")
@model_argument
@click.option("--reason", default="", help="Why (recorded in the event log).")
@json_option
@command_runner
def rollback_cmd(model: str | None, reason: str, as_json: bool) -> None:
    """Move MODEL's production alias to its last known-good version.

    A canary or shadow running at that moment ends with it, and the rollback_done alert is
    raised at once.
    """
    from closedloop.services import registry

    model = resolve_model(model)
    done = registry.roll_back(workspace(), model, reason=reason)
    ended = done.ended
    if as_json:
        dump_json(
            {
                "model": model,
                "from_version": done.from_version,
                "to_version": done.to_version,
                "rollout_ended": ended.mode if ended else None,
            }
        )
        return
    say(
        f"{model}: production rolled back from v{done.from_version} to v{done.to_version} "
        "(servers pick it up without restart)"
    )
    if ended:
        say(f"{model}: the {ended.mode} of v{ended.candidate} ended with the rollback")


@click.command("runs")
@click.argument("compare_ids", metavar="[RUN]...", nargs=-1)
@click.option("--experiment", default=None, help="Only runs of this experiment.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--compare", is_flag=True, help="Compare the RUNs' params and metrics side by side.")
@click.option(
    "--metric",
    default=None,
    metavar="NAME",
    help="Show every recorded step of metric NAME in the listed (or compared) runs.",
)
@json_option
@command_runner
def runs_cmd(
    compare_ids: tuple[str, ...],
    experiment: str | None,
    limit: int,
    compare: bool,
    metric: str | None,
    as_json: bool,
) -> None:
    """List tracked runs (newest first), or compare RUNs' params and metrics side by side
    (`closedloop runs --compare RUN RUN`; a RUN is its id or the start of it).

    Metric values are shown to 4 significant figures (--json keeps full precision); a metric
    logged at several steps shows its last value and its step count, and --metric NAME lists
    every step.
    """
    from closedloop.services import tracking

    if compare and not compare_ids:
        raise ConfigError(
            "--compare needs the runs to compare.",
            hint="Name them by id (or its start): closedloop runs --compare RUN RUN.",
        )
    ws = workspace()
    found = (
        [tracking.get_run(ws, r) for r in compare_ids]
        if compare_ids
        else tracking.list_runs(ws, experiment=experiment, limit=limit)
    )
    if metric is not None:
        _metric_steps(found, metric, as_json)
        return
    if as_json:
        dump_json([r.to_dict() for r in found])
        return
    if compare_ids:
        keys = sorted(
            {f"param:{k}" for r in found for k in r.params}
            | {f"metric:{k}" for r in found for k in r.metrics}
        )
        rows = [(key, *(_field(r, key) for r in found)) for key in keys]
        table("runs compared", ["", *(r.id[:8] for r in found)], rows, fit_first=True)
        return
    rows = [
        (
            r.id[:8],
            r.name,
            r.experiment,
            r.status,
            r.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            _metrics_summary(r),
            (r.code.get("git_commit") or "")[:10],
        )
        for r in found
    ]
    table("runs", ["run", "name", "experiment", "status", "started", "metrics", "commit"], rows)


def _metric_text(run: RunInfo, name: str) -> str:
    """The metric's last value, and how many steps it has when more than one."""
    steps = len(run.metric_history.get(name, ()))
    value = figure(run.metrics[name])
    return f"{value} ({steps} steps)" if steps > 1 else value


def _metrics_summary(run: RunInfo) -> str:
    """The run's own metrics; the gate's figures (``gate.*``) only counted (--compare shows
    them)."""
    own = [k for k in run.metrics if not k.startswith("gate.")]
    text = ", ".join(f"{k}={_metric_text(run, k)}" for k in own)
    gate = len(run.metrics) - len(own)
    counted = f"{gate} gate figure{'s' if gate > 1 else ''}" if gate else ""
    return "; ".join(part for part in (text, counted) if part)


def _metric_steps(runs: list[RunInfo], metric: str, as_json: bool) -> None:
    """Every recorded step of ``metric`` in each of ``runs`` that has it."""
    from closedloop.errors import NotFoundError

    having = [r for r in runs if metric in r.metric_history]
    if not having:
        known = sorted({k for r in runs for k in r.metrics})
        listed = f"Metrics of these runs: {', '.join(known)}. " if known else ""
        raise NotFoundError(
            f"No listed run has a metric {metric!r}.",
            hint=f"{listed}Widen the list with --experiment/--limit, or pick runs with --compare.",
        )
    if as_json:
        dump_json(
            [
                {
                    "id": r.id,
                    "name": r.name,
                    "metric": metric,
                    "history": [
                        {"step": step, "value": value} for step, value in r.metric_history[metric]
                    ],
                }
                for r in having
            ]
        )
        return
    rows = [
        (r.id[:8], r.name, step, figure(value))
        for r in having
        for step, value in r.metric_history[metric]
    ]
    table(f"{metric} by step", ["run", "name", "step", "value"], rows)


def _field(run: RunInfo, key: str) -> object:
    kind, _, name = key.partition(":")
    if kind == "metric":
        return _metric_text(run, name) if name in run.metrics else ""
    return str(run.params[name]) if name in run.params else ""


def register(cli: click.Group) -> None:
    for command in (models_cmd, versions_cmd, history_cmd, alias_group, rollback_cmd, runs_cmd):
        cli.add_command(command)


def _v(number: object) -> str:
    return "—" if number is None else f"v{number}"
