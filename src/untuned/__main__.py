"""``python -m untuned`` runs the command line."""

from untuned.cli import main

main()
