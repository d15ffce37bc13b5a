"""The ``exoray`` command line."""

from exoray.cli.main import main

__all__ = ["main"]
