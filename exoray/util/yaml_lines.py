"""Safe-loading a user's YAML with the line of every key, so errors can name the line.

Rules files (Phase IV) and the prompt registry (Phase VI) are both hand-edited YAML whose every
mistake must be one line naming the file, the line, the key and the fix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml

Path_ = tuple[Any, ...]


def load_with_lines(text: str, source: str, *, error: type[Exception],
                    syntax_hint: str, describe: Callable[[Path_], str]
                    ) -> tuple[Any, dict[Path_, int]]:
    """(data, {key path: line}) of ``text``; YAML syntax errors and a key given twice in one
    mapping (which ``yaml.safe_load`` would silently keep the last of) raise ``error``.

    ``describe(path)`` names a key path in messages, e.g. "key 'flags.dark.threshold'".
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise error(f"{source}{where}: YAML syntax error: {exc.problem or exc.context}; "
                    f"{syntax_hint}") from None
    except yaml.YAMLError as exc:
        raise error(f"{source}: YAML syntax error: {exc}".replace("\n", " ")) from None
    finally:
        loader.dispose()
    lines: dict[Path_, int] = {}
    if node is not None:
        _line_map(node, (), lines, source, error, describe)
    return data, lines


def _line_map(node: yaml.Node, path: Path_, out: dict[Path_, int], source: str,
              error: type[Exception], describe: Callable[[Path_], str]) -> None:
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            line = key_node.start_mark.line + 1
            if path + (key,) in out:
                raise error(f"{source} line {line}, {describe(path + (key,))}: defined twice "
                            f"(first on line {out[path + (key,)]}); keep one")
            out[path + (key,)] = line
            _line_map(value_node, path + (key,), out, source, error, describe)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, path + (i,), out, source, error, describe)
