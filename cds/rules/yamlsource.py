"""The one YAML loader of the project: libyaml speed, duplicate keys refused, ``file:line`` for every value.

Why: informaticians fix what they can find. Every validation issue points at ``file:line`` of the
offending key, as Sigma/pySigma validators do, instead of "rule 7 is invalid". And every start of
``cds evaluate`` or ``cds serve`` parses every rule, test, value set, definition and lab file, so the
parser is libyaml's (``yaml.CSafeLoader``, about 14x faster than the pure-Python one) wherever the
C extension is installed; the pure-Python ``SafeLoader`` is only the fallback.

How the lines are kept cheaply: libyaml composes the node tree (every node carries its
``start_mark``), :class:`LineLoader` constructs the plain Python data from it, and the tree is kept
beside the data. Nothing is indexed up front: :meth:`LoadedYaml.line_of` walks the tree only when a
message needs a line, which on a clean load is almost never.

Rule files, rule tests, definitions (:func:`load_yaml`), value sets (``cds.valuesets``) and lab
definitions (``cds.facts.labs``, :func:`safe_load`) all go through :class:`LineLoader`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["LIBYAML", "LineLoader", "LoadedYaml", "YamlSyntaxError", "compose", "line_of_node", "load_yaml",
           "safe_load"]

Path_ = tuple[str | int, ...]

try:  # libyaml's C parser; the pure-Python one only where PyYAML was built without it
    _Base: type = yaml.CSafeLoader
    LIBYAML = True
except AttributeError:  # pragma: no cover - every supported install ships the C extension
    _Base = yaml.SafeLoader
    LIBYAML = False


class YamlSyntaxError(ValueError):
    """A file is not YAML, or repeats a key; ``line`` is 1-based."""

    def __init__(self, path: Path, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path, self.line, self.message = path, line, message


class LineLoader(_Base):
    """``CSafeLoader`` that refuses duplicate keys (PyYAML silently keeps the last one).

    The error names the line of the repeated key and of its first use: a rule file that sets ``when``
    twice is a mistake, and keeping the second silently would hide half a condition.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[tuple[str, str], int] = {}
        for key_node, _value in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r} (first at line {seen[key]})",
                        key_node.start_mark)
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def compose(text: str) -> tuple[Any, yaml.Node | None]:
    """Parse one YAML document: ``(data, root node)``; raises ``yaml.YAMLError`` (marked when possible)."""
    loader = LineLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        return loader.construct_document(node), node
    finally:
        loader.dispose()


def safe_load(text: str) -> Any:
    """Drop-in for ``yaml.safe_load`` on :class:`LineLoader` (libyaml, duplicate keys refused)."""
    return compose(text)[0]


def line_of_node(root: yaml.Node | None, location: Path_) -> int:
    """1-based line of ``location`` (mapping keys and list indexes) or of its nearest ancestor.

    A mapping entry answers with the line of its key, the way an editor shows where a field is.
    """
    if root is None:
        return 1
    node = root
    line = node.start_mark.line + 1
    for part in location:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            wanted = str(part)
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == wanted:
                    child, line = value_node, key_node.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line


@dataclass
class LoadedYaml:
    """One parsed file: its data and the node tree that knows every line."""

    path: Path
    data: Any
    root: yaml.Node | None = None

    def line_of(self, location: Path_) -> int:
        """The line of ``location`` or of its nearest ancestor that has one (1-based)."""
        return line_of_node(self.root, tuple(location))

    def where(self, location: Path_ = ()) -> str:
        return f"{self.path}:{self.line_of(location)}"


def load_yaml(path: Path, text: str | None = None) -> LoadedYaml:
    """Parse one YAML file; syntax errors and duplicate keys become :class:`YamlSyntaxError` with the line."""
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise YamlSyntaxError(path, 1, f"cannot read the file: {exc}") from None
    try:
        data, root = compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = (mark.line + 1) if mark else 1
        raise YamlSyntaxError(path, line, f"YAML syntax: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(path, 1, f"YAML syntax: {exc}") from None
    return LoadedYaml(path=path, data=data, root=root)
