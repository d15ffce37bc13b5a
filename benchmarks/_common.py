"""Helpers shared by the benchmark scripts: cached image sets, timers, machine facts, ratios.

Every benchmark compares exoray with a baseline measured in the same run, on the same machine and
the same files, and prints ratios; absolute seconds only mean something next to their baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DEFAULT_WORKDIR = os.path.join(os.environ.get("TMPDIR", "/tmp"), "exoray-bench")
REPO_ROOT = Path(__file__).resolve().parent.parent

# Quiet, offline, telemetry-free defaults for every benchmark process (and the Ray workers,
# which inherit the driver's environment).
BENCH_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TQDM_DISABLE": "1",
}


def bench_env() -> None:
    """Apply :data:`BENCH_ENV` (without overriding what the caller already set)."""
    for key, value in BENCH_ENV.items():
        os.environ.setdefault(key, value)


def bench_parser(doc: str, *, wait_quiet: float = 600.0) -> argparse.ArgumentParser:
    """The options every benchmark shares: --workdir, --seed, --wait-quiet."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--workdir", default=DEFAULT_WORKDIR, help="image cache and scratch BASEs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wait-quiet", type=float, default=wait_quiet,
                        help="before each timing, wait up to this many seconds for other "
                             "processes to leave the CPUs idle")
    return parser


def prepare_workdir(args: argparse.Namespace) -> None:
    """Benchmark environment plus a workdir that also holds exoray's local staging files."""
    bench_env()
    os.makedirs(args.workdir, exist_ok=True)
    os.environ.setdefault("EXORAY_STAGING", os.path.join(args.workdir, "staging"))


def warmed_image_set(workdir: str, n: int, *, seed: int) -> tuple[Path, list[Path]]:
    """The cached JPEG set of ``n`` images, read once so timings start from a warm page cache."""
    root = image_set(workdir, n, seed=seed)
    files = image_files(root)
    mb = warm_page_cache(files) / 1e6
    print(f"images: {len(files)} JPEGs, {mb:.0f} MB, in {root} (page cache warmed)\n")
    return root, files


def image_set(
    workdir: str | os.PathLike[str],
    n: int,
    *,
    seed: int = 0,
    min_megapixels: float = 1.0,
    max_megapixels: float = 3.0,
    formats: tuple[str, ...] = ("jpg",),
) -> Path:
    """A synthetic set in ``workdir``, generated once and reused by later runs (keyed by params).

    Returns the folder; its ``truth.json`` lists the files. Generation time is printed, never
    counted in a measurement.
    """
    from exoray.dev.synth import make_image_set

    tag = f"{'-'.join(formats)}-{min_megapixels:g}-{max_megapixels:g}mp-n{n}-s{seed}"
    root = Path(workdir) / f"images-{tag}"
    if (root / "truth.json").is_file():
        return root
    started = time.perf_counter()
    print(f"[setup] generating {n} synthetic images ({tag}) in {root} ...", flush=True)
    make_image_set(root, n=n, seed=seed, formats=formats, min_megapixels=min_megapixels,
                   max_megapixels=max_megapixels, overwrite=True)
    print(f"[setup] generated in {time.perf_counter() - started:.1f}s", flush=True)
    return root


def image_files(root: str | os.PathLike[str]) -> list[Path]:
    """The set's files (from truth.json), in a fixed order."""
    truth = json.loads((Path(root) / "truth.json").read_text("utf-8"))
    return [Path(root) / rel for rel in sorted(truth["images"])]


def linked_subset(root: Path, n: int, dest: Path) -> Path:
    """``dest`` holding hard links to the first ``n`` files of ``root`` (same bytes, no copy)."""
    files = image_files(root)[:n]
    marker = dest / ".complete"
    if marker.is_file() and marker.read_text() == str(len(files)):
        return dest
    for f in files:
        target = dest / f.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            os.link(f, target)
    (dest / "truth.json").write_text(json.dumps(
        {"n": len(files), "images": {str(f.relative_to(root)): {} for f in files}}))
    marker.write_text(str(len(files)))
    return dest


def warm_page_cache(files: list[Path]) -> int:
    """Read every file once so all contenders start from the same (warm) page cache."""
    total = 0
    for f in files:
        total += len(f.read_bytes())
    return total


def cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat; None where there is no /proc."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def cpu_busy(start: tuple[int, int] | None, end: tuple[int, int] | None) -> float | None:
    """Fraction of the machine's CPU time that was busy between two ``cpu_ticks`` samples."""
    if start is None or end is None or end[1] == start[1]:
        return None
    return (end[0] - start[0]) / (end[1] - start[1])


def wait_for_quiet(max_wait: float, *, threshold: float = 0.15, sample: float = 2.0) -> None:
    """Wait (at most ``max_wait`` s) until other processes leave the CPUs mostly idle.

    Timings on a 2-core machine shared with test runs are meaningless while those run; each
    timed block also prints how busy the whole machine was (see :func:`timed`).
    """
    waited = 0.0
    while True:
        a = cpu_ticks()
        time.sleep(sample)
        busy = cpu_busy(a, cpu_ticks())
        if busy is None or busy <= threshold:
            if waited:
                print(f"  [machine quiet after {waited:.0f}s of waiting]", flush=True)
            return
        if waited >= max_wait:
            print(f"  [WARNING: machine still {busy:.0%} busy after {waited:.0f}s; timing "
                  "anyway, numbers below are disturbed by other processes]", flush=True)
            return
        if waited == 0:
            print(f"  [machine {busy:.0%} busy with other work; waiting up to {max_wait:.0f}s]",
                  flush=True)
        waited += sample


@contextmanager
def timed(label: str, results: dict[str, float] | None = None) -> Iterator[None]:
    """Print (and store in ``results``) the wall time of the block, and how busy the machine
    was meanwhile (all processes: ~50% is one busy core of two, ~100% both)."""
    ticks = cpu_ticks()
    started = time.perf_counter()
    yield
    seconds = time.perf_counter() - started
    busy = cpu_busy(ticks, cpu_ticks())
    if results is not None:
        results[label] = seconds
    note = f"   [cpu busy {busy:4.0%}]" if busy is not None else ""
    print(f"  {label:<52s} {seconds:9.2f} s{note}", flush=True)


def start_ray(num_cpus: int = 2, **kwargs: object) -> float:
    """``ray.init`` like the tests do (no dashboard, ``num_cpus`` cores); returns its seconds."""
    import ray

    started = time.perf_counter()
    ray.init(num_cpus=num_cpus, include_dashboard=False, configure_logging=False,
             log_to_driver=False, **kwargs)
    return time.perf_counter() - started


def watch_first_part(folder: Path) -> dict[str, object]:
    """Start timing now; a background thread records ``seconds`` (and ``name``) when the first
    published part (``part-*.parquet``, never a hidden temporary) appears anywhere under
    ``folder``. Set ``stop`` in the returned dict to end the watch early."""
    import threading

    seen: dict[str, object] = {}
    started = time.perf_counter()

    def watch() -> None:
        while not seen.get("stop"):
            parts = list(folder.rglob("part-*.parquet")) if folder.is_dir() else []
            if parts:
                seen["seconds"] = time.perf_counter() - started
                seen["name"] = parts[0].name
                return
            time.sleep(0.05)

    threading.Thread(target=watch, daemon=True).start()
    return seen


def first_part_seconds(seen: dict[str, object]) -> float:
    """Seconds to the first part a :func:`watch_first_part` saw (NaN if none), ending the watch."""
    seen["stop"] = True
    return float(seen.get("seconds", float("nan")))  # type: ignore[arg-type]


def ratio_line(label: str, ours: float, theirs: float, goal: str = "") -> str:
    """``label: 3.10x`` where >1 means exoray took less time than the baseline."""
    r = theirs / ours if ours > 0 else float("inf")
    return f"  {label:<52s} {r:7.2f}x" + (f"   (goal {goal})" if goal else "")


def machine() -> str:
    """One line: cores, CPU model, Python and key library versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = []
    for mod in ("ray", "PIL", "numpy", "cv2", "torch"):
        m = sys.modules.get(mod)
        if m is not None:
            versions.append(f"{mod} {getattr(m, '__version__', '?')}")
    parts = [f"{os.cpu_count()} cores ({cpu})", f"Python {platform.python_version()}",
             *versions, f"exoray at {git_revision()}"]
    return ", ".join(parts)


def git_revision() -> str:
    """Short commit of the checkout, with ``+dirty`` when exoray/ or pipelines/ differ from it."""
    import subprocess

    def git(*args: str) -> str:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True,
                             text=True, check=False)
        return out.stdout.strip() if out.returncode == 0 else ""

    rev = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "exoray", "pipelines")
    return rev + ("+dirty" if dirty else "")
