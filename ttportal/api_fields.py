"""Request fields that take exactly what the OpenAPI schema says, nothing looser.

DRF's own fields are lenient on purpose: IntegerField takes "2" and 2.0,
BooleanField takes "yes" and 1, CharField takes 12 and trims spaces,
DateTimeField takes a time without an offset. A client generated from our
schema sends JSON types, and anything else is a client bug that must be
refused (400, naming the field and the rule), not guessed at. The bounds and
patterns come from ttportal.limits, where the services read them too.
"""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime

from drf_spectacular.extensions import OpenApiSerializerExtension
from rest_framework import serializers
from rest_framework.fields import empty
from rest_framework.settings import api_settings

from ttportal.limits import NAME_MAX, NAME_PATTERN, NAME_RULE, between


class Integer(serializers.IntegerField):
    """A JSON integer (not a string, a float or a boolean) between the bounds, both included."""

    def __init__(self, *, min_value: int, max_value: int, unit: str = "", **kwargs):
        rule = between(min_value, max_value, unit)
        messages = {"invalid": rule, "min_value": rule, "max_value": rule, "max_string_length": rule}
        kwargs["error_messages"] = {**messages, **kwargs.get("error_messages", {})}
        super().__init__(min_value=min_value, max_value=max_value, **kwargs)

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return data


class Boolean(serializers.BooleanField):
    """JSON true or false."""

    default_error_messages = {"invalid": "must be true or false"}

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class Text(serializers.CharField):
    """A JSON string taken as sent (no trimming), valid Unicode, whole-matching `pattern`."""

    def __init__(self, *, rule: str, pattern: str = "", **kwargs):
        self.rule, self.pattern = rule, pattern
        kwargs.setdefault("trim_whitespace", False)
        messages = {"invalid": rule, "blank": rule, "max_length": rule, "min_length": rule}
        kwargs["error_messages"] = {**messages, **kwargs.get("error_messages", {})}
        super().__init__(**kwargs)
        if pattern:
            # Read by drf-spectacular for the schema's `pattern`; checked whole below.
            from django.core.validators import RegexValidator

            self.validators.append(RegexValidator(pattern, rule))

    def to_internal_value(self, data):
        # DRF's own validators then refuse NUL and lone surrogates, which no database stores.
        if not isinstance(data, str):
            self.fail("invalid")
        if self.pattern and re.fullmatch(self.pattern, data) is None:
            self.fail("invalid")
        return super().to_internal_value(data)


def Name(**kwargs) -> Text:
    """An Env, VM or snapshot name: a DNS label."""
    return Text(rule=NAME_RULE, pattern=NAME_PATTERN, max_length=NAME_MAX, **kwargs)


# RFC 3339's date-time, as JSON Schema's `format: date-time` means it.
RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


class DateTime(serializers.DateTimeField):
    """An RFC 3339 date and time, with its offset (a time without one is ambiguous)."""

    default_error_messages = {
        "invalid": "must be an RFC 3339 date and time with an offset, e.g. 2026-12-01T18:00:00Z",
    }

    def to_internal_value(self, value):
        if not isinstance(value, str) or RFC3339.fullmatch(value) is None:
            self.fail("invalid")
        try:
            return datetime.fromisoformat(value.upper()).astimezone(UTC)
        except (ValueError, OverflowError):  # 2026-02-30, or past datetime's range in UTC
            self.fail("invalid")


class StrictSerializer(serializers.Serializer):
    """A request body: a JSON object with these fields and no others.

    An unknown field is refused rather than ignored, so a typo ("lifetme") is an
    error and not a silent default; the schema says so (additionalProperties:
    false). `Meta.schema_extra` adds keywords the fields cannot state on their
    own, such as "give end_at or lifetime, not both".
    """

    default_error_messages = {"invalid": "must be a JSON object"}

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(str(key) for key in data if key not in self.fields)
            if unknown:
                raise serializers.ValidationError({key: ["is not a field of this request"]
                                                   for key in unknown})
        return super().to_internal_value(data)

    def run_validation(self, data=empty):
        if data is not empty and data is not None and not isinstance(data, dict):
            # Keyed, as DRF keys its own: a serializer's errors are a dict ("[1]" as a
            # body is a list, not an object, and must not become a 500).
            raise serializers.ValidationError(
                {api_settings.NON_FIELD_ERRORS_KEY: [self.error_messages["invalid"]]}, code="invalid")
        return super().run_validation(data)


class StrictSerializerSchema(OpenApiSerializerExtension):
    target_class = StrictSerializer
    match_subclasses = True

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_basic_serializer(self.target, direction)
        if "__doc__" not in vars(type(self.target)) or type(self.target).__doc__ is None:
            schema.pop("description", None)  # not StrictSerializer's own, inherited
        if direction == "request":
            schema["additionalProperties"] = False
            meta = getattr(self.target, "Meta", None)
            # A copy: drf-spectacular's post-processing rewrites the schema in place, and
            # must not rewrite the class's own keywords for the next schema it builds.
            schema.update(copy.deepcopy(getattr(meta, "schema_extra", {})))
            for name, field in self.target.fields.items():
                # A list of objects (many=True) carries its bounds on the ListSerializer,
                # which drf-spectacular does not read.
                if isinstance(field, serializers.ListSerializer) and name in schema["properties"]:
                    if field.min_length is not None:
                        schema["properties"][name]["minItems"] = field.min_length
                    if field.max_length is not None:
                        schema["properties"][name]["maxItems"] = field.max_length
        return schema
