"""Image issues (cleanvision-style) from Phase II features alone: no decoding, no new phase.

Every issue is one row of :data:`ISSUES`: a name, a score (a Phase II column or a function of the
collection), a direction (flag scores ``below`` or ``above`` the threshold), a default threshold
with the reason for it, and a one-line help. :func:`find_issues` turns the registry into one table
with a ``<name>_score`` and an ``is_<name>`` column per issue (the shape cleanvision gives), so a
later Phase IV subset flag is one more registry row and reads the same way.

How the scores relate to cleanvision's (which decodes every image again; we reuse Phase II, where
each image was measured once at a 512-px working size, see ``exoray.image.cheap_features``):

* dark / light: cleanvision flags an image when even its bright end is dark (99th percentile of
  brightness below 0.22; Datalab uses 0.32) or its dark end is light. Phase II keeps the luma
  mean and standard deviation, so the ends are estimated as mean +/- 2 std (about the 2nd and
  98th percentile of a bell-shaped histogram).
* blurry: cleanvision scores the spread of an edge filter. Our sharpness is the variance of the
  Laplacian, which also falls with contrast (a dark or foggy photo has weak edges without being
  out of focus, the case cleanvision patches with a dark-image correction), so the score divides
  it by the luma variance: high-frequency energy as a share of all contrast.
* low_information: entropy of the luma histogram, as cleanvision (it scales entropy by 0.1).
* odd_size is relative to the collection, as cleanvision's: the image's side (square root of its
  area) against the collection's median side. The other thresholds are absolute, as there.
* grayscale: cleanvision reads the file mode ('L'); Phase II's ``is_grayscale`` looks at the
  pixels, so RGB files holding gray pictures count too.
* exact/near duplicates: exact from the content hashes of the current files; near from
  ``features/dupes.parquet`` (perceptual hashes, plus embeddings if it was grouped with
  ``--model``), or grouped now from the perceptual hashes when that file does not exist.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from exoray.engine.readers import read_features
from exoray.storage.store import Store

__all__ = [
    "ISSUES",
    "Collection",
    "Issue",
    "IssueReport",
    "default_thresholds",
    "find_issues",
    "get_issue",
    "issue_names",
    "parse_thresholds",
    "threshold_names",
]

# Default max Hamming distance when near duplicates are grouped on the fly (as `exoray dupes`).
NEAR_MAX_DISTANCE = 6


class Collection:
    """Phase II rows of the images being checked, with cached float columns and duplicate data.

    Score functions receive this, so collection-relative scores (medians, group sizes) are
    computed once however many issues use them.
    """

    def __init__(self, features: pa.Table, dupes: pa.Table | None = None,
                 dupes_source: str = "") -> None:
        self.features = features
        self.dupes = dupes
        self.dupes_source = dupes_source
        self._cache: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return self.features.num_rows

    def column(self, name: str) -> np.ndarray:
        """A Phase II column as float64 (nulls as NaN)."""
        if name not in self._cache:
            col = self.features[name]
            if pa.types.is_boolean(col.type):
                col = col.cast(pa.float64())
            values = col.cast(pa.float64()).fill_null(math.nan)
            self._cache[name] = values.to_numpy() if len(values) else np.zeros(0)
        return self._cache[name]

    def median(self, values: np.ndarray) -> float:
        finite = values[np.isfinite(values)]
        return float(np.median(finite)) if finite.size else math.nan

    def near_groups(self) -> np.ndarray:
        """Per image: size of its near-duplicate group (0 if none). A group counts as near when
        it holds more than one distinct file content (not only byte-identical copies)."""
        if "near_group_size" not in self._cache:
            sizes = np.zeros(len(self))
            if self.dupes is not None and self.dupes.num_rows and len(self):
                pos = pc.index_in(self.dupes["image_id"], value_set=self.features["image_id"])
                ok = pos.is_valid().to_numpy(zero_copy_only=False)
                pos = pos.filter(pos.is_valid()).to_numpy(zero_copy_only=False).astype(np.int64)
                gid = self.dupes["group_id"].to_numpy()[ok].astype(np.int64)
                _, group, counts = np.unique(gid, return_inverse=True, return_counts=True)
                group = group.ravel()
                codes = _codes(self.features["content_hash"])[pos]
                pairs = np.unique(group * (int(codes.max(initial=0)) + 1) + codes)
                distinct = np.bincount(pairs // (int(codes.max(initial=0)) + 1),
                                       minlength=counts.size)
                near = (counts[group] >= 2) & (distinct[group] >= 2)
                sizes[pos[near]] = counts[group][near]
            self._cache["near_group_size"] = sizes
        return self._cache["near_group_size"]


def _codes(values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Dense integer code per value (nulls share one code)."""
    if len(values) == 0:
        return np.zeros(0, dtype=np.int64)
    if isinstance(values, pa.ChunkedArray):  # one array, so one dictionary for all rows
        values = values.combine_chunks()
    encoded = pc.dictionary_encode(values.fill_null(""))
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)


Score = Callable[[Collection], np.ndarray]


@dataclass(frozen=True)
class Issue:
    """One kind of issue: how to score every image and when the score is an issue.

    ``score`` is a Phase II column name or a function of the :class:`Collection`; an image has
    the issue when its score is ``below`` / ``above`` the threshold (``direction``). A yes/no
    issue has ``threshold=None`` and flags scores of 1. ``bounds`` are the valid thresholds.
    """

    name: str
    score: str | Score
    direction: str
    threshold: float | None
    help: str
    why: str = ""
    unit: str = ""
    columns: tuple[str, ...] = ()
    bounds: tuple[float, float] = (-math.inf, math.inf)
    relative: bool = False
    needs_dupes: bool = False

    def __post_init__(self) -> None:
        if self.direction not in ("below", "above"):
            raise ValueError(f"issue {self.name}: direction must be 'below' or 'above'")

    def scores(self, collection: Collection) -> np.ndarray:
        if isinstance(self.score, str):
            return collection.column(self.score)
        return np.asarray(self.score(collection), dtype=np.float64)

    def flags(self, scores: np.ndarray, threshold: float | None) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            if threshold is None:
                return scores >= 1.0
            return scores < threshold if self.direction == "below" else scores > threshold

    def rule(self, threshold: float | None) -> str:
        """The rule in words, e.g. ``score < 0.32``."""
        if threshold is None:
            return "yes/no"
        return f"{'<' if self.direction == 'below' else '>'} {threshold:g}"


# -- scores ---------------------------------------------------------------------------------------
def _bright_end(c: Collection) -> np.ndarray:
    return np.clip(c.column("brightness") + 2.0 * c.column("contrast"), 0.0, 1.0)


def _dark_end(c: Collection) -> np.ndarray:
    return np.clip(c.column("brightness") - 2.0 * c.column("contrast"), 0.0, 1.0)


def _focus(c: Collection) -> np.ndarray:
    # Laplacian variance (gray levels^2) over luma variance (gray levels^2), floored at one gray
    # level^2 so a perfectly flat image scores 0 instead of 0/0.
    luma_var = np.maximum((255.0 * c.column("contrast")) ** 2, 1.0)
    return c.column("sharpness") / luma_var


def _size_vs_median(c: Collection) -> np.ndarray:
    side = np.sqrt(c.column("width") * c.column("height"))
    median = c.median(side)
    if not median > 0:
        return np.full(side.shape, math.nan)
    ratio = side / median
    with np.errstate(divide="ignore"):
        return np.minimum(ratio, 1.0 / ratio)


def _aspect(c: Collection) -> np.ndarray:
    w, h = c.column("width"), c.column("height")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.minimum(w, h) / np.maximum(w, h)


def _short_side(c: Collection) -> np.ndarray:
    return np.minimum(c.column("width"), c.column("height"))


def _exact_copies(c: Collection) -> np.ndarray:
    """Per image: how many present images share its file bytes (itself included; 1 if none)."""
    content = c.features["content_hash"]
    if len(content) == 0:
        return np.zeros(0)
    valid = pc.and_(pc.is_valid(content), pc.greater(pc.utf8_length(content), 0))
    valid = valid.fill_null(False).to_numpy(zero_copy_only=False)
    codes = _codes(content)
    counts = np.bincount(codes)[codes].astype(np.float64)
    counts[~valid] = 1.0
    return counts


def _exact_score(c: Collection) -> np.ndarray:
    return (_exact_copies(c) >= 2).astype(np.float64)


def _near_score(c: Collection) -> np.ndarray:
    return (c.near_groups() >= 2).astype(np.float64)


# -- the registry ---------------------------------------------------------------------------------
ISSUES: tuple[Issue, ...] = (
    Issue("dark", _bright_end, "below", 0.32,
          "underexposed: even the bright end of the image is dark",
          why="cleanvision flags a 99th-percentile brightness below 0.22 and Datalab below 0.32; "
              "our bright end (mean + 2 std of luma) sits a little under the 99th percentile, so "
              "0.32 keeps night scenes with bright lights out",
          unit="bright end of luma, 0..1", columns=("brightness", "contrast"), bounds=(0.0, 1.0)),
    Issue("light", _dark_end, "above", 0.68,
          "overexposed or washed out: even the dark end of the image is light",
          why="the mirror of dark (1 - 0.32): a photo with any real shadow has its dark end far "
              "below 0.68; cleanvision's own light rule (5th percentile above 0.95) only catches "
              "nearly white frames",
          unit="dark end of luma, 0..1", columns=("brightness", "contrast"), bounds=(0.0, 1.0)),
    Issue("blurry", _focus, "below", 0.03,
          "out of focus or motion-blurred: little edge energy for the image's contrast",
          why="variance of the Laplacian at 512 px divided by the luma variance; sharp photos, "
              "even dark or foggy ones, score above 0.05 and Gaussian blur of 2 px or more at that "
              "size brings a photo under 0.02",
          unit="Laplacian variance / luma variance", columns=("sharpness", "contrast"),
          bounds=(0.0, math.inf)),
    Issue("low_information", "entropy", "below", 3.5,
          "nearly blank: a flat colour, a gradient or a few tones",
          why="Shannon entropy of the 256-bin luma histogram, 0..8 bits; photos, even dark ones, "
              "use 5 bits or more, 3.5 bits means about 11 equally used gray levels (cleanvision "
              "flags below 3 bits of its RGB entropy, which runs higher than luma entropy)",
          unit="bits", columns=("entropy",), bounds=(0.0, 8.0)),
    Issue("odd_aspect_ratio", _aspect, "below", 0.35,
          "very elongated: short side / long side",
          why="Datalab's cleanvision default; 0.35 is about 2.9:1, wider than 21:9 screens, so "
              "only strips, banners and panoramas are flagged",
          unit="short side / long side", columns=("width", "height"), bounds=(0.0, 1.0)),
    Issue("odd_size", _size_vs_median, "below", 0.2,
          "far smaller or larger than the rest of the collection",
          why="relative to the collection, as cleanvision: sqrt(width x height) against the "
              "collection's median, min(ratio, 1/ratio); 0.2 flags images 5x smaller or larger "
              "per side (cleanvision's original size ratio)",
          unit="min(ratio, 1/ratio) of side to median side", columns=("width", "height"),
          bounds=(0.0, 1.0), relative=True),
    Issue("tiny", _short_side, "below", 32.0,
          "too small to show anything: shorter side in pixels",
          why="whatever the collection, an image under 32 px on a side is an icon or a "
              "placeholder; models resize to 224 px and more",
          unit="px", columns=("width", "height"), bounds=(1.0, math.inf)),
    Issue("grayscale", "is_grayscale", "above", None,
          "no colour: the pixels are gray even if the file is RGB",
          why="Phase II's is_grayscale (channel spread per pixel, tolerant of JPEG chroma noise)",
          columns=("is_grayscale",)),
    Issue("exact_duplicates", _exact_score, "above", None,
          "byte-identical copies of another present image",
          why="same content hash (BLAKE2b-128) of the current files",
          columns=("content_hash",)),
    Issue("near_duplicates", _near_score, "above", None,
          "in a group of near-identical images that are not all byte-identical",
          why="features/dupes.parquet (perceptual hash within the Hamming distance of `exoray "
              "dupes`, plus embeddings if grouped with --model); regroup with `exoray dupes`",
          columns=("content_hash", "phash"), needs_dupes=True),
)


def issue_names() -> list[str]:
    return [i.name for i in ISSUES]


def get_issue(name: str) -> Issue:
    for issue in ISSUES:
        if issue.name == name:
            return issue
    raise ValueError(f"unknown issue {name!r}; valid issues: {', '.join(issue_names())}")


def threshold_names() -> list[str]:
    """Issues whose threshold can be set (yes/no issues have none)."""
    return [i.name for i in ISSUES if i.threshold is not None]


def default_thresholds() -> dict[str, float | None]:
    return {i.name: i.threshold for i in ISSUES}


def check_threshold(name: str, value: Any) -> float:
    """``value`` as the threshold of issue ``name``, or a one-line ValueError."""
    valid = threshold_names()
    if name not in valid:
        if name in issue_names():
            raise ValueError(f"issue {name!r} is yes/no and has no threshold; "
                             f"valid threshold names: {', '.join(valid)}")
        raise ValueError(f"unknown threshold {name!r}; valid threshold names: {', '.join(valid)}")
    issue = get_issue(name)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number):
        raise ValueError(f"threshold {name}={value!r} is not a number; e.g. "
                         f"{name}={issue.threshold:g}")
    lo, hi = issue.bounds
    if not lo <= number <= hi:
        span = f">= {lo:g}" if hi == math.inf else f"between {lo:g} and {hi:g}"
        raise ValueError(f"threshold {name}={value} is out of range; it must be {span} "
                         f"({issue.unit}, default {issue.threshold:g})")
    return number


def parse_thresholds(pairs: Iterable[str] | None) -> dict[str, float]:
    """``["dark=0.3", ...]`` (the CLI's ``--threshold NAME=VALUE``) as a checked dict."""
    out: dict[str, float] = {}
    for pair in pairs or ():
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--threshold {pair!r} must be NAME=VALUE, e.g. dark=0.3; valid "
                             f"names: {', '.join(threshold_names())}")
        out[name.strip()] = check_threshold(name.strip(), value.strip())
    return out


# -- finding issues -------------------------------------------------------------------------------
@dataclass
class IssueReport:
    """Per-image scores and flags (``<name>_score``, ``is_<name>``) plus what was used."""

    table: pa.Table
    thresholds: dict[str, float | None]
    issues: tuple[Issue, ...] = ISSUES
    dupes_source: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def images(self) -> int:
        return self.table.num_rows

    def count(self, name: str) -> int:
        return int(pc.sum(self.table[f"is_{name}"].cast(pa.int64())).as_py() or 0)

    def summary(self, examples: int = 3) -> list[dict[str, Any]]:
        """One dict per issue, most prevalent first: name, count, share, rule, examples."""
        rows = []
        for issue in self.issues:
            count = self.count(issue.name)
            worst = self.affected(issue.name).slice(0, examples)
            rows.append({
                "issue": issue.name,
                "count": count,
                "share": round(count / self.images, 4) if self.images else 0.0,
                "threshold": self.thresholds[issue.name],
                "direction": issue.direction if issue.threshold is not None else None,
                "relative": issue.relative,
                "help": issue.help,
                "examples": worst["relpath"].to_pylist(),
            })
        rows.sort(key=lambda r: (-r["count"], r["issue"]))
        return rows

    def affected(self, name: str) -> pa.Table:
        """Every image with issue ``name``: image_id, relpath, score, worst first."""
        issue = get_issue(name)
        hit = self.table.filter(self.table[f"is_{name}"])
        order = "ascending" if issue.direction == "below" and issue.threshold is not None \
            else "descending"
        out = hit.select(["image_id", "relpath", f"{name}_score"]).rename_columns(
            ["image_id", "relpath", "score"])
        return out.sort_by([("score", order), ("relpath", "ascending")])


def _feature_columns(issues: Sequence[Issue]) -> list[str]:
    cols = ["image_id", "fingerprint", "relpath"]
    for issue in issues:
        cols.extend(issue.columns)
    return list(dict.fromkeys(cols))


def _load_dupes(store: Store, features: pa.Table) -> tuple[pa.Table, str, list[str]]:
    """Current duplicate groups (image_id, group_id) and where they came from."""
    from pipelines import dupes as dupes_pipeline

    if dupes_pipeline.has_dupes(store):
        groups, notes = dupes_pipeline.present_groups(store, features=features)
        return groups.select(["image_id", "group_id"]), "features/dupes.parquet", notes
    from exoray.image.dupes import find_hash_duplicates

    # Content hashes are left out on purpose: byte-identical files share a phash anyway, and
    # near_duplicates tells them apart by content afterwards.
    groups = find_hash_duplicates(features["image_id"], pa.nulls(features.num_rows, pa.string()),
                                  features["phash"], max_distance=NEAR_MAX_DISTANCE)
    note = (f"no features/dupes.parquet: near duplicates grouped now from perceptual hashes "
            f"(distance {NEAR_MAX_DISTANCE}); `exoray dupes {store.location}` saves them")
    return groups.select(["image_id", "group_id"]), "perceptual hashes (not saved)", [note]


def find_issues(base: str | os.PathLike[str] | Store,
                thresholds: Mapping[str, float] | None = None, *,
                issues: Sequence[str] | None = None) -> IssueReport:
    """Score and flag every present image with Phase II features for each issue of ISSUES.

    ``thresholds`` override the defaults by issue name (checked like ``--threshold``);
    ``issues`` limits the work to some issues (default: all).
    """
    store = base if isinstance(base, Store) else Store(base)
    chosen = [get_issue(n) for n in issues] if issues is not None else list(ISSUES)
    used = default_thresholds()
    for name, value in (thresholds or {}).items():
        used[name] = check_threshold(name, value)
    features = read_features(store, _feature_columns(chosen))
    dupes, source, notes = (None, "", [])
    if any(i.needs_dupes for i in chosen) and features.num_rows:
        dupes, source, notes = _load_dupes(store, features)
    collection = Collection(features, dupes, source)
    columns: dict[str, Any] = {"image_id": features["image_id"], "relpath": features["relpath"]}
    for issue in chosen:
        scores = issue.scores(collection)
        columns[f"{issue.name}_score"] = pa.array(scores, type=pa.float64())
        columns[f"is_{issue.name}"] = pa.array(issue.flags(scores, used[issue.name]))
    table = pa.table(columns)
    used = {i.name: used[i.name] for i in chosen}
    return IssueReport(table=table, thresholds=used, issues=tuple(chosen), dupes_source=source,
                       notes=notes)
