"""Vision-language models (captions, visual questions) through transformers: one prompt per image.

Each image of a chunk comes with its own prompt (the pipeline runs several prompts over one decode,
so one chunk may mix them) and gets one answer: the text the model generates after the prompt,
whitespace-stripped. Prompts go through the checkpoint's chat template when its processor has one
(SmolVLM, Qwen-VL: a user turn holding the image then the prompt, plus the assistant's generation
prompt); processors without one (BLIP-style) get the prompt as plain text. Batches are padded on
the left, so every row's answer starts right after its own prompt, and only the new tokens are
decoded.

Geometry. Each picture is cropped out of its padded square (``image_size`` = (w, h) of the
top-left picture) before the processor sees it, so the processor's own resizing, tiling and
padding apply to the picture alone and a padded and an unpadded copy of it get the same answer.

Generation settings are constructor options (``max_new_tokens``, ``temperature`` with 0 meaning
greedy, ``top_p``, ``repetition_penalty``), checked up front; ``generation_settings()`` returns
exactly what `generate` is given, for the pipeline to record next to each answer. Sampling options
the checkpoint's generation_config may carry (top_k, a default temperature) are overridden, so the
recorded settings are the whole story.

Variants (hub ids are fetched into the weights cache by `prefetch`, in the driver):

- ``smolvlm-256m`` (default): HuggingFaceTB/SmolVLM-256M-Instruct, Apache-2.0.
- ``smolvlm-500m``: HuggingFaceTB/SmolVLM-500M-Instruct, Apache-2.0.
- ``qwen3-vl-2b``: Qwen/Qwen3-VL-2B-Instruct, Apache-2.0; stronger, ~2.1B parameters (fp32 weights
  ~8.5 GB: it asks for half a GPU and batches of 4).
- ``tiny``: a seeded random Idefics3 (SmolVLM's architecture) with a small local BPE tokenizer and
  the Idefics3 processor, built once into the cache dir and loaded like a local checkpoint. Its
  answers are real `generate()` output of random weights: meaningless, but deterministic.

SmolVLM's processor needs the ``num2words`` package (checked by `describe`). A local folder
written by save_pretrained (model + processor files) works wherever a hub id does.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from exoray.models._logs import quiet_loading
from exoray.models.base import ModelBackend, _importable, checkpoint_model_id, import_or_raise
from exoray.models.padded import valid_sizes
from exoray.models.registry import register_backend
from exoray.models.weights import (
    COMPLETE_MARKER,
    download_hub_files,
    hub_repo_id,
    safe_name,
    stage_locally,
    weight_files,
    weights_hash,
    write_marker,
)

DEFAULT_PROMPT = "Describe this image in one sentence."
_INPUT_SIZE = 512  # the decode stage's square; processors resize/tile from there
VLM_VARIANTS: dict[str, dict[str, Any]] = {
    "smolvlm-256m": {
        "repo": "HuggingFaceTB/SmolVLM-256M-Instruct", "licence": "Apache-2.0",
        "input_size": _INPUT_SIZE, "needs": ("num2words",),
        # SmolVLM tiles images into 512 px squares (64 tokens each) after resizing the long side
        # to size.longest_edge (2048 by default: a 512 px picture would be upscaled into 16
        # tiles). 1024 = 2x2 tiles + the global view, 320 image tokens per picture.
        "processor_kwargs": {"size": {"longest_edge": 1024}},
    },
    "smolvlm-500m": {
        "repo": "HuggingFaceTB/SmolVLM-500M-Instruct", "licence": "Apache-2.0",
        "input_size": _INPUT_SIZE, "needs": ("num2words",),
        "processor_kwargs": {"size": {"longest_edge": 1024}},
    },
    "qwen3-vl-2b": {
        "repo": "Qwen/Qwen3-VL-2B-Instruct", "licence": "Apache-2.0",
        "input_size": _INPUT_SIZE, "batch_size": 4, "gpu_share": 0.5,
    },
    "tiny": {"tiny": True, "licence": "random weights, for tests"},
}
TINY_MODEL_ID = "tiny:idefics3(random)"
TINY_SEED = 0
# A consistent tiny Idefics3 (after transformers' own Idefics3 model tests): 32 px images in 4 px
# patches, pixel shuffle by 2 -> 16 image tokens, which the processor's image_seq_len must match.
# initializer_range 0.2 (not 0.02) so that random answers depend on the picture and the prompt.
TINY: dict[str, Any] = {
    "input_size": 64,
    "image_seq_len": 16,
    "vision_config": {"image_size": 32, "patch_size": 4, "hidden_size": 32,
                      "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 37,
                      "initializer_range": 0.2},
    "text_config": {"model_type": "llama", "hidden_size": 32, "intermediate_size": 37,
                    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                    "max_position_embeddings": 512, "tie_word_embeddings": False,
                    "initializer_range": 0.2},
    "scale_factor": 2,
    "image_processor": {"do_image_splitting": False, "size": {"longest_edge": 32},
                        "max_image_size": {"longest_edge": 32}},
    "vocab_size": 400,
    # tokens the Idefics3 processor looks up (rows/cols only matter when it splits images)
    "special_tokens": ["<|endoftext|>", "<|im_start|>", "<end_of_utterance>",
                       "<fake_token_around_image>", "<image>", "<global-img>",
                       *[f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]],
    # SmolVLM's chat template
    "chat_template": (
        "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
        "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
        "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
        "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
        "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}"
        "{% endif %}"
    ),
    # what the tiny BPE vocabulary is learned from (any text would do: the weights are random)
    "corpus": (
        "A photo of a cat sitting on a red mat next to a wooden door. Two people walk along a "
        "street at night under bright lights. What is in this picture? Describe the image in "
        "one sentence. How many dogs are there? Is there any text in the image? The sign says "
        "open. A bowl of coffee on a table, a rocket on the launch pad, an astronaut in a white "
        "suit, a page of printed text, a green field with trees and a blue sky."
    ),
}
HUB_FILES: list[str | tuple[str, ...]] = [
    "config.json", ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")]
HUB_OPTIONAL = (
    "generation_config.json", "preprocessor_config.json", "processor_config.json",
    "video_preprocessor_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt",
    "chat_template.json", "chat_template.jinja",
)
WEIGHT_PATTERNS = ("model.safetensors", "model-*-of-*.safetensors", "pytorch_model*.bin")
MAX_NEW_TOKENS_LIMIT = 4096
_NEEDS_BY_MODEL_TYPE = {"smolvlm": ("num2words",)}
_NESTED_IMAGES = ("smolvlm", "idefics3", "idefics2")


def check_generation_options(
    max_new_tokens: Any = 64, temperature: Any = 0.0, top_p: Any = 1.0,
    repetition_penalty: Any = 1.0,
) -> dict[str, Any]:
    """The generation options checked -> the settings `generate` gets (ValueError if bad)."""

    def number(name: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not (
            math.isfinite(float(value))
        ):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
        return float(value)

    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or not (
        1 <= max_new_tokens <= MAX_NEW_TOKENS_LIMIT
    ):
        raise ValueError(
            f"max_new_tokens must be an int from 1 to {MAX_NEW_TOKENS_LIMIT}, got {max_new_tokens!r}")
    temp = number("temperature", temperature)
    if temp < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature!r}")
    p = number("top_p", top_p)
    if not 0 < p <= 1:
        raise ValueError(f"top_p must be > 0 and <= 1, got {top_p!r}")
    rep = number("repetition_penalty", repetition_penalty)
    if rep <= 0:
        raise ValueError(f"repetition_penalty must be > 0 (1 = none), got {repetition_penalty!r}")
    sample = temp > 0
    return {
        "max_new_tokens": int(max_new_tokens),
        "do_sample": sample,
        "temperature": temp,
        "top_p": p if sample else 1.0,
        "repetition_penalty": rep,
    }


@register_backend
class VLMBackend(ModelBackend):
    """Image + prompt -> generated text, one answer per image (see the module docstring)."""

    name = "vlm"
    task = "interpret"
    input_columns = ("image",)
    optional_inputs = ("image_size", "prompt")
    output_columns = ("text",)
    output_kind = "text"
    default_batch_size = 8
    default_gpu_share = 0.25
    extra = "vlm"
    variants = VLM_VARIANTS
    default_variant = "smolvlm-256m"
    variant_help = "; or pass a local save_pretrained folder (model + processor) as checkpoint="
    requires = ("torch", "transformers")

    def __init__(
        self,
        variant: str | None = None,
        *,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        **kwargs: Any,
    ) -> None:
        """kwargs: the base constructor's (checkpoint, cache_dir, device, batch_size, gpu_share)."""
        self._generation = check_generation_options(
            max_new_tokens, temperature, top_p, repetition_penalty)
        self.last_new_tokens: list[int] = []  # generated tokens per image of the last chunk
        super().__init__(variant, **kwargs)

    def generation_settings(self) -> dict[str, Any]:
        """What `generate` is given (greedy: do_sample False, temperature 0, top_p 1)."""
        return dict(self._generation)

    def set_generation(self, **options: Any) -> None:
        """Switch generation settings between calls (each prompt of a run has its own);
        unset options take their defaults."""
        settings = check_generation_options(**options)
        if settings != self._generation:
            self._generation = settings
            self._generate_kwargs = self._generate_config()

    # ----- driver side ----------------------------------------------------------------------

    @classmethod
    def describe(  # type: ignore[override]
        cls,
        variant: str | None = None,
        *,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """The base `describe` plus "generation" (the checked settings); same arguments as the
        constructor, so bad generation options fail in the driver."""
        generation = check_generation_options(
            max_new_tokens, temperature, top_p, repetition_penalty)
        info = super().describe(variant, **kwargs)
        info["generation"] = generation
        return info

    @classmethod
    def _describe(cls, variant: str, checkpoint: str | None, cache_dir: Path) -> dict[str, Any]:
        settings = cls.variants.get(variant, {})
        if checkpoint is not None:
            folder = cls._resolve(checkpoint, cache_dir)
            config = _read_json(folder / "config.json")
            _check_needs(_NEEDS_BY_MODEL_TYPE.get(str(config.get("model_type")), ()), checkpoint)
            return {"model_id": checkpoint_model_id(checkpoint), "input_size": _INPUT_SIZE,
                    "licence": "see the checkpoint's own licence"}
        if settings.get("tiny"):
            return {"model_id": TINY_MODEL_ID, "input_size": TINY["input_size"],
                    "licence": settings["licence"]}
        _check_needs(settings.get("needs", ()), variant)
        return {"model_id": f"hf:{settings['repo']}", "input_size": settings["input_size"],
                "licence": settings["licence"]}

    @classmethod
    def _prefetch(cls, variant: str, checkpoint: str | None, cache_dir: Path) -> None:
        settings = cls.variants.get(variant, {})
        if checkpoint is not None or not settings.get("tiny"):
            cls._resolve(checkpoint or settings["repo"], cache_dir)

    @classmethod
    def _resolve(cls, source: str, cache_dir: Path) -> Path:
        """A hub id or local folder -> a staged local folder (hub ids downloaded once)."""
        try:
            local = Path(source) if os.path.exists(source) else _download(source, Path(cache_dir))
            folder = stage_locally(local, cache_dir=cache_dir)
        except FileNotFoundError as exc:  # offline, or a typo: say how to go on, on one line
            reason = " ".join(str(exc).split())[:300]
            raise FileNotFoundError(
                f"vlm weights {source!r} are not available ({reason}); pass a local copy of the "
                "model folder (config.json, weights, processor and tokenizer files) as "
                "--checkpoint PATH (checkpoint='PATH' in Python)") from exc
        if not folder.is_dir():
            raise ValueError(f"vlm checkpoint {str(folder)!r} must be a folder written by "
                             "save_pretrained (model + processor files), not one file")
        return folder

    # ----- worker side ----------------------------------------------------------------------

    def _load(self) -> None:
        tf = self._require("transformers")
        settings = self.variant_settings
        if self.checkpoint is not None:
            folder = self._resolve(self.checkpoint, self.cache_dir)
            self.model_id = checkpoint_model_id(self.checkpoint)
        elif settings.get("tiny"):
            folder = stage_locally(_ensure_tiny(self.cache_dir), cache_dir=self.cache_dir)
            self.model_id = TINY_MODEL_ID
        else:
            _check_needs(settings.get("needs", ()), self.variant)
            folder = self._resolve(settings["repo"], self.cache_dir)
            self.model_id = f"hf:{settings['repo']}"
        config = _read_json(folder / "config.json")
        _check_needs(_NEEDS_BY_MODEL_TYPE.get(str(config.get("model_type")), ()), str(folder))
        with quiet_loading():  # transformers is imported now, so its progress bars can be muted
            self.processor = tf.AutoProcessor.from_pretrained(str(folder), local_files_only=True)
            model = tf.AutoModelForImageTextToText.from_pretrained(
                str(folder), local_files_only=True)
        self.model = model.float().eval().to(self.device)  # fp32 weights; CUDA adds autocast
        self.tokenizer = getattr(self.processor, "tokenizer", None)
        if self.tokenizer is None:
            raise ValueError(f"checkpoint {str(folder)!r} has no tokenizer in its processor")
        self.tokenizer.padding_side = "left"  # decoder-only batches: answers start together
        self.chat = bool(getattr(self.processor, "chat_template", None))
        self.encoder_decoder = bool(getattr(self.model.config, "is_encoder_decoder", False))
        self._dropped = 1 if config.get("model_type") == "blip" else 0  # see _generate
        # SmolVLM's processor wants one list of images per prompt (Idefics' accept that too)
        self._nested = config.get("model_type") in _NESTED_IMAGES
        # a checkpoint brings its own processor settings; the variant's apply to its hub repo only
        own = {} if self.checkpoint is not None else settings
        self.processor_kwargs = dict(own.get("processor_kwargs", {}))
        self.weights_hash = weights_hash(weight_files(folder, WEIGHT_PATTERNS))
        self.input_size = int(TINY["input_size"] if own.get("tiny")
                              else own.get("input_size", _INPUT_SIZE))
        self._generate_kwargs = self._generate_config()

    def _generate_config(self) -> dict[str, Any]:
        """generate() kwargs: the checkpoint's generation_config with our settings on top."""
        g = self._generation
        gen = self.model.generation_config.__class__.from_dict(
            self.model.generation_config.to_dict())
        gen.max_new_tokens, gen.max_length = g["max_new_tokens"], None
        gen.min_new_tokens, gen.min_length = None, None
        gen.num_beams, gen.num_return_sequences = 1, 1
        gen.repetition_penalty = g["repetition_penalty"]
        if g["do_sample"]:
            gen.do_sample, gen.temperature, gen.top_p, gen.top_k = True, g["temperature"], g[
                "top_p"], 0
        else:
            gen.do_sample, gen.temperature, gen.top_p, gen.top_k = False, None, None, None
        if gen.pad_token_id is None:
            pad = self.tokenizer.pad_token_id
            gen.pad_token_id = pad if pad is not None else self.tokenizer.eos_token_id
        return {"generation_config": gen}

    def _texts(self, prompts: list[str]) -> list[str]:
        if not self.chat:
            return prompts
        return [
            self.processor.apply_chat_template(
                [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": p}]}],
                add_generation_prompt=True, tokenize=False)
            for p in prompts
        ]

    def _forward(self, images: np.ndarray, image_size: np.ndarray | None = None,
                 prompt: np.ndarray | None = None) -> list[str]:
        from PIL import Image

        n = len(images)
        sizes = valid_sizes(images, image_size)
        prompts = _prompts(prompt, n)
        pictures = [Image.fromarray(np.ascontiguousarray(images[i, :h, :w]))
                    for i, (w, h) in enumerate(sizes)]
        # chat models batch mixed prompts with left padding; plain-text (BLIP-style) models
        # continue their prompt and pad badly, so they get one generate call per distinct prompt
        groups: dict[str, list[int]] = {}
        for i, p in enumerate(prompts):
            groups.setdefault("" if self.chat else p, []).append(i)
        texts, counts = [""] * n, [0] * n
        for idx in groups.values():
            answers, used = self._generate([pictures[i] for i in idx], [prompts[i] for i in idx])
            for j, i in enumerate(idx):
                texts[i], counts[i] = answers[j], used[j]
        self.last_new_tokens = counts
        return texts

    def _generate(self, pictures: list[Any], prompts: list[str]) -> tuple[list[str], list[int]]:
        images = [[p] for p in pictures] if self._nested else pictures
        inputs = self.processor(text=self._texts(prompts), images=images, padding=True,
                                return_tensors="pt", **self.processor_kwargs)
        inputs = inputs.to(self.device)
        with self._inference():
            out = self.model.generate(**inputs, **self._generate_kwargs)
        # decoder-only models return prompt + answer (BLIP's drops the prompt's final [SEP]);
        # encoder-decoder models return the answer after a decoder start token
        skip = 0 if self.encoder_decoder else inputs["input_ids"].shape[1] - self._dropped
        new = out[:, skip:]
        texts = self.processor.batch_decode(new, skip_special_tokens=True)
        return [t.strip() for t in texts], self._count(new)

    def _count(self, new: Any) -> list[int]:
        """Generated tokens per row: up to and including the first end token, no padding."""
        gen = self._generate_kwargs["generation_config"]
        eos = gen.eos_token_id
        eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
        counts = []
        start = 1 if self.encoder_decoder else 0  # the decoder start token is not generated
        for row in new.tolist():
            row = row[start:]
            stop = next((i for i, t in enumerate(row) if t in eos_ids), None)
            counts.append(len(row) if stop is None else stop + 1)
        return counts


# ----- helpers ----------------------------------------------------------------------------------


def _prompts(prompt: Any, n: int) -> list[str]:
    """One prompt per image: the given object array of str, or DEFAULT_PROMPT for all."""
    if prompt is None:
        return [DEFAULT_PROMPT] * n
    items = list(np.asarray(prompt, dtype=object).reshape(-1))
    if len(items) != n:
        raise ValueError(f"prompt must hold one str per image: got {len(items)} for {n} images")
    bad = [p for p in items if not isinstance(p, str) or not p.strip()]
    if bad:
        raise ValueError(f"each prompt must be a non-empty str, got {bad[0]!r}")
    return [str(p) for p in items]


def _check_needs(modules: Any, what: str) -> None:
    missing = [m for m in modules if not _importable(m)]
    if missing:
        raise ImportError(
            f"vlm model {what!r} needs the {missing[0]!r} package (its processor imports it), "
            f"which is not installed. Install it with: pip install {' '.join(missing)}")


def _download(source: str, cache_dir: Path) -> Path:
    """Hub repo -> cache_dir/hf/<org>--<name>: config, weights (sharded too), processor files."""
    repo = hub_repo_id(source)
    if repo is None:
        raise FileNotFoundError(
            f"checkpoint {source!r} is neither an existing folder nor a hub id; pass a local "
            "path or 'org/name' (optionally prefixed 'hf:')")
    dest = cache_dir / "hf" / safe_name(repo)
    if (dest / COMPLETE_MARKER).is_file():
        return dest
    download_hub_files(repo, dest, HUB_FILES, HUB_OPTIONAL, mark=False)
    index = dest / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(_read_json(index).get("weight_map", {}).values()))
        download_hub_files(repo, dest, shards, mark=False)
    write_marker(dest, {"repo_id": repo})
    return dest


def _read_json(path: Path, strict: bool = True) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        if not strict:
            return {}
        raise ValueError(f"{str(path)!r} is not valid JSON ({exc}); fix or delete it") from exc
    return data if isinstance(data, dict) else {}


def build_tiny_vlm(out_dir: str | os.PathLike[str]) -> str:
    """Write the seeded tiny Idefics3 + its processor (BPE tokenizer, chat template) as
    save_pretrained does; return the folder."""
    tf = import_or_raise("transformers", extra="vlm", backend="vlm")
    torch = import_or_raise("torch", extra="vlm", backend="vlm")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    alphabet = sorted(set(TINY["corpus"]) | set("abcdefghijklmnopqrstuvwxyz0123456789"))
    trainer = trainers.BpeTrainer(
        vocab_size=TINY["vocab_size"], special_tokens=TINY["special_tokens"],
        initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator([TINY["corpus"]], trainer)
    tokenizer = tf.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<end_of_utterance>",
        pad_token="<|endoftext|>", padding_side="left")
    processor = tf.Idefics3Processor(
        image_processor=tf.Idefics3ImageProcessor(**TINY["image_processor"]),
        tokenizer=tokenizer, image_seq_len=TINY["image_seq_len"],
        chat_template=TINY["chat_template"])
    ids = {k: tokenizer.convert_tokens_to_ids(v) for k, v in
           {"pad": "<|endoftext|>", "bos": "<|im_start|>", "eos": "<end_of_utterance>",
            "image": "<image>"}.items()}
    config = tf.Idefics3Config(
        vision_config=TINY["vision_config"],
        text_config={**TINY["text_config"], "vocab_size": len(tokenizer),
                     "pad_token_id": ids["pad"], "bos_token_id": ids["bos"],
                     "eos_token_id": ids["eos"]},
        image_token_id=ids["image"], scale_factor=TINY["scale_factor"],
        tie_word_embeddings=False, pad_token_id=ids["pad"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = tf.AutoModelForImageTextToText.from_config(config)
    model.generation_config.eos_token_id = ids["eos"]
    model.generation_config.pad_token_id = ids["pad"]
    with quiet_loading():
        model.save_pretrained(str(out))
        processor.save_pretrained(str(out))
    return str(out)


def _ensure_tiny(cache_dir: Path) -> Path:
    """`cache_dir/tiny-vlm`, built once (see `exoray.models.tiny.ensure_built`)."""
    from exoray.models.tiny import ensure_built

    return ensure_built("vlm", TINY, build_tiny_vlm, cache_dir, seed=TINY_SEED)


__all__ = ["DEFAULT_PROMPT", "TINY_MODEL_ID", "VLM_VARIANTS", "VLMBackend", "build_tiny_vlm",
           "check_generation_options"]
