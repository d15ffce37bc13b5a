"""``exoray doctor``: check BASE against the commit protocol, and repair it with ``--fix``.

Reports, per output folder of every phase: parts, rows, duplicate keys (a race the lease did not
fence; readers already hide them), corrupt parts, leftover temporaries; plus quarantined parts and
folders in an older layout. ``--fix`` (holding each phase's lease) removes leftovers, quarantines
corrupt parts, moves older layouts into place and compacts duplicated folders: the deduplicated
rows are published first as new parts, then the old parts are deleted, so a kill at any instant
leaves readers with the same rows.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from exoray.engine.registry import phase_specs
from exoray.engine.runlog import new_run_id
from exoray.engine.schemas import EMBEDDINGS_KEY, ERROR_SCHEMA, ERRORS_KEY
from exoray.engine.spec import PhaseSpec
from exoray.storage import layout
from exoray.storage.lease import LeaseKeeper, take_lease
from exoray.storage.parts import (
    QUARANTINE,
    list_parts,
    quarantine_part,
    read_part,
    read_parts,
    sweep,
    temporaries,
    write_part,
)
from exoray.storage.store import Store

COMPACT_ROWS = 5000


def _folders(store: Store, spec: PhaseSpec) -> list[tuple[str, tuple[str, ...], bool]]:
    """(folder, key, updatable) of every output of ``spec`` on disk, plus its errors folder.

    Updatable: the phase redoes rows on purpose (a ``stale`` hook, or a versioned output whose
    older rows a later run supersedes)."""
    out = [(t.folder, t.output.key, spec.stale is not None or t.output.version is not None)
           for t in spec.discover(store)]
    return out + [(layout.errors_folder(spec.name), ERRORS_KEY, False)]


def check_folder(store: Store, folder: str, key: tuple[str, ...], *, updatable: bool = False
                 ) -> dict[str, Any]:
    """Parts, rows, duplicate keys, corrupt parts and temporaries of one folder.

    In an ``updatable`` output (a phase that redoes rows on purpose, e.g. flags made before
    Phase V evidence existed) a key written again by a later run is ``superseded``, not a
    duplicate: only the same key twice within one run is a fault there.
    """
    parts = list_parts(store, folder)
    corrupt, rows, keys = [], 0, []
    for part in parts:
        got = read_part(store, folder, part, list(key))
        if isinstance(got, str):
            corrupt.append(f"{part.name}: {got}")
            continue
        rows += got.num_rows
        keys.append(got.append_column("__run", pa.array([part.run_id] * got.num_rows,
                                                        pa.string())))
    unique = read_unique(keys, key)
    per_run = read_unique(keys, (*key, "__run")) if updatable else unique
    return {"folder": folder, "parts": len(parts), "rows": rows, "duplicates": rows - per_run,
            "superseded": per_run - unique, "corrupt": corrupt,
            "temporaries": len(temporaries(store, folder))}


def read_unique(tables: list[pa.Table], key: tuple[str, ...]) -> int:
    if not tables:
        return 0
    table = pa.concat_tables(tables, promote_options="permissive")
    return table.group_by(list(key)).aggregate([]).num_rows


def compact(store: Store, folder: str, key: tuple[str, ...]) -> int:
    """Rewrite ``folder`` as deduplicated parts; returns how many duplicate rows went away."""
    old = list_parts(store, folder)
    table = read_parts(store, folder, key=key, parts=old, quarantine=True)
    removed = sum(p.rows for p in old) - table.num_rows
    run_id = new_run_id()
    for start in range(0, table.num_rows, COMPACT_ROWS):
        write_part(store, folder, table.slice(start, COMPACT_ROWS), run_id=run_id, key=key)
    for part in old:
        if store.exists(folder, part.name):
            store.delete(folder, part.name)
    return removed


def legacy_folders(store: Store) -> list[str]:
    """Folders in an older layout: flat embeddings/<model>/ parts, flat logs/errors/ parts."""
    found = [layout.ERRORS] if list_parts(store, layout.ERRORS) else []
    if store.is_dir(layout.EMBEDDINGS):
        families = {e.relpath.split("/", 1)[0]
                    for e in store.list_files(layout.EMBEDDINGS, recursive=True) if "/" in e.relpath}
        found += [layout.embeddings_family(f) for f in sorted(families)
                  if list_parts(store, layout.embeddings_family(f))]
    return found


def migrate_legacy(store: Store, folder: str) -> int:
    """Move an older layout's rows into their current folders; returns rows moved."""
    from exoray.index.embeddings import remember_model

    moved = 0
    family = folder.split("/", 1)[1] if folder != layout.ERRORS else None
    records = {}
    if family is not None and store.exists(folder, "backends.json"):
        records = json.loads(store.read_bytes(folder, "backends.json"))
    for part in list_parts(store, folder):
        table = read_parts(store, folder, parts=[part], quarantine=True)
        group = "phase" if family is None else "model_id"
        for value in pc.unique(table[group]).to_pylist():
            rows = table.filter(pc.equal(table[group], value))
            if family is None:
                dest, key, schema = layout.errors_folder(value), ERRORS_KEY, ERROR_SCHEMA
            else:
                dim = rows["vector"].type.list_size if rows.num_rows else None
                dest = remember_model(store, family, value, records.get(value, {}), dim)
                key, schema = EMBEDDINGS_KEY, None
            write_part(store, dest, rows, run_id=part.run_id, key=key, schema=schema)
            moved += rows.num_rows
        store.delete(folder, part.name)
    return moved


def check_base(base: str, *, fix: bool = False) -> dict[str, Any]:
    store = Store(base)
    report: dict[str, Any] = {"base": store.location, "folders": [], "fixed": []}
    if fix:
        for folder in legacy_folders(store):
            with _lease(store, "embed" if folder != layout.ERRORS else "errors"):
                report["fixed"].append(f"{folder}: moved {migrate_legacy(store, folder)} rows "
                                       "into the current layout")
    report["legacy"] = legacy_folders(store)
    for spec in phase_specs():
        for folder, key, updatable in _folders(store, spec):
            if not store.is_dir(folder):
                continue
            info = check_folder(store, folder, key, updatable=updatable)
            if fix and (info["duplicates"] or info["superseded"] or info["corrupt"]
                        or info["temporaries"]):
                with _lease(store, spec.name):
                    removed = sweep(store, folder)
                    for line in info["corrupt"]:
                        quarantine_part(store, folder, line.split(":", 1)[0], reason="doctor")
                    dupes = compact(store, folder, key) \
                        if info["duplicates"] or info["superseded"] else 0
                report["fixed"].append(f"{folder}: {removed} temporaries removed, "
                                       f"{len(info['corrupt'])} corrupt parts quarantined, "
                                       f"{dupes} duplicate rows compacted away")
                info = check_folder(store, folder, key, updatable=updatable)
            report["folders"].append(info)
    report["quarantined"] = [e.relpath for e in store.list_files(QUARANTINE, recursive=True)]
    report["healthy"] = not report["legacy"] and all(
        not (f["duplicates"] or f["corrupt"] or f["temporaries"]) for f in report["folders"])
    return report


class _lease:
    """Hold a phase's lease while fixing it (refuses while a run of that phase is live)."""

    def __init__(self, store: Store, phase: str) -> None:
        self.store, self.phase, self.run_id = store, phase, "doctor" + new_run_id()

    def __enter__(self) -> None:
        take_lease(self.store, self.phase, self.run_id)
        self.keeper = LeaseKeeper(self.store, self.phase, self.run_id).__enter__()

    def __exit__(self, *exc: object) -> None:
        self.keeper.__exit__(*exc)


def format_report(report: dict[str, Any]) -> str:
    lines = [f"BASE {report['base']}: " + ("healthy" if report["healthy"] else "needs attention")]
    for f in report["folders"]:
        problems = []
        if f["duplicates"]:
            problems.append(f"{f['duplicates']} duplicate rows (hidden from readers)")
        if f.get("superseded"):
            problems.append(f"{f['superseded']} superseded rows (redone by a later run; "
                            "`--fix` compacts them)")
        if f["corrupt"]:
            problems.append(f"{len(f['corrupt'])} corrupt parts")
        if f["temporaries"]:
            problems.append(f"{f['temporaries']} leftover temporaries")
        lines.append(f"  {f['folder']}: {f['parts']} parts, {f['rows']} rows"
                     + (f"; {', '.join(problems)}" if problems else ""))
    for folder in report["legacy"]:
        lines.append(f"  {folder}: parts in an older layout")
    if report["quarantined"]:
        lines.append(f"  quarantine/: {len(report['quarantined'])} parts set aside (their images "
                     "were redone)")
    lines += [f"  fixed {line}" for line in report["fixed"]]
    if not report["healthy"] and not report["fixed"]:
        lines.append(f"run `exoray doctor {report['base']} --fix` to repair")
    return "\n".join(lines)
