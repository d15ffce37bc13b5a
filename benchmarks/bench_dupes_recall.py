"""Near-duplicate pair precision/recall on real photo edits, old (pHash only) vs new (pHash + dHash).

Two image sets, each: originals plus five edits of every original (resize 50 %, JPEG quality 40,
+20 % brightness, crop 2.5 % per side, crop 5 % per side) plus unrelated distractors:

* **real**: scikit-image's photos (``skimage.data``: astronaut, camera, chelsea, coffee, ...)
  and matplotlib's grace_hopper (a hold-out: not used while choosing the thresholds).
  Originals are each whole photo, its 2x2 quadrants and (large photos) its 3x3 tiles; distractors
  are random crops (20-60 % of each side, overlapping every other region of the same photo by
  IoU < 0.4, resized and recompressed at random) and the drawings (colour wheel, logo, ...).
* **synthetic**: ``exoray.dev.synth.make_image_set`` (its own near-duplicate groups and exact
  copies are ground truth too); plain scenes get the five edits, everything else is a distractor.

Hashes come from the project's own ``compute_features`` on the encoded bytes, so the real
pipeline's hashes are measured. Both methods group the same hashes; a pair counts as positive
when both images come from the same original. Also times both methods on random hashes (1M by
default) to show there is no all-pairs loop.

    python benchmarks/bench_dupes_recall.py                    # both sets + 1M-hash timing
    python benchmarks/bench_dupes_recall.py --timing-n 0       # quality only
    python benchmarks/bench_dupes_recall.py --baseline-rev 71429b8   # + the code before
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _common import machine, timed, wait_for_quiet
from PIL import Image, ImageEnhance

from exoray.image.cheap_features import compute_features
from exoray.image.dupes import DEFAULT_MAX_JOINT_DISTANCE, find_hash_duplicates

# Real photographs in skimage.data (cat() is chelsea() again; lily and palisades_of_vogt need a
# download), plus matplotlib's sample photo grace_hopper (when matplotlib is installed), which
# was not looked at while choosing the rule's thresholds. Drawings are distractors only.
REAL_PHOTOS = (
    "astronaut", "camera", "chelsea", "coffee", "coins", "rocket", "hubble_deep_field",
    "immunohistochemistry", "moon", "retina", "text", "page", "clock", "cell", "brick", "grass",
    "gravel", "grace_hopper",
)
DRAWINGS = ("colorwheel", "logo", "checkerboard", "horse", "microaneurysms")

EDITS: dict[str, Callable[[np.ndarray], bytes]] = {}


def _edit(name: str) -> Callable[[Callable[[np.ndarray], bytes]], Callable[[np.ndarray], bytes]]:
    def register(fn: Callable[[np.ndarray], bytes]) -> Callable[[np.ndarray], bytes]:
        EDITS[name] = fn
        return fn

    return register


def encode_jpeg(pixels: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def crop_sides(pixels: np.ndarray, fraction: float) -> np.ndarray:
    h, w = pixels.shape[:2]
    dy, dx = round(fraction * h), round(fraction * w)
    return pixels[dy : h - dy, dx : w - dx]


@_edit("original")
def _original(p: np.ndarray) -> bytes:
    return encode_jpeg(p)


@_edit("resize50")
def _resize50(p: np.ndarray) -> bytes:
    im = Image.fromarray(p)
    return encode_jpeg(np.asarray(im.resize((im.width // 2, im.height // 2), Image.LANCZOS)))


@_edit("jpeg40")
def _jpeg40(p: np.ndarray) -> bytes:
    return encode_jpeg(p, quality=40)


@_edit("bright20")
def _bright20(p: np.ndarray) -> bytes:
    return encode_jpeg(np.asarray(ImageEnhance.Brightness(Image.fromarray(p)).enhance(1.2)))


@_edit("crop2.5")
def _crop25(p: np.ndarray) -> bytes:
    return encode_jpeg(crop_sides(p, 0.025))


@_edit("crop5")
def _crop5(p: np.ndarray) -> bytes:
    return encode_jpeg(crop_sides(p, 0.05))


@dataclass
class Item:
    image_id: str
    group: str  # same group = same original (ground truth)
    edit: str  # EDITS key, or "distractor"
    data: bytes


def as_uint8(pixels: np.ndarray) -> np.ndarray:
    """skimage arrays to uint8 gray (H, W) or RGB (H, W, 3); alpha dropped."""
    if pixels.dtype == bool:
        pixels = pixels.astype(np.uint8) * 255
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        pixels = pixels[..., :3]
    return np.ascontiguousarray(pixels)


def load_photo(name: str) -> np.ndarray:
    """A photo from ``skimage.data``, or matplotlib's sample ``grace_hopper``."""
    if name == "grace_hopper":
        from matplotlib import cbook

        with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as im:
            return np.asarray(im.convert("RGB"))
    import skimage.data

    return as_uint8(getattr(skimage.data, name)())


def _regions(h: int, w: int) -> Iterator[tuple[str, tuple[int, int, int, int]]]:
    """Originals cut from one photo: whole, 2x2 quadrants (>= 300 px), 3x3 tiles (>= 500 px)."""
    yield "full", (0, 0, h, w)
    for grid, min_side in ((2, 300), (3, 500)):
        if min(h, w) < min_side:
            continue
        for r in range(grid):
            for c in range(grid):
                yield f"g{grid}r{r}c{c}", (r * h // grid, c * w // grid,
                                             (r + 1) * h // grid, (c + 1) * w // grid)


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    y0, x0, y1, x1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, y1 - y0) * max(0, x1 - x0)

    def area(r: tuple[int, int, int, int]) -> int:
        return (r[2] - r[0]) * (r[3] - r[1])

    return inter / (area(a) + area(b) - inter)


def real_items(seed: int = 0, *, photos: tuple[str, ...] = REAL_PHOTOS,
               distractors_per_photo: int = 30, max_iou: float = 0.4) -> list[Item]:
    """Originals (whole photos, quadrants, tiles) with their edits, plus unrelated crops."""
    import skimage.data

    rng = np.random.default_rng(seed)
    items: list[Item] = []
    for name in photos:
        try:
            photo = load_photo(name)
        except ImportError:  # matplotlib missing: grace_hopper is optional
            continue
        h, w = photo.shape[:2]
        taken = []
        for tag, (y0, x0, y1, x1) in _regions(h, w):
            taken.append((y0, x0, y1, x1))
            pixels = np.ascontiguousarray(photo[y0:y1, x0:x1])
            group = f"{name}/{tag}"
            for edit, fn in EDITS.items():
                items.append(Item(f"{group}/{edit}", group, edit, fn(pixels)))
        made = 0
        for _ in range(200 * distractors_per_photo):
            if made == distractors_per_photo:
                break
            ch, cw = (round(s * rng.uniform(0.2, 0.6)) for s in (h, w))
            y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            box = (y0, x0, y0 + ch, x0 + cw)
            if any(_iou(box, t) >= max_iou for t in taken):
                continue
            taken.append(box)
            im = Image.fromarray(np.ascontiguousarray(photo[box[0] : box[2], box[1] : box[3]]))
            f = rng.uniform(0.6, 1.0)
            im = im.resize((max(32, round(im.width * f)), max(32, round(im.height * f))),
                           Image.LANCZOS)
            group = f"{name}/crop{made}"
            items.append(Item(group, group, "distractor",
                              encode_jpeg(np.asarray(im), int(rng.integers(60, 96)))))
            made += 1
    for name in DRAWINGS:
        pixels = as_uint8(getattr(skimage.data, name)())
        items.append(Item(name, name, "distractor", encode_jpeg(pixels)))
    return items


def synthetic_items(workdir: Path, n: int = 400, seed: int = 0, *, edited: int = 60) -> list[Item]:
    """``make_image_set``: its near-dup groups and exact copies, ``edited`` plain scenes with
    the five edits, everything else a distractor."""
    import json

    from exoray.dev.synth import make_image_set

    root = workdir / f"dupes-recall-synth-n{n}-s{seed}"
    if not (root / "truth.json").is_file():
        make_image_set(root, n=n, seed=seed, overwrite=True)
    truth = json.loads((root / "truth.json").read_text("utf-8"))["images"]
    items: list[Item] = []
    n_edited = 0
    for rel in sorted(truth):
        info = truth[rel]
        data = (root / rel).read_bytes()
        if info.get("corrupt"):
            continue
        if info.get("near_dup_group") is not None:
            group = f"synth-group-{info['near_dup_group']}"
            items.append(Item(rel, group, f"synth-{info['variant']}", data))
        elif info.get("exact_dup_of"):
            items.append(Item(rel, info["exact_dup_of"], "synth-exact", data))
        elif info["kind"] == "scene" and n_edited < edited:
            n_edited += 1
            pixels = as_uint8(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
            for edit, fn in EDITS.items():
                items.append(Item(f"{rel}/{edit}", rel, edit, fn(pixels)))
        else:
            items.append(Item(rel, rel, "distractor", data))
    return items


def hashes_of(items: list[Item]) -> dict[str, list[str]]:
    """content_hash, phash and dhash from the project's own Phase II ``compute_features``."""
    cols: dict[str, list[str]] = {"content_hash": [], "phash": [], "dhash": []}
    for it in items:
        row = compute_features(it.data, name=it.image_id)
        for key, values in cols.items():
            values.append(str(row[key]))
    return cols


# --------------------------------------------------------------------------------------------
# scoring


def _labels(ids: list[str], table) -> np.ndarray:
    """Predicted group per image (singletons get their own label)."""
    pos = {image_id: i for i, image_id in enumerate(ids)}
    label = np.arange(len(ids), dtype=np.int64) + (1 << 40)
    for image_id, gid in zip(table.column("image_id").to_pylist(),
                             table.column("group_id").to_pylist(), strict=True):
        label[pos[image_id]] = gid
    return label


def pair_scores(items: list[Item], label: np.ndarray) -> dict[str, float]:
    """Pair precision/recall of a grouping against the items' ground-truth groups, plus recall
    of the (original, edit) pairs per edit."""
    truth = np.unique([it.group for it in items], return_inverse=True)[1].ravel()
    pred = np.unique(label, return_inverse=True)[1].ravel()
    # Pairs counted from the contingency table, no all-pairs matrix.
    joint = np.unique(truth * (pred.max() + 1) + pred, return_counts=True)[1]

    def pairs(counts: np.ndarray) -> int:
        return int((counts * (counts - 1) // 2).sum())

    tp = pairs(joint)
    true_pairs = pairs(np.bincount(truth))
    pred_pairs = pairs(np.bincount(pred))
    out = {"precision": tp / pred_pairs if pred_pairs else 1.0,
           "recall": tp / true_pairs if true_pairs else 1.0,
           "true_pairs": true_pairs, "predicted_pairs": pred_pairs, "false_pairs": pred_pairs - tp}
    original = {it.group: i for i, it in enumerate(items) if it.edit == "original"}
    for edit in EDITS:
        if edit == "original":
            continue
        hits = [label[i] == label[original[it.group]] for i, it in enumerate(items)
                if it.edit == edit and it.group in original]
        if hits:
            out[edit] = float(np.mean(hits))
    return out


def _print_scores(name: str, scores: dict[str, float]) -> None:
    edits = "  ".join(f"{k} {scores[k]:.2f}" for k in EDITS if k in scores)
    print(f"  {name:<26s} precision {scores['precision']:.3f}  recall {scores['recall']:.3f}  "
          f"(false pairs {scores['false_pairs']}, true pairs {scores['true_pairs']})")
    if edits:
        print(f"  {'':<26s} original-edit recall: {edits}")


def evaluate(title: str, items: list[Item], max_distance: int) -> None:
    cols = hashes_of(items)
    ids = [it.image_id for it in items]
    n_groups = len({it.group for it in items if it.edit != "distractor"})
    print(f"\n{title}: {len(items)} images, {n_groups} originals with copies, "
          f"{sum(it.edit == 'distractor' for it in items)} distractors")
    old = find_hash_duplicates(ids, cols["content_hash"], cols["phash"],
                               max_distance=max_distance)
    new = find_hash_duplicates(ids, cols["content_hash"], cols["phash"],
                               max_distance=max_distance, dhashes=cols["dhash"])
    old_label, new_label = _labels(ids, old), _labels(ids, new)
    _print_scores(f"old: pHash <= {max_distance}", pair_scores(items, old_label))
    _print_scores("new: + pHash/dHash joint", pair_scores(items, new_label))
    # The outside check's edits: resized, recompressed, brightened, cropped 2.5 % per side.
    keep = np.array([it.edit != "crop5" for it in items])
    subset = [it for it, k in zip(items, keep, strict=True) if k]
    for name, label in ((f"old: pHash <= {max_distance}", old_label),
                        ("new: + pHash/dHash joint", new_label)):
        scores = pair_scores(subset, label[keep])
        print(f"  without crop5: {name:<26s} precision {scores['precision']:.3f}  "
              f"recall {scores['recall']:.3f}")


# --------------------------------------------------------------------------------------------
# timing


def random_hashes(n: int, seed: int, planted: float = 0.01) -> tuple[list[str], list[str]]:
    """``n`` random 64-bit phash and dhash values (hex), ``planted`` of them near copies of
    another (phash 1..6 and dhash 0..6 bits flipped)."""
    rng = np.random.default_rng(seed)
    ph = rng.integers(0, 2**64, size=n, dtype=np.uint64)
    dh = rng.integers(0, 2**64, size=n, dtype=np.uint64)
    k = int(n * planted)
    copies = rng.choice(n, size=k, replace=False)
    bases = rng.choice(n, size=k)
    for arr, lo in ((ph, 1), (dh, 0)):
        flips = rng.integers(lo, 7, size=k)
        masks = np.zeros(k, dtype=np.uint64)
        for j in range(int(flips.max())):
            bit = rng.integers(0, 64, size=k).astype(np.uint64)
            masks |= np.where(j < flips, np.uint64(1) << bit, np.uint64(0))
        arr[copies] = arr[bases] ^ masks
    return [f"{int(x):016x}" for x in ph], [f"{int(x):016x}" for x in dh]


def brute_force_seconds(ph: list[str], dh: list[str], subset: int, max_joint: int) -> float:
    """Seconds of a vectorised all-pairs scan of the joint rule on ``subset`` hashes."""
    p = np.array([int(x, 16) for x in ph[:subset]], dtype=np.uint64)
    d = np.array([int(x, 16) for x in dh[:subset]], dtype=np.uint64)
    started = time.perf_counter()
    for lo in range(0, p.size, 1024):
        dp = np.bitwise_count(p[lo : lo + 1024, None] ^ p[None, lo:])
        dd = np.bitwise_count(d[lo : lo + 1024, None] ^ d[None, lo:])
        int(((dp <= 16) & (dp + dd <= max_joint)).sum())
    return time.perf_counter() - started


def head_finder(rev: str) -> Callable[..., object]:
    """``find_hash_duplicates`` as it was at git revision ``rev`` (self-contained module)."""
    import subprocess
    import types

    src = subprocess.run(["git", "show", f"{rev}:exoray/image/dupes.py"], check=True,
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    module = types.ModuleType(f"dupes_at_{rev}")
    exec(compile(src.stdout, f"{rev}:exoray/image/dupes.py", "exec"), module.__dict__)  # noqa: S102
    return module.find_hash_duplicates


def time_random(n: int, seed: int, max_distance: int, baseline_rev: str | None,
                wait_quiet: float) -> None:
    ph, dh = random_hashes(n, seed)
    ids = [f"img/{i:07d}.jpg" for i in range(n)]
    content = [f"{i:032x}" for i in range(n)]
    print(f"\ntiming on {n:,} random pHash/dHash values (1% planted near copies):")
    if baseline_rev:
        wait_for_quiet(wait_quiet)
        with timed(f"old code ({baseline_rev}): pHash <= {max_distance}"):
            head_finder(baseline_rev)(ids, content, ph, max_distance=max_distance)
    wait_for_quiet(wait_quiet)
    with timed(f"old rule: pHash <= {max_distance}"):
        old = find_hash_duplicates(ids, content, ph, max_distance=max_distance)
    wait_for_quiet(wait_quiet)
    with timed("new: + pHash/dHash joint"):
        new = find_hash_duplicates(ids, content, ph, max_distance=max_distance, dhashes=dh)
    print(f"  grouped images: old {old.num_rows:,}, new {new.num_rows:,}")
    m = min(n, 20_000)
    sub = brute_force_seconds(ph, dh, m, DEFAULT_MAX_JOINT_DISTANCE)
    print(f"  all-pairs scan of the joint rule on {m:,}: {sub:.2f} s -> estimated "
          f"{sub * (n / m) ** 2:,.0f} s for {n:,}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/exoray-bench")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-distance", type=int, default=6)
    parser.add_argument("--synthetic-n", type=int, default=400)
    parser.add_argument("--timing-n", type=int, default=1_000_000, help="0 skips the timing")
    parser.add_argument("--baseline-rev", default=None,
                        help="also time find_hash_duplicates as it was at this git revision "
                             "(e.g. 71429b8, before the joint rule)")
    parser.add_argument("--wait-quiet", type=float, default=60.0,
                        help="before each timing, wait up to this long for idle CPUs")
    args = parser.parse_args()
    print(machine())
    started = time.perf_counter()
    try:
        real = real_items(args.seed)
    except ImportError as exc:
        print(f"real photos skipped: {exc} (pip install scikit-image)")
    else:
        evaluate("real photos (skimage.data)", real, args.max_distance)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    evaluate("synthetic (make_image_set)", synthetic_items(workdir, args.synthetic_n, args.seed),
             args.max_distance)
    print(f"  [quality part: {time.perf_counter() - started:.0f} s]")
    if args.timing_n:
        time_random(args.timing_n, args.seed, args.max_distance, args.baseline_rev,
                    args.wait_quiet)


if __name__ == "__main__":
    main()
