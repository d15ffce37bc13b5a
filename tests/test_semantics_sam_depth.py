"""Phase V sam and depth through the Ray pipeline: tiny random models loaded through the real
checkpoint code (plumbing, schema, lineage, errors, decode helpers; no quality claims)."""

from __future__ import annotations

import numpy as np
import pytest

from exoray.engine.errors_table import read_errors
from exoray.semantics import read_task
from exoray.semantics.masks import decode_rle, image_masks
from exoray.storage.store import Store
from pipelines import depth, manifest, sam


@pytest.fixture(scope="module")
def base(real_photos, tmp_path_factory, ray_session):
    base = tmp_path_factory.mktemp("base")
    manifest.run(base, images=real_photos)
    return base


def test_sam_writes_rle_masks_that_decode_to_the_picture(base):
    result = sam.run(base, model="sam:tiny", points_per_side=4, max_masks=5,
                     show_progress=False)
    assert result.processed == 6 and result.errors == 2, result
    rows = {r["relpath"]: r for r in read_task(base, "sam").to_pylist()}
    assert len(rows) == 6
    astronaut = rows["astronaut.png"]
    assert 1 <= astronaut["mask_count"] <= 5  # the cap
    assert "random" in astronaut["model_id"] and astronaut["weights_hash"]
    for mask in astronaut["masks"]:
        decoded = decode_rle(mask["rle"])
        assert decoded.dtype == bool and decoded.shape == tuple(mask["rle"]["size"])
        assert mask["area"] == pytest.approx(decoded.mean(), abs=1e-3)
    stack = image_masks(astronaut)
    assert stack.shape[0] == astronaut["mask_count"]
    shown = image_masks(astronaut, size=(astronaut["height"], astronaut["width"]))
    assert shown.shape[1:] == (512, 512)
    sign = rows["sign.png"]  # 900x360: the RLE keeps the picture's aspect, not the square
    h, w = sign["masks"][0]["rle"]["size"]
    assert w / h == pytest.approx(900 / 360, rel=0.05)
    errors = read_errors(Store(str(base)), "sam")
    assert sorted(errors["relpath"].to_pylist()) == ["notes.jpg", "truncated.jpg"]


def test_depth_writes_statistics_and_a_small_map(base):
    from exoray.models.depth import depth_map

    result = depth.run(base, model="depth:tiny", show_progress=False)
    assert result.processed == 6 and result.errors == 2, result
    rows = {r["relpath"]: r for r in read_task(base, "depth").to_pylist()}
    sign = rows["sign.png"]
    grid = depth_map(sign)
    assert grid.shape == (sign["map_height"], sign["map_width"])
    assert max(grid.shape) == 64 and grid.shape[1] > grid.shape[0]  # keeps the 900x360 aspect
    assert sign["depth_min"] <= sign["depth_p05"] <= sign["depth_p50"] <= sign["depth_p95"] \
        <= sign["depth_max"]
    assert np.isfinite(grid).all()
    assert sign["task_version"] == 1 and sign["weights_hash"]
