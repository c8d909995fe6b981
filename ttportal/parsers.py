"""The API's JSON parser: DRF's, with nesting bounded.

Python's json module recurses per level: a body nested a few thousand levels deep
raises RecursionError, which DRF's parser does not catch (a 500). Nothing the API takes
is nested more than a few levels (an Env's VMs, their ports), so a body nested deeper
than JSON_DEPTH_MAX is refused as malformed (400 `parse_error`, naming the rule) before
any serializer, service or JSONField sees it.
"""

from __future__ import annotations

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from ttportal import limits


def depth_of(value) -> int:
    """How deeply lists and objects nest in `value` (a scalar: 0), without recursing."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if deepest > limits.JSON_DEPTH_MAX:
            break  # deep enough to refuse: no need to walk the rest
        stack.extend((child, depth + 1) for child in children)
    return deepest


class BoundedJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(limits.JSON_DEPTH_RULE) from None
        if depth_of(data) > limits.JSON_DEPTH_MAX:
            raise ParseError(limits.JSON_DEPTH_RULE)
        return data
