"""Benchmark issue 13's GPU table in one run: decode, backends vs model-only, OOM backoff, pipeline.

Every figure is printed next to its baseline from the same run, on the same machine:

* decode: CPU ``square_crop`` on 2 processes vs batched nvJPEG + on-device resize
  (``exoray.image.gpu_decode.GpuSquareDecoder``), same JPEGs, same side;
* backends: ClipBackend (ViT-B-32, random weights) and DinoBackend (DINOv2 small/base built from
  their configs, random weights) vs the same model in pure fp16 on GPU-resident input, at batch
  64 and 256, fed host uint8 arrays (``--decode cpu`` path) and device uint8 tensors (``--decode
  gpu`` path); plus cosine of CUDA vs CPU vectors (fp16 weights and preprocessing are safe);
* OOM: a real CUDA OOM under a 3 GiB cap at batch 4096: the backoff events and identical vectors;
* pipeline (when Ray is installed): ``exoray embed`` clip+dino with ``--decode cpu`` vs ``gpu``,
  parts of 500 rows: whole run, time to the first committed part, steady state between parts;
* start-up: imports, ``ray.init``, backend construction (weights load, hashing).

Without Ray the pipeline part is skipped. The process pins itself to ``--cores`` cores (default 2,
like Colab) after generating the images. On a machine without CUDA it says so and runs what a CPU
can run (tiny models, torchvision's CPU JPEG decoder as a stand-in for nvJPEG), which checks the
script, not the GPU.

    python benchmarks/bench_gpu.py --quick         # ~5 min on an H100
    python benchmarks/bench_gpu.py --n 6144        # the issue's 2-core pipeline size
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import bench_parser, image_files, image_set, machine, prepare_workdir

PART_ROWS = 500


# ----------------------------------------------------------------------------- helpers


def pin_cores(cores: int) -> str:
    """Restrict this process (and everything it starts) to the first ``cores`` CPUs."""
    if cores <= 0 or not hasattr(os, "sched_setaffinity"):
        return f"all {os.cpu_count()} cores"
    allowed = sorted(os.sched_getaffinity(0))[:cores]
    os.sched_setaffinity(0, allowed)
    import torch

    torch.set_num_threads(len(allowed))
    return f"pinned to cores {allowed}"


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def line(label: str, value: float, unit: str = "img/s") -> None:
    print(f"  {label:<62s} {value:10.1f} {unit}", flush=True)


def ratio(label: str, ours: float, base: float, goal: str = "") -> None:
    r = ours / base if base > 0 else float("nan")
    print(f"  {label:<62s} {r:10.2f}x" + (f"   (goal {goal})" if goal else ""), flush=True)


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def random_dino(folder: Path, size: str) -> Path:
    """A DINOv2 small/base checkpoint with random weights (same compute as the real one)."""
    import transformers

    dims = {"small": (384, 6), "base": (768, 12)}[size]
    out = folder / f"dinov2-{size}-random"
    if not (out / "config.json").is_file():
        cfg = transformers.Dinov2Config(hidden_size=dims[0], num_attention_heads=dims[1],
                                        intermediate_size=4 * dims[0], num_hidden_layers=12,
                                        patch_size=14, image_size=518)
        transformers.set_seed(0)
        transformers.Dinov2Model(cfg).save_pretrained(out)
    return out


def model_specs(cuda: bool, work: Path) -> dict[str, dict[str, Any]]:
    """name -> load_backend kwargs (and a pure-fp16 reference builder on CUDA)."""
    if not cuda:
        return {"clip:tiny": {"name": "clip", "variant": "tiny"},
                "dino:tiny": {"name": "dino", "variant": "tiny"}}
    return {"clip:ViT-B-32": {"name": "clip", "variant": "ViT-B-32-random"},
            "dino:small": {"name": "dino", "checkpoint": str(random_dino(work, "small"))},
            "dino:base": {"name": "dino", "checkpoint": str(random_dino(work, "base"))}}


def load(spec: dict[str, Any], device: str, batch_size: int, cache: Path) -> Any:
    from exoray.models import load_backend

    kw = {k: v for k, v in spec.items() if k != "name"}
    return load_backend(spec["name"], device=device, batch_size=batch_size,
                        cache_dir=str(cache), **kw)


def squares(files: list[Path], side: int, n: int) -> np.ndarray:
    from exoray.image.gpu_decode import square_crop

    out = [square_crop(f.read_bytes(), side, name=f.name, max_pixels=10**9)
           for f in files[:min(n, len(files))]]
    reps = -(-n // len(out))
    return np.ascontiguousarray(np.concatenate([np.stack(out)] * reps)[:n])


# ----------------------------------------------------------------------------- decode


def _cpu_square(args: tuple[str, int]) -> int:
    from exoray.image.gpu_decode import square_crop

    path, side = args
    return int(square_crop(Path(path).read_bytes(), side, name=path, max_pixels=10**9).shape[0])


def bench_decode(files: list[Path], side: int, device: str, cores: int) -> None:
    import torch

    from exoray.engine.stages.reading import apply_decoder
    from exoray.image.gpu_decode import GpuSquareDecoder, inspect_jpeg, square_crop

    print(f"\n== decode to {side}px squares, {len(files)} JPEGs ==", flush=True)
    procs = max(1, cores)
    with multiprocessing.get_context("spawn").Pool(procs) as pool:
        pool.map(_cpu_square, [(str(files[0]), side)] * procs)  # start the workers
        t = time.perf_counter()
        pool.map(_cpu_square, [(str(f), side) for f in files], chunksize=8)
        cpu_s = time.perf_counter() - t
    line(f"CPU square_crop, {procs} processes", rate(len(files), cpu_s))

    def fallback(d: bytes, n: str) -> Any:
        return apply_decoder(d, n, lambda b, m: square_crop(b, side, name=m, max_pixels=10**9))

    dec = GpuSquareDecoder(side, device, fallback, batch_size=128)
    dec([f.read_bytes() for f in files[:8]], [f.name for f in files[:8]])  # warm-up
    sync(device)
    t = time.perf_counter()
    n_gpu = 0
    for lo in range(0, len(files), 128):
        chunk = files[lo:lo + 128]
        blobs = [f.read_bytes() for f in chunk]
        heads = [inspect_jpeg(b) for b in blobs]
        out = dec(blobs, [f.name for f in chunk], [h.orientation for h in heads],
                  [h.route for h in heads])
        n_gpu += out.gpu_decoded
    sync(device)
    gpu_s = time.perf_counter() - t
    what = ("nvJPEG batch 128 + resize on the GPU" if device.startswith("cuda")
            else "torchvision CPU decode (stand-in for nvJPEG), same code")
    line(f"{what}, read + header incl.", rate(len(files), gpu_s))
    print(f"  ({n_gpu} of {len(files)} decoded by the batched decoder, the rest by the CPU "
          f"fallback; torch threads {torch.get_num_threads()})")
    ratio("batched decoder / CPU processes", rate(len(files), gpu_s), rate(len(files), cpu_s))


# ----------------------------------------------------------------------------- backends


def reference_rate(backend: Any, batch: int, reps: int) -> float:
    """The backend's own model, pure fp16 (or fp32 on CPU), on normalised input already there."""
    import torch

    dev = backend.device
    dtype = torch.float16 if dev.startswith("cuda") else torch.float32
    model = backend.model.to(dtype)
    crop = backend.transform.crop
    x = torch.randn(batch, 3, *crop, device=dev, dtype=dtype)
    is_clip = hasattr(model, "encode_image")

    def step() -> Any:
        return model.encode_image(x) if is_clip else model(pixel_values=x).pooler_output

    with torch.inference_mode():
        step()
        sync(dev)
        t = time.perf_counter()
        for _ in range(reps):
            step()
        sync(dev)
    return rate(batch * reps, time.perf_counter() - t)


def backend_rate(backend: Any, images: Any, reps: int) -> float:
    backend({"image": images})  # warm-up
    sync(backend.device)
    t = time.perf_counter()
    for _ in range(reps):
        backend({"image": images})
    return rate(len(images) * reps, time.perf_counter() - t)


def bench_backends(files: list[Path], device: str, work: Path, quick: bool) -> None:
    import torch

    cuda = device.startswith("cuda")
    print(f"\n== backends vs model-only on {device} ==", flush=True)
    if not cuda:
        print("  (no CUDA: tiny models on the CPU, a check of this script, not of GPU speed)")
    batches = (64, 256) if cuda else (16,)
    reps = (4 if quick else 16) if cuda else 2
    chunks = 4  # backend calls get several chunks, as the pipeline's batches do
    for label, spec in model_specs(cuda, work).items():
        for bs in batches:
            backend = load(spec, device, bs, work / "models")
            host = squares(files, backend.input_size, bs * chunks)
            fed_host = backend_rate(backend, host, reps)
            dev_in = torch.from_numpy(host).to(device)
            fed_dev = backend_rate(backend, dev_in, reps)
            ref = reference_rate(backend, bs, reps * chunks)
            print(f"  {label} batch {bs}: model-only {ref:,.0f} img/s, backend fed host uint8 "
                  f"{fed_host:,.0f}, fed device uint8 {fed_dev:,.0f}", flush=True)
            ratio(f"{label} b{bs} backend(host uint8) / model-only", fed_host, ref, ">= 0.9")
            ratio(f"{label} b{bs} backend(device uint8) / model-only", fed_dev, ref, ">= 0.9")
            del backend, dev_in
            if cuda:
                torch.cuda.empty_cache()
        if cuda:
            gpu_b = load(spec, device, 32, work / "models")
            cpu_b = load(spec, "cpu", 32, work / "models")
            imgs = squares(files, gpu_b.input_size, 16)
            cos = (gpu_b({"image": imgs})["embedding"] * cpu_b({"image": imgs})["embedding"]
                   ).sum(axis=1)
            print(f"  {label}: CUDA (fp16 weights + fp16 preprocessing) vs CPU fp32 vectors, "
                  f"min cosine {cos.min():.4f} over {len(imgs)} images", flush=True)
            del gpu_b, cpu_b
            torch.cuda.empty_cache()


def bench_oom(files: list[Path], device: str, work: Path) -> None:
    import torch

    print("\n== CUDA OOM backoff under a 3 GiB cap ==", flush=True)
    if not device.startswith("cuda"):
        print("  skipped: no CUDA (the backoff logic is tested on CPU in tests/test_models.py)")
        return
    spec = model_specs(True, work)["clip:ViT-B-32"]
    ref = load(spec, device, 256, work / "models")
    imgs = squares(files, ref.input_size, 4096)
    expected = ref({"image": imgs})["embedding"]
    del ref
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, (3 << 30) / total))
    try:
        backend = load(spec, device, 4096, work / "models")
        got = backend({"image": imgs})["embedding"]
        steps = [f"{e['from']}->{e['to']}" for e in backend.events if e["event"] == "oom_backoff"]
        print(f"  backoff {', '.join(steps) or 'none (fits in 3 GiB)'}; min cosine vs batch 256 "
              f"{(got * expected).sum(axis=1).min():.4f}", flush=True)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- start-up


STARTUP_PROBE = r"""
import json, sys, time
t = {}
s = time.perf_counter(); import torch; t["import torch"] = time.perf_counter() - s
s = time.perf_counter(); import open_clip; t["import open_clip"] = time.perf_counter() - s
s = time.perf_counter(); import transformers; t["import transformers"] = time.perf_counter() - s
s = time.perf_counter(); import exoray.models; t["import exoray.models"] = time.perf_counter() - s
from exoray.models import load_backend
from exoray.models import weights
for spec in json.loads(sys.argv[1]):
    name = spec.pop("name"); label = spec.pop("label")
    hashed = []
    real = weights.weights_hash
    def timed_hash(*a, **k):
        s = time.perf_counter(); out = real(*a, **k); hashed.append(time.perf_counter() - s)
        return out
    import exoray.models.clip as c, exoray.models.dino as d
    c.weights_hash = d.weights_hash = timed_hash
    s = time.perf_counter(); b = load_backend(name, **spec)
    t[f"construct {label} (load + hash + to device)"] = time.perf_counter() - s
    t[f"  of which hashing {label}"] = sum(hashed)
print(json.dumps(t))
"""


def bench_startup(device: str, work: Path) -> None:
    print("\n== start-up pieces (fresh processes, warm caches) ==", flush=True)
    specs = []
    for label, spec in model_specs(device.startswith("cuda"), work).items():
        if label == "dino:base":
            continue
        specs.append({**spec, "label": label, "device": device,
                      "cache_dir": str(work / "models")})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent),
                                                        os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", STARTUP_PROBE, json.dumps(specs)], env=env,
                   capture_output=True, check=False)  # warm the page cache and tiny builds
    out = subprocess.run([sys.executable, "-c", STARTUP_PROBE, json.dumps(specs)], env=env,
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        print(f"  probe failed: {out.stderr.strip().splitlines()[-1:]}")
        return
    for label, seconds in json.loads(out.stdout.strip().splitlines()[-1]).items():
        line(label, seconds, "s")
    try:
        import ray
    except ImportError:
        return
    t = time.perf_counter()
    ray.init(num_cpus=len(os.sched_getaffinity(0)), include_dashboard=False,
             configure_logging=False, log_to_driver=False)
    line("ray.init", time.perf_counter() - t, "s")

    @ray.remote(num_cpus=0.25)
    class Probe:
        def ready(self) -> int:
            return os.getpid()

    t = time.perf_counter()
    ray.get(Probe.remote().ready.remote())
    line("first actor start + call (no imports)", time.perf_counter() - t, "s")
    ray.shutdown()


# ----------------------------------------------------------------------------- pipeline


class PartWatcher(threading.Thread):
    """Polls BASE/embeddings for published parts; remembers when each row total appeared."""

    def __init__(self, base: Path) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.stop = threading.Event()
        self.seen: list[tuple[float, dict[str, int]]] = []

    def rows(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for dirpath, _, names in os.walk(self.base / "embeddings"):
            for n in names:
                m = re.match(r"part-.*-n(\d+)\.parquet$", n)
                if m:
                    counts[dirpath] = counts.get(dirpath, 0) + int(m.group(1))
        return counts

    def run(self) -> None:
        last: dict[str, int] = {}
        while not self.stop.is_set():
            now = self.rows()
            if now != last:
                self.seen.append((time.perf_counter(), now))
                last = now
            time.sleep(0.1)


def bench_pipeline(root: Path, n: int, device: str, work: Path, cores: int) -> None:
    try:
        import ray
    except ImportError:
        print("\n== pipeline: skipped (Ray is not installed) ==")
        return
    from pipelines import embeddings, manifest

    cuda = device.startswith("cuda")
    print(f"\n== exoray embed clip+dino, {n} images, parts of {PART_ROWS}, "
          f"{len(os.sched_getaffinity(0))} cores ==", flush=True)
    specs = model_specs(cuda, work)
    models = ["clip:ViT-B-32-random", "dino"] if cuda else ["clip:tiny", "dino:tiny"]
    checkpoints = {"dino": specs["dino:small"]["checkpoint"]} if cuda else None
    modes = ("cpu", "gpu") if cuda else ("cpu",)
    gpus = 1 if cuda else 0
    for mode in modes:
        base = Path(tempfile.mkdtemp(prefix=f"gpu-bench-{mode}-", dir=work))
        try:
            manifest.run(base, images=root)
            t = time.perf_counter()
            ray.init(num_cpus=max(1, cores) if cores else os.cpu_count(), num_gpus=gpus,
                     include_dashboard=False, configure_logging=False, log_to_driver=False)
            ray_s = time.perf_counter() - t
            watcher = PartWatcher(base)
            watcher.start()
            t0 = time.perf_counter()
            result = embeddings.run(base, models, checkpoints=checkpoints, decode=mode,
                                    part_rows=PART_ROWS, show_progress=False)
            whole = time.perf_counter() - t0
            watcher.stop.set()
            watcher.join()
            both = [(ts, min(c.values())) for ts, c in watcher.seen if len(c) == len(models)]
            first = next(((ts - t0, r) for ts, r in both if r > 0), (float("nan"), 0))
            print(f"  --decode {mode}: {result.processed} rows, {result.errors} errors; "
                  f"ray.init {ray_s:.1f}s (not counted)", flush=True)
            line(f"--decode {mode}: whole run", rate(n, whole))
            line(f"--decode {mode}: call -> first part of every model", first[0], "s")
            if len(both) >= 2 and both[-1][1] > first[1]:
                t_first = both[0][0]
                steady = rate(both[-1][1] - both[0][1], both[-1][0] - t_first)
                line(f"--decode {mode}: steady state between parts", steady)
        finally:
            ray.shutdown()
            shutil.rmtree(base, ignore_errors=True)


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = bench_parser(__doc__, wait_quiet=0.0)
    parser.add_argument("--quick", action="store_true", help="small sizes (~5 min on an H100)")
    parser.add_argument("--n", type=int, default=None, help="images for the pipeline part")
    parser.add_argument("--cores", type=int, default=2, help="pin to this many cores (0: all)")
    parser.add_argument("--only", nargs="*", default=None,
                        choices=("decode", "backends", "oom", "startup", "pipeline"))
    args = parser.parse_args()
    prepare_workdir(args)
    import torch

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    if not cuda:
        print("NO CUDA DEVICE: running the CPU-runnable parts only (tiny models, torchvision's "
              "CPU JPEG decoder standing in for nvJPEG); no figure below is a GPU figure.")
    n = args.n or ((2048 if args.quick else 6144) if cuda else 64)
    n_decode = min(n, 1024 if cuda else 64)
    work = Path(args.workdir) / "gpu-bench"
    work.mkdir(parents=True, exist_ok=True)
    root = image_set(args.workdir, n, seed=args.seed)  # generated before pinning, never timed
    files = image_files(root)
    for f in files:
        f.read_bytes()
    print(f"machine: {machine()}; {pin_cores(args.cores)}")
    if cuda:
        print(f"gpu: {torch.cuda.get_device_name(0)}")
    only = set(args.only or ("decode", "backends", "oom", "startup", "pipeline"))
    if "decode" in only:
        bench_decode(files[:n_decode], 256, device, args.cores or os.cpu_count() or 1)
    if "backends" in only:
        bench_backends(files, device, work, args.quick)
    if "oom" in only:
        bench_oom(files, device, work)
    if "startup" in only:
        bench_startup(device, work)
    if "pipeline" in only:
        bench_pipeline(root, n, device, work, args.cores)


if __name__ == "__main__":
    main()
