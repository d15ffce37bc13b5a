"""Benchmark Phase III: the Ray embedding pipeline against calling the model directly.

Same ``--n`` synthetic 1-3 MP JPEGs (warm page cache), same batch size, same backend:

* model only: a plain loop that reads each file, decodes it with exoray's own
  ``exoray.engine.stages.embed.square_crop`` and calls ``load_backend(model, device=...)`` on batches;
* pipeline: ``pipelines.embeddings.run(base, [model], batch_size=...)`` after ``manifest.run``
  (Ray with 2 CPUs started before timing), model construction inside the actor included.

The default model is ``clip:ViT-B-32-random`` (real ViT-B/32 compute, seeded random weights, no
download). There is no random DINOv2-small variant in ``exoray/models/dino.py`` (only ``tiny``
and hub checkpoints), so DINO is not benchmarked by default; ``--model dino:tiny`` works.
``--device cuda`` runs both on a GPU (the backend autocasts to fp16 there by itself).

    python benchmarks/bench_embed.py                  # 256 images, CPU (goal: ratio >= 0.9)
    python benchmarks/bench_embed.py --n 1024 --device cuda
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import (
    bench_parser,
    first_part_seconds,
    machine,
    prepare_workdir,
    start_ray,
    timed,
    wait_for_quiet,
    warmed_image_set,
    watch_first_part,
)


def model_only(files: list[Path], root: Path, model: str, device: str | None, batch_size: int,
               t: dict[str, float], wait: float, first_rows: int) -> dict[str, np.ndarray]:
    from exoray.engine.stages.embed import square_crop
    from exoray.image.decode import DEFAULT_MAX_PIXELS
    from exoray.models import load_backend

    wait_for_quiet(wait)
    with timed("model only: load_backend", t):
        backend = load_backend(model, device=device, batch_size=batch_size)
    side = backend.input_size
    print(f"    ({backend!r}, input {side}px, torch threads "
          f"{backend._torch.get_num_threads()})")
    out: dict[str, np.ndarray] = {}
    decode_s = 0.0
    wait_for_quiet(wait)
    loop_started = time.perf_counter()
    with timed("model only: read + square_crop + embed loop", t):
        for lo in range(0, len(files), batch_size):
            if lo >= first_rows and "model only: first part's rows" not in t:
                t["model only: first part's rows"] = (time.perf_counter() - loop_started
                                                       + t["model only: load_backend"])
            chunk = files[lo:lo + batch_size]
            started = time.perf_counter()
            images = np.stack([square_crop(f.read_bytes(), side, name=f.name,
                                           max_pixels=DEFAULT_MAX_PIXELS) for f in chunk])
            decode_s += time.perf_counter() - started
            vectors = backend({"image": images})["embedding"]
            for f, v in zip(chunk, vectors, strict=True):
                out[f.relative_to(root).as_posix()] = v
    t["model only: decode part"] = decode_s
    print(f"    (of which read + decode {decode_s:.2f}s, model "
          f"{t['model only: read + square_crop + embed loop'] - decode_s:.2f}s)")
    return out


def fresh_command(root: Path, workdir: Path, model: str, batch_size: int, device: str,
                  t: dict[str, float], wait: float) -> None:
    """``exoray embed`` as a user types it: a fresh process (imports, Ray start, actors, model
    load all counted), timed to its first committed part and to its end."""
    import subprocess
    import sys

    exe = str(Path(sys.executable).with_name("exoray"))
    base = Path(tempfile.mkdtemp(prefix="embed-cli-", dir=workdir))
    try:
        subprocess.run([exe, "manifest", str(base), "--images", str(root), "-q"], check=True,
                       capture_output=True)
        wait_for_quiet(wait)
        seen = watch_first_part(base / "embeddings")
        with timed("`exoray embed` fresh command", t):
            out = subprocess.run([exe, "embed", str(base), "--model", model, "--batch-size",
                                  str(batch_size), "--device", device, "-q"],
                                 check=True, capture_output=True, text=True)
        first = t["`exoray embed` first part"] = first_part_seconds(seen)
        print(f"  {'first committed part after the call':<52s} {first:9.2f} s\n"
              f"    ({out.stdout.strip().splitlines()[-1]})")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def actor_torch_threads(num_cpus: float) -> int:
    """torch.get_num_threads() inside a Ray actor reserving ``num_cpus`` (what EmbedWorker sees)."""
    import ray

    @ray.remote(num_cpus=num_cpus)
    class Probe:
        def threads(self) -> int:
            import torch

            return torch.get_num_threads()

    probe = Probe.remote()
    try:
        return int(ray.get(probe.threads.remote()))
    finally:
        ray.kill(probe)


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--model", default="clip:ViT-B-32-random")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default=None, help="cpu (default when no GPU) or cuda")
    args = parser.parse_args()
    prepare_workdir(args)

    import torch

    from exoray.engine.part_plan import first_part_rows
    from exoray.image.ids import image_id
    from exoray.index.embeddings import resolve_embeddings
    from exoray.storage.parts import read_parts
    from exoray.storage.store import Store
    from pipelines import embeddings, manifest

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    print(f"machine: {machine()}, device {device}")
    if device.startswith("cuda"):
        print(f"gpu: {torch.cuda.get_device_name(0)}")
    root, files = warmed_image_set(args.workdir, args.n, seed=args.seed)

    t: dict[str, float] = {}
    first_rows = first_part_rows(embeddings.SPEC.default_part_rows, args.batch_size)
    reference = model_only(files, root, args.model, device, args.batch_size, t, args.wait_quiet,
                           first_rows)

    ray_s = start_ray(2)
    print(f"  {'ray.init(num_cpus=2) [not counted]':<52s} {ray_s:9.2f} s")
    threads = actor_torch_threads(embeddings.MODEL_ACTOR_CPUS)
    print(f"    (Ray default: torch threads in a plain actor with num_cpus="
          f"{embeddings.MODEL_ACTOR_CPUS}: "
          f"{threads}; in this driver: {torch.get_num_threads()})")
    base = Path(tempfile.mkdtemp(prefix="embed-base-", dir=args.workdir))
    try:
        manifest.run(base, images=root)
        wait_for_quiet(args.wait_quiet)
        with timed("pipeline: embeddings.run (incl. model load)", t):
            result = embeddings.run(base, [args.model], batch_size=args.batch_size, device=device,
                                    show_progress=False)
        print(f"    ({result.processed} rows, {result.errors} errors)")
        name = embeddings.parse_model_spec(args.model)[0]
        got = read_parts(Store(base), resolve_embeddings(Store(base), name).folder,
                         ["image_id", "vector"])
        by_id = dict(zip(got["image_id"].to_pylist(),
                         np.stack(got["vector"].to_numpy(zero_copy_only=False)).astype(np.float32),
                         strict=True))
        cos = [float(np.dot(by_id[image_id(rel)], v)) for rel, v in reference.items()
               if image_id(rel) in by_id]
        print(f"    (pipeline vs model-only vectors: {len(cos)} matched, min cosine "
              f"{min(cos) if cos else float('nan'):.4f})")
    finally:
        import ray

        ray.shutdown()
        shutil.rmtree(base, ignore_errors=True)

    print("as a user runs it (Ray not started before, model weights cached):")
    fresh_command(root, args.workdir, args.model, args.batch_size, device, t, args.wait_quiet)
    first = t["`exoray embed` first part"]
    baseline = t.get("model only: first part's rows", float("nan"))
    print(f"  first part ({first_rows} rows) on disk after {first:.2f} s (goal <= 10 s); the model-only "
          f"loop had embedded as many after {baseline:.2f} s (load included): "
          f"{first - baseline:+.2f} s of fixed cost (imports, Ray start, actors, write)")

    n = len(files)
    loop = t["model only: read + square_crop + embed loop"]
    with_load = loop + t["model only: load_backend"]
    pipe = t["pipeline: embeddings.run (incl. model load)"]
    print("\nimages/s:")
    print(f"  {'model only (loop, model already loaded)':<52s} {n / loop:9.1f}")
    print(f"  {'model only (load_backend + loop)':<52s} {n / with_load:9.1f}")
    print(f"  {'pipeline (embeddings.run)':<52s} {n / pipe:9.1f}")
    print("ratio pipeline / model-only images/s (goal >= 0.9):")
    print(f"  {'vs model only, load included':<52s} {with_load / pipe:9.2f}x")
    print(f"  {'vs model only, loop alone':<52s} {loop / pipe:9.2f}x")


if __name__ == "__main__":
    main()
