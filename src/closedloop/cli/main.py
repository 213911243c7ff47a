"""The ``closedloop`` command."""

from __future__ import annotations

import click

from closedloop import __version__
from closedloop.cli import agent, alerts, backtest, data, project, registry, rollout, serve


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="closedloop")
@click.option(
    "--project",
    type=click.Path(file_okay=False),
    default=None,
    help="Project folder (default: the nearest folder with closedloop.toml, else here).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
def cli(project: str | None, debug: bool) -> None:
    """closedloop keeps production models healthy: registry, tracking, drift checks, gated
    retraining, serving and rollback.

    Exit codes: 0 success (no drift), 1 drift found (drift, monitor), 2 error.
    """


for module in (project, registry, data, serve, rollout, agent, alerts, backtest):
    module.register(cli)


def main() -> None:
    cli(prog_name="closedloop")
