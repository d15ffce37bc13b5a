"""COCO run-length encoded masks without pycocotools: encode, decode, area, box, display.

The sam task stores each mask as COCO's compressed RLE (``{"counts": str, "size": [h, w]}``), so
files open in any COCO tool, but exoray itself must not need pycocotools (a C build, often
missing where notebooks read results). The format, as pycocotools' ``maskApi.c`` writes it:
the mask is read column-major (Fortran order) into run lengths that start with a run of 0s
(possibly empty); each count from the fourth on is stored as the difference to the count two
before it, and every number is written in 5-bit groups, low bits first, as ASCII
``48 + group`` with 0x20 set on all but the last group (whose 0x10 bit is the sign).

Everything here is vectorised numpy: the string codec works on whole arrays of counts, so a
1024x768 mask encodes in about a millisecond whatever its number of runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def mask_counts(mask: np.ndarray) -> np.ndarray:
    """A 2-D mask -> int64 run lengths in column-major order, starting with a 0-run."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return np.zeros(1, np.int64)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    counts = np.diff(bounds).astype(np.int64)
    return np.concatenate(([0], counts)) if flat[0] else counts


def tensor_counts(masks: Any) -> list[np.ndarray]:
    """A torch bool tensor (b, h, w), on any device -> `mask_counts` of each mask.

    The change positions are found on the tensor's device in one call (they come grouped by
    mask, in order), so only they travel to the host; no torch import is needed here.
    """
    b, h, w = (int(v) for v in masks.shape)
    flat = masks.permute(0, 2, 1).flatten(1)  # column-major
    change = (flat[:, 1:] ^ flat[:, :-1]).nonzero()
    per_mask = change[:, 0].bincount(minlength=b).cpu().numpy()
    ends = (change[:, 1] + 1).cpu().numpy().astype(np.int64)
    first = flat[:, 0].cpu().numpy().astype(bool) if h * w else np.zeros(b, bool)
    out = []
    for i, part in enumerate(np.split(ends, np.cumsum(per_mask)[:-1]) if b else []):
        counts = np.diff(np.concatenate(([0], part, [h * w])))
        out.append(np.concatenate(([0], counts)) if first[i] else counts)
    return out


def counts_to_string(counts: Sequence[int] | np.ndarray) -> str:
    """Uncompressed counts -> COCO's compressed string (pycocotools' ``rleToString``)."""
    cnts = np.asarray(counts, dtype=np.int64).ravel()
    if cnts.size == 0:
        return ""
    x = cnts.copy()
    x[3:] -= cnts[1:-2]  # deltas to the count two before, from the fourth count on
    # Characters per number: the fewest 5-bit groups whose two's complement holds it.
    bits = np.where(x < 0, ~x, x)  # magnitude bits, sign excluded
    length = np.maximum(1, (_bit_length(bits) + 1 + 4) // 5)  # +1 sign bit, ceil(/5)
    idx = np.arange(int(length.max()), dtype=np.int64)
    groups = (x[:, None] >> (5 * idx)) & 0x1F  # arithmetic shift, like maskApi.c
    more = idx[None, :] < (length[:, None] - 1)
    chars = (groups | np.where(more, 0x20, 0)) + 48
    keep = idx[None, :] < length[:, None]
    return chars[keep].astype(np.uint8).tobytes().decode("ascii")


def string_to_counts(text: str | bytes) -> np.ndarray:
    """COCO's compressed string -> int64 run lengths (pycocotools' ``rleFrString``)."""
    raw = text.encode("ascii") if isinstance(text, str) else bytes(text)
    c = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) - 48
    if c.size == 0:
        return np.zeros(0, np.int64)
    if (c < 0).any() or (c > 63).any() or c[-1] & 0x20:
        raise ValueError("not a COCO compressed RLE string (bad character or truncated)")
    last = (c & 0x20) == 0  # the final group of each number
    number = np.concatenate(([0], np.cumsum(last)[:-1]))  # which number each group belongs to
    starts = np.flatnonzero(np.concatenate(([True], last[:-1])))
    pos = np.arange(c.size) - starts[number]  # group index within its number
    x = np.zeros(int(last.sum()), np.int64)
    np.add.at(x, number, (c & 0x1F) << (5 * pos))
    ends = np.flatnonzero(last)
    negative = (c[ends] & 0x10) != 0
    x[negative] -= np.int64(1) << (5 * (pos[ends][negative] + 1))  # sign-extend
    cnts = x.copy()
    cnts[1::2] = np.cumsum(x[1::2])  # undo the deltas: each parity is its own running sum
    cnts[2::2] = np.cumsum(x[2::2])
    return cnts


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """A boolean (h, w) mask -> ``{"counts": str, "size": [h, w]}`` (pycocotools' encode)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"encode_rle expects one (h, w) mask, got shape {mask.shape}")
    h, w = mask.shape
    return {"counts": counts_to_string(mask_counts(mask)), "size": [int(h), int(w)]}


def rle_counts(rle: Mapping[str, Any]) -> tuple[np.ndarray, int, int]:
    """(counts, h, w) of an RLE whose counts are a compressed string or a list of ints."""
    try:
        h, w = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"an RLE is {{'counts': str | list[int], 'size': [h, w]}} ({exc})"
                         ) from exc
    if isinstance(counts, (str, bytes)):
        cnts = string_to_counts(counts)
    else:
        cnts = np.asarray(counts, dtype=np.int64).ravel()
    if (cnts < 0).any() or int(cnts.sum()) != h * w:
        raise ValueError(f"RLE counts sum to {int(cnts.sum())}, not h*w = {h * w} for {h}x{w}")
    return cnts, h, w


def decode_rle(rle: Mapping[str, Any]) -> np.ndarray:
    """An RLE (compressed or uncompressed counts) -> boolean (h, w) mask."""
    cnts, h, w = rle_counts(rle)
    values = (np.arange(cnts.size) % 2).astype(bool)
    return np.repeat(values, cnts).reshape((w, h)).T


def rle_area(rle: Mapping[str, Any]) -> int:
    """Pixels in the mask, from the counts alone (no decode)."""
    cnts, _, _ = rle_counts(rle)
    return int(cnts[1::2].sum())


def rle_bbox(rle: Mapping[str, Any]) -> list[int]:
    """Pixel box ``[x0, y0, x1, y1]`` with exclusive x1/y1 (so width = x1 - x0), from the counts
    alone; ``[0, 0, 0, 0]`` for an empty mask."""
    cnts, h, _ = rle_counts(rle)
    ends = np.cumsum(cnts)
    starts = ends - cnts
    on = (np.arange(cnts.size) % 2 == 1) & (cnts > 0)
    if not on.any():
        return [0, 0, 0, 0]
    s, e = starts[on], ends[on] - 1  # first and last flat index of each run of 1s
    col_s, col_e = s // h, e // h
    spans = col_e > col_s  # a run crossing a column boundary covers its rows' whole range
    y0 = int(np.where(spans, 0, s % h).min())
    y1 = int(np.where(spans, h - 1, e % h).max())
    return [int(col_s.min()), y0, int(col_e.max()) + 1, y1 + 1]


def decode_all(rles: Sequence[Mapping[str, Any]], size: tuple[int, int] | None = None
               ) -> np.ndarray:
    """Several RLEs of one picture -> boolean (n, h, w); ``size`` (h, w) resizes (nearest)."""
    masks = [decode_rle(r) for r in rles]
    if not masks:
        h, w = size if size is not None else (0, 0)
        return np.zeros((0, h, w), bool)
    shapes = {m.shape for m in masks}
    if len(shapes) > 1:
        raise ValueError(f"masks of one picture must share one size, got {sorted(shapes)}")
    stack = np.stack(masks)
    return stack if size is None else resize_nearest(stack, size)


def resize_nearest(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(n, h, w) -> (n, H, W) by nearest neighbour (pixel centres), e.g. to the displayed size."""
    out_h, out_w = (int(v) for v in size)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"display size must be positive (h, w), got {size}")
    h, w = masks.shape[-2:]
    rows = np.minimum(((np.arange(out_h) + 0.5) * h / out_h).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(out_w) + 0.5) * w / out_w).astype(np.int64), w - 1)
    return masks[..., rows[:, None], cols[None, :]]


def image_masks(row: Mapping[str, Any], size: tuple[int, int] | None = None) -> np.ndarray:
    """One result row's masks (``row["masks"]``: structs with ``rle``) -> boolean (n, h, w).

    Works on a dict from ``pa.Table.to_pylist()`` or a pandas row. The masks come at the
    model's working resolution; pass the displayed picture's ``(h, w)`` to resize them to it.
    """
    masks = row["masks"]
    items = [] if masks is None else list(masks)
    return decode_all([m["rle"] for m in items], size)


def masks_to_image(rles: Sequence[Mapping[str, Any]], size: tuple[int, int] | None = None
                   ) -> np.ndarray:
    """Masks -> int32 (h, w) label map: 0 = no mask, i + 1 = ``rles[i]``.

    Larger masks are painted first, so a small part inside a large region stays visible (SAM's
    masks overlap: a whole object and its parts).
    """
    stack = decode_all(rles, size)
    labels = np.zeros(stack.shape[1:], np.int32)
    for i in np.argsort(-stack.sum(axis=(1, 2)), kind="stable"):
        labels[stack[i]] = i + 1
    return labels


def _bit_length(x: np.ndarray) -> np.ndarray:
    """Bit length of non-negative int64s (0 -> 0), exact for all values."""
    out = np.zeros(x.shape, np.int64)
    rest = x.copy()
    for shift in (32, 16, 8, 4, 2, 1):
        big = rest >= (np.int64(1) << shift)
        out[big] += shift
        rest[big] >>= shift
    return out + (rest > 0)
