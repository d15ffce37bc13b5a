"""Phase III: CLIP and DINOv2 embeddings, one decode pass, one actor pool per model."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from exoray.engine.ray_runtime import ClusterShape, actor_pool_plan
from exoray.engine.runner import RunResult, Stage, run_phase
from exoray.engine.schemas import EMBEDDINGS_KEY, EMBEDDINGS_SCHEMA
from exoray.engine.spec import Option, Output, PhaseSpec, StageContext, Target
from exoray.engine.stages.embed import (
    DecodeWorker,
    EmbedWorker,
    GpuEmbedWorker,
    ReadBytesWorker,
    embedding_rows,
)
from exoray.image.gpu_decode import DEFAULT_GPU_BATCH, check_decode_mode
from exoray.index.embeddings import embedding_sets, remember_model
from exoray.storage import layout
from exoray.storage.store import Store
from exoray.util.cli_types import positive_int, positive_int_arg
from pipelines.features import MAX_PIXELS_OPTION

EMBEDDINGS = Output("embeddings", EMBEDDINGS_SCHEMA, EMBEDDINGS_KEY)
MODEL_ACTOR_CPUS = 0.25  # torch uses its own threads; the reservation only has to leave room
MODEL_ACTOR_MEMORY = 2 << 30  # what a model actor may hold; keeps Ray's memory hints quiet
DEFAULT_MODELS = ("clip", "dino")


def parse_model_spec(spec: str) -> tuple[str, str | None]:
    """``"clip"`` → (clip, None); ``"clip:ViT-B-16"`` → (clip, ViT-B-16)."""
    name, _, variant = str(spec).partition(":")
    if not name:
        raise ValueError(f"model spec {spec!r} is empty; use e.g. 'clip', 'dino' or 'clip:ViT-B-16'")
    return name, variant or None


def models_cache_dir(store: Store) -> str:
    """BASE/models: a folder when BASE is local or mounted (Drive), else its URI (s3://...),
    which each node mirrors to local disk once (exoray.models.weights.node_cache_dir)."""
    path = store.local_path(layout.MODELS)
    if path is None:
        return store.uri(layout.MODELS)
    os.makedirs(path, exist_ok=True)
    return path


def parse_checkpoints(items: Mapping[str, str] | Sequence[str] | None) -> dict[str, str]:
    """``{"clip": PATH}`` or CLI-style ``["clip=PATH"]`` → a dict."""
    if not items:
        return {}
    if isinstance(items, Mapping):
        return dict(items)
    out = {}
    for item in items:
        name, sep, path = str(item).partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--checkpoint {item!r}: use MODEL=PATH, e.g. clip=/ckpt/dir")
        out[name] = path
    return out


def resolve(store: Store, opts: dict[str, Any]) -> list[Target]:
    """Validate the model specs in the driver (clear errors before any actor starts)."""
    from exoray.models import describe_backend, prefetch_backend

    models = opts["models"]
    models = [models] if isinstance(models, str) else list(models)
    if not models:
        raise ValueError("pass at least one model, e.g. models=['clip', 'dino']")
    names = [parse_model_spec(m)[0] for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"each model family once per run, got {models}")
    checkpoints = parse_checkpoints(opts["checkpoints"])
    unknown = set(checkpoints) - set(names)
    if unknown:
        raise ValueError(f"--checkpoint given for models not in this run: {sorted(unknown)}; "
                         f"this run has {names}")
    check_decode_mode(opts["decode"])
    if opts["decode"] == "gpu" and opts["device"] == "cpu":
        raise ValueError("--decode gpu decodes on the GPU the models run on, but --device is cpu; "
                         "use --decode cpu (or leave --decode at auto)")
    if opts["batch_size"] is not None:
        positive_int(opts["batch_size"], name="batch_size")
    share = opts["gpu_share"]
    if share is not None and not 0 < float(share) <= 1:
        raise ValueError(f"gpu_share must be in (0, 1], got {share!r}")
    targets = []
    for spec, name in zip(models, names, strict=True):
        _, variant = parse_model_spec(spec)
        kwargs = {"variant": variant, "checkpoint": checkpoints.get(name),
                  "cache_dir": models_cache_dir(store), "device": opts["device"],
                  "batch_size": opts["batch_size"]}
        info = describe_backend(name, **kwargs, gpu_share=float(share) if share else None)
        try:
            prefetch_backend(name, **kwargs)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{exc}; from the command line: --checkpoint {name}=PATH "
                                    "(a local file or folder)") from exc
        folder = remember_model(store, name, info["model_id"], kwargs, info.get("dim"))
        targets.append(Target(name, folder, EMBEDDINGS, prefix=f"{name}_",
                              model_id=info["model_id"], convert=embedding_rows,
                              info={"kwargs": kwargs, "input_size": info["input_size"],
                                    "batch_size": opts["batch_size"] or info["default_batch_size"],
                                    "gpu_share": float(info["gpu_share"])}))
    return targets


def decode_on_gpu(ctx: StageContext) -> bool:
    """``--decode``: gpu needs a GPU in the Ray cluster; auto takes it when there is one and the
    models run there (``--device`` not cpu)."""
    mode = ctx.options["decode"]
    if mode == "gpu" and ctx.gpus <= 0:
        raise ValueError("--decode gpu needs a CUDA GPU, and this Ray cluster has none; use "
                         "--decode cpu (or auto, which picks the GPU when there is one)")
    return mode == "gpu" or (mode == "auto" and ctx.gpus > 0 and ctx.options["device"] != "cpu")


def stages(ctx: StageContext) -> list[Stage]:
    targets = ctx.targets
    side = max(t.info["input_size"] for t in targets)
    decode_plan = actor_pool_plan(ClusterShape(ctx.cpus, ctx.gpus))
    if decode_on_gpu(ctx):
        return gpu_decode_stages(ctx, side, decode_plan.size, decode_plan.num_cpus)
    result = [Stage("decode", DecodeWorker,
                    {"image_root": ctx.image_root, "side": side,
                     "max_pixels": ctx.options["max_pixels"]},
                    batch_size=min(t.info["batch_size"] for t in targets),
                    pool_size=decode_plan.size, num_cpus=decode_plan.num_cpus,
                    batch_format="numpy")]
    for i, t in enumerate(targets):
        share = t.info["gpu_share"] if ctx.gpus > 0 else 0.0
        result.append(Stage(
            t.label, EmbedWorker,
            {"model": t.label, "backend_kwargs": t.info["kwargs"],
             "store_location": ctx.store.location, "run_id": ctx.run_id,
             "drop_image": i == len(targets) - 1,
             # CPU-only: the model actors share the cores instead of oversubscribing them.
             "cpu_threads": max(1, int(ctx.cpus) // len(targets))},
            batch_size=t.info["batch_size"], pool_size=max(1, int(ctx.gpus)) if share else 1,
            num_cpus=MODEL_ACTOR_CPUS, num_gpus=share, batch_format="numpy",
            memory=MODEL_ACTOR_MEMORY))
    return result


def gpu_decode_stages(ctx: StageContext, side: int, read_actors: int, read_cpus: float
                      ) -> list[Stage]:
    """CPU actors read bytes and headers; one GPU actor per GPU decodes (nvJPEG) and runs every
    model, so the squares never cross back to the host and a JPEG is decoded once."""
    targets = ctx.targets
    batch = max(DEFAULT_GPU_BATCH, *(t.info["batch_size"] for t in targets))
    share = min(1.0, sum(t.info["gpu_share"] for t in targets))
    return [
        Stage("read", ReadBytesWorker,
              {"image_root": ctx.image_root, "max_pixels": ctx.options["max_pixels"]},
              batch_size=batch, pool_size=read_actors, num_cpus=read_cpus,
              batch_format="numpy"),
        Stage("embed", GpuEmbedWorker,
              {"models": {t.label: t.info["kwargs"] for t in targets}, "side": side,
               "store_location": ctx.store.location, "run_id": ctx.run_id,
               "max_pixels": ctx.options["max_pixels"], "decode_batch": DEFAULT_GPU_BATCH},
              batch_size=batch, pool_size=max(1, int(ctx.gpus)), num_cpus=MODEL_ACTOR_CPUS,
              num_gpus=share, batch_format="numpy",
              memory=MODEL_ACTOR_MEMORY * len(targets)),
    ]


def discover(store: Store) -> list[Target]:
    """One target per model id on disk, labelled by family (``clip``) unless the family has
    several model ids (``clip:ViT-L-14``)."""
    sets = embedding_sets(store)
    per_family: dict[str, int] = {}
    for s in sets:
        per_family[s.model] = per_family.get(s.model, 0) + 1
    return [Target(s.model if per_family[s.model] == 1 else s.spec, s.folder, EMBEDDINGS,
                   model_id=s.model_id) for s in sets]


SPEC = PhaseSpec(
    name="embed",
    title="III embeddings",
    help="Phase III: CLIP/DINOv2 embeddings (one decode, one GPU pool per model)",
    outputs=(EMBEDDINGS,),
    options=(
        Option("models", DEFAULT_MODELS,
               "clip, dino, or NAME:VARIANT (clip:ViT-B-16, dino:base, clip:tiny); repeat for "
               "several", repeat=True, metavar="MODEL"),
        Option("checkpoints", None, "local checkpoint (file/dir) or hub id for a model, "
               "e.g. clip=/ckpt/dir; repeatable", repeat=True, metavar="MODEL=PATH"),
        Option("batch_size", None, "images per model batch (default: per model)",
               type=positive_int_arg),
        Option("gpu_share", None, "fraction of one GPU per model actor (default: per model, "
               "0.5 so CLIP and DINO share one GPU)", type=float),
        Option("device", None, "cuda / cpu (default: cuda when available)"),
        Option("decode", "auto", "where JPEGs are decoded: gpu (nvJPEG batches on the models' "
               "GPU, other files on the CPU), cpu, or auto = gpu when there is one",
               choices=("auto", "cpu", "gpu")),
        MAX_PIXELS_OPTION,
    ),
    resolve=resolve,
    stages=stages,
    discover=discover,
    next_step="exoray index {base}   # FAISS indices for search, cluster and sample",
)


def run(base: str | os.PathLike[str], models: Sequence[str] = DEFAULT_MODELS, *,
        checkpoints: Mapping[str, str] | None = None, **options: Any) -> RunResult:
    """Embed every image not yet embedded by each model; safe to kill and rerun.

    Options: ``batch_size``, ``gpu_share``, ``device``, ``decode``, ``max_pixels`` plus the
    runner's
    ``retry_errors``, ``part_rows``, ``estimate`` and ``show_progress``.
    """
    return run_phase(SPEC, base, models=list(models), checkpoints=checkpoints, **options)
