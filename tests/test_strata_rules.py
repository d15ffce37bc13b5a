"""exoray.strata.rules: defaults, user overrides, the version, and one-line errors naming the
line, flag, key and fix."""

from __future__ import annotations

import json
import textwrap
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from exoray.explore import quality
from exoray.strata import nodes as N
from exoray.strata.rules import Rules, RulesError, default_rules_text, load_rules

DEFAULT_FLAGS = {"high_quality", "photo", "screenshot", "text_heavy", "human_present",
                 "dense_scene", "dark", "light", "blurry", "low_information", "odd_aspect",
                 "odd_size", "grayscale", "near_duplicate"}


def test_packaged_defaults_load():
    text = resources.files("exoray.strata").joinpath("default_rules.yaml").read_text("utf-8")
    assert text == default_rules_text()
    rules = load_rules()
    assert isinstance(rules, Rules)
    assert set(rules.names()) >= DEFAULT_FLAGS
    assert len(rules.version) == 12 and rules.version == load_rules().version
    # cleanvision-style flags reuse quality.py's issues and thresholds
    dark = rules.flag("dark").node
    assert isinstance(dark, N.Feature) and dark.issue == "dark"
    assert dark.threshold == quality.get_issue("dark").threshold
    assert rules.flag("odd_aspect").node.issue == "odd_aspect_ratio"
    assert rules.flag("grayscale").node.threshold is None


def test_dependency_order_inputs_first():
    rules = load_rules("""
flags:
  early: {kind: expr, expr: late and not dark}
  late: {kind: any_of, inputs: [photo, {kind: feature, column: saturation, threshold: 0.5}]}
""")
    names = rules.names()
    assert names.index("late") < names.index("early")
    assert names.index("photo") < names.index("late") and names.index("dark") < names.index("early")
    hq = names.index("high_quality")
    assert all(names.index(n) < hq for n in ("low_resolution", "blurry", "redundant"))


def test_introspection():
    rules = load_rules()
    assert rules.embedding_models() == {"clip"}
    assert {"image_id", "fingerprint", "brightness", "contrast", "sharpness", "entropy",
            "width", "height", "is_grayscale", "content_hash", "phash"} <= rules.feature_columns()
    prompts = rules.prompt_sets()
    assert set(prompts) == {"photo", "screenshot", "text_heavy", "human_present", "dense_scene"}
    assert "a page of text" in prompts["text_heavy"] and "a photo" in prompts["photo"]
    assert all(len(p) == len(set(p)) for p in prompts.values())
    only_features = load_rules("include_defaults: false\nflags: {d: {kind: feature, issue: dark}}")
    assert only_features.embedding_models() == set() and only_features.prompt_sets() == {}


def test_version_changes_iff_a_rule_changes():
    base = load_rules().version
    assert load_rules("flags: {dark: {threshold: 0.32}}").version == base  # the default value
    assert load_rules("flags: {dark: {help: other words}}").version == base  # help is no rule
    changed = load_rules("flags: {dark: {threshold: 0.3}}")
    assert changed.version != base and changed.flag("dark").node.threshold == 0.3
    assert load_rules("flags: {photo: {margin: 0.01}}").version != base
    assert load_rules("flags: {photo: {margin: 0.0}}").version == base
    assert load_rules("flags: {odd_size: null}").version != base
    assert "odd_size" not in load_rules("flags: {odd_size: null}").names()


def test_to_yaml_round_trips(tmp_path):
    rules = load_rules("flags: {dark: {threshold: 0.25}, sat: {kind: feature, column: saturation,"
                       " op: below, threshold: 0.1}}")
    text = rules.to_yaml()
    assert f"version {rules.version}" in text and "threshold: 0.25" in text
    assert load_rules(text).version == rules.version
    path = tmp_path / "printed.yaml"
    path.write_text(text)
    again = load_rules(path)
    assert again.version == rules.version and again.names() == rules.names()


def test_user_file_adds_replaces_and_starts_empty(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(textwrap.dedent("""\
        include_defaults: false
        flags:
          saturated:
            kind: feature
            column: saturation
            op: above
            threshold: 0.6
          dark:
            kind: feature
            column: brightness
            op: below
            threshold: 0.2
    """))
    for source in (path, str(path)):
        rules = load_rules(source)
        assert rules.names() == ["saturated", "dark"]
        assert rules.flag("dark").node == N.Feature("below", 0.2, column="brightness")


def weights_npz(tmp_path: Path) -> Path:
    path = tmp_path / "head.npz"
    np.savez(path, weight=np.arange(4, dtype=np.float32), bias=np.float32(0.5))
    return path


def test_linear_head_weights_from_files(tmp_path):
    weights_npz(tmp_path)
    (tmp_path / "head.json").write_text(json.dumps({"weight": [0, 1, 2, 3], "bias": 0.5}))
    for name in ("head.npz", "head.json"):
        rules_file = tmp_path / f"{name}.yaml"
        rules_file.write_text(f"""
include_defaults: false
flags:
  aesthetic:
    kind: linear_head
    models: [open_clip:ViT-B-32/openai]
    weights: {name}
    threshold: 5
""")
        rules = load_rules(rules_file)
        head = rules.flag("aesthetic").node
        assert head.weights == (0.0, 1.0, 2.0, 3.0) and head.bias == 0.5 and head.op == "above"
        spec = rules.flag("aesthetic").spec
        assert Path(spec["weights"]).is_absolute() and len(spec["sha256"]) == 64
        assert load_rules(rules.to_yaml()).version == rules.version
    # the version follows the weights file's content
    before = load_rules(tmp_path / "head.npz.yaml").version
    np.savez(tmp_path / "head.npz", weight=np.ones(4), bias=np.float32(0.5))
    assert load_rules(tmp_path / "head.npz.yaml").version != before


def error(source, tmp_path: Path | None = None) -> str:
    if tmp_path is not None:
        path = tmp_path / "rules.yaml"
        path.write_text(textwrap.dedent(source))
        source = path
    with pytest.raises(RulesError) as err:
        load_rules(source)
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("body, words", [
    # unknown key, with a suggestion and the valid keys
    ("flags:\n  photo:\n    margn: 0.1\n",
     ["rules.yaml line 3, flag 'photo', key 'margn': unknown key", "did you mean 'margin'?",
      "valid keys for kind 'zero_shot': embedding, help, kind, margin, negative, positive"]),
    ("flags:\n  dark:\n    threshhold: 0.3\n",
     ["line 3, flag 'dark', key 'threshhold': unknown key", "did you mean 'threshold'?"]),
    # unknown Phase II column: the valid ones are listed
    ("flags:\n  x:\n    kind: feature\n    column: brightnes\n    threshold: 0.1\n",
     ["line 4, flag 'x', key 'column': unknown feature column 'brightnes'",
      "did you mean 'brightness'?", "valid columns: width, height", "sharpness"]),
    # thresholds of the wrong type
    ("flags:\n  dark:\n    threshold: high\n",
     ["line 3, flag 'dark', key 'threshold': must be a number, got 'high' (str)",
      "e.g. threshold: 0.32"]),
    ("flags:\n  x:\n    kind: feature\n    column: entropy\n    threshold: true\n",
     ["line 5, flag 'x', key 'threshold': must be a number, got True"]),
    ("flags:\n  dark:\n    threshold: 3\n",
     ["line 3, flag 'dark', key 'threshold': threshold dark=3.0 is out of range",
      "between 0 and 1"]),
    ("flags:\n  grayscale:\n    threshold: 0.5\n",
     ["line 3, flag 'grayscale', key 'threshold': issue 'grayscale' is yes/no"]),
    # zero_shot without prompts
    ("flags:\n  cat:\n    kind: zero_shot\n    negative: [a dog]\n",
     ["line 2, flag 'cat': needs 'positive': a non-empty list of texts"]),
    ("flags:\n  cat:\n    kind: zero_shot\n    positive: []\n    negative: [a dog]\n",
     ["line 4, flag 'cat', key 'positive': needs 'positive'"]),
    # a flag referring to an unknown flag (inputs, inline, expr)
    ("flags:\n  x:\n    kind: any_of\n    inputs: [dark, blury]\n",
     ["line 4, flag 'x', key 'inputs[1]': unknown flag 'blury'", "did you mean 'blurry'?",
      "flags: blurry, dark"]),
    ("flags:\n  high_quality:\n    expr: not (dark or blury)\n",
     ["line 3, flag 'high_quality', key 'expr': column 14: unknown flag 'blury'"]),
    ("flags:\n  x:\n    kind: not\n    input:\n      kind: all_of\n      inputs: [dark, nope]\n",
     ["line 6, flag 'x', key 'input.inputs[1]': unknown flag 'nope'"]),
    ("flags:\n  x:\n    kind: expr\n    expr: dark and (\n",
     ["line 4, flag 'x', key 'expr': subset 'dark and (', column 11: expected a flag name"]),
    # cycles name the cycle
    ("flags:\n  a:\n    kind: not\n    input: b\n  b:\n    kind: expr\n    expr: photo and a\n",
     ["line 4, flag 'a', key 'input': cycle a -> b -> a"]),
    ("flags:\n  me:\n    kind: any_of\n    inputs: [me]\n", ["cycle me -> me"]),
    # kinds and names
    ("flags:\n  x:\n    kind: zero_shoot\n",
     ["line 3, flag 'x', key 'kind': unknown kind 'zero_shoot'", "did you mean 'zero_shot'?"]),
    ("flags:\n  x:\n    column: brightness\n", ["line 2, flag 'x': missing kind"]),
    ("flags:\n  Bad-Name:\n    kind: feature\n", ["line 2, flag 'Bad-Name': flag names are"]),
    ("flags:\n  x_score:\n    kind: feature\n", ["clashes with an output column"]),
    ("flag:\n  x: {}\n", ["line 1, key 'flag': unknown top-level key; valid keys: flags"]),
    ("flags:\n  nothing: null\n", ["line 2, flag 'nothing': 'nothing: null' removes"]),
    ("flags:\n  blurry: null\n", ["flag 'high_quality', key 'expr': column",
                                   "refers to flag 'blurry', which the rules remove"]),
    ("include_defaults: maybe\nflags: {}\n", ["line 1, key 'include_defaults': must be true"]),
    ("flags:\n  dark: {threshold: 0.3}\n  dark: {threshold: 0.2}\n",
     ["line 3, key 'flags.dark': defined twice (first on line 2)"]),
    # evidence / duplicate / head keys
    ("flags:\n  x:\n    kind: evidence\n    table: ocr\n    column: text_area\n    op: over\n"
     "    threshold: 1\n", ["line 6, flag 'x', key 'op': op must be 'above' or 'below'"]),
    ("flags:\n  x:\n    kind: duplicate\n    member: all\n", ["key 'member': member must be"]),
    ("flags:\n  x:\n    kind: linear_head\n    models: [m]\n    weights: [1, 2]\n"
     "    threshold: 1\n", ["line 2, flag 'x': missing key 'bias'"]),
    ("flags:\n  x:\n    kind: linear_head\n    models: [m]\n    weights: nothere.npz\n"
     "    threshold: 1\n", ["line 5, flag 'x', key 'weights': weights file", "does not exist",
                           "give a .npz"]),
    # YAML syntax errors: the line
    ("flags:\n  dark:\n    threshold: 0.3\n   light: {\n", ["rules.yaml line 4", "YAML syntax"]),
    ("flags:\n  photo:\n    positive: [a photo\n    negative: []\n",
     ["YAML syntax error", "line 4"]),
])
def test_errors_name_line_flag_key_and_fix(tmp_path, body, words):
    message = error(body, tmp_path)
    for word in words:
        assert word in message, message


def test_missing_file_and_text_sources(tmp_path):
    message = error(str(tmp_path / "none.yaml"))
    assert "rules file" in message and "does not exist" in message and "--print-rules" in message
    assert "does not exist" in error(tmp_path / "none")
    assert "is a folder" in error(tmp_path)
    # YAML text is named as such
    assert error("flags: {dark: {threshold: x}}").startswith("rules YAML line 1, flag 'dark'")
    assert "must be a mapping" in error("- just\n- a list\n")
    # an error in a default flag's merged rule still points at the user's key
    assert error("flags: {photo: {positive: 3}}").startswith("rules YAML line 1, flag 'photo', "
                                                              "key 'positive'")


def test_head_sha256_pin(tmp_path):
    weights_npz(tmp_path)
    body = ("include_defaults: false\nflags:\n  h:\n    kind: linear_head\n    models: [m]\n"
            "    weights: head.npz\n    sha256: {sha}\n    threshold: 1\n")
    (tmp_path / "ok.yaml").write_text(body.format(sha="0" * 64))
    message = error(tmp_path / "ok.yaml")
    assert "ok.yaml line 7, flag 'h', key 'sha256'" in message and "the file changed" in message
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    (tmp_path / "bad.yaml").write_text(body.replace("head.npz", "bad.npz")
                                       .replace("    sha256: {sha}\n", ""))
    assert "cannot read bad.npz" in error(tmp_path / "bad.yaml")
