"""Alert commands: list recent alerts and send a test alert (``closedloop alerts …``)."""

from __future__ import annotations

from typing import Any

import click

from closedloop.cli.output import command_runner, dump_json, json_option, say, table, workspace


class _ListByDefault(click.Group):
    """``alerts [MODEL] [options]`` means ``alerts list [MODEL] [options]``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        first = args[0] if args else None
        if first not in self.commands and first not in ctx.help_option_names:
            args = ["list", *args]
        return super().parse_args(ctx, args)


@click.group("alerts", cls=_ListByDefault)
def alerts_group() -> None:
    """Alerts the loop raised, with their delivery status.

    \b
    closedloop alerts [MODEL] [--limit N] [--json]   recent alerts (same as `alerts list`)
    closedloop alerts test [--json]                  send a test alert through the channels
    """


@alerts_group.command("list")
@click.argument("model", required=False)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1))
@json_option
@command_runner
def list_cmd(model: str | None, limit: int, as_json: bool) -> None:
    """Recent alerts (of MODEL, when given), newest first, with their webhook delivery."""
    from closedloop.services import alerts

    found = alerts.recent_alerts(workspace(), model, limit=limit)
    if as_json:
        dump_json([record.to_dict() for record in found])
        return
    rows = [
        (
            r.event.id,
            r.event.ts.strftime("%Y-%m-%d %H:%M:%S"),
            r.alert.get("severity"),
            r.alert.get("kind"),
            _where(r.event.model, r.event.version),
            r.alert.get("title"),
            _delivery(r.to_dict()["delivery"]),
        )
        for r in found
    ]
    title = f"alerts of {model}" if model else "alerts"
    table(title, ["event", "time (UTC)", "severity", "kind", "model", "title", "delivery"], rows)


@alerts_group.command("test")
@click.option(
    "--wait",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds to wait for the webhook's outcome.",
)
@json_option
@command_runner
def test_cmd(wait: float, as_json: bool) -> None:
    """Send a test alert through the configured channels and report the webhook's outcome.

    Exits 2 when the webhook did not take it (failed, or no outcome within --wait)."""
    from closedloop.services import alerts
    from closedloop.services.workspace import default_actor

    ws = workspace()
    record = alerts.send_test(ws, actor=default_actor(), wait=wait)
    body = record.to_dict()
    body["channels"] = _channels(ws)
    if as_json:
        dump_json(body)
    else:
        say(f"test alert recorded as event {record.event.id}; channels: {body['channels']}")
        say(f"webhook: {_delivery(body['delivery'])}")
    if record.status not in ("delivered", "no webhook"):
        click.get_current_context().exit(2)


def _channels(ws: Any) -> str:
    settings = ws.settings.alerts
    names = ["event log", "closedloop.alerts logger"]
    if settings.log_file:
        names.append(f"file {ws.settings.resolve_path(settings.log_file)}")
    if settings.webhook_url:
        names.append("webhook" + (" (signed)" if settings.webhook_secret else ""))
    return ", ".join(names)


def _where(model: str | None, version: int | None) -> str:
    if not model:
        return "—"
    return model + (f" v{version}" if version is not None else "")


def _delivery(delivery: dict[str, Any]) -> str:
    status = str(delivery["status"])
    attempts = delivery.get("attempts")
    if status == "delivered":
        return f"delivered ({_attempts(attempts)}, HTTP {delivery.get('http_status')})"
    if status == "failed":
        return f"FAILED after {_attempts(attempts)}: {delivery.get('error')}"
    if status == "dropped":
        return "DROPPED (the delivery queue was full)"
    return status


def _attempts(count: Any) -> str:
    return f"{count} attempt" + ("" if count == 1 else "s")


def register(cli: click.Group) -> None:
    cli.add_command(alerts_group)
