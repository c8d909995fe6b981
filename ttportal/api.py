"""What every API view shares: the one error mapping, pagination, the schema's
error responses, and the Idempotency-Key header.

Services raise TTError subclasses; `exception_handler` (REST_FRAMEWORK
EXCEPTION_HANDLER) turns each refusal (ttportal.refusals: a TTError, or the
database's IntegrityError as "retry") into its HTTP status with a body that
always carries the stable `code`. Views never catch them.
"""

from __future__ import annotations

import logging

from django.core.exceptions import BadRequest, SuspiciousOperation
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpResponse, JsonResponse
from django.views import csrf
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler

from ttportal.busy import busy, retry_headers
from ttportal.errors import (
    ConflictingInput,
    CooldownActive,
    DatabaseBusy,
    EngineError,
    ErrorCode,
    Exhausted,
    Forbidden,
    IdempotencyKeyReused,
    IllegalState,
    InvalidInput,
    NoCapacity,
    NodeDown,
    NotFound,
    QuotaExceeded,
    RateLimited,
    TooLarge,
    TTError,
    Unsupported,
    Waking,
)
from ttportal.refusals import refusal

log = logging.getLogger(__name__)

# The most specific class wins (walked along the error's MRO).
STATUS_FOR_ERROR: dict[type[TTError], int] = {
    InvalidInput: status.HTTP_400_BAD_REQUEST,
    ConflictingInput: status.HTTP_422_UNPROCESSABLE_ENTITY,
    IdempotencyKeyReused: status.HTTP_422_UNPROCESSABLE_ENTITY,
    Forbidden: status.HTTP_403_FORBIDDEN,
    QuotaExceeded: status.HTTP_403_FORBIDDEN,  # its body names the quota, limit, use and request
    NotFound: status.HTTP_404_NOT_FOUND,
    IllegalState: status.HTTP_409_CONFLICT,
    Exhausted: status.HTTP_409_CONFLICT,
    NoCapacity: status.HTTP_409_CONFLICT,
    NodeDown: status.HTTP_409_CONFLICT,
    Unsupported: status.HTTP_422_UNPROCESSABLE_ENTITY,
    TooLarge: status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,  # its body names the limit in bytes
    CooldownActive: status.HTTP_429_TOO_MANY_REQUESTS,
    RateLimited: status.HTTP_429_TOO_MANY_REQUESTS,  # its body names the limit
    EngineError: status.HTTP_502_BAD_GATEWAY,
    DatabaseBusy: status.HTTP_503_SERVICE_UNAVAILABLE,  # with Retry-After (ttportal/busy.py)
    TTError: status.HTTP_500_INTERNAL_SERVER_ERROR,
}

# DRF's own codes, renamed where ours already has a name for the same thing.
DRF_CODES = {"permission_denied": str(ErrorCode.FORBIDDEN), "not_found": str(ErrorCode.NOT_FOUND)}


def status_for(error: TTError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS_FOR_ERROR:
            return STATUS_FOR_ERROR[cls]
    return status.HTTP_500_INTERNAL_SERVER_ERROR


def flatten_errors(detail, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested field errors as flat paths, the way services name fields: `vms[0].name`."""
    out: dict[str, list[str]] = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            if key == api_settings.NON_FIELD_ERRORS_KEY and prefix:
                path = prefix  # a list's own error ("vms": too few) is the list's
            elif isinstance(key, int):
                path = f"{prefix}[{key}]"
            else:
                path = f"{prefix}.{key}" if prefix else str(key)
            out.update(flatten_errors(value, path))
    elif isinstance(detail, list | tuple):
        if all(not isinstance(item, dict | list | tuple) for item in detail):
            if detail:
                out[prefix or api_settings.NON_FIELD_ERRORS_KEY] = [str(item) for item in detail]
        else:
            for i, item in enumerate(detail):
                out.update(flatten_errors(item, f"{prefix}[{i}]"))
    else:
        out[prefix or api_settings.NON_FIELD_ERRORS_KEY] = [str(detail)]
    return out


def invalid_body(errors: dict[str, list[str]]) -> dict:
    field, messages = next(iter(errors.items()), (api_settings.NON_FIELD_ERRORS_KEY, ["invalid input"]))
    return {"code": str(ErrorCode.INVALID), "field": field, "message": messages[0], "errors": errors}


class Refused(exceptions.APIException):
    """A refusal raised where DRF expects its own exceptions (an authenticator: DRF then
    leaves the request unauthenticated before the handler answers it)."""

    def __init__(self, error: TTError):
        super().__init__(error.message)
        self.error = error


def exception_handler(exc, context):
    if isinstance(exc, Refused):
        exc = exc.error
    error = refusal(exc) or busy(exc)
    if error is not None:
        code = status_for(error)
        body = error.as_dict()
        headers = {}
        if error.field:
            # An error that lists several fields (an Env file's problems) keeps its own.
            body.setdefault("errors", {error.field: [error.message]})
        if isinstance(error, CooldownActive | RateLimited | Waking):
            body["retry_after"] = error.retry_after
            headers["Retry-After"] = str(error.retry_after)
        if isinstance(error, DatabaseBusy):
            headers.update(retry_headers(error))
        if code >= 500 and not isinstance(error, DatabaseBusy):
            log.error("API request failed: %s: %s", error.code, error)
        return Response(body, status=code, headers=headers)
    if isinstance(exc, DjangoValidationError):
        non_field = api_settings.NON_FIELD_ERRORS_KEY
        exc = exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else {non_field: exc.messages}
        )
    if isinstance(exc, exceptions.ValidationError):
        return Response(invalid_body(flatten_errors(exc.detail)), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, Http404 | DjangoPermissionDenied | exceptions.APIException):
        response = drf_exception_handler(exc, context)
        if response is None:
            return None
        detail = response.data.get("detail", "") if isinstance(response.data, dict) else response.data
        code = getattr(detail, "code", None) or getattr(exc, "default_code", "error")
        body = {"code": DRF_CODES.get(code, code), "message": str(detail)}
        if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
            body["retry_after"] = int(exc.wait)
        response.data = body
        return response
    return None


def parse(serializer_class, request, **kwargs) -> dict:
    """The validated body (a 400 with field errors otherwise)."""
    serializer = serializer_class(data=request.data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def idempotency_key(request) -> str:
    """The `Idempotency-Key` header: the same key from the same user returns the first operation."""
    return request.headers.get("Idempotency-Key", "")


# --- errors outside DRF's views: every answer under /api/ is JSON with a code ------------


def is_api(request) -> bool:
    return request.path_info.startswith("/api/")


def error_response(status_code: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"code": code, "message": message}, status=status_code)


@csrf_exempt  # it changes nothing, and a POST with a session cookie must still get this 404
def not_found(request, *args, **kwargs) -> JsonResponse:
    """Any /api/ path no route takes (/api/vms/0.5/, /api/nothing/)."""
    return error_response(404, str(ErrorCode.NOT_FOUND), "no such API resource")


class JsonErrors:
    """Middleware: an exception no API view answered (a request body too large, a bug)
    becomes a JSON error under /api/, whatever DEBUG says; other pages are untouched."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exc):
        if not is_api(request):
            return None
        if isinstance(exc, SuspiciousOperation | BadRequest):
            return error_response(400, str(ErrorCode.INVALID), str(exc) or "bad request")
        if isinstance(exc, Http404):
            return not_found(request)
        log.exception("API request failed: %s %s", request.method, request.path)
        return error_response(500, str(ErrorCode.INTERNAL), "internal error; it has been logged")


def csrf_failure(request, reason: str = "") -> HttpResponse:
    """settings.CSRF_FAILURE_VIEW: JSON under /api/ (a session-cookie POST without its
    token), Django's page elsewhere."""
    if is_api(request):
        return error_response(403, str(ErrorCode.FORBIDDEN), f"CSRF check failed: {reason}")
    return csrf.csrf_failure(request, reason=reason)


def handler(status_code: int, code: ErrorCode, message: str, page):
    """A Django error handler (urls.handler404…): JSON under /api/, `page` elsewhere."""

    def view(request, *args, **kwargs):
        if is_api(request):
            return error_response(status_code, str(code), message)
        return page(request, *args, **kwargs)

    return view
