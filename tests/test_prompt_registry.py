"""exoray.prompts: the Phase VI prompt registry (starter file, one-line errors naming line, key and
fix, the prompt hash, forgotten version bumps) and the answer parsers."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import yaml

from exoray.prompts import (
    OUTPUT_TYPES,
    PROMPTS_FILE,
    Prompt,
    PromptError,
    Registry,
    check_versions,
    load_registry,
    parse_output,
    parse_registry,
    starter_text,
    version_problems,
)
from exoray.prompts.parsers import parse_value
from exoray.storage.store import Store

ISSUE_EXAMPLE = """\
- id: caption_v1
  task: caption
  prompt: "Describe the image factually without interpretation."
- id: count_people
  task: vqa
  version: 2
  prompt: "How many people are in this image? Answer with a number."
  output: integer            # parsed and validated; raw text kept too
  model: smolvlm-500m        # optional default model for this prompt
  generation: {max_new_tokens: 8, temperature: 0}
"""


def reg(text: str, **kwargs) -> Registry:
    return parse_registry(textwrap.dedent(text), **kwargs)


# -- loading and the starter file ----------------------------------------------------------------

def test_missing_registry_is_created_from_starter(tmp_path, capsys):
    registry = load_registry(tmp_path)
    assert registry.created
    written = (tmp_path / PROMPTS_FILE).read_text("utf-8")
    assert written == starter_text() == registry.text
    assert registry.path == str(tmp_path / PROMPTS_FILE)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "created" in err and PROMPTS_FILE in err
    assert not list((tmp_path / "prompts").glob(".tmp-*"))  # atomic write left nothing behind
    again = load_registry(Store(tmp_path))
    assert not again.created and again.ids() == registry.ids()
    assert capsys.readouterr().err == ""


def test_existing_registry_is_not_overwritten(tmp_path, capsys):
    (tmp_path / "prompts").mkdir()
    (tmp_path / PROMPTS_FILE).write_text(ISSUE_EXAMPLE, "utf-8")
    registry = load_registry(tmp_path)
    assert not registry.created and registry.ids() == ["caption_v1", "count_people"]
    assert (tmp_path / PROMPTS_FILE).read_text("utf-8") == ISSUE_EXAMPLE
    assert capsys.readouterr().err == ""


def test_missing_registry_without_create(tmp_path):
    with pytest.raises(PromptError, match="no prompt registry at .*create=True"):
        load_registry(tmp_path, create=False)
    assert not (tmp_path / "prompts").exists()


def test_uri_base_and_quiet_creation(tmp_path, capsys):
    registry = load_registry(f"file://{tmp_path}", echo=False)
    assert registry.created and registry.path.startswith("file://")
    assert capsys.readouterr().err == ""
    assert (tmp_path / PROMPTS_FILE).read_text("utf-8") == starter_text()


def test_errors_in_a_base_file_name_the_file(tmp_path):
    (tmp_path / "prompts").mkdir()
    (tmp_path / PROMPTS_FILE).write_text("- id: a\n  task: caption\n  promt: hi\n", "utf-8")
    with pytest.raises(PromptError) as err:
        load_registry(tmp_path)
    assert str(err.value).startswith(f"{PROMPTS_FILE} line 3, prompt 'a', key 'promt'")
    (tmp_path / PROMPTS_FILE).write_bytes(b"- id: \xff\n")
    with pytest.raises(PromptError, match="not UTF-8"):
        load_registry(tmp_path)


def test_issue_example_loads():
    registry = parse_registry(ISSUE_EXAMPLE)
    caption, count = registry.prompts
    assert caption == Prompt("caption_v1", "caption",
                             "Describe the image factually without interpretation.")
    assert (caption.version, caption.output, caption.model, caption.generation) == (1, "text",
                                                                                    None, {})
    assert count.key == "count_people@2" and count.output == "integer"
    assert count.model == "smolvlm-500m"
    assert count.generation == {"max_new_tokens": 8, "temperature": 0.0}
    assert registry.line_of("caption_v1") == 1 and registry.line_of("count_people") == 4
    assert registry.line_of("nope") is None
    assert registry.get("count_people") is count and "caption_v1" in registry
    assert len(registry) == 2 and list(registry) == [caption, count]
    with pytest.raises(PromptError, match=r"did you mean 'count_people'.*known ids: caption_v1, "
                                          r"count_people"):
        registry.get("count_peple")
    assert len(caption.hash) == 12 and int(caption.hash, 16) >= 0


# -- validation errors: file, line, entry, key and fix -------------------------------------------

BAD = [
    ("not a list", "caption: {task: caption}\n", ["line 1", "must be a YAML list", "- id: NAME"]),
    ("empty file", "# nothing yet\n", ["no prompts", "starter"]),
    ("empty list", "[]\n", ["no prompts"]),
    ("syntax", "- id: a\n  task: caption\n   prompt: x: y\n", ["line 3", "YAML syntax error",
                                                             "indentation"]),
    ("entry not a mapping", "- id: a\n  task: caption\n  prompt: hi\n- just text\n",
     ["line 4, entry 2", "must be a mapping", "- id: NAME"]),
    ("missing id", "- task: caption\n  prompt: hi\n", ["line 1, entry 1", "'id' is missing",
                                                       "add 'id:"]),
    ("bad id", "- id: my prompt\n  task: caption\n  prompt: hi\n",
     ["line 1, entry 1, key 'id'", "letters, digits, _ and -"]),
    ("number id", "- id: 7\n  task: caption\n  prompt: hi\n", ["key 'id'", "quote it"]),
    ("duplicate id", "- id: a\n  task: caption\n  prompt: hi\n- id: a\n  task: vqa\n  prompt: x\n",
     ["line 4, prompt 'a', key 'id'", "already used on line 1", "rename one", "bump its version"]),
    ("unknown task", "- id: a\n  task: describe\n  prompt: hi\n",
     ["line 2, prompt 'a', key 'task'", "'describe'", "valid tasks: caption, vqa, tags"]),
    ("missing task", "- id: a\n  prompt: hi\n", ["line 1, prompt 'a'", "'task' is missing",
                                                 "caption, vqa, tags"]),
    ("missing prompt", "- id: a\n  task: caption\n", ["line 1, prompt 'a'", "'prompt' is missing",
                                                      "add 'prompt:"]),
    ("empty prompt", "- id: a\n  task: caption\n  prompt: '  '\n",
     ["line 3, prompt 'a', key 'prompt'", "is empty"]),
    ("null prompt", "- id: a\n  task: caption\n  prompt:\n", ["'prompt' is missing"]),
    ("unknown key", "- id: a\n  task: caption\n  promt: hi\n",
     ["line 3, prompt 'a', key 'promt'", "did you mean 'prompt'?", "valid keys: id, task, prompt"]),
    ("duplicate key", "- id: a\n  task: caption\n  prompt: hi\n  prompt: ho\n",
     ["line 4", "key 'prompt'", "defined twice (first on line 3)", "keep one"]),
    ("version zero", "- id: a\n  task: caption\n  prompt: hi\n  version: 0\n",
     ["line 4, prompt 'a', key 'version'", "whole number of 1 or more", "version: 2"]),
    ("version text", "- id: a\n  task: caption\n  prompt: hi\n  version: two\n", ["key 'version'"]),
    ("version float", "- id: a\n  task: caption\n  prompt: hi\n  version: 1.5\n",
     ["key 'version'"]),
    ("version bool", "- id: a\n  task: caption\n  prompt: hi\n  version: true\n",
     ["key 'version'"]),
    ("unknown output", "- id: a\n  task: vqa\n  prompt: hi\n  output: bool\n",
     ["line 4, prompt 'a', key 'output'", "'bool'", "valid types: " + ", ".join(OUTPUT_TYPES)]),
    ("choice without choices", "- id: a\n  task: vqa\n  prompt: hi\n  output: choice\n",
     ["line 4, prompt 'a', key 'output'", "choices: ["]),
    ("one choice", "- id: a\n  task: vqa\n  prompt: hi\n  output: choice\n  choices: [x]\n",
     ["line 5, prompt 'a', key 'choices'", "at least two"]),
    ("repeated choice", "- id: a\n  task: vqa\n  prompt: hi\n  output: choice\n"
                        "  choices: [cat, Cat]\n", ["key 'choices.1'", "listed twice"]),
    ("choices without choice", "- id: a\n  task: vqa\n  prompt: hi\n  choices: [x, y]\n",
     ["line 4, prompt 'a', key 'choices'", "only apply to 'output: choice'"]),
    ("empty model", "- id: a\n  task: caption\n  prompt: hi\n  model: ''\n",
     ["line 4, prompt 'a', key 'model'", "must be a model name", "remove the key"]),
    ("model number", "- id: a\n  task: caption\n  prompt: hi\n  model: 3\n", ["key 'model'"]),
    ("generation not mapping", "- id: a\n  task: caption\n  prompt: hi\n  generation: 8\n",
     ["line 4, prompt 'a', key 'generation'", "must be a mapping", "max_new_tokens"]),
    ("generation unknown key", "- id: a\n  task: caption\n  prompt: hi\n"
                               "  generation:\n    max_tokens: 8\n",
     ["line 5, prompt 'a', key 'generation.max_tokens'", "did you mean 'max_new_tokens'?",
      "valid keys: max_new_tokens, temperature, top_p, repetition_penalty"]),
    ("max_new_tokens 0", "- id: a\n  task: caption\n  prompt: hi\n  generation: {max_new_tokens: 0}\n",
     ["line 4", "key 'generation.max_new_tokens'", "from 1 to 2048"]),
    ("max_new_tokens big", "- id: a\n  task: caption\n  prompt: hi\n"
                           "  generation: {max_new_tokens: 4096}\n", ["from 1 to 2048"]),
    ("max_new_tokens text", "- id: a\n  task: caption\n  prompt: hi\n"
                            "  generation: {max_new_tokens: '8'}\n", ["from 1 to 2048"]),
    ("temperature negative", "- id: a\n  task: caption\n  prompt: hi\n"
                             "  generation: {temperature: -0.5}\n",
     ["key 'generation.temperature'", "0 or more"]),
    ("temperature text", "- id: a\n  task: caption\n  prompt: hi\n"
                         "  generation: {temperature: warm}\n", ["must be a number"]),
    ("top_p zero", "- id: a\n  task: caption\n  prompt: hi\n  generation: {top_p: 0}\n",
     ["key 'generation.top_p'", "above 0 and at most 1"]),
    ("top_p big", "- id: a\n  task: caption\n  prompt: hi\n  generation: {top_p: 1.5}\n",
     ["above 0 and at most 1"]),
    ("repetition_penalty", "- id: a\n  task: caption\n  prompt: hi\n"
                           "  generation: {repetition_penalty: 0}\n",
     ["key 'generation.repetition_penalty'", "above 0"]),
]


@pytest.mark.parametrize("text,parts", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_validation_errors(text, parts):
    with pytest.raises(PromptError) as err:
        parse_registry(text, "reg.yaml")
    message = str(err.value)
    assert message.startswith("reg.yaml"), message
    assert "\n" not in message
    for part in parts:
        assert part in message, (part, message)


def test_second_entry_errors_name_their_line():
    text = ISSUE_EXAMPLE + "- id: third\n  task: tags\n  prompt: list tags\n  output: lists\n"
    with pytest.raises(PromptError, match=r"line 14, prompt 'third', key 'output'.*'lists'"):
        parse_registry(text)


def test_known_models_hook():
    text = "- id: a\n  task: caption\n  prompt: hi\n  model: smolvlm-500m\n"
    assert parse_registry(text, known_models=lambda m: m == "smolvlm-500m").get("a").model
    assert parse_registry(text, known_models=["smolvlm-500m", "florence2"]).get("a").model
    with pytest.raises(PromptError, match=r"line 4, prompt 'a', key 'model'.*unknown model"):
        parse_registry(text, known_models=lambda m: False)

    def raises(model):
        raise KeyError(f"no model {model}; known: florence2")

    with pytest.raises(PromptError, match="known: florence2"):
        parse_registry(text, known_models=raises)
    with pytest.raises(PromptError, match=r"did you mean 'smolvlm-256m'\?.*known models: "
                                          r"smolvlm-256m, florence2"):
        parse_registry(text, known_models=("smolvlm-256m", "florence2"))
    # no hook: any non-empty name is accepted (the pipeline checks it later)
    assert parse_registry(text.replace("smolvlm-500m", "whatever")).get("a").model == "whatever"


# -- the hash ------------------------------------------------------------------------------------

HASHED = """\
- id: count
  task: vqa
  prompt: "How many people? Answer with a number."
  output: integer
  generation: {max_new_tokens: 8, temperature: 0}
"""


def one(text: str) -> Prompt:
    return parse_registry(text).prompts[0]


def test_hash_ignores_layout_ids_versions_and_models():
    base = one(HASHED)
    same_layouts = [
        # generation keys reordered, block style, 0 vs 0.0, comments and blank lines
        "- id: count\n  task: vqa\n  prompt: How many people? Answer with a number.\n"
        "  output: integer\n  generation:\n    temperature: 0.0\n    max_new_tokens: 8\n",
        "# my prompts\n\n-   prompt: 'How many people? Answer with a number.'\n"
        "    output: integer    # parsed\n    task: vqa\n    id: count\n"
        "    generation: {temperature: 0, max_new_tokens: 8}\n",
        # folded block scalar: same text, trailing newline dropped when rendered
        "- id: count\n  task: vqa\n  prompt: >\n    How many people?\n    Answer with a number.\n"
        "  output: integer\n  generation: {max_new_tokens: 8, temperature: 0}\n",
    ]
    for text in same_layouts:
        assert one(text).hash == base.hash, text
    assert one(HASHED.replace("id: count", "id: people")).hash == base.hash
    assert one(HASHED + "  version: 7\n").hash == base.hash
    assert one(HASHED + "  model: smolvlm-500m\n").hash == base.hash
    assert base.hash == one(HASHED).hash  # stable across loads


def test_hash_changes_with_what_the_model_sees():
    base = one(HASHED).hash
    changed = [
        HASHED.replace("How many people?", "How many persons?"),
        HASHED.replace("output: integer", "output: number"),
        HASHED.replace("task: vqa", "task: caption"),
        HASHED.replace("max_new_tokens: 8", "max_new_tokens: 9"),
        HASHED.replace("temperature: 0", "temperature: 0.7"),
        HASHED.replace("temperature: 0}", "temperature: 0, top_p: 0.9}"),
        HASHED.replace("  generation: {max_new_tokens: 8, temperature: 0}\n", ""),
    ]
    hashes = {one(text).hash for text in changed}
    assert base not in hashes and len(hashes) == len(changed)
    choice = ("- id: c\n  task: vqa\n  prompt: 'Pick one: {choices}'\n  output: choice\n"
              "  choices: [cat, dog]\n")
    assert one(choice).text == "Pick one: cat, dog"
    assert one(choice).hash != one(choice.replace("[cat, dog]", "[cat, dog, bird]")).hash


def test_hash_is_blake2b_of_canonical_json():
    import hashlib

    prompt = one(HASHED)
    canonical = json.dumps({"prompt": "How many people? Answer with a number.", "task": "vqa",
                            "output": "integer", "choices": [],
                            "generation": {"max_new_tokens": 8, "temperature": 0.0}},
                           sort_keys=True, separators=(",", ":"))
    assert prompt.canonical() == json.loads(canonical)
    assert prompt.hash == hashlib.blake2b(canonical.encode(), digest_size=6).hexdigest()


# -- forgotten version bumps ---------------------------------------------------------------------

def test_forgotten_version_bump_is_caught():
    first = parse_registry(ISSUE_EXAMPLE)
    recorded = {(p.id, p.version): p.hash for p in first}
    assert version_problems(first, recorded) == []
    check_versions(first, recorded)

    edited = parse_registry(ISSUE_EXAMPLE.replace("factually", "plainly"))
    old, new = first.get("caption_v1").hash, edited.get("caption_v1").hash
    problems = version_problems(edited, recorded)
    assert problems == [f"prompt caption_v1 ({PROMPTS_FILE.rsplit('/', 1)[-1]} line 1) changed "
                        f"since version 1 ran (hash {old} != {new}): bump its version to 2 to run "
                        "it as a new version; the old outputs stay"]
    with pytest.raises(PromptError, match="bump its version to 2"):
        check_versions(edited, recorded)

    # bumped: a new version, nothing recorded for it yet
    bumped = parse_registry(ISSUE_EXAMPLE.replace("factually", "plainly").replace(
        '  task: caption\n', '  task: caption\n  version: 2\n'))
    assert version_problems(bumped, recorded) == []
    # a model change alone is not an edit of the prompt
    remodel = parse_registry(ISSUE_EXAMPLE.replace("smolvlm-500m", "florence2"))
    assert version_problems(remodel, recorded) == []


def test_version_check_details():
    registry = parse_registry(ISSUE_EXAMPLE.replace("max_new_tokens: 8", "max_new_tokens: 16"))
    recorded = {"count_people@2": "0" * 12, "count_people@3": "1" * 12,
                ("gone", 1): "2" * 12, ("caption_v1", 5): "3" * 12}
    problems = version_problems(registry, recorded)
    assert len(problems) == 1
    assert problems[0].startswith("prompt count_people (prompt_registry.yaml line 4) changed "
                                  "since version 2 ran (hash 000000000000 != ")
    assert "bump its version to 4" in problems[0]  # 3 already ran too
    two = parse_registry(ISSUE_EXAMPLE.replace("factually", "plainly"))
    recorded = {(p.id, p.version): "f" * 12 for p in two}
    with pytest.raises(PromptError) as err:
        check_versions(two, recorded)
    assert str(err.value).count("\n") == 1  # one problem per line


# -- parsers -------------------------------------------------------------------------------------

PARSED = [
    ("integer", "3", 3),
    ("integer", "Three people.", 3),
    ("integer", "There are 3 people", 3),
    ("integer", "There are 3 people in the image.<end_of_utterance>", 3),
    ("integer", " Assistant: 12", 12),
    ("integer", "I count twenty-one birds", 21),
    ("integer", "ZERO", 0),
    ("integer", "I see 4 people, one of them is a child", 4),
    ("integer", "1,204 birds", 1204),
    ("integer", "2.0", 2),
    ("integer", "2-3 people", 2),
    ("number", "about 3.5 meters", 3.5),
    ("number", "45%", 45.0),
    ("number", "five", 5.0),
    ("number", "-0.25", -0.25),
    ("boolean", "Yes.", True),
    ("boolean", "yes, it is a scanned page", True),
    ("boolean", "**No**, it is a photo", False),
    ("boolean", "TRUE", True),
    ("boolean", "false", False),
    ("json", '{"a": 1}', {"a": 1}),
    ("json", 'Sure! Here it is:\n```json\n{"objects": ["dog", "ball"]}\n```\nHope it helps',
     {"objects": ["dog", "ball"]}),
    ("json", "The result is [1, 2, 3] and {\"b\": 2}", [1, 2, 3]),
    ("json", "{not json} but {\"ok\": true}", {"ok": True}),
    ("list", "dog, cat, Dog,  tree.", ["dog", "cat", "tree"]),
    ("list", '["beach", "dog", "beach", "Sunset"]', ["beach", "dog", "Sunset"]),
    ("list", "```json\n[\"a\", \"b\"]\n```", ["a", "b"]),
    ("list", "Here are the tags:\n- sky\n- sea\n1. sand\n* Sky", ["sky", "sea", "sand"]),
    ("list", "Tags: beach; dog\nsun", ["beach", "dog", "sun"]),
    ("text", "  A dog on a beach.  ", "A dog on a beach."),
    ("text", "Assistant: A dog on a beach.<end_of_utterance>", "A dog on a beach."),
]


@pytest.mark.parametrize("output,raw,value", PARSED)
def test_parsers(output, raw, value):
    got, error = parse_value(output, raw)
    assert error is None and got == value and type(got) is type(value)
    json.dumps(got)


FAILED = [
    ("integer", "none", "no number"),
    ("integer", "No one is in the picture.", "no number"),
    ("integer", "2.5 people", "not a whole number"),
    ("number", "many", "no number"),
    ("boolean", "The answer is yes", "expected yes or no"),
    ("boolean", "Yesterday it rained", "expected yes or no"),
    ("json", "nothing here", "no JSON"),
    ("json", '{"a": [1, 2', "cut off"),
    ("list", " , ;\n", "no items"),
    ("text", "   ", "empty answer"),
    ("integer", None, "empty answer"),
    ("integer", "<end_of_utterance>", "empty answer"),
    ("sentiment", "good", "unknown output type"),
]


@pytest.mark.parametrize("output,raw,error", FAILED)
def test_parser_errors_are_short_strings(output, raw, error):
    value, message = parse_value(output, raw)
    assert value is None and isinstance(message, str) and error in message
    assert len(message) < 200 and "\n" not in message


def test_choice_parser():
    prompt = one("- id: s\n  task: vqa\n  prompt: 'Main subject? One of: {choices}'\n"
                 "  output: choice\n  choices: [person, animal, race car, car, text_document]\n")
    cases = {
        "Animal.": "animal",
        "PERSON": "person",
        "The main subject is a person riding a horse (an animal).": "person",
        "Animals": "animal",
        "a Race Car on a track": "race car",  # the longer choice at the same place
        "a car": "car",
        "Text document": "text_document",
        "text-document": "text_document",
        "persn": "person",  # closest spelling
    }
    for raw, expected in cases.items():
        assert parse_output(prompt, raw) == (expected, None), raw
    value, error = parse_output(prompt, "I don't know")
    assert value is None and "none of the choices (person, animal" in error
    assert parse_value("choice", "cat", ())[1] == "the prompt has no choices to pick from"


def test_parse_output_uses_the_prompt_output_type():
    registry = parse_registry(ISSUE_EXAMPLE)
    assert parse_output(registry.get("count_people"), "Two.") == (2, None)
    assert parse_output(registry.get("caption_v1"), " Two dogs. ") == ("Two dogs.", None)


# -- the starter set -----------------------------------------------------------------------------

def test_starter_set_round_trip():
    registry = parse_registry(starter_text())
    by_output = {p.output for p in registry}
    assert {"text", "integer", "boolean", "choice", "list"} <= by_output
    assert registry.get("count_people").output == "integer"
    assert registry.get("is_text_document").output == "boolean"
    subject = registry.get("main_subject")
    assert subject.output == "choice" and len(subject.choices) >= 3
    assert ", ".join(subject.choices) in subject.text and "{choices}" not in subject.text
    assert {p.task for p in registry} == {"caption", "vqa", "tags"}
    assert all(p.version == 1 and p.generation for p in registry)
    # written back out (defaults dropped) and read again: same prompts, same hashes
    dumped = yaml.safe_dump([p.to_dict() for p in registry], sort_keys=False, allow_unicode=True)
    again = parse_registry(dumped)
    assert [(p.id, p.hash) for p in again] == [(p.id, p.hash) for p in registry]
    assert [p.to_dict() for p in again] == [p.to_dict() for p in registry]
    samples = {"count_people": ("2 people", 2), "is_text_document": ("No.", False),
               "main_subject": ("Animal", "animal"),
               "tags": ('["dog", "beach"]', ["dog", "beach"]),
               "caption_short": ("A dog on a beach.", "A dog on a beach.")}
    for prompt_id, (raw, value) in samples.items():
        assert parse_output(registry.get(prompt_id), raw) == (value, None)


def test_import_needs_neither_torch_nor_ray():
    code = ("import sys, exoray.prompts, exoray.prompts.registry, exoray.prompts.parsers; "
            "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
