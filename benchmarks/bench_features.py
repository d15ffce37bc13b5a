"""Benchmark Phase II (cheap features) against what a user would otherwise run, on one machine.

All contenders see the same synthetic images with a warm page cache, in one run: 1-3 MP JPEGs
(``--set jpeg``) or the mixed JPEG/PNG/WebP set ``exoray synth`` writes (``--set mixed``, mean
0.23 MP, the images people have):

* exoray: ``manifest.run`` + ``features.run`` on a fresh BASE, Ray (2 CPUs) started before timing;
* a careful sequential loop computing the same columns with PIL + numpy + imagehash (full decode,
  EXIF transpose, RGB; pixel statistics at the same 512 px working size exoray uses);
* cleanvision ``Imagelab(data_path=...).find_issues()`` (run with its own interpreter, see
  ``--cleanvision-python``; it uses 2 worker processes on a 2-core machine);
* decode only: ``Image.open(p).convert("RGB")`` for every file, sequentially and with Pool(2);
* for the breakdown, exoray's own ``compute_features`` without Ray, sequential and Pool(2).

* whole process as a new user runs it (``--skip`` ``cli`` to leave out): ``exoray manifest`` then
  ``exoray features`` as two fresh commands, all start-up included (the default executor: the
  local pool up to 20k images, else Ray), with the time from the features call to its first
  committed part;
* exoray's local pool in-process (``features.run(executor="local")``) next to the Ray pipeline;
* per-core scaling (``--cpus N``): ``compute_features`` in Pool(1) and Pool(N), images/s per core.

Then slow storage (``--latency-ms`` added to every file read; exoray runs in a subprocess whose
``Store.read_bytes`` sleeps, patched by a ``sitecustomize`` hook that the Ray workers inherit, and
every hooked read is counted) and the driver's peak memory at 2k vs 20k (tiny) images.

Before each timing the script waits (``--wait-quiet``) for other processes to leave the CPUs
idle, and prints how busy the whole machine was during each timed block.

    python benchmarks/bench_features.py                    # n=2000, everything (~20 min, 2 cores)
    python benchmarks/bench_features.py --n 300 --skip cleanvision memory
    python benchmarks/bench_features.py --set mixed --n 3000 --seed 3 --skip latency memory
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    bench_parser,
    cpu_busy,
    cpu_ticks,
    first_part_seconds,
    image_files,
    image_set,
    linked_subset,
    machine,
    prepare_workdir,
    ratio_line,
    start_ray,
    timed,
    wait_for_quiet,
    warm_page_cache,
    warmed_image_set,
    watch_first_part,
)

SECTIONS = ("baselines", "cleanvision", "exoray", "cli", "cpus", "latency", "memory")
WORKING_SIDE = 512  # exoray.image.cheap_features.WORKING_SIDE: the baseline uses the same working size

# --------------------------------------------------------------------------- baselines


def careful_features(path: str, latency_s: float = 0.0) -> dict[str, Any]:
    """The Phase II columns the way a careful user writes them with PIL + numpy + imagehash."""
    import imagehash
    from PIL import Image, ImageOps

    if latency_s:
        time.sleep(latency_s)  # slow storage: every open pays the latency
    with open(path, "rb") as f:
        data = f.read()
    with Image.open(io.BytesIO(data)) as im:
        fmt, mode, n_frames = im.format, im.mode, getattr(im, "n_frames", 1)
        upright = ImageOps.exif_transpose(im)  # full decode
        rgb = upright.convert("RGB")
    width, height = rgb.size
    rgb.thumbnail((WORKING_SIDE, WORKING_SIDE), Image.Resampling.BOX)  # stats at working size
    a = np.asarray(rgb, dtype=np.float32)
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    luma8 = np.clip(luma + 0.5, 0, 255).astype(np.uint8)
    hist = np.bincount(luma8.ravel(), minlength=256) / luma8.size
    p = hist[hist > 0]
    lap = (luma[1:-1, :-2] + luma[1:-1, 2:] + luma[:-2, 1:-1] + luma[2:, 1:-1]
           - 4 * luma[1:-1, 1:-1])
    grad = np.hypot(np.diff(luma, axis=1)[:-1, :], np.diff(luma, axis=0)[:, :-1])
    rg, yb = r - g, 0.5 * (r + g) - b
    spread = a.max(axis=2) - a.min(axis=2)
    return {
        "width": width, "height": height, "mode": mode, "format": fmt, "n_frames": n_frames,
        "bytes": len(data), "aspect": width / height,
        **{f"mean_{c}": float(a[..., i].mean()) for i, c in enumerate("rgb")},
        **{f"std_{c}": float(a[..., i].std()) for i, c in enumerate("rgb")},
        "brightness": float(luma.mean()) / 255, "contrast": float(luma.std()) / 255,
        "saturation": float(np.asarray(rgb.convert("HSV"))[..., 1].mean()) / 255,
        "colorfulness": float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())),
        "entropy": float(-(p * np.log2(p)).sum()),
        "sharpness": float(lap.var()),
        "edge_density": float((grad > 50).mean()),
        "is_grayscale": bool((spread > 24).mean() <= 0.005 and spread.mean() <= 4),
        "content_hash": hashlib.blake2b(data, digest_size=16).hexdigest(),
        "phash": str(imagehash.phash(rgb)),
        "dhash": str(imagehash.dhash(rgb)),
    }


def decode_only(path: str) -> int:
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB").size[0]


def exoray_compute(path: str) -> int:
    """exoray's per-image work without Ray: read + ``compute_features`` (for the breakdown)."""
    from exoray.image.cheap_features import compute_features

    with open(path, "rb") as f:
        return len(compute_features(f.read(), name=path))


def _import_pil(_: int) -> int:
    import imagehash  # noqa: F401
    from PIL import Image  # noqa: F401

    import exoray.image.cheap_features  # noqa: F401

    return 0


def run_baselines(files: list[Path], t: dict[str, float], wait: float) -> None:
    paths = [str(f) for f in files]
    print("baselines (warm page cache):", flush=True)
    wait_for_quiet(wait)
    with timed("decode only, sequential", t):
        for p in paths:
            decode_only(p)
    ctx = multiprocessing.get_context("spawn")  # never fork a process that may hold Ray threads
    with ctx.Pool(2) as pool:
        pool.map(_import_pil, range(4))  # workers started and imports done before timing
        wait_for_quiet(wait)
        with timed("decode only, Pool(2)", t):
            pool.map(decode_only, paths, chunksize=8)
        wait_for_quiet(wait)
        with timed("careful PIL+numpy+imagehash loop, Pool(2)", t):
            pool.map(careful_features, paths, chunksize=8)
        wait_for_quiet(wait)
        with timed("exoray compute_features, Pool(2), no Ray", t):
            pool.map(exoray_compute, paths, chunksize=8)
    wait_for_quiet(wait)
    with timed("careful PIL+numpy+imagehash loop, sequential", t):
        for p in paths:
            careful_features(p)
    wait_for_quiet(wait)
    with timed("exoray compute_features, sequential, no Ray", t):
        for p in paths:
            exoray_compute(p)


# --------------------------------------------------------------------------- cleanvision

CLEANVISION_SCRIPT = textwrap.dedent("""
    import json, sys, time
    t0 = time.perf_counter()
    from cleanvision import Imagelab
    t1 = time.perf_counter()
    lab = Imagelab(data_path=sys.argv[1])
    lab.find_issues()
    t2 = time.perf_counter()
    summary = {r["issue_type"]: int(r["num_images"]) for r in lab.issue_summary.to_dict("records")}
    print("CLEANVISION_RESULT " + json.dumps({"import_s": t1 - t0, "find_issues_s": t2 - t1,
                                             "images": int(len(lab.issues)), "issues": summary}))
""")


def run_cleanvision(python: str, root: Path, timeout: float) -> dict[str, Any]:
    out = subprocess.run([python, "-c", CLEANVISION_SCRIPT, str(root)], capture_output=True,
                         text=True, timeout=timeout, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("CLEANVISION_RESULT "):
            return json.loads(line.split(" ", 1)[1])
    raise RuntimeError(f"cleanvision failed (rc {out.returncode}):\n{out.stderr[-3000:]}")


def cleanvision_seconds(args: argparse.Namespace, root: Path, n: int,
                        t: dict[str, float]) -> float | None:
    """find_issues() wall time on ``root``; over the cap, a subset's time scaled linearly."""
    if not os.path.exists(args.cleanvision_python):
        print(f"cleanvision: {args.cleanvision_python} not found, skipped (see README)")
        return None
    print(f"cleanvision ({args.cleanvision_python}):", flush=True)
    wait_for_quiet(args.wait_quiet)
    ticks = cpu_ticks()
    try:
        res = run_cleanvision(args.cleanvision_python, root, args.cleanvision_timeout)
        seconds = res["find_issues_s"]
        note = ""
    except subprocess.TimeoutExpired:
        sub = linked_subset(root, args.cleanvision_subset,
                            Path(args.workdir) / f"cleanvision-subset-{args.cleanvision_subset}")
        res = run_cleanvision(args.cleanvision_python, sub, args.cleanvision_timeout)
        seconds = res["find_issues_s"] * n / res["images"]
        note = (f"  (EXTRAPOLATED: > {args.cleanvision_timeout:.0f}s cap, measured on "
                f"{res['images']} images and scaled linearly)")
    t["cleanvision find_issues()"] = seconds
    busy = cpu_busy(ticks, cpu_ticks())
    print(f"  {'cleanvision find_issues()':<52s} {seconds:9.2f} s   "
          f"[cpu busy {busy or 0:4.0%} incl. import]{note}")
    print(f"    ({res['images']} images, import {res['import_s']:.1f}s not counted; "
          f"issues found: {res['issues']})")
    return seconds


# --------------------------------------------------------------------------- exoray in-process


def run_exoray(root: Path, workdir: Path, t: dict[str, float], wait: float) -> None:
    from pipelines import features, manifest

    print("exoray (Ray started before timing):", flush=True)
    t["ray.init(num_cpus=2)"] = start_ray(2)
    print(f"  {'ray.init(num_cpus=2) [not counted]':<52s} {t['ray.init(num_cpus=2)']:9.2f} s")
    base = Path(tempfile.mkdtemp(prefix="base-", dir=workdir))
    try:
        wait_for_quiet(wait)
        with timed("exoray manifest.run", t):
            manifest.run(base, images=root)
        with timed("exoray features.run", t):
            result = features.run(base, show_progress=False)
        t["exoray manifest + features"] = (t["exoray manifest.run"] + t["exoray features.run"])
        print(f"  {'exoray manifest + features':<52s} {t['exoray manifest + features']:9.2f} s"
              f"   [{result.processed} rows, {result.errors} errors]")
        with timed("exoray features.run again (nothing to do)", t):
            features.run(base, show_progress=False)
        local = Path(tempfile.mkdtemp(prefix="base-local-", dir=workdir))
        manifest.run(local, images=root)
        wait_for_quiet(wait)
        with timed("exoray features.run, local pool (executor='local')", t):
            result = features.run(local, executor="local", show_progress=False)
        t["exoray manifest + features, local pool"] = (
            t["exoray manifest.run"] + t["exoray features.run, local pool (executor='local')"])
        print(f"    ({result.processed} rows, {result.errors} errors; the same stages in 2 "
              "worker processes, no Ray)")
        shutil.rmtree(local, ignore_errors=True)
    finally:
        import ray

        ray.shutdown()
        shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------- as a new user


def timed_features(exe: str, base: Path, label: str, t: dict[str, float],
                   extra: tuple[str, ...] = ()) -> tuple[float, str]:
    """Run ``exoray features BASE`` as a fresh process, timed under ``label``; returns the
    seconds until its first part was committed and its summary line."""
    seen = watch_first_part(base / "features" / "global")
    with timed(label, t):
        out = subprocess.run([exe, "features", str(base), "-q", *extra], check=True,
                             capture_output=True, text=True)
    return first_part_seconds(seen), out.stdout.strip().splitlines()[-1]


def run_cli(root: Path, workdir: Path, t: dict[str, float], wait: float) -> None:
    """``exoray manifest`` + ``exoray features`` as fresh processes, all start-up included."""
    exe = str(Path(sys.executable).with_name("exoray"))
    base = Path(tempfile.mkdtemp(prefix="base-cli-", dir=workdir))
    print("exoray as a new user runs it (two fresh commands; the default executor picks the local "
          "pool for small sets, Ray for large ones):", flush=True)
    try:
        wait_for_quiet(wait)
        ticks = cpu_ticks()
        with timed("`exoray manifest` (whole command)", t):
            subprocess.run([exe, "manifest", str(base), "--images", str(root), "-q"],
                           check=True, capture_output=True)
        first, summary = timed_features(exe, base, "`exoray features` (whole command)", t)
        busy = cpu_busy(ticks, cpu_ticks())
        total = t["`exoray manifest` (whole command)"] + t["`exoray features` (whole command)"]
        t["exoray CLI manifest + features"] = total
        t["exoray CLI first part"] = first
        print(f"  {'exoray CLI manifest + features':<52s} {total:9.2f} s   [cpu busy "
              f"{busy or 0:4.0%}]\n  {'first committed part after the features call':<52s} "
              f"{first:9.2f} s\n    ({summary})")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    run_cli_ray(exe, root, workdir, t, wait)


def run_cli_ray(exe: str, root: Path, workdir: Path, t: dict[str, float], wait: float) -> None:
    """``exoray features --executor ray`` as a fresh command: the path large sets, clusters and
    a notebook after ``ray.init()`` take (Ray's start-up, its small first part, full-size rest)."""
    base = Path(tempfile.mkdtemp(prefix="base-cli-ray-", dir=workdir))
    try:
        subprocess.run([exe, "manifest", str(base), "--images", str(root), "-q"],
                       check=True, capture_output=True)
        wait_for_quiet(wait)
        first, summary = timed_features(exe, base,
                                        "`exoray features --executor ray` (whole command)", t,
                                        ("--executor", "ray"))
        t["exoray CLI ray first part"] = first
        print(f"  {'first committed part after the call (Ray)':<52s} {first:9.2f} s\n"
              f"    ({summary})")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run_cpus(files: list[Path], cpus: int, t: dict[str, float], wait: float) -> None:
    """Steady-state images/s per core of compute_features on 1 and on ``cpus`` processes."""
    paths = [str(f) for f in files]
    ctx = multiprocessing.get_context("spawn")
    print(f"per-core scaling (compute_features, steady state, no Ray; {len(paths)} images):",
          flush=True)
    for k in sorted({1, cpus}):
        with ctx.Pool(k) as pool:
            pool.map(_import_pil, range(2 * k))
            wait_for_quiet(wait)
            started = time.perf_counter()
            pool.map(exoray_compute, paths, chunksize=8)
            seconds = time.perf_counter() - started
        rate = len(paths) / seconds
        t[f"per core, {k} cores"] = rate / k
        print(f"  {f'{k} process(es)':<52s} {rate:9.1f} img/s = {rate / k:7.1f} img/s per core")
    if cpus > 1:
        gain = t[f"per core, {cpus} cores"] * cpus / t["per core, 1 cores"]
        t["scaling"] = gain
        print(f"  {f'{cpus} cores vs 1 core':<52s} {gain:7.2f}x   (goal >= {0.6 * cpus:.1f}x; "
              f"{os.cpu_count()} cores on this machine)")


# --------------------------------------------------------------------------- slow storage

SITECUSTOMIZE = textwrap.dedent('''
    """Benchmark hook: exoray.storage.store.Store.read_bytes sleeps EXORAY_BENCH_LATENCY_MS per call.

    Patched lazily when exoray.storage.store is first imported (Ray workers inherit PYTHONPATH), and
    every call appends one byte to EXORAY_BENCH_LATENCY_LOG so the benchmark can count them.
    """
    import os
    import sys
    import time

    _MS = float(os.environ.get("EXORAY_BENCH_LATENCY_MS") or 0)
    _LOG = os.environ.get("EXORAY_BENCH_LATENCY_LOG")


    def _patch(module):
        original = module.Store.read_bytes
        delay = _MS / 1000.0

        def read_bytes(self, *parts):
            if delay:
                time.sleep(delay)
            if _LOG:
                fd = os.open(_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    os.write(fd, b".")
                finally:
                    os.close(fd)
            return original(self, *parts)

        module.Store.read_bytes = read_bytes


    class _Hook:
        def find_spec(self, name, path, target=None):
            if name != "exoray.storage.store":
                return None
            sys.meta_path.remove(self)
            for finder in sys.meta_path:
                spec = finder.find_spec(name, path, target) if hasattr(finder, "find_spec") else None
                if spec is not None and spec.loader is not None:
                    exec_module = spec.loader.exec_module

                    def run(module, _exec=exec_module):
                        _exec(module)
                        _patch(module)

                    spec.loader.exec_module = run
                    return spec
            return None


    if _MS or _LOG:
        sys.meta_path.insert(0, _Hook())
''')


def _vm_hwm_kb() -> int | None:
    """Peak resident set size (VmHWM) of this process since start or the last reset, in KiB."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS mark (Linux ``clear_refs`` 5), so a later VmHWM is the peak
    of what follows only."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def child_exoray(args: argparse.Namespace) -> None:
    """Subprocess: time manifest + features on ``--images`` (Ray workers get the hook's env)."""
    from pipelines import features, manifest

    env_vars = {k: os.environ[k] for k in ("PYTHONPATH", "EXORAY_BENCH_LATENCY_MS",
                                           "EXORAY_BENCH_LATENCY_LOG") if k in os.environ}
    # executor "ray": Ray started (not timed) and used; "local": the local pool, no Ray at all
    ray_s = start_ray(2, runtime_env={"env_vars": env_vars}) if args.executor == "ray" else 0.0
    base = Path(args.base)
    wait_for_quiet(args.wait_quiet)
    ticks = cpu_ticks()
    started = time.perf_counter()
    manifest.run(base, images=args.images)
    man_s = time.perf_counter() - started
    # Peak RSS from VmHWM: ru_maxrss of a subprocess starts at its parent's RSS at fork time
    # (Linux keeps the pre-exec high-water mark), which would hide the child's own peak.
    before = _vm_hwm_kb() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    reset = _reset_hwm()
    result = features.run(base, executor=args.executor, show_progress=False)
    total = time.perf_counter() - started
    busy = cpu_busy(ticks, cpu_ticks())
    during = _vm_hwm_kb() if reset else None
    print("CHILD_RESULT " + json.dumps({
        "ray_init_s": ray_s, "manifest_s": man_s, "total_s": total, "processed": result.processed,
        "errors": result.errors, "busy": busy or 0.0, "maxrss_before_features_kb": before,
        "maxrss_kb": max(before, during or 0) if reset else
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "features_hwm_kb": during}))


def spawn_child(args: argparse.Namespace, images: Path, *, latency_ms: float = 0.0,
                log: Path | None = None) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="base-", dir=args.workdir))
    env = dict(os.environ)
    if latency_ms or log:
        site = Path(args.workdir) / "latency-site"
        site.mkdir(parents=True, exist_ok=True)
        (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
        env["EXORAY_BENCH_LATENCY_MS"] = str(latency_ms)
        if log is not None:
            log.unlink(missing_ok=True)
            env["EXORAY_BENCH_LATENCY_LOG"] = str(log)
    cmd = [sys.executable, __file__, "--child", "--images", str(images), "--base", str(base),
           "--workdir", str(args.workdir), "--executor", args.executor]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    for line in out.stdout.splitlines():
        if line.startswith("CHILD_RESULT "):
            return json.loads(line.split(" ", 1)[1])
    raise RuntimeError(f"child run failed (rc {out.returncode}):\n{out.stderr[-4000:]}")


def run_latency(args: argparse.Namespace, root: Path, t: dict[str, float]) -> None:
    ms = args.latency_ms
    full = args.latency_n <= 0 or args.latency_n >= args.n
    images = root if full else linked_subset(
        root, args.latency_n, Path(args.workdir) / f"latency-subset-{args.latency_n}")
    files = image_files(images)
    print(f"slow storage: {ms:g} ms per file read, {len(files)} images (exoray in a subprocess, "
          f"best of {args.repeat}; the loop alone sleeps {len(files) * ms / 1000:.0f}s):",
          flush=True)
    log = Path(args.workdir) / "latency-reads.log"
    runs: dict[float, list[tuple[dict[str, Any], int]]] = {0.0: [], ms: []}
    for _ in range(args.repeat):
        for latency in runs:
            res = spawn_child(args, images, latency_ms=latency, log=log)
            runs[latency].append((res, log.stat().st_size if log.exists() else 0))
    for latency, results in runs.items():
        res, reads = min(results, key=lambda r: r[0]["total_s"])
        label = f"exoray, {latency:g} ms per read" if latency else "exoray, no added latency"
        label += f" ({args.executor})"
        t[label] = res["total_s"]
        print(f"  {label:<52s} {res['total_s']:9.2f} s   [cpu busy {res['busy']:4.0%}; "
              f"{reads} reads through the hook"
              + (f", each slept; all runs: {[round(r[0]['total_s'], 2) for r in results]}]"
                 if latency else f"; all runs: {[round(r[0]['total_s'], 2) for r in results]}]"))
        if reads < len(files):
            print(f"  WARNING: only {reads} of {len(files)} reads went through the hook; the "
                  "Ray workers did not all inherit it, so this comparison is not valid")
    key = "careful PIL+numpy+imagehash loop, sequential"
    if not (full and key in t):
        wait_for_quiet(args.wait_quiet)
        with timed("careful loop, sequential, no added latency", t):
            for f in files:
                careful_features(str(f))
    wait_for_quiet(args.wait_quiet)
    with timed(f"careful loop, sequential, {ms:g} ms per open", t):
        for f in files:
            careful_features(str(f), latency_s=ms / 1000)
    t["latency_exoray_slow"] = t[f"exoray, {ms:g} ms per read ({args.executor})"]
    t["latency_loop_slow"] = t[f"careful loop, sequential, {ms:g} ms per open"]
    t["latency_n"] = len(files)


# --------------------------------------------------------------------------- driver memory


def run_memory(args: argparse.Namespace, t: dict[str, float]) -> None:
    small = image_set(args.workdir, args.memory_n, seed=args.seed + 1, min_megapixels=0.0,
                      max_megapixels=0.05)
    copies = args.memory_copies
    large = Path(args.workdir) / f"memory-x{copies}-{small.name}"
    if not (large / ".complete").is_file():  # hard-linked copies: 10x the files, no new bytes
        for k in range(copies):
            for f in image_files(small):
                target = large / f"copy{k}" / f.relative_to(small)
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.exists():
                    os.link(f, target)
        (large / ".complete").write_text("ok")
    n_small, n_large = len(image_files(small)), len(image_files(small)) * copies
    print("driver peak memory (peak RSS, VmHWM, of the driver process; tiny images <= 0.05 MP):",
          flush=True)
    rows = []
    for label, images, n in (("small", small, n_small), ("large", large, n_large)):
        res = spawn_child(args, images)
        rows.append(res)
        hwm = res["features_hwm_kb"]
        print(f"  {n:>7,} images: peak {res['maxrss_kb'] / 1024:6.1f} MiB ("
              f"{res['maxrss_before_features_kb'] / 1024:.1f} MiB before features.run); peak "
              "during features.run alone "
              + (f"{hwm / 1024:6.1f} MiB" if hwm else "n/a")
              + f"; {res['total_s']:.1f}s, {res['processed']:,} rows", flush=True)
        if res["processed"] + res["errors"] != n:
            print(f"  WARNING: expected {n:,} rows")
        t[f"driver maxrss MiB, {label}"] = res["maxrss_kb"] / 1024
    ratio = rows[1]["maxrss_kb"] / rows[0]["maxrss_kb"]
    t["driver maxrss ratio"] = ratio
    print(f"  {'peak ratio ' + f'{n_large:,} / {n_small:,} images':<52s} {ratio:7.2f}x"
          "   (expect ~1.0-1.3)")
    if rows[0]["features_hwm_kb"] and rows[1]["features_hwm_kb"]:
        hwm_ratio = rows[1]["features_hwm_kb"] / rows[0]["features_hwm_kb"]
        t["driver features.run peak ratio"] = hwm_ratio
        print(f"  {'features.run-only peak ratio, same':<52s} {hwm_ratio:7.2f}x")


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--n", type=int, default=2000, help="images in the set")
    parser.add_argument("--set", choices=("jpeg", "mixed"), default="jpeg",
                        help="jpeg: 1-3 MP JPEGs; mixed: what `exoray synth` writes (JPEG/PNG/WebP, "
                             "mean 0.23 MP)")
    parser.add_argument("--cpus", type=int, default=0,
                        help="also measure per-core scaling on 1 and on this many processes")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--latency-n", type=int, default=0,
                        help="images for the slow-storage comparison, a subset of the set "
                             "(default 0: all --n; the sequential loop pays n x latency)")
    parser.add_argument("--repeat", type=int, default=2,
                        help="exoray subprocess runs per slow-storage setting (best is kept)")
    parser.add_argument("--memory-n", type=int, default=2000)
    parser.add_argument("--memory-copies", type=int, default=10, help="large = copies x memory-n")
    parser.add_argument("--cleanvision-python", default="/tmp/cv-venv/bin/python",
                        help="an interpreter with cleanvision installed (not a project dependency)")
    parser.add_argument("--cleanvision-timeout", type=float, default=900.0)
    parser.add_argument("--cleanvision-subset", type=int, default=500)
    parser.add_argument("--executor", choices=("ray", "local"), default="ray",
                        help="how the slow-storage and memory runs execute Phase II: the Ray Data "
                             "pipeline (Ray started before timing) or the local pool")
    parser.add_argument("--skip", nargs="*", default=[], choices=SECTIONS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--images", help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    args = parser.parse_args()
    prepare_workdir(args)
    if args.child:
        child_exoray(args)
        return

    import cv2
    import PIL
    import ray

    del cv2, PIL, ray  # imported for machine()'s version line
    print(f"machine: {machine()}")
    if args.set == "mixed":
        from exoray.dev.synth import FORMATS

        root = image_set(args.workdir, args.n, seed=args.seed, min_megapixels=0.0,
                         formats=FORMATS)
        files = image_files(root)
        print(f"images: {len(files)} mixed JPEG/PNG/WebP, "
              f"{warm_page_cache(files) / 1e6:.0f} MB, in {root} (page cache warmed)\n")
    else:
        root, files = warmed_image_set(args.workdir, args.n, seed=args.seed)
    t: dict[str, float] = {}
    if "baselines" not in args.skip:
        run_baselines(files, t, args.wait_quiet)
    if "cleanvision" not in args.skip:
        cleanvision_seconds(args, root, len(files), t)
    if "exoray" not in args.skip:
        run_exoray(root, Path(args.workdir), t, args.wait_quiet)
    if "cli" not in args.skip:
        run_cli(root, Path(args.workdir), t, args.wait_quiet)
    if "cpus" not in args.skip and args.cpus:
        run_cpus(files, args.cpus, t, args.wait_quiet)
    if "latency" not in args.skip:
        run_latency(args, root, t)
    if "memory" not in args.skip:
        run_memory(args, t)

    ours = t.get("exoray manifest + features")
    print("\nratios (baseline seconds / exoray seconds; > 1 means exoray is faster):")
    if ours:
        for label, key, goal in (
            ("vs cleanvision find_issues()", "cleanvision find_issues()", ">= 3x"),
            ("vs decode only, sequential", "decode only, sequential", ">= 0.67x (within 1.5x)"),
            ("vs decode only, Pool(2)", "decode only, Pool(2)", ">= 0.67x (within 1.5x)"),
            ("vs careful loop, sequential", "careful PIL+numpy+imagehash loop, sequential", ""),
            ("vs careful loop, Pool(2)", "careful PIL+numpy+imagehash loop, Pool(2)", ""),
            ("vs exoray's own compute, sequential, no Ray",
             "exoray compute_features, sequential, no Ray", ""),
            ("vs exoray's own compute, Pool(2), no Ray",
             "exoray compute_features, Pool(2), no Ray", "1.0 if Ray cost nothing"),
        ):
            if key in t:
                print(ratio_line(label, ours, t[key], goal))
        print(f"  {'exoray images/s (manifest + features)':<52s} {len(files) / ours:7.1f}")
    local = t.get("exoray manifest + features, local pool")
    if local:
        for label, key, goal in (
                ("local pool vs cleanvision find_issues()", "cleanvision find_issues()", ""),
                ("local pool vs exoray's own compute, Pool(2)",
                 "exoray compute_features, Pool(2), no Ray", "1.0 if the pool cost nothing")):
            if key in t:
                print(ratio_line(label, local, t[key], goal))
        if ours:
            print(ratio_line("local pool vs Ray Data pipeline (Ray already started)", local,
                             ours, ""))
    cli = t.get("exoray CLI manifest + features")
    if cli and "cleanvision find_issues()" in t:
        print(ratio_line("whole commands (as a new user runs them) vs cleanvision", cli,
                         t["cleanvision find_issues()"], ">= 3x mixed 3k, > 1x at 1k, >= 5x jpeg"))
    for label, own, floor in (
            ("per image: compute_features vs decode only, seq.",
             "exoray compute_features, sequential, no Ray", "decode only, sequential"),
            ("per image: compute_features vs decode only, Pool(2)",
             "exoray compute_features, Pool(2), no Ray", "decode only, Pool(2)")):
        if own in t and floor in t:
            print(ratio_line(label, t[own], t[floor], ">= 0.67x"))
    if "latency_exoray_slow" in t:
        print(ratio_line(f"slow storage ({args.latency_ms:g} ms, {t['latency_n']:.0f} imgs, "
                         f"{args.executor}): vs careful loop, seq.", t["latency_exoray_slow"],
                         t["latency_loop_slow"], ">= 8x"))
    if "driver maxrss ratio" in t:
        print(f"  {f'driver peak memory, {args.memory_copies}x images':<52s} "
              f"{t['driver maxrss ratio']:7.2f}x"
              "   (expect ~1.0-1.3)")
    if "driver features.run peak ratio" in t:
        print(f"  {f'driver peak in features.run only, {args.memory_copies}x images':<52s} "
              f"{t['driver features.run peak ratio']:7.2f}x")
    print(f"\n(driver ru_maxrss of this process: "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")


if __name__ == "__main__":
    main()
