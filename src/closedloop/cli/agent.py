"""``closedloop agent`` (the reconcile loop), ``agent status`` and ``closedloop retrain``."""

from __future__ import annotations

import signal
import threading
from typing import Any

import click

from closedloop.cli.output import command_runner, dump_json, json_option, say, table, workspace


@click.group("agent", invoke_without_command=True)
@click.option("--once", is_flag=True, help="Run one pass, print what it did, and exit.")
@click.option(
    "--max-passes", type=click.IntRange(min=1), default=None, help="Stop after this many passes."
)
@json_option
@click.pass_context
@command_runner
def agent_group(ctx: click.Context, once: bool, max_passes: int | None, as_json: bool) -> None:
    """Run the loop on its own: monitor, trigger, retrain, gate, roll out, alert.

    Exactly one agent is active at a time (a lease in the metadata store); start several for
    failover: the others wait and take over when the active one stops or dies. Stops cleanly on
    SIGTERM or Ctrl-C. Settings: [agent], [gate], [alerts] in closedloop.toml (docs/agent.md).
    """
    if ctx.invoked_subcommand is not None:
        return
    import logging

    from closedloop.services.agent import Agent

    ws = workspace()
    agent = Agent(ws)
    if once:
        try:
            report = agent.run_once()
        finally:
            agent.close()
        if as_json:
            dump_json(report.to_dict())
            return
        if not report.active:
            say("another agent holds the lease; this one did nothing")
            return
        for action in report.actions:
            say(_describe(action))
        return
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("closedloop").setLevel(logging.INFO)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    say(
        f"closedloop agent {agent.holder} looking after {agent.policy.model!r} every "
        f"{agent.policy.interval.total_seconds():g} s "
        f"(lease {agent.policy.lease.total_seconds():g} s)"
    )
    agent.run(stop, max_passes=max_passes)
    say("agent stopped; lease released")


def _describe(action: dict[str, Any]) -> str:
    step = action.get("step", "?")
    rest = ", ".join(f"{k}={v}" for k, v in action.items() if k != "step")
    return f"{step}: {rest}" if rest else str(step)


@agent_group.command("status")
@json_option
@command_runner
def status_cmd(as_json: bool) -> None:
    """Which agent is active, and the latest retrain requests with their outcome."""
    from closedloop.services.agent import agent_status

    body = agent_status(workspace())
    current, retrains, model = body["lease"], body["retrains"], body["model"]
    if as_json:
        dump_json(body)
        return
    if current is None:
        say("no agent has run on this store")
    elif body["active"]:
        say(
            f"agent {current['holder']} is active: it holds the lease (token {current['token']}) "
            f"until {_utc(current['expires_at'])}"
        )
    else:
        say(
            f"no agent is active: the lease of agent {current['holder']} "
            f"(token {current['token']}) expired at {_utc(current['expires_at'])}"
        )
    if retrains:
        table(
            f"retrains of {model}",
            ["request", "requested", "trigger", "status", "version", "detail"],
            [
                [
                    r["request_id"],
                    r["ts"][:19],
                    r["trigger"],
                    r["status"],
                    r["version"],
                    r["detail"],
                ]
                for r in retrains
            ],
        )


def _utc(iso: str) -> str:
    """``2026-01-02T03:04:05.678+00:00`` as ``2026-01-02 03:04:05 UTC``."""
    return f"{iso[:19].replace('T', ' ')} UTC"


@click.command("retrain")
@click.option("--reason", default="", help="Why (recorded in the event log).")
@json_option
@command_runner
def retrain_cmd(reason: str, as_json: bool) -> None:
    """Ask the agent to retrain the pipeline's model on its next pass (a manual trigger).

    The retrain goes through the gate and the rollout like any other; see `closedloop agent
    status` for its outcome. To train right now without the agent, use `closedloop train`.
    """
    from closedloop.services.agent import request_manual_retrain
    from closedloop.services.workspace import default_actor

    ws = workspace()
    request_id = request_manual_retrain(ws, actor=default_actor(), reason=reason)
    if as_json:
        dump_json({"request_id": request_id, "model": ws.settings.pipeline.model})
        return
    say(
        f"retrain of {ws.settings.pipeline.model!r} requested (request {request_id}); "
        "the active agent runs it on its next pass"
    )


def register(cli: click.Group) -> None:
    cli.add_command(agent_group)
    cli.add_command(retrain_cmd)
