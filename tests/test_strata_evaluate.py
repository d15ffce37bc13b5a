"""exoray.strata.evaluate: flags from hand-made features, zero-shot maths on orthogonal vectors,
linear heads, duplicate keepers, Phase V evidence with fallbacks, and a 200k-row vectorised run."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from exoray.strata import evaluate, load_rules, parse_subset
from exoray.strata.rules import Rules

E = np.eye(4, dtype=np.float32)


def features(rows: list[dict]) -> pa.Table:
    """A Phase II-like table: an ordinary sharp, well-exposed 1024x768 colour photo per row,
    with the given columns changed."""
    rng = np.random.default_rng(7)
    base = {"width": 1024, "height": 768, "brightness": 0.5, "contrast": 0.2, "sharpness": 1000.0,
            "entropy": 7.0, "is_grayscale": False, "bytes": 100_000, "saturation": 0.4}
    out: dict[str, list] = {k: [] for k in ("image_id", "fingerprint", "relpath", *base,
                                            "content_hash", "phash")}
    for i, row in enumerate(rows):
        full = {**base, "image_id": f"id{i}", "fingerprint": f"fp{i}", "relpath": f"img{i}.jpg",
                "content_hash": f"c{i}", "phash": f"{int(rng.integers(0, 2**63)):016x}", **row}
        for key in out:
            out[key].append(full[key])
    types = {"width": pa.int32(), "height": pa.int32(), "bytes": pa.int64(),
             "is_grayscale": pa.bool_()}
    return pa.table({k: pa.array(v, types.get(k, pa.float32() if k in base else pa.string()))
                     for k, v in out.items()})


def flags(evaluation, name: str) -> list:
    return evaluation.table[name].to_pylist()


def test_cleanvision_style_flags_from_hand_made_features():
    table = features([
        {},                                             # 0 ordinary
        {"brightness": 0.1, "contrast": 0.05},          # 1 dark
        {"brightness": 0.92, "contrast": 0.04},         # 2 light
        {"sharpness": 20.0},                            # 3 blurry (20 / 51^2 < 0.03)
        {"is_grayscale": True},                         # 4 grayscale
        {"entropy": 2.0},                               # 5 low information
        {"width": 3000, "height": 600},                 # 6 odd aspect
        {"width": 300, "height": 200},                  # 7 low resolution
        {"width": 100, "height": 100},                  # 8 odd size (and low resolution)
        {}, {}, {},
    ])
    ev = evaluate(load_rules(), table)
    expect = {"dark": {1}, "light": {2}, "blurry": {3}, "grayscale": {4}, "low_information": {5},
              "odd_aspect": {6}, "low_resolution": {7, 8}, "odd_size": {8},
              "near_duplicate": set(), "redundant": set()}
    for name, rows in expect.items():
        assert flags(ev, name) == [i in rows for i in range(12)], name
        assert set(ev.table[f"{name}_evidence"].to_pylist()) == {"features"}, name
    # high_quality: not low_resolution/blurry/dark/light/low_information/redundant
    assert flags(ev, "high_quality") == [i not in {1, 2, 3, 5, 7, 8} for i in range(12)]
    # scores are signed distances past the threshold: > 0 exactly where flagged
    score = np.array(ev.table["dark_score"].to_pylist())
    assert (score > 0).tolist() == flags(ev, "dark")
    assert score[1] == pytest.approx(0.32 - (0.1 + 2 * 0.05), abs=1e-6)
    assert ev.table["grayscale_score"].to_pylist()[4] == 0.5
    assert ev.table["rules_version"].to_pylist() == [load_rules().version] * 12
    assert ev.table["fingerprint"].to_pylist()[0] == "fp0"
    # no clip: content flags are null and skipped with what to run; features flags still count
    for name in ("photo", "screenshot", "text_heavy", "human_present", "dense_scene"):
        assert flags(ev, name) == [None] * 12
        assert ev.table[f"{name}_score"].null_count == 12
        assert "exoray embed BASE --model clip" in ev.skipped[name]
    assert "'ocr' evidence" in ev.skipped["text_heavy"]
    assert set(ev.skipped) == {"photo", "screenshot", "text_heavy", "human_present",
                               "dense_scene"}
    assert any("perceptual hashes" in note for note in ev.notes)


def test_null_feature_values_give_null_flags():
    table = features([{}, {"brightness": None}])
    ev = evaluate(load_rules(), table)
    assert flags(ev, "dark") == [False, None]
    assert ev.table["dark_evidence"].to_pylist() == ["features", None]
    # Kleene: high_quality is null where dark is unknown and nothing else rules it out
    assert flags(ev, "high_quality") == [True, None]


def zero_shot_rules(margin: float = 0.0) -> Rules:
    return load_rules(f"""
include_defaults: false
flags:
  cat:
    kind: zero_shot
    positive: [a cat, a kitten]
    negative: [a dog]
    margin: {margin}
""")


def test_zero_shot_maths_on_orthogonal_vectors():
    text = {"a cat": E[0], "a kitten": E[3], "a dog": E[1]}
    images = np.stack([E[0], E[1], (E[0] + E[1]) / math.sqrt(2), E[2],
                       0.8 * E[0] + 0.6 * E[1], E[3]]).astype(np.float32)
    ids = [f"id{i}" for i in range(6)]
    table = features([{}] * 7)  # id6 has no vector
    ev = evaluate(zero_shot_rules(), table, vectors={"clip": (ids, images, "tiny:clip")},
                  text_vectors=text)
    # score = max cos to positives - max cos to negatives
    scores = ev.table["cat_score"].to_pylist()
    assert scores[:6] == pytest.approx([1.0, -1.0, 0.0, 0.0, 0.2, 1.0], abs=1e-6)
    assert scores[6] is None
    assert flags(ev, "cat") == [True, False, False, False, True, True, None]
    assert ev.table["cat_evidence"].to_pylist() == ["clip"] * 6 + [None]
    assert ev.skipped == {}
    assert any("missing for 1 of 7" in note for note in ev.notes)
    # the margin moves the threshold and the score with it
    ev = evaluate(zero_shot_rules(0.5), table, vectors={"clip": (ids, images, "tiny:clip")},
                  text_vectors=text)
    assert flags(ev, "cat") == [True, False, False, False, False, True, None]
    assert ev.table["cat_score"].to_pylist()[4] == pytest.approx(-0.3, abs=1e-6)


def test_zero_shot_without_text_vectors_is_skipped_not_crashed():
    ids = ["id0"]
    ev = evaluate(zero_shot_rules(), features([{}]),
                  vectors={"clip": (ids, E[:1], "tiny:clip")}, text_vectors={"a cat": E[0]})
    assert flags(ev, "cat") == [None]
    assert "prompt_sets" in ev.skipped["cat"] and "'a kitten'" in ev.skipped["cat"]


def head_rules(weights: str, models: str = "[open_clip:ViT-B-32/openai]") -> str:
    return f"""
include_defaults: false
flags:
  aesthetic:
    kind: linear_head
    models: {models}
    model_name: OpenAI CLIP ViT-B-32
    {weights}
    threshold: 1.0
"""


def test_linear_head_with_hand_made_weights(tmp_path):
    images = np.stack([E[0], E[1], E[2]])
    vectors = {"clip": (["id0", "id1", "id2"], images, "open_clip:ViT-B-32/openai")}
    inline = load_rules(head_rules("weights: [1.0, 2.0, 0.0, 0.0]\n    bias: -0.5"))
    ev = evaluate(inline, features([{}] * 3), vectors=vectors)
    assert ev.table["aesthetic_score"].to_pylist() == pytest.approx([-0.5, 0.5, -1.5])
    assert flags(ev, "aesthetic") == [False, True, False]
    # the same head from an npz file next to the rules file gives the same flags
    np.savez(tmp_path / "head.npz", weight=np.array([[1.0, 2.0, 0.0, 0.0]]), bias=np.array([-0.5]))
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(head_rules("weights: head.npz"))
    from_file = load_rules(rules_file)
    assert flags(evaluate(from_file, features([{}] * 3), vectors=vectors), "aesthetic") == \
        [False, True, False]
    # another model's vectors are never scored
    other = {"clip": (["id0"], E[:1], "open_clip:ViT-B-32/laion2b_s34b_b79k")}
    ev = evaluate(inline, features([{}]), vectors=other)
    assert flags(ev, "aesthetic") == [None]
    reason = ev.skipped["aesthetic"]
    assert "needs OpenAI CLIP ViT-B-32 embeddings" in reason
    assert "BASE has open_clip:ViT-B-32/laion2b_s34b_b79k" in reason
    assert "exoray embed BASE --model clip:ViT-B-32/openai" in reason
    # a head for another dimension
    wide = {"clip": (["id0"], np.ones((1, 8), np.float32) / 8 ** 0.5, "open_clip:ViT-B-32/openai")}
    assert "4 weights" in evaluate(inline, features([{}]), vectors=wide).skipped["aesthetic"]


def test_duplicates_keeper_and_near_duplicates():
    table = features([
        {"width": 2000, "height": 1500, "sharpness": 500.0},   # 0 most pixels: kept
        {"width": 1000, "height": 750, "sharpness": 900.0},    # 1 redundant
        {"width": 1000, "height": 750, "sharpness": 950.0},    # 2 redundant
        {"content_hash": "same"}, {"content_hash": "same", "relpath": "sub/copy.jpg"},  # 3 / 4
        {},                                                    # 5 alone
        {"sharpness": 100.0}, {"sharpness": 200.0},            # 6 / 7: same pixels, 7 sharper
    ])
    dupes = pa.table({"image_id": ["id0", "id1", "id2", "id3", "id4", "id6", "id7", "gone"],
                      "group_id": pa.array([0, 0, 0, 1, 1, 2, 2, 2], pa.int64()),
                      "kind": ["near", "near", "near", "exact", "exact", "near", "near", "near"]})
    ev = evaluate(load_rules(), table, duplicates=dupes)
    assert flags(ev, "redundant") == [False, True, True, False, True, False, True, False]
    # near_duplicate: every member of any duplicate group, byte-identical copies included
    assert flags(ev, "near_duplicate") == [True, True, True, True, True, False, True, True]
    assert set(ev.table["redundant_evidence"].to_pylist()) == {"dupes"}
    assert flags(ev, "high_quality")[:3] == [True, False, False]
    assert not any("perceptual hashes" in n for n in ev.notes)
    # only exact groups count for a rule that says so
    exact = load_rules("flags: {redundant: {kinds: [exact]}}")
    assert flags(evaluate(exact, table, duplicates=dupes), "redundant") == \
        [False, False, False, False, True, False, False, False]


def test_duplicates_grouped_from_phash_without_dupes_table():
    table = features([{"phash": "ffffffffffffffff"}, {"phash": "fffffffffffffffe",
                                                      "width": 500, "height": 400}, {}])
    ev = evaluate(load_rules(), table)
    assert flags(ev, "redundant") == [False, True, False]
    assert flags(ev, "near_duplicate") == [True, True, False]
    assert any("perceptual hashes" in n for n in ev.notes)


def text_inputs():
    rules = load_rules()
    prompts = {p for ps in rules.prompt_sets().values() for p in ps}
    text = {p: E[2] for p in prompts}
    text["a page of text"] = E[0]
    ids = ["id0", "id1", "id2"]
    vectors = {"clip": (ids, np.stack([E[0], E[1], E[0]]), "tiny:clip")}
    return rules, text, vectors


def test_text_heavy_uses_ocr_where_present_else_clip():
    rules, text, vectors = text_inputs()
    table = features([{}] * 3)
    ev = evaluate(rules, table, vectors=vectors, text_vectors=text)
    assert flags(ev, "text_heavy") == [True, False, True]
    assert ev.table["text_heavy_evidence"].to_pylist() == ["clip"] * 3
    ocr = pa.table({"image_id": ["id0", "id1"], "text_area": [0.02, 0.5]})
    ev = evaluate(rules, table, vectors=vectors, text_vectors=text, evidence={"ocr": ocr})
    # OCR overrides CLIP where it ran (id0: little text; id1: a lot), CLIP elsewhere (id2)
    assert flags(ev, "text_heavy") == [False, True, True]
    assert ev.table["text_heavy_evidence"].to_pylist() == ["ocr", "ocr", "clip"]
    assert ev.table["text_heavy_score"].to_pylist()[:2] == pytest.approx([-0.08, 0.4])
    # OCR alone, no clip: computed where OCR ran, null elsewhere, not skipped
    ev = evaluate(rules, table, evidence={"ocr": ocr})
    assert flags(ev, "text_heavy") == [False, True, None]
    assert "text_heavy" not in ev.skipped
    # an evidence table without the column falls back too, and says so if nothing is left
    ev = evaluate(rules, table, evidence={"ocr": pa.table({"image_id": ["id0"], "words": [3]})})
    assert "no column 'text_area'" in ev.skipped["text_heavy"]


def test_human_present_from_detections_any_of():
    rules = load_rules()
    detect = pa.table({"image_id": ["id0", "id1", "id2"], "person_count": [0, 2, 0],
                       "face_count": [1, 0, 0], "object_count": [3, 30, None]})
    ev = evaluate(rules, features([{}] * 4), evidence={"detect": detect})
    assert flags(ev, "human_present") == [True, True, False, None]
    assert ev.table["human_present_evidence"].to_pylist() == ["detect"] * 3 + [None]
    assert flags(ev, "dense_scene") == [False, True, None, None]


def test_kleene_all_of_and_subset_on_the_output():
    rules = load_rules("""
flags:
  dark_photo: {kind: all_of, inputs: [dark, photo]}
  dark_or_photo: {kind: expr, expr: dark or photo}
""")
    ev = evaluate(rules, features([{}, {"brightness": 0.05, "contrast": 0.02}]))
    # false wins over unknown in all_of; true wins in or
    assert flags(ev, "dark_photo") == [False, None]
    assert flags(ev, "dark_or_photo") == [None, True]
    assert ev.table["dark_or_photo_evidence"].to_pylist() == [None, "features"]
    subset = parse_subset("high_quality and not grayscale", rules.names())
    assert subset.mask(ev.table).to_pylist() == [True, False]
    assert parse_subset("not photo", rules.names()).mask(ev.table).to_pylist() == [False, False]


def test_empty_features_table():
    ev = evaluate(load_rules(), features([]))
    assert ev.table.num_rows == 0 and ev.skipped == {}
    assert "high_quality_evidence" in ev.table.column_names


def random_inputs(n: int, d: int, rules: Rules, seed: int = 0):
    """Random Phase II features, unit vectors for 95% of the images, duplicates and evidence."""
    rng = np.random.default_rng(seed)
    ids = pa.array([f"{i:016x}" for i in range(n)])
    table = pa.table({
        "image_id": ids,
        "fingerprint": ids,
        "relpath": pa.array([f"d{i % 97}/{i}.jpg" for i in range(n)]),
        "width": pa.array(rng.integers(64, 4000, n), pa.int32()),
        "height": pa.array(rng.integers(64, 4000, n), pa.int32()),
        "bytes": pa.array(rng.integers(1000, 10**7, n), pa.int64()),
        "brightness": pa.array(rng.random(n, np.float32)),
        "contrast": pa.array(rng.random(n, np.float32) * 0.3),
        "sharpness": pa.array(rng.random(n, np.float32) * 3000),
        "entropy": pa.array(rng.random(n, np.float32) * 8),
        "is_grayscale": pa.array(rng.random(n) < 0.05),
        "content_hash": pa.array([f"{c:032x}" for c in rng.integers(0, n * 4, n)]),
        "phash": pa.array([f"{h:016x}" for h in rng.integers(0, 2**63, n)]),
    })
    keep = np.flatnonzero(rng.random(n) < 0.95)
    vectors = rng.standard_normal((keep.size, d), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    prompts = sorted({p for ps in rules.prompt_sets().values() for p in ps})
    text = rng.standard_normal((len(prompts), d)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    members = rng.choice(n, size=n // 10, replace=False)
    dupes = pa.table({"image_id": ids.take(pa.array(members)),
                      "group_id": pa.array(np.arange(members.size) // 3, pa.int64()),
                      "kind": pa.array(["near"] * members.size)})
    half = rng.choice(n, size=n // 2, replace=False)
    evidence = {
        "ocr": pa.table({"image_id": ids.take(pa.array(half)),
                         "text_area": rng.random(half.size)}),
        "detect": pa.table({"image_id": ids.take(pa.array(half)),
                            "person_count": rng.integers(0, 3, half.size),
                            "face_count": rng.integers(0, 2, half.size),
                            "object_count": rng.integers(0, 20, half.size)}),
    }
    return (table, {"clip": (ids.take(pa.array(keep)), vectors, "tiny:clip")},
            dict(zip(prompts, text, strict=True)), dupes, evidence)


def test_200k_rows_vectorised():
    rules = load_rules()
    table, vectors, text, dupes, evidence = random_inputs(200_000, 512, rules)
    ev = evaluate(rules, table, vectors=vectors, text_vectors=text, duplicates=dupes,
                  evidence=evidence)
    assert ev.table.num_rows == 200_000 and ev.skipped == {}
    assert set(ev.table["text_heavy_evidence"].unique().to_pylist()) == {"ocr", "clip", None}
    assert 0 < ev.table["photo"].null_count < 20_000


def test_rows_flag_a_part_against_the_whole_collection():
    table = features([
        {"width": 2000, "height": 1500}, {"width": 1000, "height": 750},  # a duplicate pair
        {"width": 100, "height": 100},                                    # odd size vs the rest
        {}, {}, {},
    ])
    dupes = pa.table({"image_id": ["id0", "id1"], "group_id": pa.array([0, 0], pa.int64()),
                      "kind": ["near", "near"]})
    rules, text, _ = text_inputs()
    vectors = {"clip": ([f"id{i}" for i in (5, 4, 3, 2, 1, 0)], E[[0, 1, 2, 0, 1, 2]], "m")}
    whole = evaluate(rules, table, duplicates=dupes, vectors=vectors, text_vectors=text)
    assert whole.skipped == {}
    part = [1, 2]
    for rows in (np.array(part), np.isin(np.arange(6), part), pa.array([1, 2])):
        ev = evaluate(rules, table, duplicates=dupes, vectors=vectors, text_vectors=text,
                      rows=rows)
        assert ev.table.equals(whole.table.take(pa.array(part)))
    assert flags(ev, "text_heavy") == [False, True]
    # evaluated alone, the part is its own collection: id1 becomes its group's keeper
    alone = evaluate(rules, table.take(pa.array(part)), duplicates=dupes)
    assert flags(alone, "redundant") == [False, False]
    with pytest.raises(ValueError, match="one value per features row"):
        evaluate(rules, table, rows=np.array([True, False]))
    with pytest.raises(ValueError, match="row numbers in 0..5"):
        evaluate(rules, table, rows=np.array([7]))
