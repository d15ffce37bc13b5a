"""The prompt registry: ``BASE/prompts/prompt_registry.yaml``, checked and hashed.

The registry is a YAML list of prompts (the packaged ``starter.yaml`` documents the format and is
copied into BASE when the registry is missing). Every mistake is one :class:`PromptError` line
naming the file, line, prompt id, key and the fix, as :mod:`exoray.strata.rules` does for rules
files: lines come from ``yaml.compose`` nodes of one ``yaml.SafeLoader`` pass (no tags, no code).

Each output row carries the prompt's id, version, :attr:`Prompt.hash` and the model id. The hash
covers what the model sees and how its answer is read (rendered text, task, output, choices,
generation settings), not the id, version or model, so a prompt edited without a version bump is
caught by :func:`check_versions` against the hashes earlier runs recorded.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, NoReturn

from exoray.prompts.parsers import OUTPUT_TYPES
from exoray.util.yaml_lines import load_with_lines

__all__ = [
    "GENERATION_KEYS",
    "KEYS",
    "OUTPUT_TYPES",
    "PROMPTS_FILE",
    "TASKS",
    "Prompt",
    "PromptError",
    "Registry",
    "check_versions",
    "load_registry",
    "parse_registry",
    "starter_text",
    "version_problems",
]

PROMPTS_FILE = "prompts/prompt_registry.yaml"
TASKS = ("caption", "vqa", "tags")
KEYS = ("id", "task", "prompt", "version", "output", "choices", "model", "generation")
GENERATION_KEYS = ("max_new_tokens", "temperature", "top_p", "repetition_penalty")
MAX_NEW_TOKENS = 2048
ID_RE = re.compile(r"^[A-Za-z0-9_-]+$")
CHOICES_PLACEHOLDER = "{choices}"

KnownModels = Callable[[str], Any] | Iterable[str]


class PromptError(ValueError):
    """A registry that cannot be used; the message names file, line, prompt, key and fix."""


def starter_text() -> str:
    """The packaged ``starter.yaml``: the prompts a new BASE starts with (and the format's docs)."""
    return resources.files("exoray.prompts").joinpath("starter.yaml").read_text("utf-8")


def _render(prompt: str, choices: tuple[str, ...]) -> str:
    """The text sent to the model: lines right-stripped, outer blank lines dropped, and
    ``{choices}`` replaced by the choices joined with ", "."""
    text = "\n".join(line.rstrip() for line in prompt.strip().splitlines())
    return text.replace(CHOICES_PLACEHOLDER, ", ".join(choices)) if choices else text


@dataclass(frozen=True)
class Prompt:
    """One checked registry entry. ``generation`` holds only the keys the file sets."""

    id: str
    task: str
    prompt: str
    version: int = 1
    output: str = "text"
    choices: tuple[str, ...] = ()
    model: str | None = None
    generation: dict[str, Any] = field(default_factory=dict, hash=False)
    line: int | None = field(default=None, compare=False, hash=False)

    @property
    def key(self) -> str:
        """``id@version``: what identifies this prompt's outputs."""
        return f"{self.id}@{self.version}"

    @property
    def text(self) -> str:
        """The rendered prompt text sent to the model (see :func:`_render`)."""
        return _render(self.prompt, self.choices)

    def canonical(self) -> dict[str, Any]:
        """What :attr:`hash` covers: everything that changes the answer or how it is read."""
        return {"prompt": self.text, "task": self.task, "output": self.output,
                "choices": list(self.choices), "generation": dict(self.generation)}

    @property
    def hash(self) -> str:
        """12 hex digits (blake2b) of :meth:`canonical` as sorted, compact JSON."""
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False)
        return hashlib.blake2b(text.encode("utf-8"), digest_size=6).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """The entry as a registry mapping (defaults left out), e.g. to write a registry."""
        out: dict[str, Any] = {"id": self.id, "task": self.task, "prompt": self.prompt}
        if self.version != 1:
            out["version"] = self.version
        if self.output != "text":
            out["output"] = self.output
        if self.choices:
            out["choices"] = list(self.choices)
        if self.model is not None:
            out["model"] = self.model
        if self.generation:
            out["generation"] = dict(self.generation)
        return out


@dataclass(frozen=True)
class Registry:
    """The checked prompts of one registry file, in file order."""

    prompts: tuple[Prompt, ...]
    path: str
    text: str
    created: bool = False

    def __iter__(self) -> Iterator[Prompt]:
        return iter(self.prompts)

    def __len__(self) -> int:
        return len(self.prompts)

    def __contains__(self, prompt_id: object) -> bool:
        return any(p.id == prompt_id for p in self.prompts)

    def ids(self) -> list[str]:
        return [p.id for p in self.prompts]

    def get(self, prompt_id: str) -> Prompt:
        for prompt in self.prompts:
            if prompt.id == prompt_id:
                return prompt
        close = difflib.get_close_matches(str(prompt_id), self.ids(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise PromptError(f"no prompt {prompt_id!r} in {self.path}{hint}; known ids: "
                          f"{', '.join(self.ids()) or '(none)'}")

    def line_of(self, prompt_id: str) -> int | None:
        """Line of the entry in :attr:`text` (``None`` for an unknown id)."""
        return next((p.line for p in self.prompts if p.id == prompt_id), None)


# -- parsing -------------------------------------------------------------------------------------

def _compose(text: str, source: str) -> tuple[Any, dict[tuple[Any, ...], int]]:
    def describe(path: tuple[Any, ...]) -> str:
        entry = f"entry {path[0] + 1}" if path and isinstance(path[0], int) else "entry"
        return f"{entry}, key {path[-1]!r}"

    return load_with_lines(text, source, error=PromptError, describe=describe,
                           syntax_hint="check indentation, quotes (quote prompts that contain "
                                       "': ' or '#') and the '- ' before each entry")


class _Checker:
    """Validates one entry; every failure is a one-line PromptError."""

    def __init__(self, source: str, lines: dict[tuple[Any, ...], int], index: int,
                 raw: Any, known_models: KnownModels | None) -> None:
        self.source, self.lines, self.index, self.raw = source, lines, index, raw
        self.known_models = known_models
        self.label = f"entry {index + 1}"

    def line(self, *keys: Any) -> int | None:
        path = (self.index, *keys)
        for cut in range(len(path), 0, -1):
            if path[:cut] in self.lines:
                return self.lines[path[:cut]]
        return None

    def fail(self, keys: tuple[Any, ...], problem: str) -> NoReturn:
        where = self.source
        line = self.line(*keys)
        if line is not None:
            where += f" line {line}"
        where += f", {self.label}"
        if keys:
            where += f", key {'.'.join(str(k) for k in keys)!r}"
        raise PromptError(f"{where}: {problem}")

    def unknown(self, keys: tuple[Any, ...], key: Any, valid: tuple[str, ...]) -> NoReturn:
        close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        self.fail((*keys, key), f"unknown key; {hint}valid keys: {', '.join(valid)}")

    def text(self, key: str, what: str, *, required: bool) -> str | None:
        if key not in self.raw or self.raw[key] is None:
            if required:
                self.fail((), f"key {key!r} is missing; add '{key}: {what}'")
            return None
        value = self.raw[key]
        if not isinstance(value, str):
            self.fail((key,), f"must be text, got {value!r}; quote it: {key}: \"{value}\"")
        if not value.strip():
            self.fail((key,), f"is empty; give {what}")
        return value

    def check(self) -> Prompt:
        raw = self.raw
        if not isinstance(raw, dict):
            self.fail((), "each entry must be a mapping starting with '- id: NAME' followed by "
                          "'task:' and 'prompt:' lines indented under it")
        raw_id = raw.get("id")
        if isinstance(raw_id, str) and ID_RE.match(raw_id):
            self.label = f"prompt {raw_id!r}"  # name it in errors about the other keys
        for key in raw:
            if key not in KEYS:
                self.unknown((), key, KEYS)
        prompt_id = self.text("id", "a name such as caption_v1", required=True)
        assert prompt_id is not None
        if not ID_RE.match(prompt_id):
            self.fail(("id",), f"{prompt_id!r} is not a valid id; use letters, digits, _ and - "
                               "only, e.g. caption_v1")
        task = self.text("task", "one of " + ", ".join(TASKS), required=True)
        if task not in TASKS:
            self.fail(("task",), f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
        prompt = self.text("prompt", "the question or instruction for the model", required=True)
        assert prompt is not None
        version = raw.get("version", 1)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            self.fail(("version",), f"must be a whole number of 1 or more, got {version!r}; "
                                    "e.g. version: 2")
        output = raw.get("output", "text")
        if output is None:
            output = "text"
        if not isinstance(output, str) or output not in OUTPUT_TYPES:
            self.fail(("output",), f"unknown output type {output!r}; valid types: "
                                   f"{', '.join(OUTPUT_TYPES)}")
        choices = self.choices(output)
        model = self.model()
        generation = self.generation()
        return Prompt(id=prompt_id, task=task, prompt=prompt, version=version, output=output,
                      choices=choices, model=model, generation=generation, line=self.line())

    def choices(self, output: str) -> tuple[str, ...]:
        raw = self.raw.get("choices")
        if output != "choice":
            if raw is not None:
                self.fail(("choices",), "choices only apply to 'output: choice'; set that or "
                                        "remove choices")
            return ()
        if raw is None:
            self.fail(("output",), "'output: choice' needs a list of answers; add e.g. "
                                   "'choices: [person, animal, vehicle]'")
        if not isinstance(raw, list) or len(raw) < 2:
            self.fail(("choices",), "must be a list of at least two answers, e.g. "
                                    "choices: [person, animal, vehicle]")
        out: list[str] = []
        for i, choice in enumerate(raw):
            if isinstance(choice, bool) or not isinstance(choice, (str, int, float)) \
                    or not str(choice).strip():
                self.fail(("choices", i), f"choice {choice!r} must be non-empty text; quote it")
            text = str(choice).strip()
            if text.lower() in (c.lower() for c in out):
                self.fail(("choices", i), f"choice {text!r} is listed twice; keep one")
            out.append(text)
        return tuple(out)

    def model(self) -> str | None:
        if "model" not in self.raw:
            return None
        model = self.raw["model"]
        if not isinstance(model, str) or not model.strip():
            self.fail(("model",), f"must be a model name, got {model!r}; e.g. model: "
                                  "smolvlm-500m, or remove the key to use the run's model")
        model = model.strip()
        known = self.known_models
        if known is None:
            return model
        if callable(known):
            try:
                ok = known(model)
            except (ValueError, KeyError, LookupError) as exc:
                self.fail(("model",), f"unknown model {model!r}: {exc}")
            if not ok:
                self.fail(("model",), f"unknown model {model!r}; use a model the pipeline knows "
                                      "or remove the key")
            return model
        names = list(known)
        if model not in names:
            close = difflib.get_close_matches(model, names, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            self.fail(("model",), f"unknown model {model!r}; {hint}known models: "
                                  f"{', '.join(names) or '(none)'}")
        return model

    def generation(self) -> dict[str, Any]:
        raw = self.raw.get("generation")
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.fail(("generation",), "must be a mapping, e.g. generation: "
                                       "{max_new_tokens: 32, temperature: 0}")
        out: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in GENERATION_KEYS:
                self.unknown(("generation",), key, GENERATION_KEYS)
            where = ("generation", key)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if key == "max_new_tokens":
                if not isinstance(value, int) or isinstance(value, bool) \
                        or not 1 <= value <= MAX_NEW_TOKENS:
                    self.fail(where, f"must be a whole number from 1 to {MAX_NEW_TOKENS}, got "
                                     f"{value!r}")
                out[key] = value
                continue
            if not number or value != value:
                self.fail(where, f"must be a number, got {value!r}")
            if key == "temperature" and not value >= 0:
                self.fail(where, f"must be 0 or more (0 = greedy), got {value!r}")
            if key == "top_p" and not 0 < value <= 1:
                self.fail(where, f"must be above 0 and at most 1, got {value!r}")
            if key == "repetition_penalty" and not value > 0:
                self.fail(where, f"must be above 0 (1 = no penalty), got {value!r}")
            out[key] = float(value)  # 0 and 0.0 hash alike
        return out


def parse_registry(text: str, source: str = PROMPTS_FILE, *,
                   known_models: KnownModels | None = None, path: str | None = None,
                   created: bool = False) -> Registry:
    """Check registry YAML ``text``; ``source`` names the file in errors.

    ``known_models`` (optional) checks each ``model:``: a callable that returns false or raises
    ValueError/KeyError for an unknown model, or a collection of known names.
    """
    text = text.lstrip("\ufeff")
    data, lines = _compose(text, source)
    fix = "add prompts as a YAML list, each starting with '- id: NAME' (see the starter file)"
    if data is None:
        raise PromptError(f"{source}: the registry has no prompts; {fix}, or delete the file to "
                          "get the starter prompts back")
    if not isinstance(data, list):
        kind = "a mapping" if isinstance(data, dict) else f"a {type(data).__name__}"
        raise PromptError(f"{source} line {lines.get((), 1)}: the file must be a YAML list of "
                          f"prompts, not {kind}; {fix}")
    if not data:
        raise PromptError(f"{source}: the registry has no prompts; {fix}")
    prompts: list[Prompt] = []
    seen: dict[str, int | None] = {}
    for index, raw in enumerate(data):
        checker = _Checker(source, lines, index, raw, known_models)
        prompt = checker.check()
        if prompt.id in seen:
            checker.fail(("id",), f"id {prompt.id!r} is already used on line {seen[prompt.id]}; "
                                  "ids must be unique: rename one (to change a prompt, edit it "
                                  "and bump its version instead)")
        seen[prompt.id] = prompt.line
        prompts.append(prompt)
    return Registry(prompts=tuple(prompts), path=path or source, text=text, created=created)


def load_registry(store_or_base: Any, *, create: bool = True,
                  known_models: KnownModels | None = None, echo: bool = True) -> Registry:
    """The checked registry of BASE (a :class:`~exoray.storage.store.Store`, a folder or URI).

    A missing registry is created from :func:`starter_text` (written atomically) when ``create``
    is true: ``Registry.created`` is then true and, with ``echo``, one line on stderr says so.
    Without ``create`` a missing registry is a :class:`PromptError`.
    """
    from exoray.storage.store import Store

    store = store_or_base if isinstance(store_or_base, Store) else Store(store_or_base)
    path = store.uri(PROMPTS_FILE)
    created = False
    if not store.exists(PROMPTS_FILE):
        if not create:
            raise PromptError(f"no prompt registry at {path}; create it (a YAML list of prompts) "
                              "or load with create=True to start from the starter prompts")
        text = starter_text()
        store.write_bytes_atomic(text.encode("utf-8"), PROMPTS_FILE)
        created = True
    else:
        data = store.read_bytes(PROMPTS_FILE)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PromptError(f"{PROMPTS_FILE}: not UTF-8 text ({exc.reason} at byte "
                              f"{exc.start}); save it as UTF-8") from None
    registry = parse_registry(text, PROMPTS_FILE, known_models=known_models, path=path,
                              created=created)
    if created and echo:
        print(f"exoray: created {path} with {len(registry)} starter prompts "
              f"({', '.join(registry.ids())}); edit it to add your own", file=sys.stderr)
    return registry


# -- forgotten version bumps ---------------------------------------------------------------------

def _recorded_items(recorded: Mapping[Any, str]) -> Iterator[tuple[str, int, str]]:
    """(id, version, hash) from keys ``(id, version)`` or ``"id@version"``."""
    for key, value in recorded.items():
        if value is None:
            continue
        if isinstance(key, str) and "@" in key:
            prompt_id, _, version = key.rpartition("@")
        else:
            prompt_id, version = key
        yield str(prompt_id), int(version), str(value)


def version_problems(registry: Registry | Iterable[Prompt],
                     recorded: Mapping[Any, str]) -> list[str]:
    """One message per prompt whose hash differs from the hash recorded for its id and version.

    ``recorded`` maps ``(id, version)`` (or ``"id@version"``) to the hash earlier runs wrote
    into their outputs; ids no longer in the registry and other versions are fine.
    """
    by_key: dict[tuple[str, int], str] = {}
    latest: dict[str, int] = {}
    for prompt_id, version, digest in _recorded_items(recorded):
        by_key[(prompt_id, version)] = digest
        latest[prompt_id] = max(latest.get(prompt_id, 0), version)
    source = registry.path if isinstance(registry, Registry) else PROMPTS_FILE
    name = source.rsplit("/", 1)[-1]
    problems = []
    for prompt in registry:
        old = by_key.get((prompt.id, prompt.version))
        if old is None or old == prompt.hash:
            continue
        where = f"{name} line {prompt.line}" if prompt.line else name
        bump = max(latest[prompt.id], prompt.version) + 1
        problems.append(f"prompt {prompt.id} ({where}) changed since version {prompt.version} "
                        f"ran (hash {old} != {prompt.hash}): bump its version to {bump} to run "
                        "it as a new version; the old outputs stay")
    return problems


def check_versions(registry: Registry | Iterable[Prompt], recorded: Mapping[Any, str]) -> None:
    """Raise :class:`PromptError` (one problem per line) if any prompt needs a version bump."""
    problems = version_problems(registry, recorded)
    if problems:
        raise PromptError("\n".join(problems))
