"""The hardened YAML loader: YAML 1.2 scalars on PyYAML, and bounds for
hostile files (size, depth, nodes, scalar length).

Owns: _Loader and _load_yaml(); the name is not yaml.py, which would read
like PyYAML's own module.
Must not: know the schema (schema.py walks what this returns).
"""
from __future__ import annotations

import re
from typing import Any

import yaml

from xdpd.config.model import EXAMPLE
from xdpd.config.values import _Errors, _clip, _got

_BOOL_TAG = "tag:yaml.org,2002:bool"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_MERGE_TAG = "tag:yaml.org,2002:merge"

# The configuration is four levels deep (interfaces[0].queues[0]); PyYAML
# composes nodes recursively, so a few hundred '[' would end in RecursionError.
MAX_DEPTH = 32
# Hostile files (see docs/SECURITY.md): a configuration is a few kilobytes;
# one of MAX_FILE_BYTES is answered (a configuration or its errors) in well
# under 2 s of CPU, in the main loop during a reload.  Aliases may not expand
# the document past MAX_NODES nodes (a "billion laughs" file of a few hundred
# bytes would otherwise expand to millions), no scalar is longer than
# MAX_SCALAR (the longest setting is a path); at most values.MAX_ERRORS
# messages are reported.
MAX_FILE_BYTES = 256 << 10
MAX_NODES = 50_000
MAX_SCALAR = 4096
# No setting takes a number near 2**63; a bigger one would not even print
# (Python refuses int/str conversions beyond 4300 digits).
MAX_INT_BITS = 63

_SCALAR_KINDS = {_INT_TAG: ("!!int", "an integer"), _FLOAT_TAG: ("!!float", "a number"),
                 _BOOL_TAG: ("!!bool", "a boolean"), _TIMESTAMP_TAG: ("!!timestamp", "a date")}
_SURROGATE = re.compile("[\ud800-\udfff]")
# what datetime says about a date or time out of range, worth passing on
_DATE_REASON = re.compile(r"\w+ (?:must be in|is out of range)[\w .]*")


class _ContentError(yaml.MarkedYAMLError):
    """Well-formed YAML the loader refuses, at its place in the file: a scalar
    that is not what YAML reads it as, half a surrogate pair, deep nesting."""


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans and integers that reports duplicate keys.

    Every failure comes out as a yaml.MarkedYAMLError, with the place in the
    file: PyYAML's own scalar constructors raise ValueError, KeyError or
    AttributeError on text like `!!int abc` or `2024-13-01`.
    """

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_BOOL_TAG, _INT_TAG)]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str):
        super().__init__(stream)
        self.duplicate_keys: list[tuple[str, yaml.Mark, yaml.Mark]] = []
        self._depth = 0
        self._sizes: list[int] = []         # expanded size of each collection being composed
        self._total = 0                     # values composed so far, aliases expanded

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _ContentError(None, None, f"nested more than {MAX_DEPTH} levels deep; "
                                    "a configuration needs 4", self.peek_event().start_mark)
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        # nodes the document stands for once every alias is expanded: an
        # alias is the node it names, counted again wherever it is used (a
        # node still in the making, named by a recursive alias, counts 1)
        size = getattr(node, "expanded", 1)
        if self._sizes:
            self._sizes[-1] += size
        self._total += size if self._depth else 0   # the whole document, as it grows
        if self._total > MAX_NODES:
            self._too_many(node)
        return node

    def _too_many(self, node) -> None:
        raise _ContentError(None, None, f"more than {MAX_NODES} values, aliases expanded; "
                            "a configuration needs a few thousand at most (aliases that "
                            "expand without end?)", node.start_mark)

    def compose_sequence_node(self, anchor):
        return self._sized(super().compose_sequence_node, anchor)

    def compose_mapping_node(self, anchor):
        return self._sized(super().compose_mapping_node, anchor)

    def compose_scalar_node(self, anchor):
        node = super().compose_scalar_node(anchor)
        node.expanded = 1
        # (a long integer gets its own message: "too large")
        if len(node.value) > MAX_SCALAR and node.tag != _INT_TAG:
            raise _ContentError(None, None, f"{_clip(node.value)} is {len(node.value)} "
                                f"characters long; no setting takes more than {MAX_SCALAR}",
                                node.start_mark)
        return node

    def _sized(self, compose, anchor):
        self._sizes.append(1)
        try:
            node = compose(anchor)
        finally:
            size = self._sizes.pop()
        node.expanded = size
        if size > MAX_NODES:
            self._too_many(node)
        return node

    def construct_scalar(self, node) -> str:
        value = super().construct_scalar(node)
        half = _SURROGATE.search(value)
        if half:
            raise _ContentError(None, None, _surrogate_problem(value, half.start()),
                                node.start_mark)
        return value

    def construct_checked_scalar(self, node) -> Any:
        """int, float, bool and timestamp: PyYAML's constructor, with its errors marked."""
        tag, kind = _SCALAR_KINDS[node.tag]
        if node.tag == _INT_TAG and len(node.value) > 2 * MAX_INT_BITS:
            value = None      # too long to convert: Python's int() refuses past 4300 digits
        else:
            try:
                value = yaml.SafeLoader.yaml_constructors[node.tag](self, node)
            except (ValueError, LookupError, AttributeError) as exc:
                raise _ContentError(None, None, self._not_a(node, tag, kind, exc),
                                    node.start_mark) from None
        if node.tag == _INT_TAG and (value is None or abs(value).bit_length() > MAX_INT_BITS):
            raise _ContentError(None, None, f"{_clip(node.value)} is too large; no setting "
                                f"takes a number beyond {MAX_INT_BITS} bits", node.start_mark)
        return value

    def _not_a(self, node, tag: str, kind: str, exc: Exception) -> str:
        reason = _DATE_REASON.fullmatch(str(exc))
        reason = f" ({reason.group()})" if reason else ""
        text = _clip(node.value)
        if node.style is None and \
                self.resolve(yaml.ScalarNode, node.value, (True, False)) == node.tag:
            # plain text that YAML took for a date: 2024-13-01
            return (f"{text} reads as {kind} in YAML but is not a valid one{reason}; "
                    "write it in quotes if it is text")
        return f"{text} is tagged {tag} but is not {kind}{reason}; correct it or remove the tag"

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if not isinstance(node, yaml.MappingNode):  # `!!map [1]`: let PyYAML say so
            return super().construct_mapping(node, deep)
        first_seen: dict[tuple[str, str], yaml.Mark] = {}
        for key_node, _ in node.value:
            # a merge key (<<) may legitimately repeat keys it brings in
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            key = (key_node.tag, key_node.value)
            if key in first_seen:
                self.duplicate_keys.append((key_node.value, key_node.start_mark, first_seen[key]))
            else:
                first_seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep)


_Loader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver(
    _INT_TAG, re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F][0-9a-fA-F_]*)$"),
    list("-+0123456789"))
for _tag in _SCALAR_KINDS:
    _Loader.add_constructor(_tag, _Loader.construct_checked_scalar)


def _surrogate_problem(value: str, at: int) -> str:
    """An escaped UTF-16 surrogate ("\\ud83d\\ude00", as JSON writes it): a
    string with one can be neither encoded for a syscall nor printed."""
    pair = value[at:at + 2]
    escaped = "".join(f"\\u{ord(c):04x}" for c in pair)
    if re.fullmatch("[\ud800-\udbff][\udc00-\udfff]", pair):  # YAML does not join a pair
        joined = ord(pair.encode("utf-16-le", "surrogatepass").decode("utf-16-le"))
        return (f"{escaped} in {_clip(value)} is a UTF-16 surrogate pair, which YAML does not "
                f"join; write \\U{joined:08x} or the character itself")
    return (f"{escaped[:6]} in {_clip(value)} is half of a UTF-16 surrogate pair, not a "
            "character; remove it")


_UNREADABLE = object()  # the text is not YAML at all: nothing more to check


def _load_yaml(text: str, errs: _Errors) -> Any:
    loader = None
    try:
        loader = _Loader(text)  # the reader rejects unprintable characters already here
        data = loader.get_single_data()
    except _ContentError as exc:
        errs.line(f"{_place(errs.source, text, exc.problem_mark.index)}: {exc.problem}")
        return _UNREADABLE
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = _place(errs.source, text, mark.index) if mark else errs.source
        problem = (exc.problem or exc.context or "cannot parse").removeprefix("but ")
        if exc.context and exc.context_mark and exc.problem:
            problem += f" ({exc.context} at line {_line(text, exc.context_mark.index)})"
        errs.line(f"{where}: YAML syntax error: {problem}")
        return _UNREADABLE
    except yaml.reader.ReaderError as exc:
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        errs.line(f"{_place(errs.source, text, exc.position)}: YAML syntax error: unacceptable "
                  f"character #x{code:04x}: {exc.reason}")
        return _UNREADABLE
    except yaml.YAMLError as exc:
        errs.line(f"{errs.source}: YAML syntax error: {' '.join(str(exc).split())}")
        return _UNREADABLE
    finally:
        if loader is not None:
            loader.dispose()
    for key, mark, first in loader.duplicate_keys:
        errs.line(f"{_place(errs.source, text, mark.index)}: key {key!r} appears twice "
                  f"in one mapping (first at line {_line(text, first.index)}); keep one")
    return data


# Lines as an editor, sed or grep count them: YAML also breaks lines at a lone
# \r, NEL, U+2028 and U+2029, and its marks would point past the file's end.
def _line(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def _place(source: str, text: str, index: int) -> str:
    """FILE:LINE:COLUMN for a character index into the text."""
    line_start = text.rfind("\n", 0, index) + 1
    return f"{source}:{_line(text, index)}:{index - line_start + 1}"


def _top_level(errs: _Errors, data: Any) -> dict | None:
    if data is None:
        errs.line(f"{errs.source}: the file is empty (or only comments); start from {EXAMPLE}")
        return None
    if not isinstance(data, dict):
        errs.line(f"{errs.source}: expected a mapping with 'interfaces' and 'forward' at the "
                  f"top level, got {_got(data)}; see {EXAMPLE}")
        return None
    return data


