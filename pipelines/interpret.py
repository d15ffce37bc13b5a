"""Phase VI: prompts from ``BASE/prompts/prompt_registry.yaml`` answered by a vision-language model.

``exoray interpret BASE --prompt caption_factual --prompt count_people [--subset photo]`` decodes each
image once and asks it every prompt of the run; each (prompt, version, model id) has its own folder
``captions/<prompt id>/v<version>/<model id>/`` whose rows carry prompt id, version, hash, model id
and generation settings, so outputs stay comparable (``exoray prompts BASE --compare``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from exoray.engine.runner import RunResult, run_phase
from exoray.engine.spec import Option, PhaseSpec, StageContext, Target
from exoray.prompts.outputs import (
    OUTPUT,
    caption_rows,
    discover_prompts,
    prompt_folder,
    recorded_hashes,
    remember_prompt,
)
from exoray.semantics.tasks import model_run_options
from exoray.storage.store import Store

DEFAULT_MODEL = "vlm"  # SmolVLM-256M-Instruct: fits a T4 beside the other models
MODEL_ACTOR_CPUS = 0.25
MODEL_ACTOR_MEMORY = 3 << 30


def _label(prompt_id: str) -> str:
    return "p_" + "".join(c if c.isalnum() else "_" for c in prompt_id)


def _model_spec(spec: str) -> str:
    """``smolvlm-500m`` → ``vlm:smolvlm-500m``: a bare variant name means the vlm backend."""
    return spec if spec == "vlm" or spec.startswith("vlm:") else f"vlm:{spec}"


def resolve(store: Store, opts: dict[str, Any]) -> list[Target]:
    from exoray.models import describe_backend, parse_spec, prefetch_backend
    from exoray.models.vlm import check_generation_options
    from exoray.prompts import check_versions, load_registry

    registry = load_registry(store)
    ids = opts["prompts"]
    ids = [ids] if isinstance(ids, str) else list(ids or [])
    if not ids:
        raise ValueError(f"pass at least one --prompt ID; the registry {registry.path} has: "
                         f"{', '.join(registry.ids())}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"each prompt once per run, got {ids}")
    prompts = [registry.get(i) for i in ids]
    check_versions(registry, recorded_hashes(store))
    wanted = {p.model for p in prompts if p.model}
    model = opts["model"]
    if model is None:
        if len(wanted) > 1:
            raise ValueError(f"prompts {ids} name different models ({sorted(wanted)}); one model "
                             "answers all prompts of a run: pass --model, or run them apart")
        model = wanted.pop() if wanted else DEFAULT_MODEL
    name, variant = parse_spec(_model_spec(str(model)))
    from pipelines.embeddings import models_cache_dir

    kwargs = {"variant": variant, "checkpoint": opts["checkpoint"],
              "cache_dir": models_cache_dir(store), "device": opts["device"],
              "batch_size": opts["batch_size"]}
    share = opts["gpu_share"]
    info = describe_backend(name, **kwargs, gpu_share=float(share) if share else None)
    prefetch_backend(name, **kwargs)
    targets = []
    for prompt in prompts:
        generation = check_generation_options(**prompt.generation)
        folder = prompt_folder(prompt.id, prompt.version, info["model_id"])
        remember_prompt(store, folder, {"prompt_id": prompt.id, "version": prompt.version,
                                        "hash": prompt.hash, "model_id": info["model_id"],
                                        "text": prompt.text, "task": prompt.task,
                                        "output": prompt.output, "choices": list(prompt.choices),
                                        "generation": generation})
        record = {"id": prompt.id, "task": prompt.task, "prompt": prompt.prompt,
                  "version": prompt.version, "output": prompt.output,
                  "choices": tuple(prompt.choices), "model": prompt.model,
                  "generation": dict(prompt.generation)}
        targets.append(Target(_label(prompt.id), folder, OUTPUT, model_id=info["model_id"],
                              convert=caption_rows,
                              info={"prompt": record, "hash": prompt.hash, "text": prompt.text,
                                    "generation": generation, "backend": name, "kwargs": kwargs,
                                    "input_size": opts["image_size"] or info["input_size"],
                                    "batch_size": info["batch_size"],
                                    "gpu_share": float(info["gpu_share"])}))
    return targets


def stages(ctx: StageContext) -> list[Any]:
    from exoray.engine.ray_runtime import ClusterShape, actor_pool_plan
    from exoray.engine.runner import Stage
    from exoray.engine.stages.interpret import InterpretWorker
    from exoray.engine.stages.semantics import PadDecodeWorker

    first = ctx.targets[0].info
    on_gpu = ctx.gpus > 0
    decode = actor_pool_plan(ClusterShape(ctx.cpus, ctx.gpus), max_actors=None if on_gpu else 1)
    prompts = [(t.label, t.info["text"], t.info["prompt"]["generation"]) for t in ctx.targets]
    return [
        Stage("decode", PadDecodeWorker,
              {"image_root": ctx.image_root, "side": first["input_size"],
               "max_pixels": ctx.options["max_pixels"]},
              batch_size=first["batch_size"], pool_size=decode.size, num_cpus=decode.num_cpus,
              batch_format="numpy"),
        Stage("interpret", InterpretWorker,
              {"model": first["backend"], "backend_kwargs": first["kwargs"], "prompts": prompts,
               "store_location": ctx.store.location, "run_id": ctx.run_id,
               "cpu_threads": max(1, int(ctx.cpus))},
              batch_size=first["batch_size"], pool_size=max(1, int(ctx.gpus)) if on_gpu else 1,
              num_cpus=MODEL_ACTOR_CPUS, num_gpus=first["gpu_share"] if on_gpu else 0.0,
              batch_format="numpy", memory=MODEL_ACTOR_MEMORY),
    ]


def _calibrate(store: Store, targets: list[Target], opts: dict[str, Any], todo: Any
               ) -> float | None:
    """Seconds per image for all prompts of the run: each prompt timed on a few images."""
    from exoray.semantics.tasks import calibrate_model

    total = 0.0
    for target in targets:
        seconds = calibrate_model(store, target.info, opts, todo,
                                  target.info["prompt"]["generation"])
        if seconds is None:
            return None
        total += seconds
    return total


SPEC = PhaseSpec(
    name="interpret",
    title="VI prompts",
    help="Phase VI: answer registry prompts (caption, VQA, tags) with a vision-language model",
    outputs=(OUTPUT,),
    options=(
        Option("prompts", None, "a prompt id of BASE/prompts/prompt_registry.yaml; repeat for "
               "several (one decode for all)", repeat=True, metavar="ID"),
        Option("model", None, "vlm variant: smolvlm-256m (default, or the prompt's own model), "
               "smolvlm-500m, ... or vlm with --checkpoint", metavar="MODEL"),
        *model_run_options(),
    ),
    resolve=resolve,
    stages=stages,
    discover=discover_prompts,
    default_part_rows=1000,
    calibrate=lambda store, targets, opts, todo: _calibrate(store, targets, opts, todo),
    next_step="exoray prompts {base}   # what ran; --compare ID@1 ID@2; search --caption WORDS",
)


def run(base: str | os.PathLike[str], prompts: Sequence[str] | str, **options: Any) -> RunResult:
    """Answer ``prompts`` (registry ids) for every image (of ``subset``) not answered yet by
    this prompt version and model."""
    return run_phase(SPEC, base, prompts=[prompts] if isinstance(prompts, str) else list(prompts),
                     **options)
