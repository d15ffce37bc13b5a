"""Listing a big tree on Drive or an object store: by prefix, in parallel.

A recursive listing of an object store is one prefix listing without delimiter: pages of 1,000
keys fetched one after another (each page needs the previous page's token), so 1M images cost
1,000 sequential round trips. Split by the tree's own folders (S3 "common prefixes", Drive
folders) first, and the sub-trees list concurrently: the same requests, spread over threads.
``benchmarks/bench_listing.py`` measures both on a Drive-like and an S3-like latency.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pyarrow.fs as pafs

LIST_THREADS = 16  # concurrent listings: latency, not CPU, bounds them
MAX_SPLIT_DEPTH = 3  # how many folder levels are expanded to find enough prefixes


def list_tree(fs: pafs.FileSystem, base: str, *, threads: int = LIST_THREADS,
              allow_not_found: bool = True) -> list[pafs.FileInfo]:
    """Every entry under ``base`` (files and folders), like a recursive ``get_file_info``.

    Folder levels are listed one at a time (concurrently within a level) until there are at
    least ``threads`` sub-trees or ``MAX_SPLIT_DEPTH`` levels; then each sub-tree is listed
    recursively on its own thread. A flat folder costs exactly one recursive listing, as before.
    """
    base = base.rstrip("/")
    top = fs.get_file_info(pafs.FileSelector(base, allow_not_found=allow_not_found))
    found: list[pafs.FileInfo] = list(top)
    frontier = [i.path for i in top if i.type == pafs.FileType.Directory]
    if not frontier:
        return found
    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="exoray-list") as pool:
        depth = 1
        while len(frontier) < threads and depth < MAX_SPLIT_DEPTH:
            levels = list(pool.map(lambda p: fs.get_file_info(pafs.FileSelector(p)), frontier))
            frontier = []
            for infos in levels:
                found.extend(infos)
                frontier.extend(i.path for i in infos if i.type == pafs.FileType.Directory)
            if not frontier:
                return found
            depth += 1
        subtrees = pool.map(
            lambda p: fs.get_file_info(pafs.FileSelector(p, recursive=True)), frontier)
        for infos in subtrees:
            found.extend(infos)
    return found
