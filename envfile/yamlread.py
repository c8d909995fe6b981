"""YAML text -> plain data, with the line of every field.

PyYAML composes a node tree that keeps marks; this module builds the data from it
itself, so it knows where each key and item was. On the way it refuses what a
declarative file has no use for and a parser must not be hurt by: keys given twice,
tags (no Python objects), nesting deeper than DEPTH_MAX, and aliases that expand past
NODES_MAX nodes (a "billion laughs"). Merge keys (<<: *base) are taken.
"""

from __future__ import annotations

import re

import yaml

from envfile import bounds
from envfile.problems import Path, Problem, field_of

_MERGE = "tag:yaml.org,2002:merge"
_SCALAR_TAGS = {f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null")}
_MAP, _SEQ = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"
_FAST = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SURROGATE = re.compile("[\ud800-\udfff]")


class _Refused(Exception):
    def __init__(self, problem: Problem):
        self.problem = problem


def read(text: str) -> tuple[object, dict[Path, int], list[Problem]]:
    """(data, lines, problems): `lines` maps each field's path to its 1-based line (a key's
    line for a mapping's entry, an item's first line for a list's). With problems, the data
    is not to be used."""
    try:
        _check_depth(text)
        loader = _FAST(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except _Refused as exc:
        return None, {}, [exc.problem]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or exc.context or "cannot be read"
        return None, {}, [Problem(mark.line + 1 if mark else None, "", f"is not valid YAML: {what}")]
    except yaml.YAMLError as exc:
        return None, {}, [Problem(None, "", f"is not valid YAML: {exc}")]
    if node is None:
        return None, {}, [Problem(1, "", "is empty: an Env file is a mapping with name: and vms:")]
    builder = _Builder()
    builder.lines[()] = node.start_mark.line + 1
    try:
        data = builder.build(node, (), 0)
    except _Refused as exc:
        return None, {}, [exc.problem]
    return data, builder.lines, builder.problems


def _check_depth(text: str) -> None:
    """Nesting counted over events (a loop in either parser, safe at any depth) before
    anything recursive sees the document."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=_FAST):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > bounds.DEPTH_MAX:
                    line = event.start_mark.line + 1 if event.start_mark else None
                    raise _Refused(Problem(line, "", f"nests lists and mappings more than "
                                                     f"{bounds.DEPTH_MAX} levels deep"))
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError as exc:
        if "maximum nesting depth" in str(exc):  # libyaml's own limit, met first
            raise _Refused(Problem(None, "", f"nests lists and mappings more than "
                                             f"{bounds.DEPTH_MAX} levels deep")) from None
        raise


class _Builder:
    def __init__(self):
        self.lines: dict[Path, int] = {}
        self.problems: list[Problem] = []
        self.nodes = 0
        self._scalars = yaml.SafeLoader("")  # its constructors, for scalars only

    def build(self, node: yaml.Node, path: Path, depth: int):
        self.nodes += 1
        if self.nodes > bounds.NODES_MAX:
            raise _Refused(Problem(None, "", f"is too large: more than {bounds.NODES_MAX} values once "
                                             "its aliases are expanded"))
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        if isinstance(node, yaml.SequenceNode):
            if not self._plain_tag(node, _SEQ, path):
                return None
            items = []
            for i, child in enumerate(node.value):
                self.lines[(*path, i)] = child.start_mark.line + 1
                items.append(self.build(child, (*path, i), depth + 1))
            return items
        if not self._plain_tag(node, _MAP, path):
            return None
        return self._mapping(node, path, depth)

    def _mapping(self, node: yaml.MappingNode, path: Path, depth: int) -> dict:
        merged: dict = {}
        own: dict = {}
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE:
                for base in self._merge_sources(value_node, path, depth):
                    merged.update({k: v for k, v in base.items() if k not in merged})
                continue
            key = self._key(key_node, path)
            if key is None:
                continue
            if key in seen:
                self.problems.append(Problem(line, field_of((*path, key)),
                                             f"is given twice (also on line {seen[key]})"))
                continue
            seen[key] = line
            self.lines[(*path, key)] = line
            own[key] = self.build(value_node, (*path, key), depth + 1)
        return {**merged, **own}

    def _merge_sources(self, node: yaml.Node, path: Path, depth: int) -> list[dict]:
        # <<: *base, or <<: [*a, *b] (the first one listed wins, as YAML says).
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        found = []
        for source in sources:
            value = self.build(source, path, depth + 1)  # its keys' lines: where they were written
            if not isinstance(value, dict):
                self.problems.append(Problem(source.start_mark.line + 1, field_of(path),
                                             "<< must merge a mapping"))
            else:
                found.append(value)
        return found

    def _key(self, node: yaml.Node, path: Path) -> str | None:
        key = self.build(node, path, 0) if isinstance(node, yaml.ScalarNode) else None
        if not isinstance(key, str):
            self.problems.append(Problem(node.start_mark.line + 1, field_of(path),
                                         "has a key that is not a name (keys are words like name:)"))
            return None
        return key

    def _plain_tag(self, node: yaml.Node, plain: str, path: Path) -> bool:
        if node.tag != plain:
            self.problems.append(Problem(node.start_mark.line + 1, field_of(path),
                                         f"uses the YAML tag {node.tag}, which an Env file does not take"))
            return False
        return True

    def _scalar(self, node: yaml.ScalarNode, path: Path):
        if node.tag not in _SCALAR_TAGS:
            # Dates, binary and the like are no value of an Env file: said as the tag's own word.
            standard = re.fullmatch(r"tag:yaml\.org,2002:[a-z]+", node.tag) is not None
            message = (f"is a YAML {node.tag.rpartition(':')[2]}; quote it if it is text" if standard
                       else f"uses the YAML tag {node.tag}, which an Env file does not take")
            self.problems.append(Problem(node.start_mark.line + 1, field_of(path), message))
            return None
        value = self._scalars.construct_object(node)
        if isinstance(value, str) and _SURROGATE.search(value):
            # "\ud800" in a quoted string: no database stores it, no name or #cloud-config needs it.
            self.problems.append(Problem(node.start_mark.line + 1, field_of(path),
                                         "is not valid Unicode text (a lone surrogate)"))
            return None
        return value
