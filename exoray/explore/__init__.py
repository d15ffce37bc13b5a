"""Exploration on top of the indices: search, cluster, sample and notebook galleries."""

from exoray.explore.explorer import Explorer

__all__ = ["Explorer"]
