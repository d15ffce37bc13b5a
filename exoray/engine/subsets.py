"""Selecting work by Phase IV flags: ``--subset "photo and not dark"`` for every phase.

The truth is the stratify output (``subsets/<rules version>/``); the newest rules version on disk
is the one selections use. Images without flags yet (stratify not run since they appeared) are
not selected, and the user is told how many.
"""

from __future__ import annotations

import logging

import pyarrow as pa
import pyarrow.compute as pc

from exoray.engine.errors_table import image_keys
from exoray.storage.store import Store

log = logging.getLogger(__name__)


def latest_flags(store: Store) -> pa.Table | None:
    """Rows of the newest rules version (one per image and file version), or None."""
    from exoray.engine.registry import get_phase

    targets = get_phase("stratify").discover(store)
    if not targets:
        return None
    from exoray.storage.parts import read_parts

    target = targets[0]
    return read_parts(store, target.folder, key=target.output.key, schema=target.output.schema)


def flag_names(table: pa.Table) -> list[str]:
    """Flag columns: booleans (their ``_score``/``_evidence`` companions are not flags)."""
    return [f.name for f in table.schema if pa.types.is_boolean(f.type)]


def subset_mask(store: Store, expr: str, images: pa.Table, *, quiet: bool = False) -> pa.Array:
    """True for rows of ``images`` (image_id, fingerprint) whose current flags match ``expr``."""
    from exoray.strata.expr import parse_subset

    flags = latest_flags(store)
    if flags is None:
        raise ValueError(f"--subset {expr!r}: no Phase IV flags in {store.location}; run "
                         f"`exoray stratify {store.location}` first")
    parsed = parse_subset(expr, flag_names(flags))
    keys = image_keys(flags)
    selected = keys.filter(parsed.mask(flags))
    if not quiet and len(selected) == 0 and flags.num_rows:
        undecided = sorted(f for f in parsed.flags if flags[f].null_count == flags.num_rows)
        if undecided:
            print(f"--subset {expr}: selects no image because {', '.join(undecided)} "
                  f"{'is' if len(undecided) == 1 else 'are'} undecided for every image (no "
                  "evidence yet: CLIP embeddings, or the Phase V task it reads); run "
                  f"`exoray embed {store.location} --model clip` then `exoray stratify`, or run "
                  "this without --subset")
    wanted = image_keys(images)
    unflagged = pc.invert(pc.is_in(wanted, value_set=keys))
    if not quiet and pc.any(unflagged).as_py():
        from exoray.engine.done import error_keys

        # Images stratify failed for for good (no features: broken files) are not news.
        unflagged = pc.and_(unflagged, pc.invert(pc.is_in(wanted,
                                                          value_set=error_keys(store, "stratify"))))
    missing = int(pc.sum(unflagged).as_py() or 0)
    if missing and not quiet:
        print(f"--subset {expr}: {missing} images have no flags yet (new or changed since the "
              f"last `exoray stratify`); they are not selected")
    return pc.is_in(wanted, value_set=selected)
