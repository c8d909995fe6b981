"""The schema's verdict as Problems, each worded the way the API words the same rule."""

from __future__ import annotations

from jsonschema import Draft202012Validator, validators

from envfile import bounds as b
from envfile.problems import Path, Problem, field_of, line_at
from envfile.schema import schema_readonly

# An integer is an int, as the API's JSON takes it: 512.0 (an integer to JSON Schema) and
# true (an int to Python) are not.
_TYPES_STRICT = Draft202012Validator.TYPE_CHECKER.redefine(
    "integer", lambda checker, value: isinstance(value, int) and not isinstance(value, bool))
_VALIDATOR = validators.extend(Draft202012Validator, type_checker=_TYPES_STRICT)(schema_readonly())

# The rule of a field whose schema is a pattern or a choice of shapes, by the field's
# name (a list's items by "name[]").
_RULES = {
    "name": b.NAME_RULE,
    "vms[].name": b.VM_NAME_RULE,
    "template": b.TEMPLATE_NAME_RULE,
    "lifetime": b.LIFETIME_RULE,
    "peers[]": b.PEER_RULE,
    "ports[]": (f'must be a port ({b.PORT_MIN}-{b.PORT_MAX}), "<port>/tcp", "<port>/udp" '
                'or {protocol: tcp|udp, inner_port: <port>}'),
    "user_data": f"{b.USER_DATA_RULE}; or @file (read by the tt command)",
}
_UNITS = {"mem_mb": "MiB", "disk_mb": "MiB", "lifetime": "seconds"}
_TYPES = {"string": "text", "integer": "an integer", "boolean": "true or false", "array": "a list",
          "object": "a mapping", "null": "empty", "number": "a number"}
_KNOWN = {(): "an Env file", ("vms", 0): "a VM", ("vms", 0, "ports", 0): "a port"}


def problems_of(data, lines: dict[Path, int]) -> list[Problem]:
    found: list[Problem] = []
    for error in _VALIDATOR.iter_errors(data):
        path = tuple(error.absolute_path)
        if error.validator == "additionalProperties":
            allowed = error.schema.get("properties", {})
            for key in sorted(set(error.instance) - set(allowed), key=str):
                what = _KNOWN.get(tuple(0 if isinstance(p, int) else p for p in path), "this mapping")
                found.append(Problem(line_at(lines, (*path, key)), field_of((*path, key)),
                                     f"is not a field of {what} (its fields: {', '.join(allowed)})"))
            continue
        if error.validator == "required":
            missing = [key for key in error.validator_value if key not in error.instance]
            for key in missing:
                found.append(Problem(line_at(lines, path), field_of((*path, key)), "is required"))
            continue
        found.append(Problem(line_at(lines, path), field_of(path), _message(error, path)))
    return _one_per_field(found)


def _one_per_field(problems: list[Problem]) -> list[Problem]:
    """The first problem of each field: a value of the wrong type also breaks its bounds."""
    seen: set[str] = set()
    kept = []
    for problem in problems:
        if problem.field not in seen:
            seen.add(problem.field)
            kept.append(problem)
    return kept


def _kind(path: Path) -> str:
    if not path:
        return ""
    last = path[-1]
    if isinstance(last, int):
        return f"{path[-2]}[]" if len(path) > 1 else ""
    if len(path) >= 3 and path[-3] == "vms" and last == "name":
        return "vms[].name"
    return str(last)


def _message(error, path: Path) -> str:
    kind = _kind(path)
    keyword = error.validator
    if keyword in ("minimum", "maximum") or (keyword == "type" and kind in ("cpu_num", "mem_mb", "disk_mb")):
        schema = error.schema
        return _between(schema.get("minimum"), schema.get("maximum"), _UNITS.get(kind, ""))
    if kind in _RULES and keyword in ("pattern", "oneOf", "anyOf", "maxLength", "minLength", "type"):
        return _RULES[kind]
    if keyword == "type":
        expected = error.validator_value
        expected = expected if isinstance(expected, list) else [expected]
        return "must be " + " or ".join(_TYPES.get(t, t) for t in expected)
    if keyword == "enum":
        return "must be one of: " + ", ".join(str(v) for v in error.validator_value)
    if keyword == "minItems":
        return "must list at least one VM" if kind == "vms" else f"must list at least {error.validator_value}"
    if keyword == "maxItems":
        return f"must list at most {error.validator_value}"
    if keyword == "uniqueItems":
        return "lists the same item twice"
    return error.message


def _between(low, high, unit: str) -> str:
    unit = f" {unit}" if unit else ""
    return f"must be an integer between {low} and {high}{unit}"
