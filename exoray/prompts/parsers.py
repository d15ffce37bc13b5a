"""Turn a model's raw answer into the value a prompt's ``output`` type promises.

:func:`parse_output` never raises: it returns ``(value, None)`` or ``(None, error)`` where the
error is a short string for the output row (the raw text is kept next to it by the pipeline).
Every value is plain JSON-serialisable Python:

========  ==========================================================================
output    value
========  ==========================================================================
text      ``str``: the answer, stripped (chat labels such as ``Assistant:`` removed)
integer   ``int``: the first whole number, in digits (``3``, ``1,204``) or words
          (``three``, ``twenty-one``); ``2.0`` counts, ``2.5`` is an error
number    ``float``: the first number (digits or words); ``45%`` gives ``45.0``
boolean   ``bool``: ``yes``/``no``/``true``/``false`` as the first word (any case)
choice    ``str``: one of the prompt's ``choices``, spelled as in the registry: the whole
          answer if it is a choice, else the choice mentioned first (plurals and
          ``_``/``-``/space variants count), else the closest spelling (difflib)
json      ``dict`` or ``list``: the first JSON object or array, ```` ```json ```` fences and
          text around it ignored
list      ``list[str]``: a JSON array of strings if the answer holds one, else the items
          separated by commas, semicolons or new lines (an intro line ending in ``:`` or a
          ``Tags:`` label dropped); bullets, numbering, quotes and trailing dots removed; duplicates (any case) dropped, first spelling kept
========  ==========================================================================

An empty answer is an error for every type.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Sequence
from typing import Any

__all__ = ["OUTPUT_TYPES", "parse_output", "parse_value"]

OUTPUT_TYPES = ("text", "integer", "number", "boolean", "choice", "json", "list")

_UNITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
          "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
          "eighteen", "nineteen")
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
         "eighty": 80, "ninety": 90}
_WORD_VALUES = {w: i for i, w in enumerate(_UNITS)} | _TENS
_WORD_RE = re.compile(
    r"\b(?P<tens>" + "|".join(_TENS) + r")(?:[\s-]+(?P<unit>" + "|".join(_UNITS[1:10]) + r"))?\b"
    r"|\b(?P<word>" + "|".join(sorted(_UNITS, key=len, reverse=True)) + r")\b",
    re.IGNORECASE)
# A sign only where it starts a token ("-3", not the "-3" of "2-3").
_INT_RE = re.compile(r"(?<![\w.,])(?P<sign>[-+])?(?P<digits>\d{1,3}(?:,\d{3})+|\d+)"
                     r"(?P<frac>\.\d+)?(?![\d])")
_NUM_RE = re.compile(r"(?<![\w.,])(?P<sign>[-+])?(?P<body>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
                     r"|\.\d+)(?P<exp>[eE][-+]?\d+)?(?!\d)")
# "no one" must not read as 1.
_NOT_A_NUMBER_RE = re.compile(r"\bno[\s-]+one\b|\bsome[\s-]*one\b|\bany[\s-]*one\b"
                              r"|\bevery[\s-]*one\b|\bthe one\b", re.IGNORECASE)
_LABEL_RE = re.compile(r"^\s*(?:assistant|answer)\s*:\s*", re.IGNORECASE)
_END_TOKEN_RE = re.compile(r"(?:\s*(?:<\|[^|<>]*\|>|</?s>|<end_of_utterance>|<eos>))+\s*$",
                           re.IGNORECASE)
_BOOL_RE = re.compile(r"^[\s\"'`*_(\[]*(yes|no|true|false)\b", re.IGNORECASE)
_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_-]*)[ \t]*\n?(.*?)(?:```|$)", re.DOTALL)
_LIST_LABEL_RE = re.compile(r"^\s*[A-Za-z]+(?: [A-Za-z]+){0,2}\s*:\s+(?=\S)")
_BULLET_RE = re.compile(r"^\s*(?:[-*\u2022+]+|\d+[.)]|#)\s*")


def _clean(raw: str) -> str:
    """The answer without surrounding space, a leading chat label or trailing end tokens."""
    text = _END_TOKEN_RE.sub("", raw.strip())
    return _LABEL_RE.sub("", text, count=1).strip()


def _short(text: str, limit: int = 40) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _words_number(match: re.Match[str]) -> int:
    if match.group("tens"):
        value = _TENS[match.group("tens").lower()]
        unit = match.group("unit")
        return value + (_WORD_VALUES[unit.lower()] if unit else 0)
    return _WORD_VALUES[match.group("word").lower()]


def _first_number(text: str, pattern: re.Pattern[str]) -> tuple[re.Match[str] | None,
                                                                  re.Match[str] | None]:
    """(first digits match, first number-word match) or None for each; the earlier one wins."""
    digits = pattern.search(text)
    words = _WORD_RE.search(_NOT_A_NUMBER_RE.sub(lambda m: " " * len(m.group()), text))
    if digits and words:
        return (digits, None) if digits.start() <= words.start() else (None, words)
    return digits, words


def _parse_integer(text: str) -> tuple[Any, str | None]:
    digits, words = _first_number(text, _INT_RE)
    if words is not None:
        return _words_number(words), None
    if digits is None:
        return None, f"no number in the answer {_short(text)}"
    value = int(digits.group("digits").replace(",", ""))
    if digits.group("sign") == "-":
        value = -value
    frac = digits.group("frac")
    if frac and int(frac[1:]) != 0:
        return None, f"not a whole number: {digits.group().strip()}"
    return value, None


def _parse_number(text: str) -> tuple[Any, str | None]:
    digits, words = _first_number(text, _NUM_RE)
    if words is not None:
        return float(_words_number(words)), None
    if digits is None:
        return None, f"no number in the answer {_short(text)}"
    body = digits.group("body").replace(",", "") + (digits.group("exp") or "")
    value = float(body)
    if value != value or value in (float("inf"), float("-inf")):
        return None, f"not a finite number: {digits.group()}"
    return (-value if digits.group("sign") == "-" else value), None


def _parse_boolean(text: str) -> tuple[Any, str | None]:
    match = _BOOL_RE.match(text)
    if match is None:
        return None, f"expected yes or no first, got {_short(text)}"
    return match.group(1).lower() in ("yes", "true"), None


def _choice_pattern(choice: str) -> re.Pattern[str]:
    words = [re.escape(w) for w in re.split(r"[\s_-]+", choice.strip()) if w]
    return re.compile(r"(?<![A-Za-z0-9])" + r"[\s_-]+".join(words) + r"(?:s|es)?(?![A-Za-z0-9])",
                      re.IGNORECASE)


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[\s_-]+", " ", text.lower()).strip(" .,:;!?\"'`*()[]").split())


def _parse_choice(text: str, choices: Sequence[str]) -> tuple[Any, str | None]:
    if not choices:
        return None, "the prompt has no choices to pick from"
    whole = _norm(text)
    for choice in choices:
        if _norm(choice) == whole:
            return choice, None
    best: tuple[int, int, str] | None = None  # (position, -length, choice)
    for choice in choices:
        match = _choice_pattern(choice).search(text)
        if match and (best is None or (match.start(), -len(match.group())) < best[:2]):
            best = (match.start(), -len(match.group()), choice)
    if best is not None:
        return best[2], None
    normed = {_norm(c): c for c in choices}
    for candidate in [whole, *whole.split()]:
        close = difflib.get_close_matches(candidate, list(normed), n=1, cutoff=0.8)
        if close:
            return normed[close[0]], None
    return None, f"none of the choices ({', '.join(choices)}) in the answer {_short(text)}"


def _find_json(text: str) -> tuple[Any, bool]:
    """(first JSON object or array in ``text``, found)."""
    decoder = json.JSONDecoder()
    for start in (m.start() for m in re.finditer(r"[\[{]", text)):
        try:
            value, _ = decoder.raw_decode(text, start)
        except ValueError:
            continue
        if isinstance(value, (dict, list)):
            return value, True
    return None, False


def _json_candidates(text: str) -> list[str]:
    """Fenced blocks first (```json before other fences), then the whole answer."""
    fences = [(lang.lower(), body) for lang, body in _FENCE_RE.findall(text)]
    ordered = [b for lang, b in fences if lang == "json"] + [b for lang, b in fences if lang != "json"]
    return [*ordered, text]


def _parse_json(text: str) -> tuple[Any, str | None]:
    for candidate in _json_candidates(text):
        value, found = _find_json(candidate)
        if found:
            return value, None
    hint = " (cut off? raise max_new_tokens)" if re.search(r"[\[{]", text) else ""
    return None, f"no JSON object or array in the answer{hint}"


def _item(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    if isinstance(value, bool):
        value = str(value).lower()
    text = _BULLET_RE.sub("", str(value)).strip().strip("\"'`*").strip()
    return text.rstrip(".").strip() or None


def _parse_list(text: str) -> tuple[Any, str | None]:
    items: list[Any] | None = None
    for candidate in _json_candidates(text):
        value, found = _find_json(candidate)
        if found and isinstance(value, list):
            items = value
            break
    if items is None:
        body = "\n".join(b for _, b in _FENCE_RE.findall(text)) or text
        lines = body.strip().splitlines()
        if len(lines) > 1 and lines[0].rstrip().endswith(":"):
            lines = lines[1:]  # "Here are the tags:" introducing the items
        elif lines:
            lines[0] = _LIST_LABEL_RE.sub("", lines[0], count=1)  # "Tags: a, b"
        items = [part for line in lines for part in re.split(r"[,;]", line)]
    out: dict[str, str] = {}
    for raw in items:
        item = _item(raw)
        if item and item.lower() not in out:
            out[item.lower()] = item
    if not out:
        return None, "no items in the answer"
    return list(out.values()), None


def parse_value(output: str, raw_text: str | None,
                choices: Sequence[str] = ()) -> tuple[Any, str | None]:
    """``(value, None)`` or ``(None, error)`` for one raw answer under ``output``; never raises."""
    try:
        if raw_text is None or not str(raw_text).strip():
            return None, "empty answer"
        text = _clean(str(raw_text))
        if not text:
            return None, "empty answer"
        if output == "text":
            return text, None
        if output == "integer":
            return _parse_integer(text)
        if output == "number":
            return _parse_number(text)
        if output == "boolean":
            return _parse_boolean(text)
        if output == "choice":
            return _parse_choice(text, list(choices or ()))
        if output == "json":
            return _parse_json(text)
        if output == "list":
            return _parse_list(text)
        return None, f"unknown output type {output!r}; valid: {', '.join(OUTPUT_TYPES)}"
    except Exception as exc:  # noqa: BLE001 - a parser bug must not fail a row
        return None, f"parser error: {type(exc).__name__}: {exc}"


def parse_output(prompt: Any, raw_text: str | None) -> tuple[Any, str | None]:
    """Parse a model's answer to ``prompt`` (a :class:`~exoray.prompts.registry.Prompt`, or
    anything with ``output`` and ``choices``) into ``(value, None)`` or ``(None, error)``."""
    return parse_value(getattr(prompt, "output", "text") or "text", raw_text,
                       getattr(prompt, "choices", ()) or ())
