"""Query parameters of the API's lists, taken as strictly as its bodies.

Each is given at most once and must be what the schema says; anything else is a
400 that names the parameter, never a silent default or an ignored filter.
(Parameters the API does not know are ignored, as HTTP caches and proxies add some.)
"""

from __future__ import annotations

import re
from datetime import UTC

import django_filters
from django import forms
from drf_spectacular.utils import extend_schema_field
from rest_framework.exceptions import ValidationError
from rest_framework.filters import BaseFilterBackend, OrderingFilter

from ttportal.limits import ID_MAX, QUERY_TEXT_PATTERN


class SingleValued(BaseFilterBackend):
    """Refuses a parameter given more than once (?page_size=10&page_size=500)."""

    def filter_queryset(self, request, queryset, view):
        params = request.query_params
        repeated = sorted(name for name in params if len(params.getlist(name)) > 1)
        if repeated:
            raise ValidationError({name: ["must be given at most once"] for name in repeated})
        return queryset


class StrictOrdering(OrderingFilter):
    """`ordering`: a comma-separated list of the view's ordering fields, each maybe with "-"."""

    def _pattern(self, view) -> str:
        names = "|".join(re.escape(name) for name in getattr(view, "ordering_fields", []))
        return rf"^-?({names})(,-?({names}))*$"

    def get_ordering(self, request, queryset, view):
        raw = request.query_params.get(self.ordering_param)
        if raw is not None and re.fullmatch(self._pattern(view), raw) is None:
            choices = ", ".join(getattr(view, "ordering_fields", []))
            raise ValidationError({self.ordering_param: [
                f"must be a comma-separated list of {choices}, each optionally prefixed with -"
            ]})
        return super().get_ordering(request, queryset, view)

    def get_schema_operation_parameters(self, view):
        params = super().get_schema_operation_parameters(view)
        for param in params:
            param["schema"] = {"type": "string", "pattern": self._pattern(view)}
        return params


@extend_schema_field({"type": "integer", "minimum": 1, "maximum": ID_MAX})
class IdFilter(django_filters.NumberFilter):
    """An object id to filter by: a plain bounded integer, not a model choice. A model
    choice would check the id against every row and so tell others' ids (400) from
    unknown ones; an unbounded number would overflow the database's integer."""

    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", ID_MAX)
        super().__init__(*args, **kwargs)


class _UtcInstant(django_filters.fields.IsoDateTimeField):
    def to_python(self, value):
        found = super().to_python(value)
        if found is None:
            return None
        try:
            return found.astimezone(UTC)
        except (OverflowError, ValueError):  # year 1 east of UTC, 9999 west of it
            raise forms.ValidationError("must be a date and time within years 1 to 9999 in UTC") from None


class InstantFilter(django_filters.IsoDateTimeFilter):
    """An ISO 8601 date and time, turned into UTC before it reaches the database: any offset
    the syntax allows (+16:39) is taken, which PostgreSQL would refuse as it is, and one that
    UTC cannot hold is a 400 naming the parameter."""

    field_class = _UtcInstant


class _TrueOrFalse(forms.Field):
    def to_python(self, value):
        if value in (None, ""):
            return None
        text = str(value).lower()
        if text not in ("true", "false"):
            raise forms.ValidationError("must be true or false")
        return text == "true"


@extend_schema_field({"type": "boolean"})
class BoolFilter(django_filters.Filter):
    """true or false (django-filter's own BooleanFilter turns anything else into "no filter")."""

    field_class = _TrueOrFalse


@extend_schema_field({"type": "string", "pattern": QUERY_TEXT_PATTERN})
class TextFilter(django_filters.CharFilter):
    """Text to match (empty: no filter); NUL, which no stored text holds, is refused."""


class StrictFilterSet(django_filters.FilterSet):
    """A filter given empty (?status=, ?env=) is refused: django-filter would take it for
    "no filter", but an empty string is no status, id or boolean. Text filters (an empty
    substring matches everything) are the exception."""

    def is_valid(self):
        valid = super().is_valid()
        for name, filter_ in self.filters.items():
            if self.data.get(name) == "" and not isinstance(filter_, TextFilter):
                self.form.add_error(name, "must not be empty")
                valid = False
        return valid
