"""Phase VI end to end: registry prompts answered by a tiny random VLM through the Ray pipeline
(real generate(), meaningless tokens: the tests check plumbing, lineage and versioning, and the
parsers on what it really generated), plus comparison, search and the forgotten-bump check."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from exoray.prompts import PromptError, load_registry
from exoray.prompts.report import compare, overview, read_answers, search_answers
from exoray.storage.store import Store
from pipelines import interpret, manifest

REGISTRY = """\
- id: caption_v1
  task: caption
  prompt: "Describe the image factually without interpretation."
  generation: {max_new_tokens: 6}
- id: count_people
  task: vqa
  version: 2
  prompt: "How many people are in this image? Answer with a number."
  output: integer
  generation: {max_new_tokens: 4, temperature: 0}
"""


@pytest.fixture(scope="module")
def base(real_photos, tmp_path_factory, ray_session):
    base = tmp_path_factory.mktemp("base")
    manifest.run(base, images=real_photos)
    store = Store(str(base))
    store.write_bytes_atomic(REGISTRY.encode(), "prompts/prompt_registry.yaml")
    return base


def test_two_prompts_one_decode_rows_carry_prompt_and_model(base):
    est = interpret.run(base, ["caption_v1", "count_people"], model="vlm:tiny", estimate=True,
                        show_progress=False)
    assert est.todo == 8 and est.eta_seconds is not None and "timed batch" in est.eta_source
    result = interpret.run(base, ["caption_v1", "count_people"], model="vlm:tiny",
                           batch_size=4, show_progress=False)
    assert result.processed == 6 and result.errors == 2, result
    store = Store(str(base))
    caption = read_answers(store, "caption_v1@1")
    count = read_answers(store, "count_people@2")
    assert caption.num_rows == count.num_rows == 6
    row = caption.to_pylist()[0]
    assert row["prompt_id"] == "caption_v1" and row["prompt_version"] == 1
    assert row["prompt_hash"] == load_registry(store).get("caption_v1").hash
    assert "random" in row["model_id"] and row["weights_hash"]
    assert json.loads(row["generation"])["max_new_tokens"] == 6
    assert all(isinstance(r["raw_text"], str) for r in caption.to_pylist())
    for r in count.to_pylist():  # an integer or a parse error, never both, never neither
        assert (r["value"] is None) != (r["parse_error"] is None)
        if r["value"] is not None:
            assert isinstance(json.loads(r["value"]), int)
    again = interpret.run(base, ["caption_v1", "count_people"], model="vlm:tiny",
                          show_progress=False)
    assert again.run_id is None  # done per (prompt, version, model)


def test_an_edited_prompt_must_bump_its_version(base):
    store = Store(str(base))
    edited = REGISTRY.replace("factually without interpretation", "in five words")
    store.write_bytes_atomic(edited.encode(), "prompts/prompt_registry.yaml")
    with pytest.raises(PromptError, match="bump its version to 2"):
        interpret.run(base, ["caption_v1"], model="vlm:tiny", show_progress=False)
    assert any("caption_v1" in p for p in overview(store)["problems"])
    bumped = edited.replace("  task: caption\n", "  task: caption\n  version: 2\n", 1)
    store.write_bytes_atomic(bumped.encode(), "prompts/prompt_registry.yaml")
    result = interpret.run(base, ["caption_v1"], model="vlm:tiny", show_progress=False)
    assert result.processed == 6
    rows = compare(store, "caption_v1@1", "caption_v1@2")
    assert len(rows) == 6 and {"caption_v1@1", "caption_v1@2"} <= set(rows[0])
    assert read_answers(store, "caption_v1@1").num_rows == 6  # the old version stays


def test_search_and_cli(base):
    store = Store(str(base))
    word = next(w for r in read_answers(store, "caption_v1@2").to_pylist()
                for w in r["raw_text"].split() if len(w) > 2)
    hits = search_answers(store, word)
    assert hits and all(word.lower() in h["text"].lower() for h in hits)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-m", "exoray.cli", "prompts", str(base)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "caption_v1" in proc.stdout and "ran v1" in proc.stdout and "ran v2" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "exoray.cli", "interpret", str(base),
                           "--prompt", "nope"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and "nope" in proc.stderr and "caption_v1" in proc.stderr
    assert "Traceback" not in proc.stderr
