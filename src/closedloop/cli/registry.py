"""Registry and tracking commands: models, versions, history, alias, rollback, runs."""

from __future__ import annotations

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
from closedloop.errors import ConfigError


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
        metrics = ", ".join(f"{k}={val:.4f}" for k, val in v.metrics.items())
        gate = v.lineage.get("gate", {})
        data = v.lineage.get("dataset", {})
        rows.append(
            (
                v.number,
                ", ".join(v.aliases),
                metrics,
                "passed" if gate.get("passed") else ("rejected" if gate else ""),
                str(data.get("sha256", ""))[:12],
                (v.lineage.get("git_commit") or "")[:10],
                v.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            )
        )
    table(
        f"versions of {model}",
        ["version", "aliases", "metrics", "gate", "data", "commit", "created"],
        rows,
    )


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
@json_option
@command_runner
def alias_set_cmd(model: str, alias: str, version: int, reason: str, as_json: bool) -> None:
    """Point ALIAS of MODEL at VERSION (recorded; servers follow it without restart)."""
    from closedloop.services import registry

    model = resolve_model(model)
    before = registry.set_alias(workspace(), model, alias, version, reason=reason)
    if as_json:
        dump_json({"model": model, "alias": alias, "from_version": before, "to_version": version})
        return
    say(f"{model}@{alias}: v{before} → v{version}" if before else f"{model}@{alias} → v{version}")


@click.command("rollback")
@model_argument
@click.option("--reason", default="", help="Why (recorded in the event log).")
@json_option
@command_runner
def rollback_cmd(model: str | None, reason: str, as_json: bool) -> None:
    """Move MODEL's production alias to its last known-good version."""
    from closedloop.services import registry

    model = resolve_model(model)
    before, after = registry.rollback(workspace(), model, reason=reason)
    if as_json:
        dump_json({"model": model, "from_version": before, "to_version": after})
        return
    say(
        f"{model}: production rolled back from v{before} to v{after} "
        "(servers pick it up without restart)"
    )


@click.command("runs")
@click.argument("compare_ids", metavar="[RUN]...", nargs=-1)
@click.option("--experiment", default=None, help="Only runs of this experiment.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--compare", is_flag=True, help="Compare the RUNs' params and metrics side by side.")
@json_option
@command_runner
def runs_cmd(
    compare_ids: tuple[str, ...], experiment: str | None, limit: int, compare: bool, as_json: bool
) -> None:
    """List tracked runs (newest first), or compare RUNs' params and metrics side by side
    (`closedloop runs --compare RUN RUN`; a RUN is its id or the start of it)."""
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
    if as_json:
        dump_json([r.to_dict() for r in found])
        return
    if compare_ids:
        keys = sorted(
            {f"param:{k}" for r in found for k in r.params}
            | {f"metric:{k}" for r in found for k in r.metrics}
        )
        rows = [(key, *(_field(r, key) for r in found)) for key in keys]
        table("runs compared", ["", *(r.id[:8] for r in found)], rows)
        return
    rows = [
        (
            r.id[:8],
            r.name,
            r.experiment,
            r.status,
            r.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            ", ".join(f"{k}={v:.4g}" for k, v in r.metrics.items()),
            (r.code.get("git_commit") or "")[:10],
        )
        for r in found
    ]
    table("runs", ["run", "name", "experiment", "status", "started", "metrics", "commit"], rows)


def _field(run: object, key: str) -> object:
    kind, _, name = key.partition(":")
    source = getattr(run, "params" if kind == "param" else "metrics")
    return source.get(name, "")


def register(cli: click.Group) -> None:
    for command in (models_cmd, versions_cmd, history_cmd, alias_group, rollback_cmd, runs_cmd):
        cli.add_command(command)


def _v(number: object) -> str:
    return "—" if number is None else f"v{number}"
