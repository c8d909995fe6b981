"""A VM's user-data: the owner's own #cloud-config, checked before any VM is made.

cloud-init reads it on the VM's first boot; a document it cannot parse would be
skipped there without a word. So it is refused here instead, naming the line.

What the API's schema states (the #cloud-config first line, the length, no NUL)
is a 400 when broken; that the rest parses as a YAML mapping is a rule on what the
text encodes, which no schema states: a 422, like an SSH key whose data does not
decode (the API's contract: docs/api.md, "The contract"). Both name the field.
"""

from __future__ import annotations

import yaml

from ttportal import limits
from ttportal.errors import ConflictingInput, InvalidInput


def check_user_data(value, field: str) -> str:
    """The user-data as given ("" for none), or InvalidInput naming `field` and the rule."""
    if value in (None, ""):
        return ""
    if not isinstance(value, str) or len(value) > limits.USER_DATA_MAX:
        raise InvalidInput(field, limits.USER_DATA_RULE)
    if not limits.matches(limits.USER_DATA_PATTERN, value):
        raise InvalidInput(field, limits.USER_DATA_RULE)
    try:
        check_depth(value, field)
        # safe_load: YAML tags cannot name Python objects. Aliases are shared, not
        # copied, so a "billion laughs" document costs no more than its own size.
        document = yaml.safe_load(value)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "not YAML"
        raise ConflictingInput(field, f"is not valid YAML: {problem}{where}") from None
    if document is not None and not isinstance(document, dict):
        raise ConflictingInput(field, "must be a YAML mapping of cloud-config keys (packages:, runcmd:, …)")
    return value


def check_depth(value: str, field: str) -> None:
    """Refuse lists and mappings nested deeper than USER_DATA_DEPTH_MAX (a 422 naming
    `field`), before anything builds them: PyYAML's composer and constructor recurse per
    level (thousands of `[` are a RecursionError). Parsing events comes from a loop in
    both parsers (libyaml's when installed, fast; PyYAML's own otherwise), so counting
    them is safe at any depth, and stops at the first level too deep."""
    depth = 0
    try:
        for event in yaml.parse(value, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > limits.USER_DATA_DEPTH_MAX:
                    raise ConflictingInput(field, limits.USER_DATA_DEPTH_RULE)
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError as exc:
        # libyaml's scanner reads a run of `[` ahead of its events and stops at its own
        # limit (1,000): the same rule, said as ours.
        if "maximum nesting depth" in str(exc):
            raise ConflictingInput(field, limits.USER_DATA_DEPTH_RULE) from None
        raise
