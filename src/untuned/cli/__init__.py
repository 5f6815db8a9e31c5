"""The ``untuned`` command line: a thin layer over the library (see :mod:`untuned.cli.main`)."""

from untuned.cli.main import app, main

__all__ = ["app", "main"]
