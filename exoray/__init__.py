"""exoray: explore a large image collection from a notebook, one resumable Ray Data phase at a time."""

__version__ = "0.1.0"
