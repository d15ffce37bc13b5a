"""Stratification rules: the packaged defaults plus a user's YAML, checked and resolved.

Rules are data (``default_rules.yaml`` documents the schema). A user file overrides keys of the
default flags (``dark: {threshold: 0.3}``), replaces a flag (give a different ``kind``), removes
one (``dark: null``) or adds new ones; ``include_defaults: false`` starts from nothing. Every
mistake is one :class:`RulesError` line naming the file, line, flag, key and the fix, because a
rules file is typed by hand and a traceback would hide which line is wrong. Lines come from
``yaml.compose`` nodes, so the file is parsed once with ``yaml.SafeLoader`` (no tags, no code).

The resolved rules hash to a short ``version`` that every output row carries: outputs made under
other rules are recognisably stale, and unchanged rules never force a recompute.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

import yaml

from exoray.explore import quality
from exoray.strata import nodes as N
from exoray.strata._compile import NAME_RE, Compiler
from exoray.strata.expr import KEYWORDS
from exoray.util.yaml_lines import load_with_lines

__all__ = ["FlagRule", "Rules", "RulesError", "default_rules_text", "load_rules"]

FlagRule = N.FlagRule
TOP_KEYS = ("flags", "include_defaults")
RESERVED = ("image_id", "fingerprint", "rules_version")
# Phase II columns every evaluation reads besides the rules' own: the row key, and what picks the
# member to keep in a duplicate group (as `exoray dupes --list`) or groups duplicates on the fly.
KEY_COLUMNS = ("image_id", "fingerprint")
DUPLICATE_COLUMNS = ("relpath", "width", "height", "sharpness", "bytes", "content_hash", "phash")


class RulesError(ValueError):
    """A rules file that cannot be used; the message is one line naming line, flag, key and fix."""


def default_rules_text() -> str:
    """The packaged ``default_rules.yaml`` (also the schema's documentation)."""
    return resources.files("exoray.strata").joinpath("default_rules.yaml").read_text("utf-8")


@dataclass
class _Doc:
    """A parsed YAML document and the line of every key path in it."""

    source: str
    data: Any
    lines: dict[tuple[Any, ...], int]
    base_dir: Path

    def line(self, path: tuple[Any, ...]) -> tuple[int | None, bool]:
        """(line of ``path`` or its nearest ancestor, whether ``path`` itself is in the file)."""
        for cut in range(len(path), 0, -1):
            if path[:cut] in self.lines:
                return self.lines[path[:cut]], cut == len(path)
        return None, False


def _key_text(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _raise(docs: list[_Doc], path: tuple[Any, ...], problem: str) -> NoReturn:
    """One-line error at the most precise place any of ``docs`` (user file first) has."""
    best: tuple[_Doc, int | None] | None = None
    for doc in docs:
        line, exact = doc.line(path)
        if exact:
            best = (doc, line)
            break
        if best is None or (best[1] is None and line is not None):
            best = (doc, line)
    doc, line = best if best else (None, None)
    where = doc.source if doc else "rules"
    if line is not None:
        where += f" line {line}"
    if len(path) >= 2 and path[0] == "flags":
        where += f", flag {path[1]!r}"
        if len(path) > 2:
            where += f", key {_key_text(path[2:])!r}"
    elif path:
        where += f", key {_key_text(path)!r}"
    raise RulesError(f"{where}: {problem}")


def _parse(text: str, source: str, base_dir: Path) -> _Doc:
    data, lines = load_with_lines(
        text, source, error=RulesError,
        syntax_hint="check indentation, quotes and the ':' after each key",
        describe=lambda path: f"key {_key_text(path)!r}")
    doc = _Doc(source, data, lines, base_dir)
    if data is None:
        doc.data = {}
    if not isinstance(doc.data, dict):
        _raise([doc], (), "the file must be a mapping with a 'flags:' key; see "
                          "`exoray stratify --print-rules`")
    for key in doc.data:
        if key not in TOP_KEYS:
            _raise([doc], (key,), f"unknown top-level key; valid keys: {', '.join(TOP_KEYS)}")
    flags = doc.data.get("flags") or {}
    if not isinstance(flags, dict):
        _raise([doc], ("flags",), "must be a mapping of flag name -> rule")
    for name in flags:
        if not isinstance(name, str) or not NAME_RE.match(name) or name in KEYWORDS:
            _raise([doc], ("flags", name), "flag names are lower-case words with digits and _ "
                                           "(not and/or/not), e.g. text_heavy")
        if name in RESERVED or name.endswith(("_score", "_evidence")):
            _raise([doc], ("flags", name), f"the name clashes with an output column; avoid "
                                           f"{', '.join(RESERVED)} and names ending in _score or "
                                           "_evidence")
    doc.data["flags"] = flags
    return doc


def _read(source: str | os.PathLike[str]) -> _Doc:
    """A user rules file or YAML text; a str is a path unless it looks like YAML."""
    text = os.fspath(source)
    is_path = isinstance(source, os.PathLike) or (
        "\n" not in text and (os.path.exists(text) or ":" not in text
                              or text.lower().endswith((".yaml", ".yml", ".json"))))
    if not is_path:
        return _parse(text, "rules YAML", Path.cwd())
    path = Path(text).expanduser()
    fix = "give an existing rules file, or none for the defaults (`exoray stratify --print-rules`)"
    try:
        content = path.read_text("utf-8")
    except FileNotFoundError:
        raise RulesError(f"rules file {text!r} does not exist; {fix}") from None
    except IsADirectoryError:
        raise RulesError(f"rules file {text!r} is a folder; {fix}") from None
    except UnicodeDecodeError as exc:
        raise RulesError(f"rules file {text!r} is not UTF-8 text ({exc.reason} at byte "
                         f"{exc.start}); {fix}") from None
    return _parse(content, path.name, path.resolve().parent)


@dataclass(frozen=True)
class Rules:
    """Resolved flag rules, inputs first, and the version that stamps their outputs."""

    flags: tuple[N.FlagRule, ...]
    version: str

    def names(self) -> list[str]:
        return [f.name for f in self.flags]

    def flag(self, name: str) -> N.FlagRule:
        for rule in self.flags:
            if rule.name == name:
                return rule
        raise KeyError(f"no flag {name!r}; flags: {', '.join(self.names())}")

    def to_yaml(self) -> str:
        """The resolved rules as a rules file: loading it again gives the same version."""
        body = {"include_defaults": False, "flags": {f.name: f.spec for f in self.flags}}
        head = (f"# exoray stratification rules, version {self.version}\n"
                "# Resolved: defaults filled in. Edit and pass with --rules FILE; the schema is "
                "documented in exoray/strata/default_rules.yaml.\n")
        return head + yaml.safe_dump(body, sort_keys=False, allow_unicode=True, width=100)

    def feature_columns(self) -> set[str]:
        """Phase II columns the rules read (plus the row key and duplicate-keeper columns)."""
        columns = set(KEY_COLUMNS)
        for rule in self.flags:
            for leaf in N.leaves(rule.node):
                if isinstance(leaf, N.Feature) and leaf.issue:
                    columns.update(quality.get_issue(leaf.issue).columns)
                elif isinstance(leaf, N.Feature) and leaf.column:
                    columns.add(leaf.column)
                elif isinstance(leaf, N.Duplicate):
                    columns.update(DUPLICATE_COLUMNS)
        return columns

    def prompt_sets(self) -> dict[str, list[str]]:
        """Every prompt of each flag's own zero-shot rules (embed them once per version)."""
        out: dict[str, list[str]] = {}
        for rule in self.flags:
            prompts = [p for leaf in N.leaves(rule.node) if isinstance(leaf, N.ZeroShot)
                       for p in (*leaf.positive, *leaf.negative)]
            if prompts:
                out[rule.name] = list(dict.fromkeys(prompts))
        return out

    def evidence_tables(self) -> dict[str, set[str]]:
        """Phase V tables (``ocr``, ``detect``) and the columns of each that some rule reads."""
        out: dict[str, set[str]] = {}
        for rule in self.flags:
            for leaf in N.leaves(rule.node):
                if isinstance(leaf, N.Evidence):
                    out.setdefault(leaf.table, set()).add(leaf.column)
        return out

    def embedding_models(self) -> set[str]:
        """Embedding families whose image vectors some rule reads, e.g. {'clip'}."""
        return {leaf.embedding for rule in self.flags for leaf in N.leaves(rule.node)
                if isinstance(leaf, (N.ZeroShot, N.LinearHead))}


def _merge(defaults: _Doc, user: _Doc | None) -> dict[str, tuple[dict, list[_Doc]]]:
    """Flag name -> (raw mapping, docs to blame, user first), in definition order."""
    merged: dict[str, tuple[dict, list[_Doc]]] = {}
    if user is not None and not isinstance(user.data.get("include_defaults", True), bool):
        _raise([user], ("include_defaults",), "must be true or false")
    if user is None or user.data.get("include_defaults", True):
        merged = {name: (dict(raw or {}), [defaults])
                  for name, raw in defaults.data["flags"].items()}
    for name, raw in (user.data["flags"] if user else {}).items():
        if raw is None:
            if name not in merged:
                _raise([user], ("flags", name), f"'{name}: null' removes a default flag, but "
                                                "there is none by that name")
            del merged[name]
            continue
        if not isinstance(raw, dict):
            _raise([user], ("flags", name), "must be a mapping of keys (kind: ..., ...), or null "
                                            "to remove a default flag")
        old = merged.get(name)
        if old is not None and raw.get("kind", old[0].get("kind")) == old[0].get("kind"):
            merged[name] = ({**old[0], **raw}, [user, defaults])
        else:
            merged[name] = (dict(raw), [user])
    return merged


def _order(rules: dict[str, N.FlagRule], blame: dict[str, list[_Doc]]) -> list[N.FlagRule]:
    """Flags with their inputs first (depth-first, in definition order); cycles are errors."""
    done: dict[str, bool] = {}  # False while on the stack
    out: list[N.FlagRule] = []

    def visit(name: str, stack: list[str]) -> None:
        if done.get(name) is True:
            return
        if name in done:
            cycle = stack[stack.index(name):] + [name]
            first = cycle[0]
            raw_keys = rules[first].spec
            key = next((k for k in ("inputs", "input", "expr") if k in raw_keys), "kind")
            _raise(blame[first], ("flags", first, key), f"cycle {' -> '.join(cycle)}; a flag "
                                                        "cannot depend on itself, remove one link")
        done[name] = False
        for dep in N.refs(rules[name].node):
            visit(dep, stack + [name])
        done[name] = True
        out.append(rules[name])

    for name in rules:
        visit(name, [])
    return out


def _version(flags: list[N.FlagRule]) -> str:
    canonical = {f.name: {k: v for k, v in f.spec.items() if k != "help"} for f in flags}
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def load_rules(source: str | os.PathLike[str] | None = None) -> Rules:
    """Defaults (``None``), or defaults overridden by a user rules file path or YAML text."""
    defaults = _parse(default_rules_text(), "default_rules.yaml", Path.cwd())
    user = _read(source) if source is not None else None
    merged = _merge(defaults, user)
    removed = {n for n, raw in (user.data["flags"] if user else {}).items() if raw is None}
    compiled: dict[str, N.FlagRule] = {}
    blame: dict[str, list[_Doc]] = {}
    for name, (raw, docs) in merged.items():
        compiler = Compiler(set(merged), docs[0].base_dir, removed)

        def fail(path: tuple[Any, ...], problem: str, _n: str = name,
                 _d: list[_Doc] = docs) -> NoReturn:
            _raise(_d, ("flags", _n) + tuple(path), problem)

        node, spec = compiler.rule(raw, (), fail, top=True)
        compiled[name] = N.FlagRule(name, spec["kind"], node, spec.get("help", ""), spec)
        blame[name] = docs
    ordered = _order(compiled, blame)
    return Rules(flags=tuple(ordered), version=_version(ordered))
