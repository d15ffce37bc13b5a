"""CLI sub-commands over Phase III/VII outputs: index, search, cluster, sample."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from exoray.util.cli_types import positive_int_arg


def _store(base: str):
    """BASE as a Store; a mistyped BASE is an error here, never an empty result or a hint to
    run a phase into the wrong folder."""
    from exoray.storage.store import Store

    store = Store(base)
    if not store.is_dir(""):
        raise FileNotFoundError(f"BASE {base} does not exist; check the path")
    return store


def _note(text: str, as_json: bool) -> None:
    """A line about the outputs: on stdout, or on stderr when stdout carries JSON."""
    print(text, file=sys.stderr if as_json else sys.stdout)


def cmd_index(args: argparse.Namespace) -> int:
    from exoray.index.embeddings import embedding_sets
    from exoray.index.store import pointer_path
    from exoray.storage import layout
    from pipelines import indices

    store = _store(args.base)
    models = args.model or sorted({s.model for s in embedding_sets(store)})
    if not models:
        raise FileNotFoundError(f"no embeddings in {args.base}; run `exoray embed {args.base}` "
                                "first")
    for summary in indices.run(args.base, models, kind=args.kind, rebuild=args.rebuild):
        family, build = summary["model"], summary["build"]
        summary = {**summary, "pointer": store.uri(pointer_path(family)),
                   "files": store.uri(layout.INDICES, family, build)}
        if args.json:
            print(json.dumps(summary))
            continue
        print(f"{family}: {summary['kind']} index of {summary['count']} ({summary['mode']}, "
              f"{summary['added']} added) in {summary['seconds']}s")
        print(f"  wrote {summary['pointer']} (files in {summary['files']}/)")
    return 0


def _jsonable(value: Any) -> Any:
    """numpy scalars and arrays as JSON numbers and lists; anything else is a bug, not a str."""
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _emit(rows: list[dict[str, Any]], as_json: bool, line: str) -> None:
    """Rows as JSON, or one ``line.format(**row)`` per row."""
    if as_json:
        print(json.dumps(rows, indent=2, default=_jsonable))
        return
    for row in rows:
        print(line.format(**row))


def cmd_search(args: argparse.Namespace) -> int:
    if args.text_in_image is not None:
        return _search_text_in_image(args)
    if args.caption is not None:
        return _search_captions(args)
    from exoray.explore import Explorer

    ex = Explorer(_store(args.base).location, args.model)
    rows = ex.search(args.text, image=args.image, image_id=args.id, k=args.k)
    _emit(rows, args.json, "{rank:>4}  {score:.4f}  {image_id}  {relpath}")
    if len(rows) < args.k:
        print(f"{len(rows)} results for -k {args.k}: that is every current image in the "
              f"{ex.family} index", file=sys.stderr)
    if ex.last_query_saved:
        print(f"saved the query vector to {ex.store.uri(ex.last_query_saved)}; asking it again "
              "needs no model load", file=sys.stderr)
    return 0


def _search_text_in_image(args: argparse.Namespace) -> int:
    """OCR text search: images whose read text holds every word, with the matching lines."""
    from exoray.semantics import search_text

    model = None if args.model == "clip" else args.model  # --model picks an OCR model here
    results = search_text(_store(args.base).location, args.text_in_image, model=model,
                          limit=args.k)
    if args.json:
        print(json.dumps(results, indent=2, default=_jsonable))
    else:
        for rank, r in enumerate(results, 1):
            lines = " | ".join(li["text"] for li in r["lines"])
            print(f"{rank:>4}  {r['relpath']}  {lines}")
    if not results:
        print(f"no OCR text contains {args.text_in_image!r}", file=sys.stderr)
    return 0


def _search_captions(args: argparse.Namespace) -> int:
    """Phase VI answers (captions, tags...) holding every word, with the answer."""
    from exoray.prompts.report import search_answers

    hits = search_answers(_store(args.base), args.caption, prompt=args.prompt, limit=args.k)
    if args.json:
        print(json.dumps(hits, indent=2, default=_jsonable))
    else:
        for rank, h in enumerate(hits, 1):
            print(f"{rank:>4}  {h['relpath']}  [{h['prompt']}]  {h['text']}")
    if not hits:
        print(f"no prompt answer contains {args.caption!r}", file=sys.stderr)
    return 0


def cmd_cluster(args: argparse.Namespace) -> int:
    from exoray.explore import Explorer

    ex = Explorer(_store(args.base).location, args.model)
    clusters = ex.cluster(args.k, seed=args.seed)
    _emit(clusters, args.json, "cluster {cluster:>4}: {size:>6} images, medoid {medoid}")
    _note(f"wrote {ex.store.uri(ex.cluster_path(args.k))} ({sum(c['size'] for c in clusters)} "
          f"images in {len(clusters)} clusters)", args.json)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from exoray.explore import Explorer

    ex = Explorer(_store(args.base).location, args.model)
    ids = ex.sample(args.n, method=args.method, subset=args.subset, seed=args.seed)
    rows = [{"image_id": i, "relpath": ex.relpaths.get(i)} for i in ids]
    _emit(rows, args.json, "{image_id}  {relpath}")
    if len(ids) < args.n:
        where = f" in subset {args.subset!r}" if args.subset else ""
        print(f"--n {args.n} is more than the {len(ids)} images with current {args.model} "
              f"embeddings{where}: printed all {len(ids)}", file=sys.stderr)
    return 0


def add_explore_commands(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("index", help="Phase VII: build or extend the FAISS index of a model",
                       parents=parents)
    p.add_argument("base")
    p.add_argument("--model", action="append",
                   help="clip / dino / clip:VARIANT, repeatable (default: every embedded model)")
    p.add_argument("--kind", default="auto", choices=["auto", "flat", "hnsw", "ivfpq"],
                   help="index kind (default: auto, by size)")
    p.add_argument("--rebuild", action="store_true", help="build from scratch")
    p.add_argument("--json", action="store_true", help="one JSON object per model")
    p.set_defaults(handler=cmd_index)

    p = _navigation_parser(sub, parents, "search",
                           "search by --text (CLIP), --image FILE, --id IMAGE_ID, or "
                           "--text-in-image WORDS (OCR)", cmd_search)
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--text-in-image", metavar="WORDS",
                   help="images whose OCR text (Phase V ocr) contains all these words")
    q.add_argument("--caption", metavar="WORDS",
                   help="images whose Phase VI answers (captions, tags) contain all these words")
    p.add_argument("--prompt", metavar="ID@V",
                   help="with --caption: search one prompt version only (default: all)")
    q.add_argument("--text", help="a text query (needs a text encoder: clip)")
    q.add_argument("--image", help="a query image file")
    q.add_argument("--id", help="an image_id of BASE")
    p.add_argument("-k", "--k", type=positive_int_arg, default=20,
                   help="how many results; fewer when the index holds fewer (default: 20)")

    p = _navigation_parser(sub, parents, "cluster",
                           "spherical k-means of a model's embeddings, written to "
                           "indices/clusters/<model>-k<k>.parquet", cmd_cluster)
    p.add_argument("-k", "--k", type=positive_int_arg, default=100,
                   help="number of clusters, at most the number of embedded images "
                        "(default: 100)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")

    p = _navigation_parser(sub, parents, "sample",
                           "a diverse, random or cluster-stratified sample", cmd_sample)
    p.add_argument("--n", type=positive_int_arg, default=500,
                   help="sample size; more than the embedded images prints them all and says "
                        "so (default: 500)")
    p.add_argument("--method", default="diverse", choices=["diverse", "random", "stratified"],
                   help="how to pick (default: diverse)")
    p.add_argument("--subset", help="only images with this Phase IV subset flag")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def _navigation_parser(sub: Any, parents: list[argparse.ArgumentParser], name: str,
                       help_text: str, handler: Any) -> Any:
    """A sub-command over one model's index: BASE, --model, --json."""
    p = sub.add_parser(name, help=help_text, parents=parents)
    p.add_argument("base")
    p.add_argument("--model", default="clip", help="clip, dino or clip:VARIANT (default: clip)")
    p.add_argument("--json", action="store_true", help="JSON instead of lines")
    p.set_defaults(handler=handler)
    return p
