"""The API's side of Env files (envs/envfiles.py): how a request says it sends one, its
body read as bounded text, the ?format= that names it, the export's negotiation, and the
published JSON Schema. The Env is made by envs/api.py's create, like any other."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.exceptions import UnsupportedMediaType, ValidationError
from rest_framework.negotiation import BaseContentNegotiation, DefaultContentNegotiation
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

import envfile
from envs import envfiles
from ttportal.errors import InvalidInput

ENVFILE_FORMAT = "envfile"
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
# JSON is YAML too: a client may send the file's document as JSON.
ENVFILE_TYPES = (*YAML_TYPES, "application/json", "text/plain")

# The YAML body is told here, not as a second media type of requestBody: client generators
# (openapi-python-client) take JSON bodies only, and warn about the rest.
ENVFILE_PARAMETER = OpenApiParameter(
    "format", str, enum=[ENVFILE_FORMAT], required=False,
    description="envfile: the body is an Env file instead of the JSON body: YAML text (Content-Type "
    "application/yaml, which implies format=envfile), or its document as JSON; at most "
    f"{envfiles.MAX_CHARS} characters. The schema of its document is GET /api/schema/envfile.json. "
    "The answer is the same: 202 with the operation. The file's problems are refused with 422 "
    "`invalid`, each with its `line` (`problems` lists them all); `user_data: \"@file\"` is refused "
    "(send the #cloud-config inline: the tt command does).",
)


class EnvFileNegotiation(DefaultContentNegotiation):
    """`?format=envfile` names the format of the request's body, not of the answer: it
    picks no renderer (DRF reads ?format= as the answer's). Any other ?format= no renderer
    has is bad input (400), not DRF's 404 for a resource that exists; a path's suffix
    (/api/envs/1.xml/) stays DRF's 404, a path that names nothing."""

    def select_renderer(self, request, renderers, format_suffix=None):
        param = self.settings.URL_FORMAT_OVERRIDE
        given = request.query_params.getlist(param)
        if format_suffix is None and given:
            if len(given) > 1:
                raise ValidationError({param: ["must be given at most once"]})
            formats = {ENVFILE_FORMAT, *(renderer.format for renderer in renderers)}
            if given[0] not in formats:
                raise ValidationError({param: [f"must be one of: {', '.join(sorted(formats))}"]})
        return super().select_renderer(request, renderers, format_suffix)

    def filter_renderers(self, renderers, format):
        if format == ENVFILE_FORMAT:
            return renderers
        return super().filter_renderers(renderers, format)


class ErrorsAsJson(BaseContentNegotiation):
    """The export answers its YAML itself (text/yaml, or application/yaml when asked): its
    errors are JSON whatever Accept says, like every other error of the API."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


def sends_envfile(request) -> bool:
    media = (request.content_type or "").split(";")[0].strip().lower()
    return request.query_params.get("format") == ENVFILE_FORMAT or media in YAML_TYPES


def envfile_text(request) -> str:
    """The request's body as text, bounded before it is read whole."""
    media = (request.content_type or "").split(";")[0].strip().lower()
    if media not in ENVFILE_TYPES:
        raise UnsupportedMediaType(media, detail=f"an Env file is sent as {', '.join(YAML_TYPES[:1])} "
                                   f"(or JSON), not {media or 'no Content-Type'}")
    declared = request.META.get("CONTENT_LENGTH") or ""
    too_large = InvalidInput("body", f"an Env file is at most {envfiles.MAX_CHARS} characters")
    if declared.isdigit() and int(declared) > envfiles.MAX_BYTES:
        raise too_large
    raw = request.body
    if len(raw) > envfiles.MAX_BYTES:
        raise too_large
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("body", "an Env file must be UTF-8 text") from None


class EnvFileSchemaView(APIView):
    """Public, like /api/schema/: the tt command and editors validate files against it."""

    permission_classes = [AllowAny]
    authentication_classes: list = []

    @extend_schema(operation_id="envfile_schema_retrieve",
                   summary="The JSON Schema (draft 2020-12) of an Env file (tt.yaml)",
                   responses={200: OpenApiResponse(OpenApiTypes.OBJECT, description="The schema.")})
    def get(self, request):
        # Its $id is where this server publishes it (the file's own copy has none).
        return Response({"$id": request.build_absolute_uri(), **envfile.schema()})
