"""Benchmark Phase VI: ``pipelines.interpret.run`` against a plain loop with the same VLM backend.

On the same mixed image set (1-3 MP JPEGs and small PNG/WebP from ``exoray.dev.synth``), with the
same backend, variant, prompt, generation settings, batch size and working size:

* **plain loop**: a fresh Python process (it pays its own ``import torch`` and model load, like
  the pipeline's model actor) that reads each file, decodes it with exoray's own
  ``padded_square``, stacks ``--batch-size`` squares and calls the backend class from
  ``exoray.models.load_backend`` directly;
* **pipeline**: ``pipelines.interpret.run`` on a fresh BASE (``manifest.run`` first, not timed),
  Ray started before timing; actor start-up and the model load inside the actor are part of it.

Printed: images/s and generated tokens/s of both sides, the ratio pipeline / loop (goal >= 0.9)
with start-up and projected to ``--project`` images from each side's fixed cost, and how many
images got the same answer text on both sides (greedy decoding: they should all agree).

The default model is ``vlm:tiny`` (a random-weight Idefics3 built from a config, no download), so
the figures measure the pipeline's overhead around a model, not a real VLM's speed. On a machine
with the real weights cached, ``--model vlm`` (SmolVLM-256M) or ``--checkpoint DIR`` times a real
one; the device is automatic (CUDA when torch sees a GPU).

    python benchmarks/bench_interpret.py                      # 48 images, vlm:tiny, ~2 min
    python benchmarks/bench_interpret.py --n 256 --model vlm --batch-size 16   # on a GPU
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    bench_parser,
    image_set,
    machine,
    prepare_workdir,
    start_ray,
    timed,
    wait_for_quiet,
)
from bench_semantics import CounterWatch

PROMPT_ID = "caption_short"


def mixed_set(workdir: str, n: int, seed: int) -> tuple[Path, list[str]]:
    """Half large JPEGs, half small PNG/WebP, copied into one folder (built once, reused)."""
    root = Path(workdir) / f"interpret-mix-n{n}-s{seed}"
    if not (root / ".complete").is_file():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        big = image_set(workdir, n - n // 2, seed=seed)
        small = image_set(workdir, n // 2, seed=seed + 1, min_megapixels=0.05,
                          max_megapixels=0.3, formats=("png", "webp"))
        for tag, src in (("big", big), ("small", small)):
            for f in sorted(p for p in src.rglob("*") if p.suffix.lower() in
                            (".jpg", ".png", ".webp")):
                dest = root / tag / f.relative_to(src)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, dest)  # copies: the manifest skips links leaving the root
        (root / ".complete").write_text("ok")
    rels = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.suffix.lower() in (".jpg", ".png", ".webp"))
    return root, rels


def prompt_setup(args: Any) -> dict[str, Any]:
    """The prompt's rendered text and generation settings, and the backend's own figures."""
    from exoray.models import describe_backend, parse_spec
    from exoray.models.vlm import check_generation_options
    from exoray.prompts import load_registry
    from exoray.storage.store import Store

    scratch = Store(tempfile.mkdtemp(prefix="registry-", dir=args.workdir))
    prompt = load_registry(scratch).get(PROMPT_ID)
    shutil.rmtree(scratch.root, ignore_errors=True)
    name, variant = parse_spec(args.model)
    kwargs = {"variant": variant, "checkpoint": args.checkpoint, "device": args.device,
              "batch_size": args.batch_size}
    info = describe_backend(name, **kwargs)
    return {"backend": name, "kwargs": {**kwargs, "batch_size": int(info["batch_size"])},
            "text": prompt.text, "generation": dict(prompt.generation),
            "settings": check_generation_options(**prompt.generation),
            "side": int(info["input_size"]), "batch_size": int(info["batch_size"]),
            "model_id": info["model_id"]}


def loop_child(params_path: str) -> None:
    """The plain loop in a fresh process; writes timings, token counts and answers as JSON."""
    import numpy as np

    t0 = time.perf_counter()
    p = json.loads(Path(params_path).read_text("utf-8"))
    from exoray.engine.stages.semantics import padded_square
    from exoray.models import load_backend

    backend = load_backend(p["backend"], **p["kwargs"])
    backend.set_generation(**p["generation"])
    loaded = time.perf_counter()
    answers: dict[str, str] = {}
    tokens = 0
    first_end = None
    files, bs = p["files"], p["batch_size"]
    for lo in range(0, len(files), bs):
        chunk = files[lo:lo + bs]
        squares, sizes = [], []
        for rel in chunk:
            square, size, _ = padded_square((Path(p["root"]) / rel).read_bytes(), p["side"],
                                            name=rel, max_pixels=p["max_pixels"])
            squares.append(square)
            sizes.append(size)
        out = backend({"image": np.stack(squares), "image_size": np.asarray(sizes, np.int32),
                       "prompt": np.array([p["text"]] * len(chunk), dtype=object)})
        answers.update(zip(chunk, (str(t) for t in out["text"]), strict=True))
        tokens += int(sum(backend.last_new_tokens))
        first_end = first_end or time.perf_counter()
    end = time.perf_counter()
    Path(p["out"]).write_text(json.dumps({
        "startup_s": loaded - t0, "total_s": end - t0, "first_batch_end_s": first_end - t0,
        "first_batch_n": min(bs, len(files)), "steady_s": end - first_end, "tokens": tokens,
        "answers": answers}), "utf-8")


def plain_loop(args: Any, setup: dict[str, Any], root: Path, rels: list[str],
               t: dict[str, float]) -> dict[str, Any]:
    from exoray.image.decode import DEFAULT_MAX_PIXELS

    scratch = Path(tempfile.mkdtemp(prefix="loop-interpret-", dir=args.workdir))
    try:
        params = {"backend": setup["backend"],
                  "kwargs": {**setup["kwargs"], "cache_dir": str(scratch / "models")},
                  "generation": setup["generation"], "text": setup["text"],
                  "root": str(root), "files": rels, "batch_size": setup["batch_size"],
                  "side": setup["side"], "max_pixels": DEFAULT_MAX_PIXELS,
                  "out": str(scratch / "result.json")}
        (scratch / "params.json").write_text(json.dumps(params), "utf-8")
        wait_for_quiet(args.wait_quiet)
        with timed("plain loop (fresh process)", t):
            subprocess.run([sys.executable, __file__, "--loop-child", str(scratch / "params.json")],
                           check=True)
        return json.loads((scratch / "result.json").read_text("utf-8"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run_pipeline(args: Any, setup: dict[str, Any], root: Path, t: dict[str, float]
                 ) -> dict[str, Any]:
    from exoray.prompts.report import read_answers
    from exoray.storage.store import Store
    from pipelines import interpret, manifest

    base = Path(tempfile.mkdtemp(prefix="interpret-base-", dir=args.workdir))
    try:
        manifest.run(base, images=root)
        wait_for_quiet(args.wait_quiet)
        watch = CounterWatch(time.perf_counter())
        watch.start()
        with timed("pipeline interpret.run", t):
            result = interpret.run(base, [PROMPT_ID], model=args.model,
                                   checkpoint=args.checkpoint, device=args.device,
                                   batch_size=setup["batch_size"], image_size=setup["side"],
                                   show_progress=False)
        watch.halt.set()
        watch.join()
        rows = read_answers(Store(base), f"{PROMPT_ID}@1").to_pylist()
        return {"result": result, "samples": watch.samples, "answers": {r["relpath"]: r["raw_text"] for r in rows}}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--loop-child":
        loop_child(sys.argv[2])
        return
    parser = bench_parser(__doc__, wait_quiet=120.0)
    parser.add_argument("--n", type=int, default=48, help="images (half large JPEGs)")
    parser.add_argument("--model", default="vlm:tiny")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: automatic)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--ray-cpus", type=int, default=2)
    parser.add_argument("--project", type=int, default=10_000,
                        help="images to project the with-start-up ratio to")
    args = parser.parse_args()
    prepare_workdir(args)
    print(machine())
    root, rels = mixed_set(args.workdir, args.n, args.seed)
    setup = prompt_setup(args)
    print(f"{len(rels)} images; {setup['backend']} ({setup['model_id']}), batch "
          f"{setup['batch_size']}, {setup['side']} px, prompt {PROMPT_ID!r}, generation "
          f"{setup['settings']}")
    t: dict[str, float] = {}
    loop = plain_loop(args, setup, root, rels, t)
    print(f"ray.init: {start_ray(args.ray_cpus):.1f}s (not counted)")
    pipe = run_pipeline(args, setup, root, t)
    n = len(rels)
    loop_s, pipe_s = t["plain loop (fresh process)"], t["pipeline interpret.run"]
    loop_steady = (n - loop["first_batch_n"]) / loop["steady_s"] if loop["steady_s"] else 0.0
    loop_fixed = loop_s - n / loop_steady if loop_steady else 0.0
    print(f"\nplain loop: {n / loop_s:.2f} img/s with start-up ({loop['startup_s']:.1f}s "
          f"start-up), steady {loop_steady:.2f} img/s, {loop['tokens'] / loop_s:.1f} tokens/s")
    print(f"pipeline:   {n / pipe_s:.2f} img/s with start-up")
    print(f"ratio pipeline / loop with start-up: {loop_s / pipe_s:.2f} (goal >= 0.9)")
    samples = pipe["samples"]
    if loop_steady and len(samples) >= 2:
        # Steady = from the first model batch's rows to the last, on both sides; each side's
        # fixed cost is its total minus images at its steady rate.
        pipe_steady = (samples[-1][1] - samples[0][1]) / (samples[-1][0] - samples[0][0])
        pipe_fixed = pipe_s - n / pipe_steady
        print(f"pipeline steady {pipe_steady:.2f} img/s (first rows after {samples[0][0]:.1f}s); "
              f"steady ratio {pipe_steady / loop_steady:.2f} (goal >= 0.9)")
        proj_loop = loop_fixed + args.project / loop_steady
        proj_pipe = pipe_fixed + args.project / pipe_steady
        print(f"projected to {args.project} images (fixed costs {loop_fixed:.1f}s / "
              f"{pipe_fixed:.1f}s): {proj_loop / proj_pipe:.2f}")
    if len(pipe["answers"]) != n:
        raise SystemExit(f"the pipeline answered {len(pipe['answers'])} of {n} images: "
                         f"{pipe['result']}")
    same = sum(1 for r in rels if pipe["answers"].get(r) == loop["answers"].get(r))
    print(f"same answer text on both sides: {same}/{n}")


if __name__ == "__main__":
    main()
