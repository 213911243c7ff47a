"""Registry and tracking commands: models, versions, history, alias, rollback, runs."""

from __future__ import annotations

import click

from closedloop.cli.output import command_runner, dump_json, json_option, say, table, workspace


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
@click.argument("model")
@json_option
@command_runner
def versions_cmd(model: str, as_json: bool) -> None:
    """List the versions of MODEL with metrics, lineage and aliases."""
    from closedloop.services import registry

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
@click.argument("model")
@click.option("--alias", default=None, help="Only this alias's moves.")
@click.option(
    "--all", "everything", is_flag=True, help="Every event of the model, not only alias moves."
)
@json_option
@command_runner
def history_cmd(model: str, alias: str | None, everything: bool, as_json: bool) -> None:
    """Show the recorded history of MODEL: who moved which alias, when and why."""
    from closedloop.services import events, registry

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
@click.argument("model")
@click.option("--reason", default="", help="Why (recorded in the event log).")
@json_option
@command_runner
def rollback_cmd(model: str, reason: str, as_json: bool) -> None:
    """Move MODEL's production alias to its last known-good version.

    A canary or shadow running at that moment ends with it, and the rollback_done alert is
    raised at once.
    """
    from closedloop.services import registry, rollout

    ws = workspace()
    running = rollout.state(ws, model)
    before, after = registry.rollback(ws, model, reason=reason)
    ended = running.mode != "idle" and rollout.state(ws, model).mode == "idle"
    if as_json:
        dump_json(
            {
                "model": model,
                "from_version": before,
                "to_version": after,
                "rollout_ended": running.mode if ended else None,
            }
        )
        return
    say(
        f"{model}: production rolled back from v{before} to v{after} "
        "(servers pick it up without restart)"
    )
    if ended:
        say(f"{model}: the {running.mode} of v{running.candidate} ended with the rollback")


@click.command("runs")
@click.option("--experiment", default=None, help="Only runs of this experiment.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--compare", "compare_ids", multiple=True, help="Run ids to compare side by side.")
@json_option
@command_runner
def runs_cmd(
    experiment: str | None, limit: int, compare_ids: tuple[str, ...], as_json: bool
) -> None:
    """List tracked runs (newest first), or compare runs' params and metrics."""
    from closedloop.services import tracking

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
