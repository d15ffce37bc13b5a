"""BASE storage and the commit protocol: one Store interface, local staging, atomic parts,
phase leases, and where everything lives inside BASE."""

from exoray.storage.store import FileEntry, Store, is_uri

__all__ = ["FileEntry", "Store", "is_uri"]
