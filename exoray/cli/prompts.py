"""CLI for Phase VI outside the run itself: ``exoray prompts`` (registry, versions, comparison)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def cmd_prompts(args: argparse.Namespace) -> int:
    from exoray.prompts.report import compare, format_overview, overview
    from exoray.storage.store import Store

    store = Store(args.base)
    if not store.is_dir(""):
        raise FileNotFoundError(f"BASE {args.base} does not exist; check the path")
    if args.compare:
        rows = compare(store, *args.compare)
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            left, right = args.compare
            for r in rows:
                mark = "=" if r["same"] else "≠"
                print(f"{mark} {r['relpath']}\n    {left}: {r[left]}\n    {right}: {r[right]}")
            print(f"{sum(r['same'] for r in rows)} of {len(rows)} images give the same answer")
        return 0
    view = overview(store)
    print(json.dumps(view, indent=2, default=str) if args.json else format_overview(view))
    return 1 if view["problems"] and args.strict else 0


def add_prompt_commands(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("prompts", parents=parents,
                       help="Phase VI: the prompt registry (created if missing), its versions, "
                            "what ran, and version comparisons")
    p.add_argument("base")
    p.add_argument("--compare", nargs=2, metavar=("ID@V", "ID@V"),
                   help="answers of two prompt versions side by side, e.g. caption_v1@1 "
                        "caption_v1@2 (append :MODEL_ID to pick a model)")
    p.add_argument("--json", action="store_true", help="JSON instead of lines")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 when a prompt was edited without bumping its version")
    p.set_defaults(handler=cmd_prompts)
