"""The one read path for phase outputs: deduplicated by the phase key, current files only.

Users, notebooks, the report and later phases read outputs through here, so a duplicate left by
a race (or a file that changed since it was processed) never reaches a count, an index or a plot.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from exoray.engine.done import present_images
from exoray.engine.errors_table import image_keys
from exoray.engine.registry import get_phase
from exoray.image.manifest import read_manifest
from exoray.storage.parts import read_parts
from exoray.storage.store import Store


def read_output(base: str | os.PathLike[str] | Store, phase: str, target: str | None = None,
                columns: Sequence[str] | None = None, *, current: bool = True) -> pa.Table:
    """Rows of one output of ``phase`` (``target``: e.g. ``clip`` for embed; default the only
    or first one), one per key; ``current`` keeps only present images' current file version."""
    store = base if isinstance(base, Store) else Store(base)
    spec = get_phase(phase)
    targets = spec.discover(store)
    if target is not None:
        targets = [t for t in targets if t.label == target or t.label.split(":")[0] == target]
    if not targets:
        command = f"exoray {spec.group} {store.location} --task {phase}" if spec.group \
            else f"exoray {phase} {store.location}"
        raise FileNotFoundError(f"no {phase} output{' ' + target if target else ''} in "
                                f"{store.location}; run `{command}` first")
    chosen = targets[0]
    wanted = list(columns) if columns is not None else None
    read_cols = None if wanted is None else list(dict.fromkeys([*wanted, "image_id",
                                                               "fingerprint"]))
    table = read_parts(store, chosen.folder, read_cols, key=chosen.output.key,
                       schema=chosen.output.schema)
    if current and table.num_rows:
        manifest = read_manifest(store)
        if manifest is not None:
            keep = pc.is_in(image_keys(table), value_set=image_keys(present_images(manifest)))
            table = table.filter(keep)
    return table.select(wanted) if wanted is not None else table


def read_features(base: str | os.PathLike[str] | Store,
                  columns: Sequence[str] | None = None) -> pa.Table:
    """Phase II features of present images, one row per image."""
    return read_output(base, "features", columns=columns)
