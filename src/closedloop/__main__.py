"""``python -m closedloop`` runs the CLI."""

from closedloop.cli.main import main

main()
