"""``exoray subsets``: counts per Phase IV flag, their overlaps and the rules version."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from exoray.engine.done import present_images
from exoray.engine.errors_table import image_keys
from exoray.image.manifest import read_manifest
from exoray.storage.store import Store


def subsets_summary(base: str) -> dict[str, Any]:
    """Per flag: images true / false / not computed, and pairwise overlaps of the true sets."""
    from exoray.engine.subsets import flag_names, latest_flags

    store = Store(base)
    flags = latest_flags(store)
    if flags is None:
        raise FileNotFoundError(f"no Phase IV flags in {store.location}; run `exoray stratify "
                                f"{store.location}` first")
    manifest = read_manifest(store)
    present = present_images(manifest) if manifest is not None else None
    if present is not None:
        flags = flags.filter(pc.is_in(image_keys(flags), value_set=image_keys(present)))
    names = flag_names(flags)
    summary: dict[str, Any] = {
        "base": store.location,
        "rules_version": flags["rules_version"][0].as_py() if flags.num_rows else None,
        "images": present.num_rows if present is not None else flags.num_rows,
        "flagged": flags.num_rows, "flags": [], "overlaps": {},
    }
    masks = {}
    for name in names:
        col = flags[name]
        true = int(pc.sum(pc.fill_null(col, False)).as_py() or 0)
        missing = int(col.null_count)
        evidence = pc.value_counts(pc.fill_null(flags[f"{name}_evidence"], "none")).to_pylist() \
            if f"{name}_evidence" in flags.column_names else []
        summary["flags"].append({"flag": name, "true": true,
                                 "false": flags.num_rows - true - missing,
                                 "not_computed": missing,
                                 "evidence": {e["values"]: e["counts"] for e in evidence}})
        masks[name] = np.asarray(pc.fill_null(col, False).to_numpy(zero_copy_only=False), bool)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            both = int((masks[a] & masks[b]).sum())
            if both:
                summary["overlaps"][f"{a} & {b}"] = both
    return summary


def format_subsets(summary: dict[str, Any]) -> str:
    lines = [f"BASE {summary['base']}: rules {summary['rules_version']}, "
             f"{summary['flagged']} of {summary['images']} images flagged"]
    for f in sorted(summary["flags"], key=lambda f: -f["true"]):
        extra = f", {f['not_computed']} not computed" if f["not_computed"] else ""
        evidence = ", ".join(f"{k} {v}" for k, v in f["evidence"].items())
        lines.append(f"  {f['flag']:<16} {f['true']:>8} true, {f['false']:>8} false{extra}"
                     + (f"  (evidence: {evidence})" if evidence else ""))
    top = sorted(summary["overlaps"].items(), key=lambda kv: -kv[1])[:10]
    if top:
        lines.append("  largest overlaps: " + ", ".join(f"{k} {v}" for k, v in top))
    return "\n".join(lines)


def flags_table(base: str) -> pa.Table:
    """The newest flags of present images (for notebooks): one row per image."""
    from exoray.engine.subsets import latest_flags

    store = Store(base)
    flags = latest_flags(store)
    manifest = read_manifest(store)
    if flags is None or manifest is None:
        raise FileNotFoundError(f"no Phase IV flags in {store.location}; run `exoray stratify "
                                f"{store.location}` first")
    present = present_images(manifest).select(["image_id", "fingerprint", "relpath"])
    return present.join(flags, keys=["image_id", "fingerprint"], join_type="inner")
