"""Helpers shared by the benchmark scripts: cached image sets, timers, machine facts, ratios.

Every benchmark compares exoray with a baseline measured in the same run, on the same machine and
the same files, and prints ratios; absolute seconds only mean something next to their baseline.
"""

from __future__ import annotations

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
    from exoray.synth import make_image_set

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


@contextmanager
def timed(label: str, results: dict[str, float] | None = None) -> Iterator[None]:
    """Print (and store in ``results``) the wall time of the block."""
    started = time.perf_counter()
    yield
    seconds = time.perf_counter() - started
    if results is not None:
        results[label] = seconds
    print(f"  {label:<52s} {seconds:9.2f} s", flush=True)


def start_ray(num_cpus: int = 2, **kwargs: object) -> float:
    """``ray.init`` like the tests do (no dashboard, ``num_cpus`` cores); returns its seconds."""
    import ray

    started = time.perf_counter()
    ray.init(num_cpus=num_cpus, include_dashboard=False, configure_logging=False,
             log_to_driver=False, **kwargs)
    return time.perf_counter() - started


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
    return (f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
            + ", ".join(versions))
