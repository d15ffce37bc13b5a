"""CLI sub-commands of Phase III and VII: embed, index, search, cluster, sample."""

from __future__ import annotations

import argparse
import json
from typing import Any


def _checkpoints(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--checkpoint {item!r}: use MODEL=PATH, e.g. clip=/ckpt/dir")
        out[name] = path
    return out


def cmd_embed(args: argparse.Namespace) -> int:
    from pipelines import embeddings

    result = embeddings.run(args.base, args.model or ["clip", "dino"],
                            checkpoints=_checkpoints(args.checkpoint), batch_size=args.batch_size,
                            device=args.device, retry_errors=args.retry_errors,
                            part_rows=args.part_rows, max_pixels=args.max_pixels,
                            show_progress=not args.quiet)
    print(result)
    for event in result.events:
        print(f"  event: {event}")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from pipelines import indices

    for summary in indices.run(args.base, args.model or ["clip"], kind=args.kind,
                               rebuild=args.rebuild):
        print(json.dumps(summary) if args.json else
              f"{summary['model']}: {summary['kind']} index of {summary['count']} "
              f"({summary['mode']}, {summary['added']} added) in {summary['seconds']}s")
    return 0


def _emit(rows: list[dict[str, Any]], as_json: bool, line: str) -> None:
    """Rows as JSON, or one ``line.format(**row)`` per row."""
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    for row in rows:
        print(line.format(**row))


def cmd_search(args: argparse.Namespace) -> int:
    from exoray.explore.explorer import Explorer

    rows = Explorer(args.base, args.model).search(args.text, image=args.image, image_id=args.id,
                                                  k=args.k)
    _emit(rows, args.json, "{rank:>4}  {score:.4f}  {image_id}  {relpath}")
    return 0


def cmd_cluster(args: argparse.Namespace) -> int:
    from exoray.explore.explorer import Explorer

    clusters = Explorer(args.base, args.model).cluster(args.k, seed=args.seed)
    _emit(clusters, args.json, "cluster {cluster:>4}: {size:>6} images, medoid {medoid}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from exoray.explore.explorer import Explorer

    ex = Explorer(args.base, args.model)
    ids = ex.sample(args.n, method=args.method, subset=args.subset, seed=args.seed)
    rows = [{"image_id": i, "relpath": ex.relpaths.get(i)} for i in ids]
    _emit(rows, args.json, "{image_id}  {relpath}")
    return 0


def add_explore_commands(sub: Any) -> None:
    p = sub.add_parser("embed", help="Phase III: CLIP/DINOv2 embeddings (one decode, GPU pools)")
    p.add_argument("base")
    p.add_argument("--model", action="append",
                   help="clip, dino, or NAME:VARIANT (clip:ViT-B-16, dino:base, clip:tiny); "
                        "repeat for several (default: clip and dino)")
    p.add_argument("--checkpoint", action="append", metavar="MODEL=PATH",
                   help="local checkpoint (file/dir) or hub id for a model")
    p.add_argument("--batch-size", type=int, help="images per model batch (default per model)")
    p.add_argument("--device", help="cuda / cpu (default: cuda when available)")
    p.add_argument("--retry-errors", action="store_true")
    p.add_argument("--part-rows", type=int, default=1000)
    p.add_argument("--max-pixels", type=int, default=100_000_000,
                   help="larger images are refused as decompression bombs")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(handler=cmd_embed)

    p = sub.add_parser("index", help="Phase VII: build or extend the FAISS index of a model")
    p.add_argument("base")
    p.add_argument("--model", action="append", help="clip / dino (repeatable; default clip)")
    p.add_argument("--kind", default="auto", help="auto, flat, hnsw or ivfpq")
    p.add_argument("--rebuild", action="store_true", help="build from scratch")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_index)

    p = _navigation_parser(sub, "search", "search by --text (CLIP), --image FILE or --id IMAGE_ID",
                           cmd_search)
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--text")
    q.add_argument("--image", help="a query image file")
    q.add_argument("--id", help="an image_id of BASE")
    p.add_argument("-k", type=int, default=20)

    p = _navigation_parser(sub, "cluster", "spherical k-means of a model's embeddings",
                           cmd_cluster)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)

    p = _navigation_parser(sub, "sample", "a diverse, random or cluster-stratified sample",
                           cmd_sample)
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--method", default="diverse", choices=["diverse", "random", "stratified"])
    p.add_argument("--subset", help="only images with this Phase IV subset flag")
    p.add_argument("--seed", type=int, default=0)


def _navigation_parser(sub: Any, name: str, help_text: str, handler: Any) -> Any:
    """A sub-command over one model's index: BASE, --model, --json."""
    p = sub.add_parser(name, help=help_text)
    p.add_argument("base")
    p.add_argument("--model", default="clip", help="clip or dino (default clip)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=handler)
    return p
