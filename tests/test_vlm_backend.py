"""The vlm backend (vision-language models through transformers), offline.

No real weights can be downloaded here, so the model is the seeded `tiny` Idefics3 (SmolVLM's
architecture, random weights, a small local BPE tokenizer) saved with save_pretrained and loaded
through the real checkpoint code. Its answers are real `generate()` output of random weights:
these tests check plumbing (per-image prompts, the crop of the padded square, generation
settings, determinism), never that an answer describes the picture.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from exoray.models.vlm import (
    DEFAULT_PROMPT,
    TINY_MODEL_ID,
    VLM_VARIANTS,
    VLMBackend,
    check_generation_options,
)
from exoray.models.weights import weights_hash

REPO_ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["Describe the image.", "What is in this picture?", "How many dogs are there?",
           "Is there any text in the image?"]
MAX_NEW = 8


def _env(root: Path) -> dict[str, str]:
    return {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(root / "hf"),
            "EXORAY_MODELS_DIR": str(root / "models"),
            "EXORAY_LOCAL_MODELS_DIR": str(root / "local-models")}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("vlm")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in _env(path).items():
            mp.setenv(key, value)
        yield path


@pytest.fixture(scope="module")
def tiny(root: Path) -> VLMBackend:
    return VLMBackend("tiny", cache_dir=root / "cache", device="cpu", max_new_tokens=MAX_NEW)


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    names = ["astronaut", "coffee", "chelsea", "rocket"]
    return [np.asarray(Image.fromarray(getattr(data, n)()).convert("RGB").resize((64, 64)))
            for n in names]


def _run(backend: VLMBackend, images: list[np.ndarray] | np.ndarray, prompts: list[str],
         sizes: list[tuple[int, int]] | None = None) -> list[str]:
    batch: dict[str, object] = {"image": np.stack(images),
                                "prompt": np.array(prompts, dtype=object)}
    if sizes is not None:
        batch["image_size"] = np.array(sizes)
    out = backend(batch)["text"]
    assert out.dtype == object and len(out) == len(prompts)
    assert all(isinstance(t, str) for t in out)
    return list(out)


def test_tiny_loads_through_the_checkpoint_path(tiny: VLMBackend, root: Path, photos) -> None:
    folder = root / "cache" / "tiny-vlm"
    assert tiny.model_id == TINY_MODEL_ID
    assert tiny.weights_hash == weights_hash(folder / "model.safetensors")
    assert tiny.input_size == VLMBackend.describe("tiny")["input_size"] == 64
    assert type(tiny.model).__name__ == "Idefics3ForConditionalGeneration"
    assert tiny.chat and tiny.tokenizer.padding_side == "left"
    # the same folder as a local checkpoint: same weights, same answers
    local = VLMBackend(checkpoint=str(folder), cache_dir=root / "cache", device="cpu",
                       max_new_tokens=MAX_NEW)
    assert local.model_id == f"local:{folder.absolute()}"
    assert local.weights_hash == tiny.weights_hash
    assert _run(local, photos[:2], PROMPTS[:2]) == _run(tiny, photos[:2], PROMPTS[:2])


def test_generates_deterministic_text_per_image(tiny: VLMBackend, photos) -> None:
    first = _run(tiny, photos, [PROMPTS[0]] * 4)
    assert sum(bool(t) for t in first) >= 3, first
    assert _run(tiny, photos, [PROMPTS[0]] * 4) == first  # greedy: same input, same text
    assert len(set(first)) > 1, first  # random weights still read the picture
    assert len(tiny.last_new_tokens) == 4
    assert all(1 <= n <= MAX_NEW for n in tiny.last_new_tokens)
    # no prompt column: the default prompt
    assert list(tiny({"image": np.stack(photos)})["text"]) == _run(
        tiny, photos, [DEFAULT_PROMPT] * 4)


def test_different_prompts_in_one_batch(tiny: VLMBackend, photos) -> None:
    img = photos[0]
    mixed = _run(tiny, [img] * 4, PROMPTS)
    assert len(set(mixed)) > 1, mixed  # the prompt reaches the model, per image
    # each row is what that prompt gives alone (left padding keeps answers aligned)
    for prompt, answer in zip(PROMPTS, mixed, strict=True):
        assert _run(tiny, [img], [prompt]) == [answer]
    # mixed pictures and prompts
    rows = _run(tiny, photos, PROMPTS[::-1])
    assert rows == [_run(tiny, [p], [q])[0] for p, q in zip(photos, PROMPTS[::-1], strict=True)]


def test_padded_picture_answers_like_the_picture(tiny: VLMBackend, photos) -> None:
    rng = np.random.default_rng(0)
    pics = [photos[1][:40, :56], photos[2][:64, :30]]
    squares = []
    for pic in pics:
        square = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)  # padding must not matter
        square[: pic.shape[0], : pic.shape[1]] = pic
        squares.append(square)
    sizes = [(p.shape[1], p.shape[0]) for p in pics]
    padded = _run(tiny, squares, PROMPTS[:2], sizes)
    alone = [_run(tiny, [p], [q])[0] for p, q in zip(pics, PROMPTS[:2], strict=True)]
    assert padded == alone
    assert _run(tiny, squares, PROMPTS[:2]) != padded  # the noise does change the answer
    with pytest.raises(ValueError, match="does not fit"):
        _run(tiny, squares, PROMPTS[:2], [(65, 10), (10, 10)])


def test_max_new_tokens_and_generation_settings(tiny: VLMBackend, root: Path, photos) -> None:
    assert tiny.generation_settings() == {"max_new_tokens": MAX_NEW, "do_sample": False,
                                          "temperature": 0.0, "top_p": 1.0,
                                          "repetition_penalty": 1.0}
    short = VLMBackend("tiny", cache_dir=root / "cache", device="cpu", max_new_tokens=2)
    texts = _run(short, photos, PROMPTS)
    assert all(1 <= n <= 2 for n in short.last_new_tokens), short.last_new_tokens
    for text in texts:
        assert len(short.tokenizer(text, add_special_tokens=False)["input_ids"]) <= 2 + 1
    sampled = VLMBackend("tiny", cache_dir=root / "cache", device="cpu", max_new_tokens=4,
                         temperature=0.7, top_p=0.9, repetition_penalty=1.2)
    assert sampled.generation_settings() == {"max_new_tokens": 4, "do_sample": True,
                                             "temperature": 0.7, "top_p": 0.9,
                                             "repetition_penalty": 1.2}
    assert len(_run(sampled, photos[:2], PROMPTS[:2])) == 2
    assert all(n <= 4 for n in sampled.last_new_tokens)


@pytest.mark.parametrize("kwargs", [
    {"max_new_tokens": 0}, {"max_new_tokens": 2.5}, {"max_new_tokens": True},
    {"max_new_tokens": 10**6}, {"temperature": -0.1}, {"temperature": float("nan")},
    {"temperature": "0"}, {"top_p": 0}, {"top_p": 1.5}, {"repetition_penalty": 0},
])
def test_bad_generation_options(kwargs, root: Path) -> None:
    with pytest.raises(ValueError):
        check_generation_options(**kwargs)
    with pytest.raises(ValueError):  # before any loading
        VLMBackend("tiny", cache_dir=root / "cache", device="cpu", **kwargs)
    with pytest.raises(ValueError):
        VLMBackend.describe("tiny", **kwargs)


def test_bad_prompts(tiny: VLMBackend, photos) -> None:
    with pytest.raises(ValueError, match="one str per image"):
        tiny({"image": np.stack(photos[:2]), "prompt": np.array(["a"], dtype=object)})
    with pytest.raises(ValueError, match="non-empty str"):
        tiny({"image": np.stack(photos[:2]), "prompt": np.array(["a", " "], dtype=object)})


def test_unknown_variant_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="smolvlm-256m.*smolvlm-500m.*qwen3-vl-2b.*tiny"):
        VLMBackend.describe("llava-13b")


def test_variants_are_data() -> None:
    assert VLMBackend.default_variant == "smolvlm-256m"
    for name, settings in VLM_VARIANTS.items():
        assert settings.get("licence"), name
        assert settings.get("tiny") or "/" in settings["repo"], name
    info = VLMBackend.describe("qwen3-vl-2b", max_new_tokens=32)
    assert info["model_id"] == "hf:Qwen/Qwen3-VL-2B-Instruct"
    assert info["licence"] == "Apache-2.0" and info["batch_size"] == 4
    assert info["generation"]["max_new_tokens"] == 32
    assert info["task"] == "interpret" and info["output_kind"] == "text"


def test_describe_imports_no_torch(root: Path) -> None:
    code = textwrap.dedent("""
        import sys
        from exoray.models.vlm import VLMBackend
        info = VLMBackend.describe("tiny")
        assert info["model_id"] == "tiny:idefics3(random)", info
        VLMBackend.describe("qwen3-vl-2b")
        try:
            VLMBackend.describe()  # SmolVLM's processor needs num2words
        except ImportError as exc:
            assert "num2words" in str(exc), exc
        heavy = [m for m in ("torch", "transformers") if m in sys.modules]
        assert not heavy, heavy
        print("ok")
    """)
    env = {**os.environ, **_env(root)}
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr


def test_offline_prefetch_of_the_default_fails_fast(tmp_path: Path) -> None:
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    start = time.monotonic()
    with pytest.raises(FileNotFoundError, match="--checkpoint PATH") as info:
        VLMBackend.prefetch(cache_dir=tmp_path / "models")
    assert "HuggingFaceTB/SmolVLM-256M-Instruct" in str(info.value)
    assert time.monotonic() - start < 30
    with pytest.raises(FileNotFoundError, match="--checkpoint PATH"):
        VLMBackend.prefetch("qwen3-vl-2b", cache_dir=tmp_path / "models")
    with pytest.raises(FileNotFoundError, match="--checkpoint PATH"):
        VLMBackend.prefetch(checkpoint=str(tmp_path / "missing" / "dir"),
                            cache_dir=tmp_path / "models")


def _tiny_blip(folder: Path) -> Path:
    """A seeded tiny BLIP captioner (no chat template) saved as save_pretrained does."""
    import torch
    import transformers as tf

    text = "a photo of the cat dog on mat red blue sky tree what is in this"
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", *text.split(" "),
             *map(chr, range(97, 123))]
    tok = tf.BertTokenizer(vocab={w: i for i, w in enumerate(words)}, do_lower_case=True)
    tok.add_special_tokens({"bos_token": "[DEC]"})
    processor = tf.BlipProcessor(
        image_processor=tf.BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok)
    layers = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
              "num_attention_heads": 4, "initializer_range": 0.2}
    config = tf.BlipConfig(
        vision_config={**layers, "image_size": 32, "patch_size": 8},
        text_config={**layers, "vocab_size": len(tok), "encoder_hidden_size": 32,
                     "bos_token_id": tok.bos_token_id, "pad_token_id": 0, "sep_token_id": 3,
                     "eos_token_id": 3})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = tf.AutoModelForImageTextToText.from_config(config)
    model.save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    return folder


def test_plain_text_model_from_a_local_checkpoint(root: Path, photos, tiny: VLMBackend) -> None:
    folder = _tiny_blip(root / "blip")
    blip = VLMBackend(checkpoint=str(folder), cache_dir=root / "cache", device="cpu",
                      max_new_tokens=5)
    assert blip.model_id == f"local:{folder.absolute()}" and not blip.chat
    assert type(blip.model).__name__ == "BlipForConditionalGeneration"
    prompts = ["a photo of", "what is in this", "a photo of", "a"]
    texts = _run(blip, photos, prompts)
    assert sum(bool(t) for t in texts) >= 3, texts
    assert all(1 <= n <= 5 for n in blip.last_new_tokens), blip.last_new_tokens
    assert texts == [_run(blip, [p], [q])[0] for p, q in zip(photos, prompts, strict=True)]
    assert _run(blip, photos, prompts) == texts


def _check_chat_checkpoint(root: Path, folder: Path, photos, kind: str) -> None:
    backend = VLMBackend(checkpoint=str(folder), cache_dir=root / "cache", device="cpu",
                         max_new_tokens=6)
    assert type(backend.model).__name__ == kind and backend.chat
    sizes = [(64, 64), (40, 20), (20, 60)]  # different shapes: different image token counts
    squares = np.stack(photos[:3])
    texts = _run(backend, squares, PROMPTS[:3], sizes)
    assert all(1 <= n <= 6 for n in backend.last_new_tokens), backend.last_new_tokens
    assert texts == [_run(backend, [squares[i]], [PROMPTS[i]], [sizes[i]])[0] for i in range(3)]


def test_qwen3_vl_architecture_from_a_local_checkpoint(root: Path, photos) -> None:
    """The stronger variant's family (Qwen3-VL: flat image list, dynamic resolution, mRoPE),
    as a seeded tiny model with a local BPE tokenizer and a Qwen-style chat template."""
    import torch
    import transformers as tf
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from exoray.models.vlm import TINY

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
               "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
    bpe.train_from_iterator([TINY["corpus"]], trainers.BpeTrainer(
        vocab_size=300, special_tokens=special, initial_alphabet=sorted(set(TINY["corpus"])),
        show_progress=False))
    tok = tf.PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>",
                                     pad_token="<|endoftext|>")
    chat = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
            "{% for c in message['content'] %}{% if c['type'] == 'image' %}"
            "<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}{% endif %}"
            "{% endfor %}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    processor = tf.Qwen3VLProcessor(
        image_processor=tf.Qwen2VLImageProcessor(patch_size=16, merge_size=2,
                                                 temporal_patch_size=2, min_pixels=32 * 32,
                                                 max_pixels=64 * 64),
        tokenizer=tok, video_processor=tf.Qwen3VLVideoProcessor(), chat_template=chat)
    ids = {t: tok.convert_tokens_to_ids(t) for t in special}
    config = tf.Qwen3VLConfig(
        text_config={"vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 37,
                     "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                     "head_dim": 8, "max_position_embeddings": 512, "initializer_range": 0.2,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                         "mrope_section": [2, 1, 1], "mrope_interleaved": True},
                     "pad_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
                     "bos_token_id": ids["<|im_start|>"], "tie_word_embeddings": False},
        vision_config={"depth": 2, "hidden_size": 32, "intermediate_size": 32, "num_heads": 4,
                       "out_hidden_size": 32, "patch_size": 16, "spatial_merge_size": 2,
                       "temporal_patch_size": 2, "num_position_embeddings": 16,
                       "deepstack_visual_indexes": [0, 1], "initializer_range": 0.2},
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = tf.AutoModelForImageTextToText.from_config(config)
    folder = root / "qwen3-vl"
    model.save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    _check_chat_checkpoint(root, folder, photos, "Qwen3VLForConditionalGeneration")


def test_smolvlm_architecture_from_a_local_checkpoint(root: Path, photos,
                                                      tiny: VLMBackend) -> None:
    """The default variant's family (SmolVLM: nested image lists, image splitting into tiles),
    with the tiny's tokenizer; SmolVLM's processor needs num2words."""
    pytest.importorskip("num2words")
    import torch
    import transformers as tf

    from exoray.models.vlm import TINY

    tok = tiny.tokenizer
    processor = tf.SmolVLMProcessor(
        image_processor=tf.SmolVLMImageProcessor(do_image_splitting=True,
                                                 size={"longest_edge": 64},
                                                 max_image_size={"longest_edge": 32}),
        tokenizer=tok, video_processor=tf.SmolVLMVideoProcessor(),
        image_seq_len=TINY["image_seq_len"], chat_template=TINY["chat_template"])
    ids = {k: tok.convert_tokens_to_ids(v) for k, v in
           {"pad": "<|endoftext|>", "bos": "<|im_start|>", "eos": "<end_of_utterance>",
            "image": "<image>"}.items()}
    config = tf.SmolVLMConfig(
        vision_config=TINY["vision_config"],
        text_config={**TINY["text_config"], "vocab_size": len(tok), "pad_token_id": ids["pad"],
                     "bos_token_id": ids["bos"], "eos_token_id": ids["eos"]},
        image_token_id=ids["image"], scale_factor=TINY["scale_factor"],
        tie_word_embeddings=False, pad_token_id=ids["pad"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = tf.AutoModelForImageTextToText.from_config(config)
    folder = root / "smolvlm"
    model.save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    _check_chat_checkpoint(root, folder, photos, "SmolVLMForConditionalGeneration")


def test_set_generation_between_calls(root: Path, photos) -> None:
    backend = VLMBackend("tiny", cache_dir=root / "cache", device="cpu", max_new_tokens=6)
    long = _run(backend, photos, PROMPTS)
    backend.set_generation(max_new_tokens=2)
    assert backend.generation_settings()["max_new_tokens"] == 2
    _run(backend, photos, PROMPTS)
    assert all(n <= 2 for n in backend.last_new_tokens)
    with pytest.raises(ValueError):
        backend.set_generation(top_p=0)
    assert backend.generation_settings()["max_new_tokens"] == 2  # unchanged by a bad call
    backend.set_generation(max_new_tokens=6)
    assert _run(backend, photos, PROMPTS) == long
