"""``python -m untuned`` runs the command line."""

from untuned.cli.main import main

main()
