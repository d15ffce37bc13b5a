"""Tiny random-initialised models, saved exactly like real checkpoints.

Tests, the demo and CI cannot download weights, yet must exercise the real loading code. So the
`tiny` variant of each backend builds a few-kB-to-MB model from a config in `configs/`, seeded
(same weights, same hash, every time), writes it in the on-disk format of a real checkpoint
(open_clip local-dir: config json + safetensors; transformers: save_pretrained folder), and
then loads it through the ordinary local-checkpoint path.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from exoray.models._logs import quiet_loading
from exoray.models.base import import_or_raise
from exoray.models.weights import COMPLETE_MARKER, write_marker

SEED = 0


def tiny_config(kind: str) -> dict[str, Any]:
    """The packaged config of tiny model `kind` ('clip' or 'dino')."""
    text = resources.files("exoray.models").joinpath("configs", f"tiny_{kind}.json").read_text()
    return json.loads(text)


def build_tiny_clip(out_dir: str | os.PathLike[str]) -> str:
    """Write a tiny open_clip model to `out_dir` in open_clip's 'local-dir:' format; return the dir."""
    open_clip = import_or_raise("open_clip", extra="clip", backend="clip")
    torch = import_or_raise("torch", extra="clip", backend="clip")
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "open_clip_config.json").write_text(json.dumps(tiny_config("clip"), indent=2))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = open_clip.create_model(
            f"local-dir:{out}", load_weights=False, pretrained_text=False
        )
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "open_clip_model.safetensors"))
    return str(out)


def build_tiny_dino(out_dir: str | os.PathLike[str]) -> str:
    """Write a tiny Dinov2 model to `out_dir` as `save_pretrained` does, plus its image-processor config."""
    transformers = import_or_raise("transformers", extra="dino", backend="dino")
    torch = import_or_raise("torch", extra="dino", backend="dino")

    cfg = tiny_config("dino")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = transformers.Dinov2Model(transformers.Dinov2Config(**cfg["config"]))
    with quiet_loading():  # transformers is imported now, so its progress bars can be muted
        model.save_pretrained(str(out))
    (out / "preprocessor_config.json").write_text(json.dumps(cfg["preprocessor_config"], indent=2))
    return str(out)


BUILDERS: dict[str, Callable[[str | os.PathLike[str]], str]] = {
    "clip": build_tiny_clip,
    "dino": build_tiny_dino,
}


def ensure_tiny(kind: str, cache_dir: str | os.PathLike[str]) -> Path:
    """`cache_dir/tiny-<kind>` of a packaged tiny config (clip, dino), built once."""
    if kind not in BUILDERS:
        raise ValueError(f"no tiny model {kind!r}; valid: {', '.join(BUILDERS)}")
    return ensure_built(kind, tiny_config(kind), BUILDERS[kind], cache_dir)


def ensure_built(kind: str, config: Any, builder: Callable[[str | os.PathLike[str]], Any],
                 cache_dir: str | os.PathLike[str], seed: int = SEED) -> Path:
    """`cache_dir/tiny-<kind>` made by ``builder``, built once; rebuilt only if ``config`` (what
    the build depends on) changed. Every backend's tiny model goes through here.

    Built in a temporary sibling and renamed into place, so concurrent workers never load a
    half-written model.
    """
    config_sha = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
    target = Path(cache_dir) / f"tiny-{kind}"
    if _marker_sha(target) == config_sha:
        return target
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    with quiet_loading():
        builder(tmp)
    write_marker(tmp, {"tiny": kind, "config_sha256": config_sha, "seed": seed})
    if target.exists():
        if _marker_sha(target) == config_sha:  # another worker finished first
            shutil.rmtree(tmp, ignore_errors=True)
            return target
        shutil.rmtree(target)  # stale: older config or interrupted build
    try:
        os.replace(tmp, target)
    except OSError:
        if _marker_sha(target) != config_sha:
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # lost a race to an identical build
    return target


def _marker_sha(folder: Path) -> str | None:
    try:
        info = json.loads((folder / COMPLETE_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return info.get("config_sha256") if isinstance(info, dict) else None
