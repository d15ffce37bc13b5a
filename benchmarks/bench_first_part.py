"""How soon a phase command's first part is on disk, and its whole time: this checkout vs another.

A user whose runtime dies every few hours cares when the first results are committed (a rerun
after an early death finds them) as much as when the run ends. This script runs one phase command
as fresh processes, alternating between this checkout and a baseline git revision (a temporary
worktree, same interpreter, same images, same machine), and prints for each run the seconds until
the first part appeared in the output folder, the whole command's seconds and the parts' row
counts, then the median ratios.

    python benchmarks/bench_first_part.py --baseline ace103c --set mixed --n 3000 -- \\
        features --executor ray
    python benchmarks/bench_first_part.py --baseline ace103c --n 256 -- \\
        embed --model clip:ViT-B-32-random --batch-size 32
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    REPO_ROOT,
    bench_parser,
    first_part_seconds,
    image_files,
    image_set,
    machine,
    prepare_workdir,
    wait_for_quiet,
    warm_page_cache,
    watch_first_part,
)

OUTPUT_FOLDERS = {"features": "features/global", "embed": "embeddings"}


def run_once(code: Path, images: Path, command: list[str], workdir: Path) -> dict[str, object]:
    """``exoray manifest`` (not timed) then the phase command, both from ``code``'s package."""
    base = Path(tempfile.mkdtemp(prefix="first-part-", dir=workdir))
    env = {**os.environ, "PYTHONPATH": str(code)}
    env.pop("RAY_ADDRESS", None)
    cli = [sys.executable, "-m", "exoray.cli.main"]
    try:
        # cwd outside both checkouts: `python -m` puts the cwd first on the import path
        subprocess.run([*cli, "manifest", str(base), "--images", str(images), "-q"], env=env,
                       check=True, capture_output=True, cwd=workdir)
        folder = base / OUTPUT_FOLDERS[command[0]]
        started = time.perf_counter()
        seen = watch_first_part(folder)
        out = subprocess.run([*cli, command[0], str(base), "-q", *command[1:]], env=env,
                             check=True, capture_output=True, text=True, cwd=workdir)
        whole = time.perf_counter() - started
        rows = sorted(int(p.name.rsplit("-n", 1)[1].split(".")[0])
                      for p in folder.rglob("part-*.parquet"))
        return {"first": first_part_seconds(seen), "whole": whole,
                "rows": rows, "summary": out.stdout.strip().splitlines()[-1]}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--baseline", required=True, help="git revision to compare with")
    parser.add_argument("--set", choices=("jpeg", "mixed"), default="jpeg",
                        help="1-3 MP JPEGs, or `exoray synth`'s JPEG/PNG/WebP mix")
    parser.add_argument("--n", type=int, default=3000, help="images in the set")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side, alternating")
    parser.add_argument("command", nargs="+", help="phase command and its options, after --")
    args = parser.parse_args()
    prepare_workdir(args)
    workdir = Path(args.workdir)
    if args.command[0] not in OUTPUT_FOLDERS:
        parser.error(f"command {args.command[0]!r}: use one of {', '.join(OUTPUT_FOLDERS)}")
    if args.set == "mixed":
        images = workdir / f"synth-mixed-n{args.n}-s{args.seed}"
        if not images.is_dir():
            subprocess.run([sys.executable, "-m", "exoray.cli.main", "synth", str(images),
                            "--n", str(args.n), "--seed", str(args.seed)], check=True,
                           capture_output=True, cwd=REPO_ROOT)
    else:
        images = image_set(str(workdir), args.n, seed=args.seed)
    warm_page_cache(image_files(images))
    baseline = Path(tempfile.mkdtemp(prefix="baseline-", dir=workdir))
    added = subprocess.run(["git", "-C", str(REPO_ROOT), "worktree", "add", "--detach",
                            str(baseline), args.baseline], capture_output=True, text=True)
    if added.returncode:
        shutil.rmtree(baseline, ignore_errors=True)
        parser.error(f"--baseline {args.baseline}: not a revision git can check out here "
                     f"({added.stderr.strip().splitlines()[-1] if added.stderr else 'git failed'})"
                     "; give a commit hash or tag of this repository")
    print(f"machine: {machine()}\nimages: {images} ({args.set}, {args.n})\n"
          f"command: exoray {' '.join(args.command)}\nbaseline: {args.baseline}\n")
    results: dict[str, list[dict[str, object]]] = {"baseline": [], "this checkout": []}
    try:
        for _ in range(args.repeat):
            for label, code in (("baseline", baseline), ("this checkout", REPO_ROOT)):
                wait_for_quiet(args.wait_quiet)
                r = run_once(code, images, args.command, workdir)
                results[label].append(r)
                print(f"  {label:<14s} first part {r['first']:6.2f} s   whole {r['whole']:6.2f} s"
                      f"   parts {'/'.join(map(str, r['rows']))}", flush=True)
    finally:
        subprocess.run(["git", "-C", str(REPO_ROOT), "worktree", "remove", "--force",
                        str(baseline)], capture_output=True)
    print()
    for key, label in (("first", "first part"), ("whole", "whole command")):
        ours = statistics.median(float(r[key]) for r in results["this checkout"])
        theirs = statistics.median(float(r[key]) for r in results["baseline"])
        print(f"  {label:<14s} median {ours:6.2f} s vs {theirs:6.2f} s: "
              f"{theirs / ours:5.2f}x as fast as the baseline")


if __name__ == "__main__":
    main()
