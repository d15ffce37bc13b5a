"""Which index kind to build and with which parameters, as functions of (n, dim, memory).

Kept apart from the faiss calls so the choices are documented in one place and can be
tested (and read) without building anything.

Thresholds (all overridable by passing ``kind=`` explicitly):

* ``flat`` -- exact inner product, up to ``FLAT_MAX_VECTORS`` (300k) vectors when the float32
  vectors fit in ``MEMORY_FRACTION`` (half) of memory. One query scans every vector (~40 ms
  at 100k x 512 on 2 busy cores, ~100 ms at 1M): fine for a notebook click up to ~300k,
  and always exact.
* ``hnsw`` -- graph index (M=32) when the float32 vectors still fit in half of memory; the
  graph adds ~8*M bytes per vector, which the other half absorbs. ~0.2-0.3 ms per query;
  the build is the cost (~2 min for 1M x 512 on 2 cores).
* ``ivfpq`` -- when float32 vectors do not fit: IVF coarse lists + product-quantised codes
  (``dim/8`` bytes at 512-d) for candidate generation, re-ranked with an 8-bit
  scalar-quantised copy (``dim`` bytes): ~3.5x smaller than float32 at 512-d. PQ codes
  alone give recall@10 of only ~0.7-0.85 at 512-d, which is why the re-rank is there.

Measured numbers: ``benchmarks/bench_index.py``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

INDEX_KINDS: tuple[str, ...] = ("flat", "hnsw", "ivfpq")
"""Concrete kinds; ``build_index`` also accepts ``'auto'``."""

FLAT_MAX_VECTORS = 300_000
MEMORY_FRACTION = 0.5
IVFPQ_MIN_VECTORS = 1_000
"""Below this a PQ codebook cannot be trained meaningfully (and flat is instant anyway)."""

HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
"""efSearch 128: recall@10 1.00 at 100k and 0.97 at 1M (512-d clustered), ~0.25 ms/query."""

IVF_MIN_POINTS_PER_LIST = 39
"""faiss warns below 39 training points per centroid; we size nlist/nbits to stay above."""

REFINE_K_FACTOR = 16
"""IVF-PQ returns ``16 * k`` candidates that the 8-bit scalar-quantised copy re-ranks."""


@dataclass(frozen=True)
class IvfPqParams:
    """Everything ``build_index`` needs to make an IVF-PQ index for ``n`` vectors of ``dim``."""

    nlist: int
    m: int
    nbits: int
    nprobe: int
    n_train: int
    k_factor: int = REFINE_K_FACTOR


def system_memory_bytes() -> int:
    """Physical memory of this machine (the VM's on Colab); 8 GiB if the OS will not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8 * 1024**3


def estimate_index_bytes(kind: str, n: int, dim: int) -> int:
    """Approximate resident size of an index of ``kind`` over ``n`` vectors of ``dim``."""
    check_kind(kind, INDEX_KINDS)
    if kind == "flat":
        return 4 * n * dim
    if kind == "hnsw":
        # level-0 links (2*M int32) + upper levels (~M/... small) + level bookkeeping.
        return n * (4 * dim + 8 * HNSW_M + 16)
    m = pq_subquantizers(dim)
    # PQ code + int64 list id + SQ8 refine copy.
    return n * (m + 8 + dim)


def choose_index_kind(n: int, dim: int, memory_bytes: int | None = None) -> str:
    """Pick ``'flat'``, ``'hnsw'`` or ``'ivfpq'`` for ``n`` vectors of ``dim`` (see module doc).

    ``memory_bytes`` defaults to this machine's physical memory. Tiny collections
    (< ``IVFPQ_MIN_VECTORS``) are always flat. When even IVF-PQ would not fit, ``'ivfpq'`` is
    still returned: it is the smallest kind on offer.
    """
    if n < 1 or dim < 1:
        raise ValueError(f"choose_index_kind needs n >= 1 and dim >= 1; got n={n}, dim={dim}")
    memory = system_memory_bytes() if memory_bytes is None else memory_bytes
    if memory <= 0:
        raise ValueError(f"memory_bytes must be positive; got {memory_bytes}")
    budget = memory * MEMORY_FRACTION
    float32_bytes = 4 * n * dim
    if n < IVFPQ_MIN_VECTORS:
        return "flat"
    if n <= FLAT_MAX_VECTORS and float32_bytes <= budget:
        return "flat"
    if float32_bytes <= budget:
        return "hnsw"
    return "ivfpq"


def pq_subquantizers(dim: int) -> int:
    """Number of PQ sub-vectors (= code bytes): dim/4 up to 256-d, dim/8 above, a divisor of dim.

    Finer codes at low dim keep the candidate list good enough for the re-rank; at 512-d
    64 bytes already put >98% of the true top-10 among the 16*k candidates.
    """
    target = max(1, min(dim // 4, max(64, dim // 8)))
    for m in range(target, 0, -1):
        if dim % m == 0:
            return m
    return 1


def ivfpq_params(n: int, dim: int) -> IvfPqParams:
    """Choose nlist, PQ layout, nprobe and training-sample size for ``n`` vectors of ``dim``.

    nlist ~ 2*sqrt(n) (1M -> 2000 lists of ~500) keeps coarse training to tens of seconds
    on 2 cores; the sample holds 64 points per list (at least 16k) so k-means is well fed;
    nbits drops below 8 only for small n so every PQ centroid has >= 39 training points;
    nprobe probes ~4% of lists (at least 8), which with the 16x re-rank gives recall@10
    >= 0.95 on clustered 512-d data.
    """
    if n < IVFPQ_MIN_VECTORS:
        raise ValueError(
            f"kind='ivfpq' needs at least {IVFPQ_MIN_VECTORS} vectors to train; got {n}. "
            f"Use kind='flat' or 'hnsw' (valid kinds: {', '.join(INDEX_KINDS)})"
        )
    nlist = max(1, round(2 * math.sqrt(n)))
    n_train = min(n, max(64 * nlist, 16_384))
    nlist = max(1, min(nlist, n_train // IVF_MIN_POINTS_PER_LIST))
    nbits = int(min(8, max(4, math.floor(math.log2(n_train / IVF_MIN_POINTS_PER_LIST)))))
    nprobe = min(nlist, max(8, math.ceil(0.04 * nlist)))
    return IvfPqParams(
        nlist=nlist, m=pq_subquantizers(dim), nbits=nbits, nprobe=nprobe, n_train=n_train
    )


def check_kind(kind: str, valid: tuple[str, ...] = INDEX_KINDS) -> None:
    """Raise a ValueError naming ``kind`` and listing the valid kinds."""
    if kind not in valid:
        raise ValueError(f"unknown index kind {kind!r}; valid kinds: {', '.join(valid)}")
