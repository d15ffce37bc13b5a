"""Phase IV: subset flags (high quality, photo, text heavy, human present, ...) from columns.

A columnar phase: it reads Phase II features, embeddings and duplicate groups (never images), so
it computes in the driver and publishes through the same parts as every phase, into
``subsets/<rules version>/`` keyed by (image, file version, rules version). After a run the flags
are joined into ``manifests/images.parquet`` as ``subset_<flag>`` columns for notebooks.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from exoray.engine.errors_table import image_keys
from exoray.engine.runner import RunResult, run_phase
from exoray.engine.spec import Option, Output, PhaseSpec, StageContext, Target
from exoray.storage import layout
from exoray.storage.store import Store

log = logging.getLogger(__name__)
SUBSETS = "subsets"
KEY = ("image_id", "fingerprint", "rules_version")
BASE_COLUMNS = [("image_id", pa.string()), ("fingerprint", pa.string()),
                ("rules_version", pa.string()), ("run_id", pa.string())]
RULES_FILE = "rules.yaml"


def flags_schema(rules: Any) -> pa.Schema:
    fields = list(BASE_COLUMNS)
    for flag in rules.flags:
        fields += [(flag.name, pa.bool_()), (f"{flag.name}_score", pa.float32()),
                   (f"{flag.name}_evidence", pa.string())]
    return pa.schema(fields)


def _target(store: Store, rules: Any) -> Target:
    folder = f"{SUBSETS}/{rules.version}"
    return Target("stratify", folder, Output("subsets", flags_schema(rules), KEY),
                  info={"rules": rules})


def resolve(store: Store, opts: dict[str, Any]) -> list[Target]:
    from exoray.strata.rules import load_rules

    rules = load_rules(opts["rules"])
    target = _target(store, rules)
    if not store.exists(target.folder, RULES_FILE):  # what produced these flags, kept beside
        store.write_bytes_atomic(rules.to_yaml().encode(), target.folder, RULES_FILE)
    return [target]


def _inputs(ctx: StageContext) -> dict[str, Any]:
    """Features, vectors, prompt vectors and duplicates, read once per run."""
    if ctx.cache:
        return ctx.cache
    from exoray.engine.readers import read_features

    store, rules = ctx.store, ctx.targets[0].info["rules"]
    columns = sorted({"image_id", "fingerprint", *rules.feature_columns()})
    ctx.cache["features"] = read_features(store, columns)
    ctx.cache["duplicates"] = _duplicates(store)
    ctx.cache["vectors"], ctx.cache["text_vectors"] = _clip_inputs(store, rules)
    # stale_flags() read it already while the todo list was made: read once per run.
    evidence = ctx.targets[0].info.get("evidence")
    ctx.cache["evidence"] = read_evidence(store, rules) if evidence is None else evidence
    ctx.cache["reported"] = False
    return ctx.cache


def read_evidence(store: Store, rules: Any) -> dict[str, pa.Table]:
    """Phase V per-image tables the rules refer to (newest model id of each task), current
    files only; a task that has not run is simply absent (its flags use other evidence)."""
    from exoray.engine.readers import read_output
    from exoray.engine.registry import get_phase, phase_names

    out = {}
    for task, columns in sorted(rules.evidence_tables().items()):
        if task not in phase_names():
            continue  # evaluate() names the unknown table in the flag's skip message
        known = get_phase(task).outputs[0].schema.names
        try:  # a column the task does not write is named by evaluate() in the skip message
            out[task] = read_output(store, task, columns=[
                "image_id", *sorted(c for c in columns if c in known)])
        except FileNotFoundError:
            continue
    return out


def stale_flags(store: Store, target: Target) -> pa.Array | None:
    """Flagged images that have Phase V evidence now but were flagged without it: redone, so
    a flag computed before OCR or detection ran gets the stronger evidence."""
    from exoray.storage.parts import read_parts

    rules = target.info.get("rules")
    if rules is None or not store.is_dir(target.folder):
        return None
    evidence = read_evidence(store, rules)
    target.info["evidence"] = evidence  # compute() reuses it
    if not evidence:
        return None
    flags = read_parts(store, target.folder, None, key=KEY)
    if flags.num_rows == 0:
        return None
    used = [c for c in flags.column_names if c.endswith("_evidence")]
    stale = pa.array([False] * flags.num_rows)
    for task, table in evidence.items():
        has = pc.is_in(flags["image_id"], value_set=table["image_id"])
        mentioned = pa.array([False] * flags.num_rows)
        for column in used:
            mentioned = pc.or_(mentioned, pc.fill_null(
                pc.match_substring(flags[column], task), False))
        stale = pc.or_(stale, pc.and_(has, pc.invert(mentioned)))
    return pc.unique(image_keys(flags.filter(stale)))


def _duplicates(store: Store) -> pa.Table | None:
    if not store.exists(layout.DUPES):
        return None
    from pipelines.dupes import read_dupes

    return read_dupes(store.location)


def _clip_inputs(store: Store, rules: Any) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """CLIP image vectors and the rules' prompt vectors from the same model, or (None, None)
    with a message when either is unavailable (the flags that need them are skipped)."""
    prompts = sorted({p for ps in rules.prompt_sets().values() for p in ps})
    families = rules.embedding_models()
    vectors: dict[str, Any] = {}
    from exoray.index.embeddings import read_current_embeddings

    for family in sorted(families):
        try:
            ids, matrix, info = read_current_embeddings(store, family)
        except FileNotFoundError:
            continue
        vectors[family] = (ids, matrix, info["model_id"])
    if not prompts or "clip" not in vectors:
        return vectors or None, None
    try:
        text = _prompt_vectors(store, prompts, vectors["clip"][2])
    except (FileNotFoundError, ImportError, OSError, ValueError) as exc:
        print(f"stratify: zero-shot flags skipped, the CLIP text encoder could not be loaded "
              f"({str(exc).splitlines()[0][:200]})", file=sys.stderr)
        return vectors, None
    return vectors, text


def _prompt_vectors(store: Store, prompts: list[str], model_id: str) -> dict[str, np.ndarray]:
    """Prompt embeddings, cached in BASE per model id (computed once per prompt set)."""
    cache = f"{SUBSETS}/text_vectors/{layout.slug(model_id)}.json"
    known: dict[str, list[float]] = {}
    if store.exists(cache):
        known = json.loads(store.read_bytes(cache))
    missing = [p for p in prompts if p not in known]
    if missing:
        from exoray.index.embeddings import resolve_embeddings
        from exoray.models import load_backend
        from pipelines.embeddings import models_cache_dir

        record = resolve_embeddings(store, "clip").record
        backend = load_backend("clip", variant=record.get("variant"),
                               checkpoint=record.get("checkpoint"),
                               cache_dir=models_cache_dir(store))
        for prompt, vector in zip(missing, backend.encode_text(missing), strict=True):
            known[prompt] = np.asarray(vector, np.float32).tolist()
        store.write_bytes_atomic(json.dumps(known).encode(), cache)
    return {p: np.asarray(known[p], np.float32) for p in prompts}


def compute(ctx: StageContext, todo: pa.Table) -> pa.Table:
    """Flags for the todo rows that have Phase II features (the others stay to do)."""
    from exoray.strata.evaluate import evaluate

    inputs = _inputs(ctx)
    target = ctx.targets[0]
    rules = target.info["rules"]
    features = inputs["features"]
    mask = pc.is_in(image_keys(features), value_set=image_keys(todo))
    failed = _without_features(ctx, todo, features)
    if not pc.any(mask).as_py():
        return failed
    # The whole collection goes in (odd size, duplicate keepers are collection-wide); only the
    # todo rows come out.
    result = evaluate(rules, features, rows=mask, vectors=inputs["vectors"],
                      text_vectors=inputs["text_vectors"], duplicates=inputs["duplicates"],
                      evidence=inputs["evidence"])
    if result.skipped and not inputs["reported"]:
        for flag, reason in sorted(result.skipped.items()):
            print(f"stratify: {flag} skipped: {reason}", file=sys.stderr)
        inputs["reported"] = True
    table = result.table
    table = table.append_column("run_id", pa.array([ctx.run_id] * table.num_rows, pa.string()))
    return pa.concat_tables([table, failed], promote_options="permissive") if failed.num_rows \
        else table


def _without_features(ctx: StageContext, todo: pa.Table, features: pa.Table) -> pa.Table:
    """Error rows for todo images whose Phase II features failed for good (they cannot be
    flagged); images whose features are merely not computed yet stay to do."""
    from exoray.engine.done import error_keys

    if "features_failed" not in ctx.cache:
        ctx.cache["features_failed"] = error_keys(ctx.store, "features")
    missing = todo.filter(pc.invert(pc.is_in(image_keys(todo), value_set=image_keys(features))))
    missing = missing.filter(pc.is_in(image_keys(missing),
                                      value_set=ctx.cache["features_failed"]))
    n = missing.num_rows
    message = pc.binary_join_element_wise(
        missing["relpath"], pa.scalar(": has no Phase II features (see `exoray errors BASE --phase "
                                      "features`); fix or replace the file, then rerun features "
                                      "and stratify with --retry-errors"), "")
    return pa.table({"image_id": missing["image_id"], "relpath": missing["relpath"],
                     "fingerprint": missing["fingerprint"],
                     "run_id": pa.array([ctx.run_id] * n, pa.string()),
                     "error": pa.array(["no_features"] * n, pa.string()), "message": message})


def discover(store: Store) -> list[Target]:
    """The newest rules version's output (the one selections and the manifest use)."""
    from exoray.storage.parts import list_parts
    from exoray.strata.rules import load_rules

    if not store.is_dir(SUBSETS):
        return []
    newest: tuple[str, str] | None = None
    for entry in store.list_files(SUBSETS, suffix=RULES_FILE, recursive=True):
        folder = f"{SUBSETS}/{entry.relpath.rsplit('/', 1)[0]}"
        runs = [p.run_id for p in list_parts(store, folder)]
        if runs and (newest is None or max(runs) > newest[0]):
            newest = (max(runs), folder)
    if newest is None:
        return []
    rules = load_rules(store.read_bytes(newest[1], RULES_FILE).decode())
    return [Target("stratify", newest[1], Output("subsets", flags_schema(rules), KEY),
                   info={"rules": rules})]


def join_into_manifest(store: Store) -> None:
    """Publish the newest flags as ``subset_<flag>`` columns of ``manifests/images.parquet``."""
    from exoray.engine.subsets import flag_names, latest_flags
    from exoray.image.manifest import manifest_root, read_manifest, write_manifest

    flags = latest_flags(store)
    manifest = read_manifest(store)
    if flags is None or manifest is None:
        return
    names = flag_names(flags)
    manifest = manifest.drop_columns([c for c in manifest.column_names
                                      if c.startswith("subset_")])
    picked = flags.select(["image_id", "fingerprint", *names]).rename_columns(
        ["image_id", "fingerprint", *[f"subset_{n}" for n in names]])
    joined = manifest.join(picked, keys=["image_id", "fingerprint"], join_type="left outer")
    joined = joined.sort_by("relpath")
    write_manifest(store, joined, manifest_root(store) or "")


def _print_rules(opts: dict[str, Any]) -> str:
    from exoray.strata.rules import load_rules

    return load_rules(opts.get("rules")).to_yaml()


SPEC = PhaseSpec(
    name="stratify",
    title="IV subset flags",
    help="Phase IV: subset flags (high_quality, photo, text_heavy, human_present, ...) from "
         "features, embeddings and duplicates",
    outputs=(Output("subsets", pa.schema(BASE_COLUMNS), KEY),),
    options=(
        Option("rules", None, "a rules YAML that overrides or adds flags (see --print-rules)",
               metavar="YAML"),
        Option("print_rules", False, "print the resolved rules as YAML and exit", flag=True),
    ),
    resolve=resolve,
    stages=None,
    compute=compute,
    discover=discover,
    default_part_rows=50_000,
    finish=join_into_manifest,
    stale=stale_flags,
    actions={"print_rules": _print_rules},
    next_step="exoray subsets {base}   # counts per flag; then --subset 'photo and not dark'",
)


def run(base: str | os.PathLike[str], **options: Any) -> RunResult:
    """Compute the flags of every image not flagged yet under the current rules."""
    return run_phase(SPEC, base, **options)
