"""Local staging area: every file bound for BASE is written and verified here first.

Drive and object stores are slow and non-atomic for partial writes, so nothing is ever written
into BASE piecemeal; see :mod:`exoray.storage.parts` for the publish step.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager


def staging_root(staging_dir: str | None = None) -> str:
    """Folder for staged files: ``EXORAY_STAGING`` or the system temp dir (local disk on Colab)."""
    root = staging_dir or os.environ.get("EXORAY_STAGING") or os.path.join(
        tempfile.gettempdir(), "exoray-staging"
    )
    os.makedirs(root, exist_ok=True)
    return root


@contextmanager
def staging_file(suffix: str = "", staging_dir: str | None = None) -> Iterator[str]:
    """A fresh local path that is removed afterwards, whatever happens."""
    path = os.path.join(staging_root(staging_dir), f"{uuid.uuid4().hex}{suffix}")
    try:
        yield path
    finally:
        if os.path.exists(path):
            os.remove(path)
