"""Stable image ids derived from the path relative to the scanned root.

The id depends only on the normalised relative path, so it is the same on every machine and mount
point, costs nothing to compute, and differs for two ``x.jpg`` in different folders.
"""

from __future__ import annotations

import hashlib
import unicodedata

ID_HEX_CHARS = 16  # 64 bits: the chance of any collision among 10M images is ~3e-6


def normalize_relpath(relpath: str) -> str:
    """Posix separators, no leading ``./`` or slashes, Unicode NFC (macOS writes NFD names)."""
    rel = unicodedata.normalize("NFC", relpath.replace("\\", "/"))
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ValueError(f"relative path {relpath!r} leaves the image root")
    return "/".join(parts)


def image_id(relpath: str) -> str:
    """The image id of ``relpath`` (already relative to the scanned root)."""
    norm = normalize_relpath(relpath)
    if not norm:
        raise ValueError("an image path relative to its root cannot be empty")
    return hashlib.blake2b(norm.encode("utf-8"), digest_size=ID_HEX_CHARS // 2).hexdigest()


def fingerprint(size: int, mtime_ns: int) -> str:
    """Change detector stored with every output row: a changed file gets a new fingerprint."""
    return f"{size}-{mtime_ns}"
