"""Phase VII core: vector indices, clustering and sampling over unit-norm embeddings.

Pure numpy + faiss + local files; no Ray. Wiring to BASE storage and the CLI lives elsewhere.
"""

from exoray.index.cluster import ClusterResult, spherical_kmeans
from exoray.index.faiss_index import (
    IndexFileError,
    IndexPaths,
    add_to_index,
    available_indices,
    build_index,
    index_kind,
    index_paths,
    index_supports_add,
    load_index_dir,
    save_index_dir,
    search_index,
)
from exoray.index.params import INDEX_KINDS, choose_index_kind, estimate_index_bytes
from exoray.index.sample import cluster_stratified_sample, kcenter_greedy, random_sample
from exoray.index.synthetic import clustered_vectors
from exoray.index.vector_index import VectorIndex
from exoray.index.vectors import l2_normalize

__all__ = [
    "INDEX_KINDS",
    "ClusterResult",
    "IndexFileError",
    "IndexPaths",
    "VectorIndex",
    "add_to_index",
    "available_indices",
    "build_index",
    "choose_index_kind",
    "cluster_stratified_sample",
    "clustered_vectors",
    "estimate_index_bytes",
    "index_kind",
    "index_paths",
    "index_supports_add",
    "kcenter_greedy",
    "l2_normalize",
    "load_index_dir",
    "random_sample",
    "save_index_dir",
    "search_index",
    "spherical_kmeans",
]
