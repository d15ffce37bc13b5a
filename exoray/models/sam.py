"""Segment Anything (SAM): the automatic mask generator, one image at a time.

Each image arrives as a padded square (picture top-left) with its valid (width, height) in
`image_size`; only the valid region is segmented, so masks never cover padding. Per image the
backend returns up to `max_masks` masks as COCO compressed RLE at the working resolution (the
valid region's pixel size): `exoray.semantics.masks.decode_rle` + a nearest resize give the
displayed size. Boxes, points and areas are normalised to the valid region.

Official checkpoints (Apache-2.0) are fetched once into `cache_dir/sam/<file>` in the driver
(`prefetch`) and checked against their published MD5; a local `.pth` works wherever a
variant does (the variant then names the architecture: `--model sam:vit_l --checkpoint x.pth`).
torch and segment_anything are imported only when a model is loaded.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from exoray.models.base import ModelBackend
from exoray.models.padded import crop_valid, valid_sizes
from exoray.models.registry import register_backend
from exoray.models.weights import stage_locally, weights_hash
from exoray.semantics.masks import counts_to_string, rle_area, rle_bbox, tensor_counts

_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
_LICENSE = "Apache-2.0 (Meta segment-anything)"
# GPU memory, not measured here (no GPU): users report the generator with vit_h at ~7 GB with
# the default options and ~4 GB at points_per_batch 16 (facebookresearch/segment-anything#33),
# and vit_b filling a 4 GB card (#78). So vit_b (0.36 GB of weights) fits a 0.5 share of a
# 16 GB T4; vit_l (1.2 GB) and vit_h (2.4 GB) get the whole card. points_per_batch is the knob.
SAM_VARIANTS: dict[str, dict[str, Any]] = {
    "vit_b": {"file": "sam_vit_b_01ec64.pth", "md5": "01ec64d29a2fca3f0661936605ae66f8",
              "input_size": 1024, "license": _LICENSE},
    "vit_l": {"file": "sam_vit_l_0b3195.pth", "md5": "0b3195507c641ddb6910d2bb5adee89c",
              "input_size": 1024, "license": _LICENSE},
    "vit_h": {"file": "sam_vit_h_4b8939.pth", "md5": "4b8939a88964f0f4ff5f5b2642c598a6",
              "input_size": 1024, "license": _LICENSE},
    # Random weights from segment-anything's own modules: plumbing only, never quality. Its
    # masks pass SAM's real thresholds only at 0, and a sparse grid keeps CPU tests fast.
    "tiny": {"tiny": True, "input_size": 256,
             "options": {"points_per_side": 8, "pred_iou_thresh": 0.0,
                         "stability_score_thresh": 0.0}},
}
TINY_ARCH: dict[str, int] = {"img_size": 256, "patch_size": 16, "embed_dim": 64, "depth": 2,
                             "heads": 2, "window": 4, "prompt_dim": 32}
TINY_SEED = 0
_OFFLINE_ENV = ("EXORAY_OFFLINE", "HF_HUB_OFFLINE", "YOLO_OFFLINE")
_CHECKPOINT_SUFFIXES = (".pth", ".pt")
_OPTIONS = {"points_per_side": 32, "max_masks": 64, "pred_iou_thresh": 0.88,
            "stability_score_thresh": 0.95, "min_mask_region_area": 0, "points_per_batch": 64,
            "crop_n_layers": 0}
_INT_MIN = {"points_per_side": 1, "max_masks": 1, "min_mask_region_area": 0,
            "points_per_batch": 1, "crop_n_layers": 0}


def sam_options(variant: str, **given: Any) -> dict[str, Any]:
    """The generator options, validated: the given ones, else the variant's, else SAM's own.

    For the driver too (fail before any worker starts). None means "the default", so a task
    option left unset gives `tiny` its own defaults (thresholds 0: see SAM_VARIANTS).
    """
    unknown = sorted(set(given) - set(_OPTIONS))
    if unknown:
        raise ValueError(f"unknown sam options {unknown}; valid: {', '.join(_OPTIONS)}")
    defaults = {**_OPTIONS, **SAM_VARIANTS.get(variant, {}).get("options", {})}
    out: dict[str, Any] = {}
    for name, default in defaults.items():
        value = given.get(name)
        if value is None:
            value = default
        bad = isinstance(value, bool) or not isinstance(value, (int, float, np.number))
        if name in _INT_MIN:
            if bad or int(value) != value or value < _INT_MIN[name]:
                raise ValueError(f"{name} must be an int >= {_INT_MIN[name]}, got {value!r}")
            out[name] = int(value)
        else:
            if bad or not 0 <= value <= 1:
                raise ValueError(f"{name} must be a number between 0 and 1, got {value!r}")
            out[name] = float(value)
    return out


@register_backend
class SamBackend(ModelBackend):
    """SAM automatic masks -> per image a list of {rle, bbox, area, predicted_iou,
    stability_score, point}, best predicted_iou first."""

    name = "sam"
    task = "sam"
    input_columns = ("image",)
    optional_inputs = ("image_size",)
    output_columns = ("masks",)
    output_kind = "structs"
    default_batch_size = 1  # the generator works on one image at a time
    default_gpu_share = 1.0  # see the GPU memory note above SAM_VARIANTS
    fp16 = False  # the generator's thresholds and stability scores are computed in fp32
    extra = "sam"
    variants = SAM_VARIANTS
    default_variant = "vit_b"
    variant_help = "; pass your own weights with checkpoint='/path/sam.pth' and the variant " \
                   "naming its architecture"
    requires = ("torch", "segment_anything")

    def __init__(self, variant: str | None = None, *,
                 checkpoint: str | os.PathLike[str] | None = None,
                 cache_dir: str | os.PathLike[str] | None = None, device: str | None = None,
                 batch_size: int | None = None, gpu_share: float | None = None,
                 points_per_side: int | None = None, max_masks: int | None = None,
                 pred_iou_thresh: float | None = None, stability_score_thresh: float | None = None,
                 min_mask_region_area: int | None = None, points_per_batch: int | None = None,
                 crop_n_layers: int | None = None) -> None:
        """Generator options (None = default): see SamAutomaticMaskGenerator; `max_masks` keeps
        the masks with the highest predicted_iou * stability_score."""
        self.options = sam_options(
            self._check_variant(variant), points_per_side=points_per_side, max_masks=max_masks,
            pred_iou_thresh=pred_iou_thresh, stability_score_thresh=stability_score_thresh,
            min_mask_region_area=min_mask_region_area, points_per_batch=points_per_batch,
            crop_n_layers=crop_n_layers)
        super().__init__(variant, checkpoint=checkpoint, cache_dir=cache_dir, device=device,
                         batch_size=batch_size, gpu_share=gpu_share)

    @classmethod
    def _describe(cls, variant: str, checkpoint: str | None, cache_dir: Path) -> dict[str, Any]:
        return {"model_id": cls._model_id(variant, checkpoint),
                "input_size": int(SAM_VARIANTS[variant]["input_size"])}

    @classmethod
    def _model_id(cls, variant: str, checkpoint: str | None) -> str:
        if checkpoint is not None:
            return f"local:{_checkpoint_path(checkpoint)}"
        if SAM_VARIANTS[variant].get("tiny"):
            return "segment_anything:tiny(random)"
        return f"segment_anything:{SAM_VARIANTS[variant]['file']}"

    @classmethod
    def _prefetch(cls, variant: str, checkpoint: str | None, cache_dir: Path) -> None:
        if checkpoint is not None:
            _checkpoint_path(checkpoint)
        elif not SAM_VARIANTS[variant].get("tiny"):
            _fetch(variant, cache_dir)

    def _load(self) -> None:
        torch = self._torch
        sa = self._require("segment_anything")
        self.input_size = int(SAM_VARIANTS[self.variant]["input_size"])
        self.model_id = self._model_id(self.variant, self.checkpoint)
        tiny = bool(self.variant_settings.get("tiny"))
        if self.checkpoint is not None:
            path: Path | None = _checkpoint_path(self.checkpoint)
        else:
            path = None if tiny else _fetch(self.variant, self.cache_dir)
        with torch.random.fork_rng(devices=[]):  # seeded: every worker builds the same tiny
            torch.manual_seed(TINY_SEED)
            model = _build_tiny(sa, torch) if tiny else sa.sam_model_registry[self.variant]()
        if path is None:
            self.weights_hash = hashlib.sha256(
                f"{json.dumps(TINY_ARCH, sort_keys=True)} seed={TINY_SEED}".encode()
            ).hexdigest()[:16]
        else:
            path = stage_locally(path, cache_dir=self.cache_dir)
            state = torch.load(path, map_location="cpu", weights_only=True)
            try:
                model.load_state_dict(state)
            except (RuntimeError, KeyError, TypeError) as exc:
                raise ValueError(
                    f"sam checkpoint {self.checkpoint or path} does not fit the "
                    f"{self.variant!r} architecture ({_architecture(state)}); name the matching "
                    "variant, e.g. --model sam:vit_h --checkpoint sam_vit_h_4b8939.pth") from exc
            self.weights_hash = weights_hash(path)
        self.model = model.to(self.device).eval()
        amg = importlib.import_module("segment_anything.automatic_mask_generator")
        amg.mask_to_rle_pytorch = _mask_to_rle  # see _mask_to_rle: same runs, linear time
        # Uncompressed RLE, not binary masks: the generator has the runs already, and decoding
        # every candidate to a full-size array only to re-encode the kept ones costs time.
        gen_opts = {k: v for k, v in self.options.items() if k != "max_masks"}
        self.generator = sa.SamAutomaticMaskGenerator(
            self.model, output_mode="uncompressed_rle", **gen_opts)

    def _forward(self, images: np.ndarray, image_size: np.ndarray | None = None
                 ) -> list[list[dict[str, Any]]]:
        return [self._masks(crop_valid(im, size))
                for im, size in zip(images, valid_sizes(images, image_size), strict=True)]

    def _masks(self, rgb: np.ndarray) -> list[dict[str, Any]]:
        """One valid region -> its masks, halving points_per_batch on CUDA out-of-memory (the
        batch is already one image, so that is the memory knob left)."""
        oom = self._torch.cuda.OutOfMemoryError
        while True:
            try:
                with self._inference():
                    anns = self.generator.generate(rgb)
                break
            except oom:
                size = self.generator.points_per_batch
                if size <= 1:
                    raise
                self._empty_cache()
                self.generator.points_per_batch = size // 2
                self.events.append({"event": "oom_backoff", "backend": self.name,
                                    "model_id": self.model_id, "option": "points_per_batch",
                                    "from": size, "to": size // 2})
        return _records(anns, self.options["max_masks"])


def _records(anns: list[dict[str, Any]], max_masks: int) -> list[dict[str, Any]]:
    """Generator output (uncompressed RLE) -> the top `max_masks` non-empty masks as records."""
    anns = [a for a in anns if a["area"] > 0]
    ranked = sorted(anns, key=lambda a: -a["predicted_iou"] * a["stability_score"])[:max_masks]
    out = []
    for a in sorted(ranked, key=lambda a: -a["predicted_iou"]):
        rle = a["segmentation"]
        h, w = (int(v) for v in rle["size"])
        x0, y0, x1, y1 = rle_bbox(rle)
        px, py = a["point_coords"][0]
        out.append({"rle": {"counts": counts_to_string(rle["counts"]), "size": [h, w]},
                    "bbox": [x0 / w, y0 / h, x1 / w, y1 / h],
                    "area": rle_area(rle) / (h * w),
                    "predicted_iou": float(a["predicted_iou"]),
                    "stability_score": float(a["stability_score"]),
                    "point": [min(max(px / w, 0.0), 1.0), min(max(py / h, 0.0), 1.0)]})
    return out


def _mask_to_rle(tensor: Any) -> list[dict[str, Any]]:
    """Drop-in for segment_anything's `mask_to_rle_pytorch`: the same runs in linear time.

    Its loop selects each mask's change indices from all masks' (quadratic: ~10 s per 64 noisy
    masks on a CPU). Counts are int64 arrays, not lists, so the generator's deepcopy of every
    batch's RLEs is a memcpy.
    """
    h, w = (int(v) for v in tensor.shape[1:])
    return [{"size": [h, w], "counts": c} for c in tensor_counts(tensor)]


def _build_tiny(sa: Any, torch: Any) -> Any:
    """A small Sam from segment-anything's own modules (same code paths as vit_b, ~0.2 M params)."""
    from functools import partial

    m, a = sa.modeling, TINY_ARCH
    side, dim = a["img_size"] // a["patch_size"], a["prompt_dim"]
    return m.Sam(
        image_encoder=m.ImageEncoderViT(
            img_size=a["img_size"], patch_size=a["patch_size"], embed_dim=a["embed_dim"],
            depth=a["depth"], num_heads=a["heads"], mlp_ratio=4, out_chans=dim, qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True,
            window_size=a["window"], global_attn_indexes=(a["depth"] - 1,)),
        prompt_encoder=m.PromptEncoder(
            embed_dim=dim, image_embedding_size=(side, side),
            input_image_size=(a["img_size"], a["img_size"]), mask_in_chans=4),
        mask_decoder=m.MaskDecoder(
            num_multimask_outputs=3, transformer_dim=dim, iou_head_depth=2,
            iou_head_hidden_dim=dim,
            transformer=m.TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=2 * dim,
                                            num_heads=a["heads"])),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])


def _architecture(state: Any) -> str:
    """What a state dict looks like, for the error message: its image encoder's width."""
    widths = {768: "vit_b", 1024: "vit_l", 1280: "vit_h", TINY_ARCH["embed_dim"]: "tiny"}
    try:
        width = int(state["image_encoder.patch_embed.proj.weight"].shape[0])
    except (KeyError, TypeError, AttributeError, IndexError):
        return "not a segment-anything Sam state dict"
    return f"it looks like {widths.get(width, f'a {width}-wide image encoder')}"


def _checkpoint_path(checkpoint: str) -> Path:
    path = Path(checkpoint).expanduser().absolute()
    if not path.is_file():
        raise FileNotFoundError(f"sam checkpoint {checkpoint!r} is not a file; pass a local "
                                "segment-anything .pth file")
    if path.suffix.lower() not in _CHECKPOINT_SUFFIXES:
        raise ValueError(f"sam checkpoint {checkpoint!r} should be a segment-anything .pth file")
    return path


def _fetch(variant: str, cache_dir: Path) -> Path:
    """`cache_dir/sam/<file>`, downloaded (to a temporary name, MD5-checked, renamed) if absent."""
    spec = SAM_VARIANTS[variant]
    dest = Path(cache_dir).absolute() / "sam" / spec["file"]
    if dest.is_file():
        return dest
    url = _URL + spec["file"]
    hint = (f"; download {url} once and pass it: --checkpoint PATH (a local .pth; "
            f"checkpoint='/path/{spec['file']}' in Python)")
    offline = [k for k in _OFFLINE_ENV if os.environ.get(k, "").lower() in ("1", "true", "yes")]
    if offline:
        raise FileNotFoundError(f"sam weights {spec['file']} could not be fetched: offline "
                                f"({offline[0]} is set) and not in {str(dest.parent)!r}{hint}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    md5 = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(url, timeout=30) as resp, open(tmp, "wb") as out:
            for block in iter(lambda: resp.read(1 << 22), b""):
                md5.update(block)
                out.write(block)
        if md5.hexdigest() != spec["md5"]:
            raise OSError(f"MD5 {md5.hexdigest()} is not the published {spec['md5']}")
        os.replace(tmp, dest)
    except OSError as exc:  # URLError, timeouts, HTTP and disk errors are all OSErrors
        tmp.unlink(missing_ok=True)
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise FileNotFoundError(
            f"sam weights {spec['file']} could not be fetched ({reason}){hint}") from exc
    return dest
