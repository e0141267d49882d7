"""Reading administrator-edited YAML files with line numbers kept.

Every mapping and list loaded here remembers the line it started on, so a
validator further down can say "routing.yaml, line 14: unknown condition
'segmnt'" instead of only "invalid rules".
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration file is wrong; `str()` names the file and line."""

    def __init__(self, source: str, line: int | None, message: str):
        self.source = source
        self.line = line
        self.message = message
        where = f"{source}, line {line}" if line else source
        super().__init__(f"{where}: {message}")


class LineDict(dict):
    """A dict that knows the line it starts on and the line of each key."""

    line: int = 0
    key_lines: dict[Any, int]

    def line_of(self, key: Any) -> int:
        return self.key_lines.get(key, self.line)


class LineList(list):
    line: int = 0


class _LineLoader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):  # type: ignore[override]
        key_lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in key_lines
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} is given twice in the same block", key_node.start_mark)
            key_lines[key] = key_node.start_mark.line + 1
        mapping = LineDict(super().construct_mapping(node, deep=True))
        mapping.line = node.start_mark.line + 1
        mapping.key_lines = key_lines
        return mapping

    def construct_sequence(self, node, deep=False):  # type: ignore[override]
        seq = LineList(super().construct_sequence(node, deep=True))
        seq.line = node.start_mark.line + 1
        return seq


    def construct_yaml_timestamp(self, node):  # type: ignore[override]
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError as exc:  # e.g. 2026-13-01
            raise yaml.constructor.ConstructorError(
                None, None, f"not a real date or time {node.value!r}: {exc}", node.start_mark) from None


_LineLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _LineLoader.construct_mapping
)
_LineLoader.add_constructor("tag:yaml.org,2002:timestamp", _LineLoader.construct_yaml_timestamp)
_LineLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _LineLoader.construct_sequence
)


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML text; syntax errors become ConfigError with the line."""
    try:
        return yaml.load(text, Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError(source, line, str(exc.problem or exc)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, None, str(exc)) from None


def load_yaml(path: str | Path) -> Any:
    """Read and parse a YAML file; a missing or unreadable file is a ConfigError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), None, f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), None, f"not UTF-8 text: {exc}") from None
    return parse_yaml(text, str(path))


def line_of(node: Any, key: str | None = None) -> int | None:
    """The line a loaded mapping/list (or one of its keys) came from."""
    if isinstance(node, LineDict):
        return node.line_of(key) if key is not None else node.line
    if isinstance(node, LineList):
        return node.line
    return None


def did_you_mean(word: Any, choices: Collection[str]) -> str:
    """``; did you mean 'x'?`` for the closest of `choices`, or an empty string."""
    close = difflib.get_close_matches(str(word), sorted(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def reject_unknown_keys(
    mapping: Mapping[Any, Any], known: Collection[str], source: str, what: str,
    *, hints: Mapping[str, str] | None = None,
) -> None:
    """Raise ConfigError at the first key not in `known`, suggesting the closest."""
    for key in mapping:
        if key in known:
            continue
        line = line_of(mapping, key)
        if hints and key in hints:
            raise ConfigError(source, line, f"{key!r} {hints[key]}")
        hint = did_you_mean(key, known) or f"; expected one of: {', '.join(known)}"
        raise ConfigError(source, line, f"unknown {what} {key!r}{hint}")
