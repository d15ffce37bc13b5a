"""Phase V tasks as phase specs: one model per run, one output folder per (task, model id).

A task (detect, ocr, ...) is a :class:`TaskDef`: which backends can do it, where its output
lives, its schema and the sink conversion, and its own options. :func:`task_spec` turns it into a
:class:`PhaseSpec`, so the engine gives every task the same subset selection, estimate, lease,
exactly-once parts, progress, run log, status, errors and doctor.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from exoray.engine.spec import Option, Output, PhaseSpec, StageContext, Target
from exoray.semantics.schemas import TASK_KEY
from exoray.storage import layout
from exoray.storage.parts import list_parts
from exoray.storage.store import Store
from exoray.util.cli_types import positive_int_arg

MODEL_FILE = "model.json"
MODEL_ACTOR_CPUS = 0.25  # torch/onnxruntime use their own threads; see pipelines/embeddings.py
MODEL_ACTOR_MEMORY = 2 << 30
SEMANTICS = "semantics"  # the CLI group: `exoray semantics BASE --task NAME`


@dataclass(frozen=True)
class TaskDef:
    """What differs between Phase V tasks; everything else is shared."""

    name: str
    title: str
    help: str
    root: str  # output root in BASE, one sub-folder per model id
    schema: pa.Schema
    convert: Callable[[pa.Table, Target], pa.Table]
    backends: tuple[str, ...]  # registry names able to do this task; the first is the default
    default_model: str
    # Task options passed to the backend constructor (name -> Option).
    model_options: tuple[Option, ...] = ()
    # Task options the sink conversion reads from ``target.info``.
    row_options: tuple[Option, ...] = ()
    # Turns a model spec the user typed into "backend[:variant]" (e.g. yolo11n -> yolo:yolo11n).
    alias: Callable[[str], str] | None = None
    next_step: str = ""
    extra_info: dict[str, Any] = field(default_factory=dict)


def task_folder(task: TaskDef, model_id: str) -> str:
    return f"{task.root}/{layout.slug(model_id)}"


def parse_task_model(task: TaskDef, spec: str) -> tuple[str, str | None]:
    """``rapidocr`` / ``easyocr:en+fr`` / (detect) ``yolo11n`` → (backend, variant)."""
    spec = str(spec).strip()
    if not spec:
        raise ValueError(f"--model is empty; {task.name} models: {', '.join(task.backends)}")
    if task.alias is not None:
        spec = task.alias(spec)
    name, _, variant = spec.partition(":")
    if name not in task.backends:
        raise ValueError(f"{task.name}: unknown model {spec!r}; use one of "
                         f"{', '.join(task.backends)} (as NAME or NAME:VARIANT)")
    return name, variant or None


def _cache_dir(store: Store) -> str | None:
    from pipelines.embeddings import models_cache_dir

    return models_cache_dir(store)


def resolve_task(task: TaskDef, store: Store, opts: dict[str, Any]) -> list[Target]:
    """Driver side: validate options, describe and prefetch the model, name the output folder."""
    from exoray.models import describe_backend, prefetch_backend
    from exoray.util.cli_types import positive_int

    backend, variant = parse_task_model(task, opts["model"])
    if opts["batch_size"] is not None:
        positive_int(opts["batch_size"], name="batch_size")
    if opts["image_size"] is not None:
        positive_int(opts["image_size"], name="image_size")
    share = opts["gpu_share"]
    if share is not None and not 0 < float(share) <= 1:
        raise ValueError(f"gpu_share must be in (0, 1], got {share!r}")
    checkpoint = opts["checkpoint"]
    if checkpoint is not None:
        checkpoint = str(checkpoint)
    kwargs = {"variant": variant, "checkpoint": checkpoint, "cache_dir": _cache_dir(store),
              "device": opts["device"], "batch_size": opts["batch_size"]}
    info = describe_backend(backend, **kwargs, gpu_share=float(share) if share else None)
    try:
        prefetch_backend(backend, **kwargs)
    except FileNotFoundError as exc:
        if "--checkpoint" in str(exc):
            raise
        raise FileNotFoundError(f"{exc}; from the command line: --checkpoint PATH "
                                "(a local weights file or folder)") from exc
    for opt in (*task.model_options, *task.row_options):  # numbers from Python: checked here
        value = opts[opt.name]
        if opt.type is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                opt.type(str(value))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{task.name}: {opt.name}={value!r}: {exc}") from exc
    # None = the backend's own default (which may depend on the variant, e.g. SAM tiny).
    model_options = {o.name: opts[o.name] for o in task.model_options
                     if opts[o.name] is not None}
    row_options = {o.name: opts[o.name] for o in task.row_options}
    folder = task_folder(task, info["model_id"])
    record = {"task": task.name, "model": backend, "model_id": info["model_id"],
              "variant": variant, "checkpoint": checkpoint}
    if not store.exists(folder, MODEL_FILE):
        store.write_bytes_atomic(json.dumps(record, indent=2).encode(), folder, MODEL_FILE)
    return [Target(task.name, folder, Output(task.name, task.schema, TASK_KEY),
                   model_id=info["model_id"], convert=task.convert,
                   info={"backend": backend, "kwargs": kwargs, "model_options": model_options,
                         **row_options, "input_size": opts["image_size"] or info["input_size"],
                         "batch_size": info["batch_size"], "uses_gpu": info["uses_gpu"],
                         "gpu_share": float(info["gpu_share"])})]


def task_stages(task: TaskDef, ctx: StageContext) -> list[Any]:
    """Padded-square decode on CPU actors, then the task's model pool (GPU share if it uses one)."""
    from exoray.engine.ray_runtime import ClusterShape, actor_pool_plan
    from exoray.engine.runner import Stage
    from exoray.engine.stages.semantics import PadDecodeWorker, TaskWorker

    target = ctx.targets[0]
    info = target.info
    on_gpu = info["uses_gpu"] and ctx.gpus > 0
    # On CPU the model is the bottleneck (decoding is < 10 % of its time): one decode actor
    # leaves the cores to it; on a GPU, decoding is what keeps the model fed.
    decode_plan = actor_pool_plan(ClusterShape(ctx.cpus, ctx.gpus), max_actors=None if on_gpu
                                  else 1)
    # A CPU-only model (e.g. onnxruntime) gets one actor per two cores: each uses two threads.
    pool = max(1, int(ctx.gpus)) if on_gpu else max(1, int(ctx.cpus) // 2)
    return [
        Stage("decode", PadDecodeWorker,
              {"image_root": ctx.image_root, "side": info["input_size"],
               "max_pixels": ctx.options["max_pixels"]},
              batch_size=info["batch_size"], pool_size=decode_plan.size,
              num_cpus=decode_plan.num_cpus, batch_format="numpy"),
        Stage(task.name, TaskWorker,
              {"label": target.label, "model": info["backend"], "backend_kwargs": info["kwargs"],
               "model_options": info["model_options"], "store_location": ctx.store.location,
               "run_id": ctx.run_id, "cpu_threads": max(1, int(ctx.cpus) // pool)},
              batch_size=info["batch_size"], pool_size=pool, num_cpus=MODEL_ACTOR_CPUS,
              num_gpus=info["gpu_share"] if on_gpu else 0.0, batch_format="numpy",
              memory=MODEL_ACTOR_MEMORY),
    ]


def task_sets(store: Store, task: TaskDef) -> list[tuple[str, dict[str, Any]]]:
    """(folder, model record) of every model id of ``task`` in BASE, newest run first."""
    if not store.is_dir(task.root):
        return []
    found = []
    for entry in store.list_files(task.root, suffix=MODEL_FILE, recursive=True):
        sub, _, name = entry.relpath.rpartition("/")
        if sub and name == MODEL_FILE and "/" not in sub:
            folder = f"{task.root}/{sub}"
            record = json.loads(store.read_bytes(folder, MODEL_FILE))
            newest = max((p.run_id for p in list_parts(store, folder)), default="")
            found.append((newest, folder, record))
    found.sort(key=lambda x: x[0], reverse=True)
    return [(folder, record) for _, folder, record in found]


def discover_task(task: TaskDef, store: Store) -> list[Target]:
    sets = task_sets(store, task)
    out = []
    for folder, record in sets:
        label = task.name if len(sets) == 1 else \
            f"{record['model']}:{record.get('variant') or record['model_id']}"
        out.append(Target(label, folder, Output(task.name, task.schema, TASK_KEY),
                          model_id=record["model_id"]))
    return out


def calibrate_task(task: TaskDef, store: Store, targets: list[Target], opts: dict[str, Any],
                   todo: pa.Table) -> float | None:
    info = targets[0].info
    return calibrate_model(store, info, opts, todo, info["model_options"])


def calibrate_model(store: Store, info: dict[str, Any], opts: dict[str, Any], todo: pa.Table,
                    model_options: dict[str, Any], n: int = 4) -> float | None:
    """Seconds per image on this machine, timed on up to ``n`` todo images after a warm-up
    image (model loading is not counted: a run pays it once).

    The model runs in a child process, so the GPU memory it takes (a CUDA context, cached
    blocks) is given back before the run's actors start: SAM expects the whole GPU.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from exoray.engine.stages.semantics import padded_square
    from exoray.image.decode import DecodeError
    from exoray.image.manifest import manifest_root

    root = Store(manifest_root(store) or "")
    squares, sizes = [], []
    for relpath in todo["relpath"].to_pylist():
        try:
            square, size, _ = padded_square(root.read_bytes(relpath), info["input_size"],
                                            name=relpath, max_pixels=opts["max_pixels"])
        except (OSError, ValueError, DecodeError):  # a bad file is not a timing sample
            continue
        squares.append(square)
        sizes.append(size)
        if len(squares) > n:
            break
    if len(squares) < 2:
        return None
    batch = {"image": np.stack(squares), "image_size": np.asarray(sizes, np.int32)}
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(time_backend, info["backend"], info["kwargs"], model_options,
                           batch).result()


def time_backend(backend: str, kwargs: dict[str, Any], model_options: dict[str, Any],
                 batch: dict[str, np.ndarray]) -> float:
    """Seconds per image of ``backend`` on ``batch`` after a one-image warm-up."""
    from exoray.models import load_backend

    model = load_backend(backend, **kwargs, **model_options)
    model({k: v[:1] for k, v in batch.items()})  # warm-up: lazy imports, first-call setup
    started = time.perf_counter()
    model({k: v[1:] for k, v in batch.items()})
    return (time.perf_counter() - started) / (len(batch["image"]) - 1)


def model_run_options() -> tuple[Option, ...]:
    """Options every model phase shares (Phase V tasks and Phase VI): weights, batch, working
    size, GPU share, device, pixel limit."""
    from pipelines.features import MAX_PIXELS_OPTION

    return (
        Option("checkpoint", None, "a local weights file/folder (or hub id) for the model",
               metavar="PATH"),
        Option("batch_size", None, "images per model batch (default: per model)",
               type=positive_int_arg),
        Option("image_size", None, "working size: long side of the picture the model sees "
               "(default: per model)", type=positive_int_arg),
        Option("gpu_share", None, "fraction of one GPU per model actor (default: per model)",
               type=float),
        Option("device", None, "cuda / cpu (default: cuda when available)"),
        MAX_PIXELS_OPTION,
    )


def task_options(task: TaskDef) -> tuple[Option, ...]:
    return (
        Option("model", task.default_model,
               "the task's model as NAME or NAME:VARIANT (detect: yolo11n, yolov8s, ... or yolo "
               "with --checkpoint; ocr: rapidocr, easyocr, easyocr:en+fr; sam: sam, sam:vit_l; "
               "depth: depth, depth:base)", metavar="MODEL"),
        *model_run_options(),
        *task.model_options,
        *task.row_options,
    )


def task_spec(task: TaskDef) -> PhaseSpec:
    return PhaseSpec(
        name=task.name,
        title=f"V {task.name}",
        help=task.help,
        outputs=(Output(task.name, task.schema, TASK_KEY),),
        options=task_options(task),
        resolve=lambda store, opts: resolve_task(task, store, opts),
        stages=lambda ctx: task_stages(task, ctx),
        discover=lambda store: discover_task(task, store),
        next_step=task.next_step,
        default_part_rows=500,
        group=SEMANTICS,
        calibrate=lambda store, targets, opts, todo: calibrate_task(task, store, targets, opts,
                                                                   todo),
    )


def run_task(spec: PhaseSpec, base: str | os.PathLike[str], **options: Any) -> Any:
    from exoray.engine.runner import run_phase

    return run_phase(spec, base, **options)
