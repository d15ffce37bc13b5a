"""Completion: which manifest images a phase output already holds, derived from its parts.

done(P) = (image_id, fingerprint) pairs in P's readable parts, plus pairs whose latest outcome for
P is a permanent error. Keying on the fingerprint means a changed file is simply not done any more.
Everything is vectorised in Arrow: 1M ids take well under a second once the parts are read.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from exoray.engine.errors_table import image_keys, permanent, read_errors
from exoray.image.manifest import PRESENT
from exoray.storage.parts import PartInfo, read_parts
from exoray.storage.store import Store

KEY_COLUMNS = ["image_id", "fingerprint"]


def done_keys(store: Store, folder: str, *, parts: list[PartInfo] | None = None,
              quarantine: bool = False, version: tuple[str, int] | None = None) -> pa.Array:
    """``image_id|fingerprint`` keys present in ``folder`` (with ``version``: only keys that
    have a row of the current version)."""
    return done_and_outdated(store, folder, parts=parts, quarantine=quarantine,
                             version=version)[0]


def done_and_outdated(store: Store, folder: str, *, parts: list[PartInfo] | None = None,
                      quarantine: bool = False, version: tuple[str, int] | None = None
                      ) -> tuple[pa.Array, pa.Array]:
    """(done keys, out-of-date keys) of ``folder`` from one read of its parts.

    ``version`` = (column, current value): a key is done when one of its rows has the current
    value, out of date when it only has rows of another value (or from before the column).
    """
    columns = KEY_COLUMNS + ([version[0]] if version else [])
    table = read_parts(store, folder, columns, parts=parts, quarantine=quarantine)
    none = pa.array([], pa.string())
    if table.num_rows == 0:
        return none, none
    keys = image_keys(table)
    if version is None:
        return pc.unique(keys), none
    current = pc.fill_null(pc.equal(table[version[0]], version[1]), False)
    done = pc.unique(keys.filter(current))
    older = pc.unique(keys.filter(pc.invert(current)))
    return done, older.filter(pc.invert(pc.is_in(older, value_set=done)))


def permanent_error_keys(errors: pa.Table, phase: str) -> pa.Array:
    """Keys whose latest outcome for ``phase`` is a permanent error (transient ones are retried)."""
    if errors.num_rows:
        errors = permanent(errors.filter(pc.equal(errors["phase"], phase)))
    if errors.num_rows == 0:
        return pa.array([], pa.string())
    return pc.unique(image_keys(errors))


def error_keys(store: Store, phase: str) -> pa.Array:
    return permanent_error_keys(read_errors(store, phase), phase)


def present_images(manifest: pa.Table) -> pa.Table:
    return manifest.filter(pc.equal(manifest["status"], PRESENT))


def pending_mask(images: pa.Table, done: pa.Array) -> pa.ChunkedArray | pa.Array:
    """True for rows of ``images`` whose (image_id, fingerprint) is not in ``done``."""
    if len(done) == 0:
        return pa.array([True] * images.num_rows, pa.bool_())
    return pc.invert(pc.is_in(image_keys(images), value_set=done))


def count_done(images: pa.Table, done: pa.Array) -> int:
    if len(done) == 0 or images.num_rows == 0:
        return 0
    return int(pc.sum(pc.is_in(image_keys(images), value_set=done)).as_py() or 0)
