"""Bounded YAML (and JSON, a YAML subset) loading of untrusted spec text.

``yaml.safe_load`` is safe from code execution but not from exhaustion:
under 1 KB of anchors expands to 10**9 leaves once anything walks the result
(pydantic, ``json.dumps``), and deep nesting exhausts Python's recursion in
PyYAML's recursive composer (a ``RecursionError``, a 500). This loader checks,
before anything is constructed:

- the text's size (``SpecLimits.max_bytes``);
- nesting depth while composing (``max_depth``), so the composer never
  recurses deeper than that;
- the number of aliases (``max_aliases``);
- the composed graph with every alias expanded: node count (``max_nodes``),
  scalar characters (``max_expanded_chars``) and depth; computed once per
  node (memoised), so a bomb is measured in microseconds, and refused, never
  walked. A recursive alias (``&a [*a]``) is refused too.

Every refusal is a ``SpecError`` with one readable problem.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from hbd.core.errors import SpecError, SpecProblem
from hbd.core.limits import DEFAULT_SPEC_LIMITS, SpecLimits

__all__ = ["SpecTooLarge", "load_yaml"]


class SpecTooLarge(yaml.YAMLError):
    """The text exceeds a limit of ``SpecLimits`` (raised inside PyYAML, reported as a SpecError)."""


class _BoundedLoader(yaml.SafeLoader):
    def __init__(self, text: str, limits: SpecLimits) -> None:
        super().__init__(text)
        self.limits = limits
        self.depth = 0
        self.aliases = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > self.limits.max_aliases:
                raise SpecTooLarge(
                    f"the spec uses more than {self.limits.max_aliases} YAML aliases"
                )
        self.depth += 1
        if self.depth > self.limits.max_depth:
            raise SpecTooLarge(f"the spec nests deeper than {self.limits.max_depth} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _check_expansion(root: Node, limits: SpecLimits) -> None:
    """Measure ``root`` with aliases expanded; raise SpecTooLarge past any limit."""
    # id(node) -> (nodes, scalar characters, depth) of its expansion.
    done: dict[int, tuple[int, int, int]] = {}
    open_: set[int] = set()

    def too_deep() -> SpecTooLarge:
        return SpecTooLarge(f"the spec nests deeper than {limits.max_depth} levels")

    def measure(node: Node, level: int) -> tuple[int, int, int]:
        # `level`: where this node sits in the expanded document; checked on the
        # way down, so aliases chained into great depth never recurse that far.
        if level > limits.max_depth:
            raise too_deep()
        key = id(node)
        if key in done:
            if level + done[key][2] > limits.max_depth:
                raise too_deep()
            return done[key]
        if key in open_:
            raise SpecTooLarge("the spec has a recursive YAML alias (a node that contains itself)")
        open_.add(key)
        nodes, chars, depth = 1, 0, 0
        children: list[Node] = []
        if isinstance(node, SequenceNode):
            children = list(node.value)
        elif isinstance(node, MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            chars = len(node.value)
        for child in children:
            n, c, d = measure(child, level + 1)
            nodes, chars, depth = nodes + n, chars + c, max(depth, d)
        depth += 1 if children else 0
        open_.discard(key)
        if nodes > limits.max_nodes:
            raise SpecTooLarge(
                f"the spec expands to more than {limits.max_nodes:,} values "
                "(YAML aliases repeat what they point to)"
            )
        if chars > limits.max_expanded_chars:
            raise SpecTooLarge(
                f"the spec expands to more than {limits.max_expanded_chars:,} characters "
                "(YAML aliases repeat what they point to)"
            )
        done[key] = (nodes, chars, depth)
        return done[key]

    measure(root, 1)


_SURROGATES = re.compile("[\ud800-\udfff]")


def _text(value: str) -> str:
    """``value`` as valid Unicode: escaped surrogate pairs joined, a lone surrogate refused.

    YAML's ``"\\ud83d\\ude00"`` (how JSON writes non-BMP characters) gives two
    surrogates, not one character; a lone one cannot be encoded as UTF-8 at all,
    so every response, log line and database row holding it would fail.
    """
    if not _SURROGATES.search(value):
        return value
    try:
        return value.encode("utf-16", "surrogatepass").decode("utf-16")
    except UnicodeDecodeError:
        raise ValueError("a string holds a lone surrogate escape (\\ud800-\\udfff)") from None


def _unicode(data: object) -> object:
    """``data`` with every string (key or value) made valid Unicode; depth is already bounded."""
    if isinstance(data, str):
        return _text(data)
    if isinstance(data, list):
        return [_unicode(v) for v in data]
    if isinstance(data, dict):
        return {_unicode(k): _unicode(v) for k, v in data.items()}
    return data


def load_yaml(text: str, limits: SpecLimits = DEFAULT_SPEC_LIMITS) -> object:
    """Parse one YAML document within ``limits``.

    Raises ``SpecTooLarge`` for a limit and ``yaml.YAMLError`` for bad syntax;
    the caller turns both into a ``SpecError`` (see ``hbd.core.spec.load_spec``).
    """
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limits.max_bytes:
        raise SpecTooLarge(
            f"the spec is {size:,} bytes, more than the limit of {limits.max_bytes:,} "
            "(setting max_spec_bytes)"
        )
    loader = _BoundedLoader(text, limits)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, limits)
        try:
            return _unicode(loader.construct_document(node))
        except (ValueError, TypeError, OverflowError) as exc:
            # int() of a 5,000-digit literal, an unhashable key reaching a dict...
            raise SpecError([SpecProblem("", f"unreadable YAML value: {exc}")]) from None
    finally:
        loader.dispose()
