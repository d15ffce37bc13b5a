"""Phase II cheap features, checked against the synthetic set's ground truth."""

from __future__ import annotations

import io
import itertools
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from exoray.dev.synth import make_image_set
from exoray.image.cheap_features import (
    FEATURE_COLUMNS,
    FEATURE_SCHEMA,
    WORKING_SIDE,
    compute_features,
    hamming_hex,
)
from exoray.image.decode import DecodeError


def encode(arr: np.ndarray, fmt: str = "JPEG", **kw: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict[str, dict]]:
    """A 150-file synthetic set (with bad files) and the features of every decodable file."""
    root = tmp_path_factory.mktemp("synth")
    truth = make_image_set(root, 150, seed=3, corrupt=True)
    feats = {}
    for rel, t in truth["images"].items():
        if not t["corrupt"]:
            feats[rel] = compute_features((root / rel).read_bytes(), name=rel)
    return truth["images"], feats


def values(truth: dict, feats: dict, key: str, **where: object) -> np.ndarray:
    rows = [r for r in feats if all(truth[r][k] == v for k, v in where.items())]
    return np.array([feats[r][key] for r in rows], dtype=float)


# --------------------------------------------------------------------------- the row itself


def test_row_has_every_column_and_fits_the_schema(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = encode(rng.integers(0, 256, (300, 700, 3), dtype=np.uint8))
    row = compute_features(data, name="noise.jpg")
    assert list(row) == [name for name, _ in FEATURE_COLUMNS]
    table = pa.Table.from_pylist([row, row], schema=FEATURE_SCHEMA)
    assert table.num_rows == 2
    assert (row["width"], row["height"], row["format"], row["mode"]) == (700, 300, "JPEG", "RGB")
    assert row["bytes"] == len(data)
    assert row["aspect"] == pytest.approx(700 / 300)
    assert len(row["phash"]) == 16 and len(row["dhash"]) == 16
    assert len(row["content_hash"]) == 32
    assert int(row["phash"], 16) >= 0 and int(row["content_hash"], 16) >= 0  # valid hex


def test_constant_images_have_obvious_values() -> None:
    white = compute_features(encode(np.full((64, 96, 3), 255, np.uint8), "PNG"))
    assert white["brightness"] == pytest.approx(1.0)
    assert white["contrast"] == pytest.approx(0.0, abs=1e-6)
    assert white["entropy"] == pytest.approx(0.0, abs=1e-9)
    assert white["sharpness"] == pytest.approx(0.0, abs=1e-6)
    assert white["edge_density"] == 0.0
    assert white["saturation"] == pytest.approx(0.0) and white["colorfulness"] < 1e-6
    assert white["is_grayscale"] is True

    red = compute_features(encode(np.tile(np.array([255, 0, 0], np.uint8), (64, 96, 1)), "PNG"))
    assert (red["mean_r"], red["mean_g"], red["mean_b"]) == (255.0, 0.0, 0.0)
    assert red["saturation"] == pytest.approx(1.0)
    # Hasler-Suesstrunk on a flat colour: only the 0.3 * |mean opponent| term remains.
    assert red["colorfulness"] == pytest.approx(0.3 * np.hypot(255, 127.5), rel=1e-4)
    assert red["is_grayscale"] is False


def test_half_black_half_white_entropy_and_contrast() -> None:
    arr = np.zeros((100, 100, 3), np.uint8)
    arr[:, 50:] = 255
    row = compute_features(encode(arr, "PNG"))
    assert row["entropy"] == pytest.approx(1.0)
    assert row["contrast"] == pytest.approx(0.5)
    assert 0 < row["edge_density"] < 0.05


def test_size_is_the_displayed_full_size_but_stats_use_the_working_size() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.new("RGB", (1500, 600), (10, 200, 30)).save(buf, "JPEG", exif=exif)
    row = compute_features(buf.getvalue())
    assert (row["width"], row["height"]) == (600, 1500)
    assert row["aspect"] == pytest.approx(0.4)
    assert WORKING_SIDE == 512


def test_blurring_lowers_sharpness_and_edges() -> None:
    rng = np.random.default_rng(5)
    sharp = np.full((600, 900, 3), 120, np.uint8)
    for _ in range(40):
        x, y = int(rng.integers(0, 900)), int(rng.integers(0, 600))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.circle(sharp, (x, y), int(rng.integers(5, 60)), color, -1, cv2.LINE_AA)
    sharp = cv2.add(sharp, rng.integers(0, 20, sharp.shape, dtype=np.uint8))
    for sigma in (1.5, 4.0):
        blurred = cv2.GaussianBlur(sharp, (0, 0), sigma)
        a, b = compute_features(encode(sharp)), compute_features(encode(blurred))
        assert b["sharpness"] < 0.5 * a["sharpness"]
        assert b["edge_density"] < a["edge_density"]


def test_grayscale_jpeg_with_chroma_noise_is_still_grayscale() -> None:
    rng = np.random.default_rng(2)
    gray = cv2.GaussianBlur(rng.integers(0, 256, (400, 400), dtype=np.uint8), (0, 0), 3)
    rgb_gray = cv2.merge([gray, gray, gray])
    assert compute_features(encode(rgb_gray, quality=70))["is_grayscale"] is True
    assert compute_features(encode(gray, quality=70))["is_grayscale"] is True
    tinted = rgb_gray.copy()
    tinted[..., 0] = cv2.add(tinted[..., 0], 40)  # a visible colour cast everywhere
    assert compute_features(encode(tinted))["is_grayscale"] is False


def test_bad_input_raises_decode_error() -> None:
    with pytest.raises(DecodeError) as info:
        compute_features(b"not an image at all", name="notes.jpg")
    assert info.value.kind == "not_image" and "notes.jpg" in str(info.value)
    big = encode(np.zeros((100, 100, 3), np.uint8), "PNG")
    with pytest.raises(DecodeError, match="bomb"):
        compute_features(big, max_pixels=9_999)


def test_hamming_hex() -> None:
    assert hamming_hex("0000000000000000", "0000000000000000") == 0
    assert hamming_hex("ffffffffffffffff", "0000000000000000") == 64
    assert hamming_hex("8000000000000001", "0000000000000000") == 2
    with pytest.raises(ValueError, match="length"):
        hamming_hex("ff", "fff")
    with pytest.raises(ValueError, match="hex"):
        hamming_hex("zz", "00")


def test_a_2mp_jpeg_takes_milliseconds() -> None:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (75, 110, 3), dtype=np.uint8)
    arr = cv2.resize(small, (1760, 1200), interpolation=cv2.INTER_CUBIC)  # 2.1 MP
    data = encode(cv2.add(arr, rng.integers(0, 12, arr.shape, dtype=np.uint8)), quality=85)
    compute_features(data)  # warm up (imports, thread setting)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        compute_features(data)
        times.append(time.perf_counter() - start)
    # ~15 ms on one idle core; the bound only catches accidental full-resolution work.
    assert min(times) < 0.15


# --------------------------------------------------------------------------- synthetic truth


def test_synth_exposure_order(synth_set: tuple[dict, dict]) -> None:
    truth, feats = synth_set
    dark = values(truth, feats, "brightness", exposure="dark")
    normal = values(truth, feats, "brightness", exposure="normal")
    light = values(truth, feats, "brightness", exposure="light")
    assert len(dark) and len(normal) and len(light)
    assert dark.max() < normal.min()
    assert normal.max() < light.min()


def test_synth_blurred_images_are_less_sharp(synth_set: tuple[dict, dict]) -> None:
    truth, feats = synth_set
    blurred = values(truth, feats, "sharpness", blurred=True)
    sharp = values(truth, feats, "sharpness", blurred=False, flat=False, exposure="normal")
    assert len(blurred) >= 5
    assert blurred.max() < np.percentile(sharp, 5)


def test_synth_grayscale_flag(synth_set: tuple[dict, dict]) -> None:
    truth, feats = synth_set
    assert values(truth, feats, "is_grayscale", grayscale=True).all()
    assert not values(truth, feats, "is_grayscale", grayscale=False, flat=False).any()


def test_synth_flat_images_have_least_information(synth_set: tuple[dict, dict]) -> None:
    truth, feats = synth_set
    flat = values(truth, feats, "entropy", flat=True)
    other = values(truth, feats, "entropy", flat=False)
    assert len(flat) and flat.max() < other.min()


def test_synth_exact_duplicates_share_content_hash(synth_set: tuple[dict, dict]) -> None:
    truth, feats = synth_set
    dups = [r for r in feats if truth[r]["exact_dup_of"]]
    assert dups
    for r in dups:
        assert feats[r]["content_hash"] == feats[truth[r]["exact_dup_of"]]["content_hash"]
    originals = {truth[r]["exact_dup_of"] for r in dups}
    distinct = {feats[r]["content_hash"] for r in feats}
    assert len(distinct) == len(feats) - len(dups) and originals <= set(feats)


def test_synth_phash_separates_near_duplicates_from_unrelated(
    synth_set: tuple[dict, dict],
) -> None:
    truth, feats = synth_set
    groups: dict[int, list[str]] = {}
    for r in feats:
        if truth[r]["near_dup_group"] is not None:
            groups.setdefault(truth[r]["near_dup_group"], []).append(r)
    assert groups and all(len(m) == 5 for m in groups.values())
    for members in groups.values():
        for a, b in itertools.combinations(members, 2):
            assert hamming_hex(feats[a]["phash"], feats[b]["phash"]) <= 10, (a, b)

    def family(r: str) -> str:
        t = truth[r]
        if t["near_dup_group"] is not None:
            return f"group{t['near_dup_group']}"
        return t["exact_dup_of"] or r

    # Flat images carry (almost) no structure, so their pHashes legitimately collide.
    scenes = [r for r in feats if not truth[r]["flat"]]
    dists = np.array(
        [
            hamming_hex(feats[a]["phash"], feats[b]["phash"])
            for a, b in itertools.combinations(scenes, 2)
            if family(a) != family(b)
        ]
    )
    assert len(dists) > 5000
    assert dists.min() > 16  # far above the near-duplicate threshold
    assert (dists > 20).mean() > 0.999
    assert np.median(dists) >= 30


def test_synth_odd_files_decode_like_the_truth(synth_set: tuple[dict, dict]) -> None:
    truth, feats = synth_set
    for rel, row in feats.items():
        t = truth[rel]
        assert (row["width"], row["height"], row["n_frames"]) == (
            t["width"],
            t["height"],
            t["n_frames"],
        ), rel
    modes = {truth[r]["kind"]: feats[r]["mode"] for r in feats}
    assert modes["cmyk"] == "CMYK" and modes["gray16"].startswith("I;16")
    assert modes["palette_alpha"] == "P" and modes["rgba"] == "RGBA"


# --------------------------------------------------------------------------- same definitions


def reference_stats(rgb: np.ndarray) -> dict[str, float]:
    """The column definitions written the direct way (float images, HSV, imagehash)."""
    import imagehash

    a = rgb.astype(np.float64)
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    rg, yb = r - g, 0.5 * (r + g) - b
    luma = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    hist = np.bincount(luma.ravel(), minlength=256) / luma.size
    p = hist[hist > 0]
    spread = rgb.max(axis=2).astype(int) - rgb.min(axis=2)
    # features v2: both hashes are imagehash's, of the luma area-averaged to 64 x 64
    thumb = Image.fromarray(cv2.resize(luma, (64, 64), interpolation=cv2.INTER_AREA))
    return {
        **{f"mean_{c}": a[..., i].mean() for i, c in enumerate("rgb")},
        **{f"std_{c}": a[..., i].std() for i, c in enumerate("rgb")},
        "brightness": luma.mean() / 255, "contrast": luma.std() / 255,
        "saturation": cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1].mean() / 255,
        "colorfulness": np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()),
        "entropy": -(p * np.log2(p)).sum(),
        "sharpness": cv2.Laplacian(luma, cv2.CV_64F).var(),
        "edge_density": np.count_nonzero(cv2.Canny(luma, 50, 150)) / luma.size,
        "is_grayscale": (spread > 24).mean() <= 0.005 and spread.mean() <= 4,
        "phash": str(imagehash.phash(thumb)), "dhash": str(imagehash.dhash(thumb)),
        "features_version": 2,
    }


@pytest.mark.parametrize("kind", ["photo-like", "gray", "saturated", "tiny"])
def test_fast_statistics_match_their_direct_definitions(kind: str) -> None:
    rng = np.random.default_rng(11)
    h, w = (3, 2) if kind == "tiny" else (300, 420)
    rgb = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (5, 5), 1.5)
    if kind == "gray":
        rgb = np.repeat(rgb[..., :1], 3, axis=2) + rng.integers(0, 3, (h, w, 3)).astype(np.uint8)
    if kind == "saturated":
        rgb[..., 2] = 0
    row = compute_features(encode(rgb, "PNG"))
    for key, want in reference_stats(rgb).items():
        if isinstance(want, (str, bool, np.bool_)):
            assert row[key] == want, key
        else:
            assert row[key] == pytest.approx(float(want), rel=1e-6, abs=1e-9), key


def test_compute_features_runs_on_one_thread() -> None:
    """Phase II runs one process per core: a feature that quietly starts a thread pool (numpy's
    BLAS for a dot product, OpenCV's own pool) doubles the CPU it costs and slows every worker.
    The CPU time this process spends must not exceed its wall time."""
    import resource

    rng = np.random.default_rng(5)
    images = [encode(cv2.GaussianBlur(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
                                      (5, 5), 2), fmt) for fmt in ("JPEG", "PNG", "WEBP") * 12]
    compute_features(images[0])

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    cpu0, wall0 = cpu(), time.perf_counter()
    for data in images:
        compute_features(data)
    used, wall = cpu() - cpu0, time.perf_counter() - wall0
    assert used <= 1.15 * wall + 0.05, f"{used:.2f}s CPU in {wall:.2f}s: more than one thread"
