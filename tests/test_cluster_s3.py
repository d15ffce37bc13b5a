"""A two-node Ray cluster (two raylets on this machine, one CPU each) with BASE and the images on
an S3-compatible server: the CLI runs unchanged through ``RAY_ADDRESS``, the work spreads over
both nodes, and a SIGKILL of the driver or of a whole worker node mid-run, then a rerun, leaves
every image exactly once on S3.

One cluster and one 40-image set for the whole module (about 3 minutes on 2 shared cores); every
process it starts runs in its own process group and is killed at teardown, even on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.fs as pafs
import pytest

from exoray.engine.doctor import check_base
from exoray.engine.errors_table import read_errors
from exoray.image.manifest import read_manifest
from exoray.index.embeddings import resolve_embeddings
from exoray.storage import layout
from exoray.storage.parts import list_parts, part_writers, read_parts
from exoray.storage.store import Store
from tests.s3_server import free_port, s3_server

pytestmark = pytest.mark.slow
N_IMAGES = 40
RAY = str(Path(sys.executable).with_name("ray"))
SMALL_PARTS = ["--part-rows", "4", "--batch-size", "4", "-q"]


@dataclass
class Cluster:
    address: str
    tmp: Path
    base: str
    images: str
    groups: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start_node(self, name: str, *args: str) -> None:
        """``ray start --block`` in a new session: killing the group kills the whole node."""
        node_dir = self.tmp / name
        node_dir.mkdir(exist_ok=True)
        env = {**os.environ,  # per-node local disks: nothing may assume a shared one
               "EXORAY_STAGING": str(node_dir / "staging"),
               "EXORAY_LOCAL_MODELS_DIR": str(node_dir / "local-models"),
               "EXORAY_MODELS_DIR": str(node_dir / "models")}
        env.pop("RAY_ADDRESS", None)
        with open(node_dir / "ray-start.log", "ab") as log:
            self.groups[name] = subprocess.Popen(
                [RAY, "start", *args, "--num-cpus", "1", "--node-ip-address", "127.0.0.1",
                 "--disable-usage-stats", "--block"],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def kill_node(self, name: str) -> None:
        proc = self.groups.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop(self) -> None:
        for name in reversed(list(self.groups)):
            self.kill_node(name)

    def alive_nodes(self) -> list[dict]:
        """Alive nodes as Ray's GCS sees them (asked from a throwaway driver)."""
        code = ("import json, sys, ray; ray.init(address=sys.argv[1], log_to_driver=False); "
                "print(json.dumps([{'id': n['NodeID'], 'head': 'node:__internal_head__' in "
                "n['Resources']} for n in ray.nodes() if n['Alive']]))")
        out = subprocess.run([sys.executable, "-c", code, self.address], capture_output=True, text=True,
                             timeout=120, env=self.driver_env())
        if out.returncode != 0:
            return []
        return json.loads(out.stdout.strip().splitlines()[-1])

    def wait_for_nodes(self, n: int, timeout: float = 120) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            nodes = self.alive_nodes()
            if len(nodes) == n:
                return nodes
            time.sleep(1)
        pytest.fail(f"the cluster did not reach {n} alive nodes in {timeout:.0f}s "
                    f"(logs under {self.tmp})")

    def driver_env(self) -> dict[str, str]:
        return {**os.environ, "RAY_ADDRESS": self.address,
                "EXORAY_STAGING": str(self.tmp / "driver" / "staging"),
                "EXORAY_MODELS_DIR": str(self.tmp / "driver" / "models")}

    def exoray(self, *args: str) -> subprocess.Popen:
        """The unchanged CLI as a driver of this cluster (its own session, so it can be killed)."""
        return subprocess.Popen([sys.executable, "-m", "exoray.cli", *args],
                                env=self.driver_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def run(self, *args: str, timeout: float = 400) -> str:
        proc = self.exoray(*args)
        out, _ = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, out[-4000:]
        return out


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from exoray.dev.synth import make_image_set

    tmp = tmp_path_factory.mktemp("cluster")
    local_images = tmp / "images"
    make_image_set(local_images, n=N_IMAGES, seed=11, max_megapixels=0.3, formats=("jpg", "png"))
    with s3_server(str(tmp / "moto.log")) as s3:
        fs = s3.make_bucket("exoray")
        pafs.copy_files(str(local_images), s3.key("exoray", "images"), destination_filesystem=fs)
        port = free_port()
        c = Cluster(f"127.0.0.1:{port}", tmp, s3.location("exoray", "base"),
                    s3.location("exoray", "images"))
        try:
            c.start_node("head", "--head", "--port", str(port), "--include-dashboard=false",
                         "--temp-dir", str(tmp / "ray"))
            c.start_node("worker", "--address", c.address)
            c.wait_for_nodes(2)
            c.run("manifest", c.base, "--images", c.images, "-q")
            yield c
        finally:
            c.stop()


def wait_for_parts(cluster: Cluster, proc: subprocess.Popen, folder: str,
                   timeout: float = 300) -> int:
    """Block until the running driver has published some (not all) parts of ``folder``."""
    store = Store(cluster.base)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the run ended before the kill:\n{proc.stdout.read()[-3000:]}")
        parts = list_parts(store, folder)
        if parts:
            return sum(p.rows for p in parts)
        time.sleep(0.2)
    pytest.fail(f"no part in {folder} after {timeout:.0f}s")


def exactly_once(cluster: Cluster, folder: str, phase: str) -> None:
    store = Store(cluster.base)
    manifest_ids = sorted(read_manifest(store)["image_id"].to_pylist())
    done = read_parts(store, folder, ["image_id"], key=("image_id", "fingerprint"))
    errors = read_errors(store, phase)["image_id"].to_pylist()
    ids = done["image_id"].to_pylist()
    assert len(ids) == len(set(ids)), "a reader saw an image twice"
    assert sorted(ids + errors) == manifest_ids, "every image exactly once (done or error)"


def test_manifest_lists_the_images_on_s3(cluster):
    table = read_manifest(Store(cluster.base))
    assert table.num_rows == N_IMAGES
    assert set(pc.unique(table["ext"]).to_pylist()) == {"jpg", "png"}


def test_features_spread_over_both_nodes_and_survive_a_driver_kill(cluster):
    proc = cluster.exoray("features", cluster.base, *SMALL_PARTS)
    rows_at_kill = wait_for_parts(cluster, proc, layout.FEATURES)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver, mid-run
    proc.wait()
    assert rows_at_kill < N_IMAGES
    cluster.run("features", cluster.base, *SMALL_PARTS)
    exactly_once(cluster, layout.FEATURES, "features")
    store = Store(cluster.base)
    runs = pc.unique(read_parts(store, layout.FEATURES)["run_id"]).to_pylist()
    assert len(runs) == 2, "work published before the kill was kept, the rest redone once"
    nodes = {n["id"]: "head" if n["head"] else "worker" for n in cluster.alive_nodes()}
    writers = part_writers(store, layout.FEATURES)
    per_node = {nodes.get(node, node): count for node, count in writers.items()}
    print(f"features parts per node: {per_node}")
    assert set(per_node) == {"head", "worker"}, per_node


def test_embed_survives_the_kill_of_a_whole_worker_node(cluster):
    store = Store(cluster.base)
    args = ["embed", cluster.base, "--model", "clip:tiny", *SMALL_PARTS]
    proc = cluster.exoray(*args)
    from tests.test_kill import embedding_folder_of

    folder = embedding_folder_of(store, "clip:tiny")
    wait_for_parts(cluster, proc, folder)
    cluster.kill_node("worker")  # raylet, its workers and agents: the node is gone
    killed = time.monotonic()
    try:
        out, _ = proc.communicate(timeout=300)  # Ray retries on the head, or the run fails
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    print(f"after the node kill the run ended in {time.monotonic() - killed:.0f}s with "
          f"exit code {proc.returncode}: {out.strip().splitlines()[-1:]}")
    cluster.start_node("worker", "--address", cluster.address)  # a replacement node joins
    cluster.wait_for_nodes(2)
    cluster.run(*args)
    exactly_once(cluster, folder, "embed")
    vectors = read_parts(store, folder, key=("image_id", "fingerprint", "model_id"))
    assert vectors.num_rows == N_IMAGES, out[-2000:]
    # BASE/models on S3 reaches the backends as this node's local mirror of it (a tiny model
    # is built there; downloaded weights are pushed and pulled: test_s3_store), never as
    # another node's disk or the library default.
    mirrored = [node for node in ("head", "worker") if any(
        p.is_file() for p in (cluster.tmp / node / "local-models" / "object-store").rglob("*"))]
    assert mirrored, "no node loaded the model from a local mirror of BASE/models"


def test_index_on_the_cluster_and_a_clean_doctor(cluster):
    cluster.run("index", cluster.base, "--model", "clip")
    store = Store(cluster.base)
    emb = resolve_embeddings(store, "clip")
    assert emb is not None
    assert store.list_files(layout.INDICES, recursive=True), "no index files on S3"
    report = check_base(cluster.base)
    assert report["healthy"], report
    dup = [f for f in report["folders"] if f["duplicates"] or f["temporaries"] or f["corrupt"]]
    assert dup == []
