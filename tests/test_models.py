"""Model backends: one contract over every registered backend, plus registry, cache, OOM backoff.

Everything runs offline on tiny random models built from configs and loaded through the real
checkpoint-loading code; hub downloads are simulated by a fake `hf_hub_download`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from exoray.models import (
    OUTPUT_KINDS,
    EmbeddingBackend,
    ModelBackend,
    available_backends,
    describe_backend,
    get_backend_class,
    load_backend,
    parse_spec,
    register_backend,
)
from exoray.models import registry as registry_mod
from exoray.models import weights as weights_mod

# Backends with a random-initialised "tiny" variant; the detectors and OCR engines that load real
# packaged weights have their own contract tests (test_detect_backend.py, test_ocr_backends.py).
BACKENDS = [n for n in available_backends() if "tiny" in get_backend_class(n).variants]
EMBEDDERS = [n for n in BACKENDS if issubclass(get_backend_class(n), EmbeddingBackend)]
REPO_ROOT = Path(__file__).resolve().parents[1]


def _offline_env(root: Path) -> dict[str, str]:
    return {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": str(root / "hf-home"),
        "TORCH_HOME": str(root / "torch-home"),
        "EXORAY_MODELS_DIR": str(root / "default-models"),
        "EXORAY_LOCAL_MODELS_DIR": str(root / "local-models"),
    }


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key, value in _offline_env(tmp_path / "env").items():
        monkeypatch.setenv(key, value)


@pytest.fixture(scope="module")
def model_root(tmp_path_factory: pytest.TempPathFactory):
    """Module-wide offline environment + models cache (tiny models are built once)."""
    root = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in _offline_env(root).items():
            mp.setenv(key, value)
        yield root


@pytest.fixture(scope="module")
def tiny(model_root: Path) -> dict[str, ModelBackend]:
    return {name: load_backend(f"{name}:tiny", cache_dir=model_root / "cache") for name in BACKENDS}


@pytest.fixture(scope="module")
def images(tiny: dict[str, ModelBackend]) -> np.ndarray:
    """Varied uint8 squares at the largest input size of the run, as the decode stage delivers."""
    side = max(b.input_size for b in tiny.values())
    rng = np.random.default_rng(0)
    grad = np.linspace(0, 255, side, dtype=np.float32)
    out = [rng.integers(0, 256, (side, side, 3)).astype(np.float32) for _ in range(4)]
    out += [np.broadcast_to(grad[None, :, None], (side, side, 3)).copy()]
    out += [np.broadcast_to(grad[:, None, None], (side, side, 3)).copy()]
    out += [np.full((side, side, 3), v, np.float32) * np.array([1, 0.5, 0.2]) for v in (40, 220)]
    out += [np.clip(rng.normal(128, 60, (side, side, 3)), 0, 255) for _ in range(3)]
    return np.stack(out).astype(np.uint8)


def _photos() -> list[np.ndarray]:
    """Three real photos (scikit-image's) when installed, else three photo-like synthetic ones."""
    try:
        from skimage import data
    except ImportError:
        data = None
    if data is not None:
        return [data.astronaut(), data.coffee(), data.chelsea()]
    yy, xx = np.mgrid[0:120, 0:160].astype(np.float32)
    rng = np.random.default_rng(7)
    sky = np.stack([xx * 0.3 + 60, yy * 0.5 + 90, 255 - yy * 0.8], axis=-1)
    disc = ((xx - 80) ** 2 + (yy - 60) ** 2 < 35**2)[..., None] * np.array([120, -40, -90])
    stripes = np.stack([128 + 100 * np.sin(xx / 6), 128 + 80 * np.cos(yy / 9), xx], axis=-1)
    noise = rng.normal(0, 12, (120, 160, 3))
    pics = [sky + disc + noise, stripes + noise, np.flip(sky, axis=0) * 0.6 + noise]
    return [np.clip(p, 0, 255).astype(np.uint8) for p in pics]


def _assert_kind(column: np.ndarray, kind: str, n: int, backend: ModelBackend) -> None:
    """One column of a backend's output: n items of the declared output kind."""
    assert kind in OUTPUT_KINDS
    if kind == "vector":
        assert column.shape == (n, backend.dim) and column.dtype == np.float32
        assert np.isfinite(column).all()
        return
    assert isinstance(column, np.ndarray) and column.dtype == object and column.shape == (n,)
    for item in column:
        if kind == "text":
            assert isinstance(item, str)
        else:
            assert isinstance(item, list) and all(isinstance(s, dict) for s in item)


# ----- the contract, for every registered backend ---------------------------------------------


@pytest.mark.parametrize("name", BACKENDS)
def test_backend_contract(name: str, tiny: dict[str, ModelBackend], model_root: Path) -> None:
    """Any backend: tiny variant builds offline, 3 photos -> 3 outputs of its kind, and
    describe() (the driver's plan) agrees with what was built."""
    from exoray.models.preprocess import square_images

    backend = tiny[name]
    cls = type(backend)
    assert cls is get_backend_class(name) and cls.name == name and "tiny" in cls.variants
    assert cls.task and cls.output_columns and cls.output_kind in OUTPUT_KINDS
    assert cls.input_columns == ("image",)
    assert backend.batch_size >= 1 and 0 < backend.gpu_share <= 1
    assert isinstance(backend.model_id, str) and backend.model_id
    assert isinstance(backend.weights_hash, str) and backend.weights_hash
    assert backend.input_size > 0

    photos = square_images(_photos(), backend.input_size)
    assert photos.shape == (3, backend.input_size, backend.input_size, 3)
    out = backend({"image": photos})
    assert set(out) == set(cls.output_columns)
    for column in cls.output_columns:
        _assert_kind(out[column], cls.output_kind, 3, backend)

    info = describe_backend(f"{name}:tiny", cache_dir=model_root / "cache")
    assert (info["model_id"], info["input_size"]) == (backend.model_id, backend.input_size)
    assert (info["task"], info["output_kind"]) == (cls.task, cls.output_kind)
    assert tuple(info["output_columns"]) == cls.output_columns
    assert (info["batch_size"], info["gpu_share"]) == (backend.batch_size, backend.gpu_share)


@pytest.mark.parametrize("name", BACKENDS)
def test_gpu_share_and_batch_size_are_run_options(name: str, model_root: Path) -> None:
    cls, cache = get_backend_class(name), model_root / "cache"
    info = describe_backend(f"{name}:tiny", cache_dir=cache, gpu_share=0.25, batch_size=5)
    backend = load_backend(f"{name}:tiny", cache_dir=cache, gpu_share=0.25, batch_size=5)
    assert (info["gpu_share"], info["batch_size"]) == (backend.gpu_share, backend.batch_size)
    assert (backend.gpu_share, backend.batch_size) == (0.25, 5)
    assert info["default_gpu_share"] == cls.default_gpu_share
    assert info["default_batch_size"] == cls.default_batch_size
    for bad, err in [(0, ValueError), (1.5, ValueError), (-0.1, ValueError), ("0.5", TypeError)]:
        with pytest.raises(err, match="gpu_share"):
            describe_backend(f"{name}:tiny", cache_dir=cache, gpu_share=bad)
        with pytest.raises(err, match="gpu_share"):
            load_backend(f"{name}:tiny", cache_dir=cache, gpu_share=bad)
    with pytest.raises(ValueError, match="batch_size"):
        describe_backend(f"{name}:tiny", cache_dir=cache, batch_size=0)


@pytest.mark.parametrize("name", EMBEDDERS)
def test_embedding_contract(name: str, tiny: dict[str, ModelBackend], images: np.ndarray) -> None:
    backend = tiny[name]
    cls = type(backend)
    assert cls is get_backend_class(name)
    assert cls.name == name and "tiny" in cls.variants
    assert 16 <= cls.default_batch_size <= 64 and 0 < cls.default_gpu_share <= 1 and cls.extra
    assert cls.input_columns == ("image",)
    assert isinstance(backend.model_id, str) and backend.model_id
    assert len(backend.weights_hash) == 16 and int(backend.weights_hash, 16) >= 0
    assert backend.input_size > 0 and backend.dim > 0

    out = backend({"image": images})
    assert set(out) == set(cls.output_columns)
    assert cls.task == "embed" and cls.output_kind == "vector"
    emb = out["embedding"]
    assert emb.shape == (len(images), backend.dim) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)

    again = backend({"image": images})["embedding"]
    np.testing.assert_array_equal(emb, again)  # deterministic

    cos = emb @ emb.T
    off_diag = cos[~np.eye(len(images), dtype=bool)]
    assert off_diag.max() < 0.9999, "different images must give different vectors"

    saved = backend.batch_size
    try:
        backend.batch_size = 3
        split = backend({"image": images})["embedding"]
    finally:
        backend.batch_size = saved
    np.testing.assert_allclose(split, emb, atol=1e-5)

    empty = backend({"image": images[:0]})["embedding"]
    assert empty.shape == (0, backend.dim) and empty.dtype == np.float32


@pytest.mark.parametrize("name", BACKENDS)
def test_describe_matches_loaded_backend(
    name: str, tiny: dict[str, ModelBackend], model_root: Path
) -> None:
    info = describe_backend(f"{name}:tiny", cache_dir=model_root / "cache")
    backend = tiny[name]
    assert info["model_id"] == backend.model_id
    assert info["input_size"] == backend.input_size
    if backend.output_kind == "vector":
        assert info["dim"] == backend.dim
    assert info["gpu_share"] == backend.gpu_share
    assert info["default_batch_size"] == info["batch_size"] == backend.batch_size


@pytest.mark.parametrize("name", BACKENDS)
def test_batch_validation(name: str, tiny: dict[str, ModelBackend], images: np.ndarray) -> None:
    backend = tiny[name]
    with pytest.raises(ValueError, match="missing"):
        backend({"pixels": images})
    with pytest.raises(TypeError, match="uint8"):
        backend({"image": images.astype(np.float32)})
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        backend({"image": images[..., :1]})


def test_embed_images_accepts_any_size(tiny: dict[str, ModelBackend]) -> None:
    rng = np.random.default_rng(1)
    pics = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(50, 80), (90, 40)]]
    emb = tiny["clip"].embed_images(pics)
    assert emb.shape == (2, tiny["clip"].dim)


def test_models_package_imports_no_torch_and_backends_never_import_ray(model_root: Path) -> None:
    code = textwrap.dedent(
        f"""
        import json, sys
        import numpy as np
        from exoray.models import available_backends, get_backend_class, load_backend
        from exoray.models import describe_backend
        names = [n for n in available_backends() if "tiny" in get_backend_class(n).variants]
        classes = [get_backend_class(n) for n in names]
        plans = [describe_backend(n) for n in names] + [describe_backend("clip:ViT-L-14")]
        torch_after_import = "torch" in sys.modules
        for n in names:
            b = load_backend(n + ":tiny", cache_dir={str(model_root / "cache")!r})
            s = b.input_size
            b({{"image": np.zeros((2, s, s, 3), np.uint8)}})
        ray = sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))
        print(json.dumps({{"torch_after_import": torch_after_import, "ray": ray}}))
        """
    )
    env = {**os.environ, **_offline_env(model_root)}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"torch_after_import": False, "ray": []}


# ----- checkpoints ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", EMBEDDERS)
def test_explicit_checkpoint_equals_tiny_variant(
    name: str, tiny: dict[str, ModelBackend], images: np.ndarray, tmp_path: Path
) -> None:
    from exoray.models.tiny import BUILDERS

    ckpt = BUILDERS[name](tmp_path / "ckpt")
    backend = load_backend(name, checkpoint=ckpt, cache_dir=tmp_path / "cache")
    assert backend.model_id == f"local:{Path(ckpt).absolute()}"
    assert backend.weights_hash == tiny[name].weights_hash
    assert backend.input_size == tiny[name].input_size
    np.testing.assert_array_equal(
        backend({"image": images})["embedding"], tiny[name]({"image": images})["embedding"]
    )
    info = describe_backend(name, checkpoint=ckpt, cache_dir=tmp_path / "cache")
    assert (info["model_id"], info["input_size"], info["dim"]) == (
        backend.model_id,
        backend.input_size,
        backend.dim,
    )


def test_clip_bare_weights_file_needs_an_architecture(model_root: Path, tmp_path: Path) -> None:
    from exoray.models.tiny import build_tiny_clip

    ckpt = Path(build_tiny_clip(tmp_path / "ckpt")) / "open_clip_model.safetensors"
    with pytest.raises(ValueError, match="architecture is unknown"):
        load_backend("clip:tiny", checkpoint=ckpt, cache_dir=tmp_path / "cache")


class _FakeHub:
    """Stands in for huggingface_hub.hf_hub_download, serving repos from local folders."""

    def __init__(self, repos: dict[str, Path], offline: bool = False) -> None:
        self.repos, self.offline, self.calls = repos, offline, []

    def __call__(self, repo_id: str, filename: str, *, local_dir: Path, **_: object) -> str:
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        self.calls.append((repo_id, filename))
        if self.offline:
            raise LocalEntryNotFoundError("offline")
        src = self.repos[repo_id] / filename
        if not src.is_file():
            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        Path(local_dir).mkdir(parents=True, exist_ok=True)
        shutil.copy(src, Path(local_dir) / filename)
        return str(Path(local_dir) / filename)


@pytest.mark.parametrize("name", EMBEDDERS)  # hub ids (hf:org/name) are for these
def test_hub_checkpoint_downloads_once_into_cache_then_stages(
    name: str, tiny: dict[str, ModelBackend], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import huggingface_hub

    from exoray.models.tiny import BUILDERS

    repo = Path(BUILDERS[name](tmp_path / "served"))
    fake = _FakeHub({"someorg/tiny-model": repo})
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    monkeypatch.setenv("EXORAY_STAGE_MODELS", "always")
    cache = tmp_path / "cache"

    backend = load_backend(name, checkpoint="hf:someorg/tiny-model", cache_dir=cache)
    assert backend.model_id == "hf:someorg/tiny-model"
    assert backend.weights_hash == tiny[name].weights_hash
    assert (cache / "hf" / "someorg--tiny-model" / weights_mod.COMPLETE_MARKER).is_file()
    staged = Path(os.environ["EXORAY_LOCAL_MODELS_DIR"]) / "hf" / "someorg--tiny-model"
    assert staged.is_dir() and not (staged / weights_mod.COMPLETE_MARKER).exists()

    n_calls = len(fake.calls)
    load_backend(name, checkpoint="someorg/tiny-model", cache_dir=cache)  # bare id, same repo
    assert len(fake.calls) == n_calls, "a completed download must not touch the hub again"


def test_open_clip_tag_download_assembles_a_local_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A pretrained tag becomes config + weights + HF tokenizer files in cache_dir, once."""
    import huggingface_hub
    import open_clip

    from exoray.models.clip import ClipBackend

    repo = tmp_path / "served"
    repo.mkdir()
    (repo / "open_clip_model.safetensors").write_bytes(b"weights")
    (repo / "tokenizer.json").write_text("{}")
    fake = _FakeHub({"timm/ViT-B-16-SigLIP": repo})
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    clip = object.__new__(ClipBackend)  # only the download step, no 200 MB model
    clip._oc, clip.cache_dir = open_clip, tmp_path / "cache"

    folder = clip._download_tag("ViT-B-16-SigLIP", "webli")
    config = json.loads((folder / "open_clip_config.json").read_text())
    assert config["model_cfg"] == open_clip.get_model_config("ViT-B-16-SigLIP")
    assert config["preprocess_cfg"]["mean"] == [0.5, 0.5, 0.5]
    assert {p.name for p in folder.iterdir()} >= {
        "open_clip_model.safetensors",
        "tokenizer.json",
        weights_mod.COMPLETE_MARKER,
    }
    assert fake.calls[0] == ("timm/ViT-B-16-SigLIP", "open_clip_model.safetensors")
    n_calls = len(fake.calls)
    assert clip._download_tag("ViT-B-16-SigLIP", "webli") == folder
    assert len(fake.calls) == n_calls
    with pytest.raises(ValueError, match="valid tags"):
        clip._download_tag("ViT-B-16-SigLIP", "nope")


def test_hub_offline_error_says_how_to_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _FakeHub({}, offline=True))
    with pytest.raises(FileNotFoundError, match="offline"):
        weights_mod.resolve_checkpoint(
            "hf:org/model", cache_dir=tmp_path, hub_files=["model.safetensors"]
        )


def test_hub_repo_without_weights_names_the_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import huggingface_hub

    (tmp_path / "repo").mkdir()
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _FakeHub({"o/r": tmp_path / "repo"}))
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        weights_mod.resolve_checkpoint(
            "o/r", cache_dir=tmp_path / "c", hub_files=[("model.safetensors", "pytorch_model.bin")]
        )


def test_missing_checkpoint_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="neither an existing file"):
        weights_mod.resolve_checkpoint(str(tmp_path / "nope"), cache_dir=tmp_path)


# ----- weights cache helpers ---------------------------------------------------------------------


def test_weights_hash_is_sha256_prefix_and_cached(tmp_path: Path) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc" * 1000)
    expected = hashlib.sha256(f.read_bytes()).hexdigest()[:16]
    assert weights_mod.weights_hash(f) == expected
    cache_file = Path(os.environ["EXORAY_LOCAL_MODELS_DIR"]) / ".hashes.json"
    assert expected in "".join(json.loads(cache_file.read_text()).values())
    g = tmp_path / "x.bin"
    g.write_bytes(b"other")
    two = weights_mod.weights_hash([g, f])
    assert len(two) == 16 and two not in (expected, weights_mod.weights_hash(g))
    assert weights_mod.weights_hash([f, g]) == two  # order-independent


def test_stage_locally_copies_once_and_refreshes_changed_files(tmp_path: Path) -> None:
    src = tmp_path / "drive" / "ckpt"
    src.mkdir(parents=True)
    (src / "model.safetensors").write_bytes(b"1" * 100)
    (src / ".cache").mkdir()
    (src / ".cache" / "junk").write_text("x")
    root = tmp_path / "local"

    assert weights_mod.stage_locally(src, local_root=root, mode="auto") == src.absolute()
    staged = weights_mod.stage_locally(src, local_root=root, mode="always")
    assert staged != src and (staged / "model.safetensors").read_bytes() == b"1" * 100
    assert not (staged / ".cache").exists()

    before = (staged / "model.safetensors").stat().st_ino
    weights_mod.stage_locally(src, local_root=root, mode="always")
    assert (staged / "model.safetensors").stat().st_ino == before  # unchanged: not copied again

    (src / "model.safetensors").write_bytes(b"2" * 100)  # same size, new mtime
    os.utime(src / "model.safetensors", ns=(1, 10**18))
    weights_mod.stage_locally(src, local_root=root, mode="always")
    assert (staged / "model.safetensors").read_bytes() == b"2" * 100
    with pytest.raises(ValueError, match="stage mode"):
        weights_mod.stage_locally(src, local_root=root, mode="sometimes")


def test_hub_id_parsing(tmp_path: Path) -> None:
    assert weights_mod.hub_repo_id("hf:facebook/dinov2-small") == "facebook/dinov2-small"
    assert weights_mod.hub_repo_id("hf-hub:org/x") == "org/x"
    assert weights_mod.hub_repo_id("org/x") == "org/x"
    assert weights_mod.hub_repo_id(str(tmp_path)) is None
    assert weights_mod.hub_repo_id("./rel/path") is None


# ----- registry and specs ------------------------------------------------------------------------


def test_unknown_backend_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="valid backends: clip, depth, dino, easyocr"):
        get_backend_class("nope")
    with pytest.raises(ValueError, match="valid backends"):
        load_backend("nope:tiny")


@pytest.mark.parametrize("name", BACKENDS)
def test_unknown_variant_lists_valid_ones(name: str, tmp_path: Path) -> None:
    cls = get_backend_class(name)
    with pytest.raises(ValueError, match="valid variants: .*tiny") as err:
        load_backend(f"{name}:no-such-variant", cache_dir=tmp_path)
    assert all(v in str(err.value) for v in cls.variants)
    with pytest.raises(ValueError, match="valid variants"):
        describe_backend(f"{name}:no-such-variant")


def test_spec_parsing() -> None:
    assert parse_spec("clip") == ("clip", None)
    assert parse_spec("clip:ViT-B-32/openai") == ("clip", "ViT-B-32/openai")
    with pytest.raises(ValueError, match="empty variant"):
        parse_spec("clip:")
    with pytest.raises(ValueError, match="variant given twice"):
        load_backend("clip:tiny", variant="ViT-B-32")


def test_duplicate_registration_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_mod, "_REGISTRY", dict(registry_mod._REGISTRY))
    get_backend_class("clip")

    class Impostor(ModelBackend):
        name = "clip"

    with pytest.raises(ValueError, match="already registered"):
        register_backend(Impostor)
    with pytest.raises(TypeError, match="ModelBackend subclass"):
        register_backend(object)  # type: ignore[arg-type]


def test_clip_variant_table_matches_open_clip() -> None:
    import open_clip

    from exoray.models.clip import CLIP_VARIANTS

    for variant, s in CLIP_VARIANTS.items():
        if s.get("tiny"):
            continue
        cfg = open_clip.get_model_config(s["arch"])
        assert (s["input_size"], s["dim"]) == (cfg["vision_cfg"]["image_size"], cfg["embed_dim"])
        if s["pretrained"]:
            assert open_clip.get_pretrained_cfg(s["arch"], s["pretrained"]), variant


# ----- OOM backoff -------------------------------------------------------------------------------


class _OomAbove(EmbeddingBackend):
    """No model: raises torch's real CUDA OOM error on chunks above `limit` images."""

    name = "oom-test"
    limit = 4

    def _load(self) -> None:
        self.model_id, self.weights_hash, self.dim, self.input_size = "test:oom", "0" * 16, 3, 8
        self.chunk_sizes: list[int] = []

    def _forward(self, images: np.ndarray) -> np.ndarray:
        import torch

        self.chunk_sizes.append(len(images))
        if len(images) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return images.reshape(len(images), -1, 3).mean(axis=1) + 1.0


def test_oom_halves_chunks_keeps_smaller_size_and_logs_events() -> None:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (11, 8, 8, 3), dtype=np.uint8)
    reference = _OomAbove(device="cpu", batch_size=64)
    reference.limit = 1000
    expected = reference({"image": imgs})["embedding"]

    backend = _OomAbove(device="cpu", batch_size=16)
    np.testing.assert_allclose(backend({"image": imgs})["embedding"], expected, rtol=1e-6)
    assert backend.batch_size == 4
    assert [(e["event"], e["from"], e["to"]) for e in backend.events] == [
        ("oom_backoff", 16, 8),
        ("oom_backoff", 8, 4),
    ]
    backend.chunk_sizes.clear()
    np.testing.assert_allclose(backend({"image": imgs})["embedding"], expected, rtol=1e-6)
    assert backend.chunk_sizes == [4, 4, 3] and len(backend.events) == 2  # stays shrunk


def test_oom_at_batch_size_one_reraises_clearly() -> None:
    import torch

    backend = _OomAbove(device="cpu", batch_size=4)
    backend.limit = 0
    with pytest.raises(torch.cuda.OutOfMemoryError, match="single"):
        backend({"image": np.zeros((3, 8, 8, 3), np.uint8)})
    assert [e["to"] for e in backend.events] == [2, 1]


class _ToyDetector(ModelBackend):
    """Test double for the OOM path of a non-embedding backend: no model; image i (its first
    pixel says i) gets i % 3 box dicts; raises torch's real CUDA OOM on chunks above `limit`."""

    name = "toy-detect"
    task = "detect"
    output_columns = ("detections",)
    output_kind = "structs"
    extra = "test"
    variants = {"tiny": {}, "big": {"batch_size": 4, "gpu_share": 1.0}}
    default_variant = "tiny"
    limit = 2

    @classmethod
    def _describe(cls, variant: str, checkpoint: str | None, cache_dir: Path) -> dict:
        return {"model_id": "test:detect", "input_size": 8}

    def _load(self) -> None:
        self.model_id, self.weights_hash, self.input_size = "test:detect", "0" * 16, 8
        self.chunk_sizes: list[int] = []

    def _forward(self, images: np.ndarray) -> list[list[dict]]:
        import torch

        self.chunk_sizes.append(len(images))
        if len(images) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        ids = [int(img[0, 0, 0]) for img in images]
        return [[{"id": i, "box": [0.0, 0.0, 8.0, 8.0], "k": k} for k in range(i % 3)] for i in ids]


def _numbered(n: int) -> np.ndarray:
    imgs = np.zeros((n, 8, 8, 3), np.uint8)
    imgs[:, 0, 0, 0] = np.arange(n)
    return imgs


def test_oom_backoff_for_per_image_structs_keeps_every_output_in_order() -> None:
    backend = _ToyDetector(device="cpu", batch_size=8)
    out = backend({"image": _numbered(11)})["detections"]
    assert isinstance(out, np.ndarray) and out.dtype == object and out.shape == (11,)
    for i, boxes in enumerate(out):
        assert isinstance(boxes, list) and len(boxes) == i % 3
        assert [(b["id"], b["k"]) for b in boxes] == [(i, k) for k in range(i % 3)]
    assert backend.batch_size == 2
    assert backend.events == [
        {
            "event": "oom_backoff",
            "backend": "toy-detect",
            "model_id": "test:detect",
            "from": 8,
            "to": 4,
        },
        {
            "event": "oom_backoff",
            "backend": "toy-detect",
            "model_id": "test:detect",
            "from": 4,
            "to": 2,
        },
    ]
    backend.chunk_sizes.clear()
    again = backend({"image": _numbered(5)})["detections"]
    assert [len(b) for b in again] == [0, 1, 2, 0, 1]
    assert backend.chunk_sizes == [2, 2, 1] and len(backend.events) == 2  # stays shrunk
    empty = backend({"image": _numbered(0)})["detections"]
    assert empty.shape == (0,) and empty.dtype == object


def test_equal_length_struct_lists_stay_one_item_per_image() -> None:
    backend = _ToyDetector(device="cpu", batch_size=2)
    out = backend({"image": np.full((2, 8, 8, 3), 1, np.uint8)})["detections"]
    assert out.shape == (2,) and out[0] == out[1] == [
        {"id": 1, "box": [0.0, 0.0, 8.0, 8.0], "k": 0}
    ]


def test_run_options_default_to_the_variant_then_the_class() -> None:
    assert (_ToyDetector(device="cpu").batch_size, _ToyDetector(device="cpu").gpu_share) == (
        32,
        0.5,
    )
    big = _ToyDetector("big", device="cpu")
    assert (big.batch_size, big.gpu_share) == (4, 1.0)
    assert _ToyDetector("big", device="cpu", gpu_share=0.5, batch_size=3).gpu_share == 0.5
    info = _ToyDetector.describe("big")
    assert (info["batch_size"], info["gpu_share"], info["output_kind"]) == (4, 1.0, "structs")
    with pytest.raises(TypeError, match="gpu_share"):
        _ToyDetector(device="cpu", gpu_share=True)


class _WrongCount(_ToyDetector):
    def _forward(self, images: np.ndarray) -> list[list[dict]]:
        return [[] for _ in range(len(images) + 1)]


class _ToyCaptioner(_ToyDetector):
    task, output_columns, output_kind = "caption", ("caption",), "text"

    def _forward(self, images: np.ndarray) -> list[str]:
        return [f"image {int(img[0, 0, 0])}" for img in images]


def test_outputs_are_checked_against_the_declared_kind() -> None:
    with pytest.raises(RuntimeError, match="4 items for 3 images"):
        _WrongCount(device="cpu")({"image": _numbered(3)})
    captions = _ToyCaptioner(device="cpu", batch_size=2)({"image": _numbered(3)})["caption"]
    assert captions.dtype == object and list(captions) == ["image 0", "image 1", "image 2"]

    class NotText(_ToyCaptioner):
        def _forward(self, images: np.ndarray) -> list[list[dict]]:
            return [[] for _ in images]

    with pytest.raises(RuntimeError, match="item 0 is list; output_kind 'text'"):
        NotText(device="cpu")({"image": _numbered(2)})


def test_backend_declarations_are_checked_on_registration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry_mod, "_REGISTRY", dict(registry_mod._REGISTRY))

    class BadKind(_ToyDetector):
        name = "bad-kind"
        output_kind = "boxes"

    class BadShare(_ToyDetector):
        name = "bad-share"
        default_gpu_share = 2.0

    class OldShare(_ToyDetector):
        name = "old-share"
        gpu_share = 0.5

    with pytest.raises(TypeError, match="output_kind must be one of"):
        register_backend(BadKind)
    with pytest.raises(TypeError, match="default_gpu_share"):
        register_backend(OldShare)
    with pytest.raises(ValueError, match="gpu_share"):
        register_backend(BadShare)
    with pytest.raises(TypeError, match="output_kind"):
        BadKind(device="cpu")
    assert register_backend(_ToyDetector) is _ToyDetector


# ----- CLIP text, missing libraries, preprocessing --------------------------------------------


def test_clip_text_encoding(tiny: dict[str, ModelBackend]) -> None:
    clip = tiny["clip"]
    texts = ["a photo of a cat", "a diagram of a bridge", "a photo of a cat"]
    emb = clip.encode_text(texts)
    assert emb.shape == (3, clip.dim) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert float(emb[0] @ emb[1]) < 0.9999
    np.testing.assert_allclose(emb[0], emb[2], atol=1e-6)
    assert clip.encode_text([]).shape == (0, clip.dim)
    with pytest.raises(TypeError, match="list of strings"):
        clip.encode_text("a cat")


@pytest.mark.parametrize(
    ("name", "module", "extra"),
    [("clip", "open_clip", "clip"), ("dino", "transformers", "dino"), ("clip", "torch", "clip")],
)
def test_missing_library_names_the_extra(
    name: str, module: str, extra: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(ImportError, match=rf"pip install 'exoray\[{extra}\]'"):
        load_backend(f"{name}:tiny", cache_dir=tmp_path)
    with pytest.raises(ImportError, match=rf"pip install 'exoray\[{extra}\]'"):
        describe_backend(f"{name}:tiny", cache_dir=tmp_path)


def test_tensor_preprocessing_matches_open_clip_pil_pipeline() -> None:
    import torch
    from open_clip.transform import image_transform
    from PIL import Image

    from exoray.models.preprocess import ImageTransform

    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    yy, xx = np.mgrid[0:96, 0:96]
    img = np.stack([xx * 2.5, yy * 2.5, (xx + yy) * 1.2], axis=-1).clip(0, 255).astype(np.uint8)
    ref = image_transform(64, is_train=False, mean=mean, std=std, interpolation="bicubic")
    expected = ref(Image.fromarray(img)).numpy()
    ours = ImageTransform(resize=64, crop=(64, 64), mean=mean, std=std)(img[None], "cpu")
    assert isinstance(ours, torch.Tensor) and ours.shape == (1, 3, 64, 64)
    assert np.abs(ours[0].numpy() - expected).mean() < 0.02


def test_preprocessing_center_crops_non_square_input() -> None:
    from exoray.models.preprocess import ImageTransform, square_images

    img = np.zeros((20, 60, 3), np.uint8)
    img[:, 20:40] = 255  # only the central third is white
    sq = square_images([img], 20)
    assert sq.shape == (1, 20, 20, 3) and sq.min() == 255
    t = ImageTransform(
        resize=10, crop=(10, 10), mean=(0, 0, 0), std=(1, 1, 1), interpolation="nearest"
    )
    assert np.allclose(t(img[None], "cpu").numpy(), 1.0)
