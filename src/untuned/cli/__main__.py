"""``python -m untuned.cli`` runs the command line."""

from untuned.cli.main import main

main()
