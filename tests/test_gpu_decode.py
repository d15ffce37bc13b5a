"""The GPU decode path, run on CPU tensors: routing, per-image fallback, geometry, EXIF orientation
and embedding parity with the CPU path (torchvision's CPU JPEG decoder stands in for nvJPEG; the
batching, fallback and device-side resize code is the same)."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from exoray.engine.spec import StageContext
from exoray.engine.stages.embed import (
    DecodeWorker,
    EmbedWorker,
    GpuEmbedWorker,
    ReadBytesWorker,
    square_crop,
)
from exoray.engine.stages.reading import ItemError, apply_decoder
from exoray.image.gpu_decode import GpuSquareDecoder, inspect_jpeg, orient
from exoray.models.clip import ClipBackend
from exoray.storage.store import Store
from pipelines.embeddings import SPEC, decode_on_gpu

SIDE = 64


def jpeg_bytes(rgb: np.ndarray, *, orientation: int = 1, quality: int = 92, mode: str = "RGB",
               progressive: bool = False) -> bytes:
    im = Image.fromarray(rgb).convert(mode)
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, exif=exif.tobytes(), progressive=progressive)
    return buf.getvalue()


def png_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


def photo_arrays() -> dict[str, np.ndarray]:
    """scikit-image's colour photos, two of them enlarged to ~2 MP like phone pictures."""
    photos = {"astronaut": skdata.astronaut(), "coffee": skdata.coffee(),
              "chelsea": skdata.chelsea(), "rocket": skdata.rocket(),
              "motorcycle": skdata.stereo_motorcycle()[0]}
    big = {f"{k}-2mp": cv2.resize(v, (v.shape[1] * 3, v.shape[0] * 3),
                                  interpolation=cv2.INTER_CUBIC)
           for k, v in list(photos.items())[:2]}
    return {**photos, **big}


def cpu_fallback(side: int):
    return lambda d, n: apply_decoder(d, n, lambda b, m: square_crop(
        b, side, name=m, max_pixels=100_000_000))


def decoder(side: int = SIDE, batch_size: int = 4) -> GpuSquareDecoder:
    return GpuSquareDecoder(side, "cpu", cpu_fallback(side), batch_size=batch_size)


def test_headers_route_only_clean_rgb_jpegs_to_the_gpu() -> None:
    photo = skdata.chelsea()
    good = jpeg_bytes(photo, orientation=6)
    assert inspect_jpeg(good).route == "gpu"
    assert inspect_jpeg(good).orientation == 6
    assert inspect_jpeg(jpeg_bytes(photo, mode="L")).route == "gpu"
    assert inspect_jpeg(jpeg_bytes(photo, progressive=True)).route == "gpu"
    cpu = {"png": png_bytes(photo), "cmyk": jpeg_bytes(photo, mode="CMYK"),
           "truncated": good[: len(good) // 2], "garbage": b"\xff\xd8\xff" + b"x" * 50 + b"\xff\xd9"}
    for name, blob in cpu.items():
        assert inspect_jpeg(blob).route == "cpu", name
    h, w = photo.shape[:2]
    assert inspect_jpeg(good, max_pixels=h * w - 1).route == "cpu"


def reference_square(blob: bytes, side: int) -> np.ndarray:
    """Full decode, EXIF transpose, centre square, area filter: what both paths approximate."""
    from PIL import ImageOps

    full = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(blob))).convert("RGB"))
    h, w = full.shape[:2]
    m = min(h, w)
    sq = full[(h - m) // 2:(h - m) // 2 + m, (w - m) // 2:(w - m) // 2 + m]
    return cv2.resize(sq, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_and_geometry_match_the_reference(orientation: int) -> None:
    photo = skdata.astronaut()[40:360, :]  # 320 x 512: not square, so a wrong turn shows
    blob = jpeg_bytes(photo, orientation=orientation)
    ref = reference_square(blob, SIDE)
    cpu = square_crop(blob, SIDE, name="x.jpg", max_pixels=10**8).astype(np.float32)
    batch = decoder()([blob], ["x.jpg"])
    assert batch.gpu_decoded == 1 and batch.errors == [None]
    got = batch.images[0].numpy()
    right = np.abs(got.astype(np.float32) - ref).mean()
    # the CPU path decodes a DCT-scaled draft, so it is further from the full decode than we are
    assert right < 4.0 and right <= np.abs(cpu - ref).mean() + 1.0, right
    for wrong_turn in (2, 4, 6):  # the same pixels turned any other way are far off
        turned = orient(torch.from_numpy(got), wrong_turn).numpy().astype(np.float32)
        assert np.abs(turned - ref).mean() > 3 * right


def test_fallback_per_image_keeps_order_and_turns_failures_into_the_cpu_errors() -> None:
    photo = skdata.coffee()
    blobs = {"a.jpg": jpeg_bytes(photo), "b.png": png_bytes(photo),
             "c.jpg": jpeg_bytes(photo, mode="CMYK"), "d.jpg": b"not an image at all",
             "e.jpg": jpeg_bytes(skdata.rocket())}
    good = blobs["a.jpg"]
    # passes the header check (complete markers) but its entropy-coded data is garbage
    broken = good[:600] + bytes(range(256)) * 8 + b"\xff\xd9"
    blobs["f.jpg"] = broken
    names = list(blobs)
    datas = [blobs[n] for n in names] + [ItemError("missing", "g.jpg: gone")]
    batch = decoder(batch_size=8)(datas, [*names, "g.jpg"])
    cpu = [cpu_fallback(SIDE)(blobs[n], n) for n in names]
    for i, name in enumerate(names):
        if isinstance(cpu[i], ItemError):
            assert batch.errors[i] == cpu[i], name
            assert not batch.images[i].any()
        else:
            assert batch.errors[i] is None, name
            diff = np.abs(batch.images[i].numpy().astype(int) - cpu[i].astype(int)).mean()
            assert diff < 4.0, (name, diff)
    assert batch.errors[names.index("d.jpg")].error == cpu[names.index("d.jpg")].error
    assert batch.errors[-1] == ItemError("missing", "g.jpg: gone")
    assert np.array_equal(batch.images[names.index("b.png")].numpy(), cpu[1])  # CPU path as is
    assert batch.gpu_decoded in (2, 3)  # a.jpg, e.jpg (+ f.jpg if libjpeg accepts it)


def test_embeddings_from_the_gpu_path_agree_with_the_cpu_path(tmp_path) -> None:
    photos = photo_arrays()
    blobs = [jpeg_bytes(p) for p in photos.values()]
    names = [f"{k}.jpg" for k in photos]
    clip = ClipBackend(variant="tiny", cache_dir=str(tmp_path), device="cpu")
    side = clip.input_size
    gpu = GpuSquareDecoder(side, "cpu", cpu_fallback(side), batch_size=3)(blobs, names)
    assert gpu.gpu_decoded == len(blobs)
    cpu_squares = np.stack([square_crop(b, side, name=n, max_pixels=10**8)
                            for b, n in zip(blobs, names, strict=True)])
    from_gpu = clip({"image": gpu.images})["embedding"]  # a tensor in, as on the GPU
    from_cpu = clip({"image": cpu_squares})["embedding"]
    cosine = (from_gpu * from_cpu).sum(axis=1)
    assert cosine.min() >= 0.99, dict(zip(names, cosine.round(4), strict=True))
    assert np.allclose(np.linalg.norm(from_gpu, axis=1), 1.0, atol=1e-5)


def test_tensor_and_numpy_inputs_give_the_same_vectors(tmp_path) -> None:
    clip = ClipBackend(variant="tiny", cache_dir=str(tmp_path), device="cpu", batch_size=3)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, clip.input_size, clip.input_size, 3), dtype=np.uint8)
    a = clip({"image": images})["embedding"]
    b = clip({"image": torch.from_numpy(images)})["embedding"]
    assert a.dtype == np.float32 and a.shape == (7, clip.dim)
    assert np.allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError, match="uint8 images shaped"):
        clip({"image": torch.zeros((2, 3, 8, 8), dtype=torch.uint8)})


def test_gpu_worker_rows_match_the_cpu_stages(real_photos, tmp_path) -> None:
    """ReadBytesWorker + GpuEmbedWorker (on CPU tensors) give the CPU path's error rows and
    vectors that agree with its vectors."""
    rels = sorted(p.name for p in real_photos.iterdir())
    batch = {"relpath": np.array(rels, dtype=object), "need_clip": np.ones(len(rels), bool),
             "need_dino": np.ones(len(rels), bool)}
    kwargs = {"variant": "tiny", "cache_dir": str(tmp_path / "models"), "device": "cpu"}
    store = Store(str(tmp_path / "base"))
    gpu_worker = GpuEmbedWorker({"clip": kwargs, "dino": kwargs}, side=64,
                                store_location=store.location, run_id="r1", decode_batch=2)
    read = ReadBytesWorker(str(real_photos))(batch)
    assert {"data", "route", "orientation"} <= set(read)
    gpu_rows = gpu_worker(read)
    cpu_rows = DecodeWorker(str(real_photos), side=64)(batch)
    for model in ("clip", "dino"):
        cpu_rows = EmbedWorker(model, kwargs, store.location, "r1")(cpu_rows)
    assert list(gpu_rows["error"]) == list(cpu_rows["error"])
    assert list(gpu_rows["message"]) == list(cpu_rows["message"])
    assert "data" not in gpu_rows and "image" not in gpu_rows
    ok = np.array([not e for e in cpu_rows["error"]])
    assert ok.sum() >= 6 and (~ok).sum() >= 1
    for model in ("clip", "dino"):
        cos = (gpu_rows[f"{model}_vector"][ok] * cpu_rows[f"{model}_vector"][ok]).sum(axis=1)
        assert cos.min() >= 0.99, (model, cos)
        assert not gpu_rows[f"{model}_vector"][~ok].any()
        assert set(gpu_rows[f"{model}_model_id"]) == set(cpu_rows[f"{model}_model_id"])


def test_a_device_that_refuses_every_jpeg_is_given_up_and_nothing_is_lost(real_photos, tmp_path,
                                                                           monkeypatch) -> None:
    """A torchvision without nvJPEG (or a driver mismatch) refuses every batch: after a few
    single-image refusals the actor stops trying, every image takes the CPU path with the same
    result, and the run log says so once."""
    import torchvision.io

    from exoray.engine.events import read_events
    from exoray.image.gpu_decode import GPU_DECODE_GIVE_UP

    calls = []

    def refuse(tensors, **kwargs):
        calls.append(len(tensors) if isinstance(tensors, list) else 1)
        raise RuntimeError("torchvision was not compiled with nvjpeg support")

    monkeypatch.setattr(torchvision.io, "decode_jpeg", refuse)
    photos = [jpeg_bytes(v) for v in photo_arrays().values()] * 6
    names = [f"p{i}.jpg" for i in range(len(photos))]
    dec = decoder(batch_size=16)
    first = dec(photos[:24], names[:24])
    second = dec(photos[24:], names[24:])
    cpu = [cpu_fallback(SIDE)(d, n) for d, n in zip(photos, names, strict=True)]
    got = torch.cat([first.images, second.images]).numpy()
    assert all(e is None for e in first.errors + second.errors)
    assert np.array_equal(got, np.stack(cpu))  # the CPU path's squares, bit for bit
    assert first.gpu_decoded == second.gpu_decoded == 0
    assert "nvjpeg" in dec.disabled
    assert len(calls) <= 2 * GPU_DECODE_GIVE_UP  # not one failed attempt per image (42)
    assert [e["event"] for e in dec.events].count("gpu_decode_disabled") == 1

    rels = sorted(p.name for p in real_photos.iterdir())
    batch = {"relpath": np.array(rels, dtype=object), "need_clip": np.ones(len(rels), bool)}
    kwargs = {"variant": "tiny", "cache_dir": str(tmp_path / "models"), "device": "cpu"}
    store = Store(str(tmp_path / "base"))
    worker = GpuEmbedWorker({"clip": kwargs}, side=64, store_location=store.location,
                            run_id="r1", decode_batch=1)
    read = ReadBytesWorker(str(real_photos))(batch)
    for _ in range(GPU_DECODE_GIVE_UP):  # two JPEGs per batch: refused until given up
        rows = worker(read)
    cpu_rows = EmbedWorker("clip", kwargs, store.location, "r1")(
        DecodeWorker(str(real_photos), side=64)(batch))
    assert list(rows["error"]) == list(cpu_rows["error"])
    ok = np.array([not e for e in cpu_rows["error"]])
    assert np.allclose(rows["clip_vector"][ok], cpu_rows["clip_vector"][ok], atol=1e-5)
    said = [e for e in read_events(store, "r1") if e["event"] == "gpu_decode_disabled"]
    assert len(said) == 1 and "none decoded" in said[0]["reason"]


def _ctx(decode: str, gpus: float, device: str | None = None) -> StageContext:
    opts = SPEC.resolve_options({"decode": decode, "device": device})
    return StageContext(store=None, run_id="r", image_root="", targets=[], options=opts,  # type: ignore[arg-type]
                        cpus=2, gpus=gpus)


def test_decode_option_picks_the_gpu_only_when_there_is_one() -> None:
    assert decode_on_gpu(_ctx("auto", 1)) is True
    assert decode_on_gpu(_ctx("auto", 0)) is False
    assert decode_on_gpu(_ctx("auto", 1, device="cpu")) is False
    assert decode_on_gpu(_ctx("cpu", 1)) is False
    with pytest.raises(ValueError, match="--decode gpu needs a CUDA GPU.*--decode cpu"):
        decode_on_gpu(_ctx("gpu", 0))
    assert SPEC.option("decode").choices == ("auto", "cpu", "gpu")
