"""The OpenAPI side of the API's conventions: the error body, the error responses
every operation really can return, the Idempotency-Key and Retry-After headers."""

from __future__ import annotations

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers

from ttportal.limits import IDEMPOTENCY_KEY_MAX

IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key", {"type": "string", "maxLength": IDEMPOTENCY_KEY_MAX},
    location=OpenApiParameter.HEADER, required=False,
    description="Repeat a request safely: the same key from the same user on the same request "
    "returns the first operation instead of acting twice; the same key on another request (path "
    "or body) is refused with 422 idempotency_key_reused (IETF Idempotency-Key draft).",
)
RETRY_AFTER = OpenApiParameter(
    "Retry-After", int, location=OpenApiParameter.HEADER, response=[409, 429, 503],
    description="Seconds to wait before retrying: until the Env's management cooldown lets another long "
    "operation run (429 cooldown), until the limit named in the body allows one more (429 rate_limited), "
    "until a sleeping Env woken by this request runs again (409 illegal_state), "
    "or until the busy database is worth asking again (503 database_busy).",
)


class ErrorSerializer(serializers.Serializer):
    """Every error body: a stable code to branch on, a message for people."""

    code = serializers.CharField(
        help_text="Stable error code: invalid (400 and 422), forbidden, not_found, not_authenticated, "
        "authentication_failed, method_not_allowed, illegal_state, cooldown (429), "
        "idempotency_key_reused (422), unsupported_feature, resources_exhausted (409), no_capacity (409), "
        "node_down (409), "
        "quota_exceeded (403), rate_limited (429: a limit on how often or how much one user may act, "
        "or failed logins), database_busy (503: nothing was changed, send it again after Retry-After), "
        "too_large (413: a file copied to or from a guest past TT_FILE_MAX_MB), "
        "parse_error, internal, or an engine step code."
    )
    message = serializers.CharField()
    field = serializers.CharField(
        required=False, help_text="The field at fault (400 and 422), e.g. vms[0].name."
    )
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()), required=False,
        help_text="Every field error, DRF style, keyed by field path (400 and 422).",
    )
    line = serializers.IntegerField(
        required=False, allow_null=True,
        help_text="An Env file's refusal (POST /api/envs/?format=envfile): the line of `field` in the file.")
    problems = serializers.ListField(
        child=serializers.DictField(), required=False,
        help_text="An Env file's refusal: every problem, each {line, field, message}.")
    retry_after = serializers.IntegerField(
        required=False, help_text="Seconds to wait (429, 503, and 409 while a sleeping Env wakes).")
    # quota_exceeded (403) only: refused because used + requested > limit (GET /api/quota/).
    quota = serializers.CharField(
        required=False, help_text="quota_exceeded only: the quota the request would exceed (envs, vms, "
        "vcpus, mem_mb, disk_mb, snapshots, ports, lifetime or extension, as GET /api/quota/ names them).",
    )
    limit = serializers.IntegerField(
        required=False, help_text="quota_exceeded: the owner's limit; rate_limited: how many it allows "
        "(in `period` seconds, or at once when there is no period); too_large: the most bytes allowed.",
    )
    # rate_limited (429) only.
    limit_name = serializers.CharField(
        required=False, help_text="rate_limited only: the limit: extend, peer, token_create, live_tokens, "
        "test_notification, queued_operations, exec, files, concurrent_execs, login_failures_per_account or "
        "login_failures_per_address.",
    )
    period = serializers.IntegerField(
        required=False, help_text="rate_limited only: the window of a rate, in seconds.",
    )
    used = serializers.IntegerField(
        required=False, help_text="quota_exceeded only: what is in use (lifetime: the Env's, in seconds).",
    )
    requested = serializers.IntegerField(
        required=False, help_text="quota_exceeded only: what the request would add.",
    )


_MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


class AutoSchema(SpectacularAutoSchema):
    """drf-spectacular's schema plus the error responses our handler really returns."""

    def _error_statuses(self) -> list[int]:
        codes = [400] if self.method in _MUTATING or self._is_list_view() else []
        public = any(getattr(p, "__name__", "") == "AllowAny" for p in self.view.permission_classes)
        if not public:
            codes += [401, 403]
        if "{" in self.path or self._is_list_view():  # a detail route, or a page past the end
            codes.append(404)
        if self.method in _MUTATING and getattr(self.view, "operation_actions", False):
            codes += [409, 422, 429]
        elif self.method in ("POST", "PUT", "PATCH") and getattr(self.view, "refuses_on_data", False):
            codes.append(422)  # a rule on the data or on what the user already has
        if self._is_rate_limited():
            codes.append(429)
        if self.method in _MUTATING:
            codes.append(503)  # database_busy: a lock not free in time (ttportal/busy.py)
        return codes

    def _is_rate_limited(self) -> bool:
        """A view lists its actions (a viewset's, or an APIView's methods, lower case) that
        ttportal.ratelimit or the login lockout may refuse: `rate_limited = {"create"}`."""
        action = getattr(self.view, "action", None) or self.method.lower()
        return action in getattr(self.view, "rate_limited", ())

    def _get_response_bodies(self, direction="response"):
        bodies = super()._get_response_bodies(direction)
        if direction == "response":
            for code in self._error_statuses():
                bodies.setdefault(str(code), self._get_response_for_code(ErrorSerializer, str(code)))
        return bodies

    def _get_request_for_media_type(self, serializer, direction="request"):
        # A body whose fields are each optional but which must name at least one of them
        # (minProperties, e.g. extend's end_at or lifetime) is itself required.
        schema, required = super()._get_request_for_media_type(serializer, direction)
        extra = getattr(getattr(serializer, "Meta", None), "schema_extra", {})
        return schema, required or extra.get("minProperties", 0) >= 1

    def get_override_parameters(self):
        params = list(super().get_override_parameters())
        if self.method in _MUTATING and getattr(self.view, "operation_actions", False):
            params += [IDEMPOTENCY_KEY, RETRY_AFTER]
        elif self._is_rate_limited() or self.method in _MUTATING:
            params.append(RETRY_AFTER)
        return params
