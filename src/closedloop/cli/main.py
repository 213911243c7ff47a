"""The ``closedloop`` command."""

from __future__ import annotations

import click

from closedloop import __version__
from closedloop.cli import agent, alerts, backtest, data, predict, project, registry, rollout, serve


class _Root(click.Group):
    """The root group; `--debug` is accepted anywhere on the line (`closedloop train --debug`)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        end = args.index("--") if "--" in args else len(args)
        if "--debug" in args[:end]:
            args = ["--debug", *(a for a in args[:end] if a != "--debug"), *args[end:]]
        return super().parse_args(ctx, args)


EPILOG = """\b
Shell completion: add the line for your shell to its start-up file.
  bash (~/.bashrc)  eval "$(_CLOSEDLOOP_COMPLETE=bash_source closedloop)"
  zsh (~/.zshrc)    eval "$(_CLOSEDLOOP_COMPLETE=zsh_source closedloop)"
  fish              _CLOSEDLOOP_COMPLETE=fish_source closedloop | source
"""


@click.group(cls=_Root, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG)
@click.version_option(__version__, prog_name="closedloop")
@click.option(
    "--project",
    type=click.Path(file_okay=False),
    default=None,
    help="Project folder (default: the nearest folder at or above here with closedloop.toml).",
)
@click.option(
    "--debug", is_flag=True, help="Show tracebacks on errors (also after the command's name)."
)
def cli(project: str | None, debug: bool) -> None:
    """closedloop keeps production models healthy: registry, tracking, drift checks, gated
    retraining, serving and rollback.

    Commands that take a MODEL use the project's pipeline.model when it is left out.
    Exit codes: 0 success (no drift), 1 drift found (drift, monitor), 2 error.
    """


for module in (project, registry, data, serve, predict, rollout, agent, alerts, backtest):
    module.register(cli)


def main() -> None:
    cli(prog_name="closedloop")
