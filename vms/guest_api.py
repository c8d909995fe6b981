"""The API into a running guest: POST /api/vms/{id}/exec/ and GET/PUT /api/vms/{id}/files/.

Thin like the rest of the API: find the VM among those the caller can see (another
user's is a 404), call vms.guest_access, answer. Plain APIViews rather than actions of
the VM view set: neither answers with an Operation nor takes an Idempotency-Key, and
their bodies are not all JSON:

- exec answers JSON, or with `?stream=1` server-sent events (text/event-stream): `stdout`
  and `stderr` events as output comes (each `data` a JSON string), then one `exit` event
  with the same result as the JSON answer (or an `error` event with an error body).
- files takes an upload as the raw request body (any content type), read from the socket
  in chunks and handed to the engine as they come: never parsed, never held whole. Its
  size must be declared (Content-Length): one past TT_FILE_MAX_MB is a 413 before
  anything reaches the guest. A download is streamed the same way.

Auth is the API's own (a token, or the session with its CSRF token on unsafe methods);
errors are the API's JSON bodies, whatever the request's Accept header.
"""

from __future__ import annotations

import codecs
import json
import logging
import queue
import threading

from django.db import connections
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from engines.guest_io import EXEC_TIMEOUT_DEFAULT, EXEC_TIMEOUT_MAX, OUTPUT_LIMIT, ExecResult
from ttportal import limits
from ttportal.api_fields import Integer, StrictSerializer, Text
from ttportal.api_schema import ErrorSerializer
from ttportal.errors import InvalidInput, NotFound
from ttportal.refusals import refusal
from ttportal.streaming import body_for, download_response
from vms import guest_access
from vms.models import Vm

log = logging.getLogger(__name__)

# Seconds between two comments on a quiet event stream: keeps proxies from closing it,
# and tells a WSGI server soon that the client went away.
KEEPALIVE = 15
# Output chunks waiting for a slow client; past it the command's output waits (backpressure).
STREAM_QUEUE = 256


# --- bodies ---------------------------------------------------------------------------------


@extend_schema_field({
    "type": "object", "maxProperties": limits.EXEC_ENV_MAX,
    "additionalProperties": {"type": "string", "maxLength": limits.EXEC_ENV_VALUE_MAX,
                             "pattern": limits.NO_NUL_PATTERN},
    # OpenAPI 3.0 has no propertyNames: a name breaking the pattern is a 422 (a rule the
    # schema cannot state), checked by the service.
    "description": f"Variables added to the command's environment (at most {limits.EXEC_ENV_MAX}). Each "
                   f"name must match {limits.EXEC_ENV_NAME_PATTERN} (422 otherwise); values are any text "
                   f"without NUL.",
})
class EnvField(serializers.DictField):
    child = Text(rule="must be text without NUL", pattern=limits.NO_NUL_PATTERN, allow_blank=True,
                 max_length=limits.EXEC_ENV_VALUE_MAX)

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError("must be an object of variable names to values")
        if len(data) > limits.EXEC_ENV_MAX:
            raise serializers.ValidationError(f"must have at most {limits.EXEC_ENV_MAX} variables")
        return super().to_internal_value(data)


class ExecBody(StrictSerializer):
    command = serializers.ListField(
        child=Text(rule=f"must be text without NUL, at most {limits.EXEC_ARG_MAX} characters",
                   pattern=limits.NO_NUL_PATTERN, allow_blank=True, max_length=limits.EXEC_ARG_MAX),
        min_length=1, max_length=limits.EXEC_ARGV_MAX,
        error_messages={"min_length": "must name the program to run",
                        "max_length": f"at most {limits.EXEC_ARGV_MAX} items"},
        help_text='The program and its arguments (an argv: no shell unless you name one, e.g. '
        '["sh", "-c", "ls | wc -l"]). The first item must not be empty (422 otherwise).',
    )
    stdin = Text(rule=f"must be text without NUL, at most {limits.EXEC_STDIN_MAX} characters",
                 pattern=limits.NO_NUL_PATTERN, allow_blank=True, max_length=limits.EXEC_STDIN_MAX,
                 required=False, default="",
                 help_text="Text given to the command's standard input, as UTF-8 (then end of file). "
                 "For binary input, upload a file and have the command read it.")
    env = EnvField(required=False, default=dict)
    cwd = Text(rule=limits.GUEST_PATH_RULE, pattern=limits.GUEST_PATH_PATTERN,
               max_length=limits.GUEST_PATH_MAX, required=False,
               help_text="Absolute working directory; default: the engine's (the agent's, the WORKDIR).")
    timeout = Integer(min_value=limits.EXEC_TIMEOUT_MIN, max_value=int(EXEC_TIMEOUT_MAX), unit="seconds",
                      default=int(EXEC_TIMEOUT_DEFAULT),
                      help_text="Seconds the command may run; then it is killed and `timed_out` is true.")
    user = Text(rule=limits.GUEST_USER_RULE, pattern=limits.GUEST_USER_PATTERN, max_length=32, required=False,
                help_text="Run as this user (engines that can switch users: podman); default root.")


class ExecResultSerializer(serializers.Serializer):
    exit_code = serializers.IntegerField(allow_null=True, help_text="null when it did not exit by itself "
                                         "(killed at its timeout, or by a signal).")
    signal = serializers.IntegerField(allow_null=True, help_text="The signal that ended it, when the engine "
                                      "can tell; else null.")
    stdout = serializers.CharField(help_text=f"Its standard output, decoded as UTF-8 (bytes that are not "
                                   f"UTF-8 become U+FFFD), at most {OUTPUT_LIMIT} bytes kept.")
    stderr = serializers.CharField(help_text="Its standard error, likewise.")
    stdout_truncated = serializers.BooleanField(help_text="More stdout came than was kept.")
    stderr_truncated = serializers.BooleanField(help_text="More stderr came than was kept.")
    truncated = serializers.BooleanField(help_text="Either was truncated.")
    duration_ms = serializers.IntegerField()
    timed_out = serializers.BooleanField(help_text="It ran past `timeout` and was killed.")


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def result_body(result: ExecResult) -> dict:
    return {
        "exit_code": result.exit_code, "signal": result.signal,
        "stdout": _text(result.stdout), "stderr": _text(result.stderr),
        "stdout_truncated": result.stdout_truncated, "stderr_truncated": result.stderr_truncated,
        "truncated": result.stdout_truncated or result.stderr_truncated,
        "duration_ms": result.duration_ms, "timed_out": result.timed_out,
    }


class FileEntrySerializer(serializers.Serializer):
    name = serializers.CharField()
    kind = serializers.ChoiceField(choices=["file", "dir", "link", "other"])
    size = serializers.IntegerField(help_text="Bytes.")
    mode = serializers.CharField(help_text='Permission bits in octal, e.g. "0644" ("0000" when unknown).')
    mtime = serializers.FloatField(allow_null=True, help_text="Seconds since the epoch; null when unknown.")


class FileWritten(serializers.Serializer):
    path = serializers.CharField()
    size = serializers.IntegerField(help_text="Bytes written.")


# --- shared -------------------------------------------------------------------------------


def _errors(*codes: int) -> dict:
    return {code: OpenApiResponse(ErrorSerializer) for code in codes}


class GuestView(APIView):
    # Errors are JSON whatever the client accepts (a download's Accept is often */* or
    # application/octet-stream); the successful answers that are not JSON are streamed
    # Django responses, which no renderer touches.
    renderer_classes = [JSONRenderer]
    # The body is read as it is (files) or parsed as JSON (exec), never by DRF's negotiation.
    rate_limited = {"post", "get", "put"}

    def perform_content_negotiation(self, request, force=False):
        return JSONRenderer(), JSONRenderer.media_type

    def vm(self, request, id: int) -> Vm:
        vms = Vm.objects.visible_to(request.user).select_related("env", "node", "template")
        vm = vms.filter(pk=id).first()
        if vm is None:
            raise NotFound("no such VM")
        return vm


PATH_PARAM = OpenApiParameter(
    "path", {"type": "string", "pattern": limits.GUEST_PATH_PATTERN, "maxLength": limits.GUEST_PATH_MAX},
    required=True, description="The absolute path in the guest.",
)


def _query_path(request) -> str:
    if "path" not in request.query_params:
        raise InvalidInput("path", "is required: " + limits.GUEST_PATH_RULE)
    return guest_access.guest_path(request.query_params["path"])


def _query_flag(request, name: str) -> bool:
    value = request.query_params.get(name, "false").lower()
    if value not in ("1", "true", "0", "false"):
        raise InvalidInput(name, "must be true or false (or 1 or 0)")
    return value in ("1", "true")


# --- exec ----------------------------------------------------------------------------------


class ExecView(GuestView):
    @extend_schema(
        summary="Run a command in the running VM",
        description=(
            "Runs `command` in the guest (the QEMU guest agent, podman's exec) and answers once it ends, "
            "with its exit code and output (each stream at most 1 MiB, `truncated` past it; decoded as "
            "UTF-8 with U+FFFD for what is not). Past `timeout` it is killed (`timed_out`).\n\n"
            "With `?stream=1` the answer is `text/event-stream`: `stdout` and `stderr` events as the output "
            "comes (each `data` is a JSON string), then one `exit` event whose `data` is the same JSON "
            "object as the plain answer, or an `error` event with an error body. Refusals (bad input, no "
            "permission, a VM not running, a template without the `exec` feature: 422 unsupported_feature) "
            "are answered as plain JSON errors before any event.\n\n"
            "The VM must be running; its engine and template must have the `exec` feature. Each command "
            "is recorded in the VM's operations (kind vm_exec: the command, exit code, who; never the "
            "output). Rate-limited per user (TT_RATE_EXEC) and at most TT_MAX_EXECS_PER_USER at once."
        ),
        parameters=[OpenApiParameter("stream", bool, required=False,
                                     description="Stream the output as server-sent events.")],
        request=ExecBody,
        responses={
            (200, "application/json"): OpenApiResponse(ExecResultSerializer, description="It ended."),
            (200, "text/event-stream"): OpenApiResponse(
                OpenApiTypes.STR, description="?stream=1: events stdout, stderr, then exit (or error)."),
            **_errors(400, 401, 403, 404, 409, 422, 429, 502, 503),
        },
    )
    def post(self, request, id: int):
        vm = self.vm(request, id)
        stream = _query_flag(request, "stream")
        data = ExecBody(data=request.data)
        data.is_valid(raise_exception=True)
        args = dict(data.validated_data)
        prepared = guest_access.prepare_exec(vm, by=request.user, command=args["command"],
                                             stdin=args.get("stdin", ""), env=args.get("env") or {},
                                             cwd=args.get("cwd", ""), timeout=args["timeout"],
                                             user=args.get("user", ""))
        if stream:
            return exec_events(request, prepared)
        return Response(result_body(guest_access.run_exec(prepared)))


def sse(event: str, data) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _error_body(exc: Exception) -> dict:
    error = refusal(exc)
    if error is None:
        log.error("a streamed command failed", exc_info=exc)
        return {"code": "internal", "message": "internal error; it has been logged"}
    return guest_access.as_refusal(error).as_dict()


def exec_events(request, prepared: guest_access.PreparedExec) -> StreamingHttpResponse:
    """The command run in a thread of its own, its output handed over a bounded queue to the
    response as server-sent events. The response ends with the command, or when the client
    goes away (the command then runs on to its end or timeout, unheard, and is recorded)."""
    events: queue.Queue = queue.Queue(maxsize=STREAM_QUEUE)
    gone = threading.Event()

    def put(item) -> None:
        while not gone.is_set():
            try:
                events.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def work() -> None:
        try:
            result = guest_access.run_exec(prepared, lambda name, data: put((name, data)))
            final = ("exit", result_body(result))
        except Exception as exc:
            final = ("error", _error_body(exc))
        finally:
            connections.close_all()  # this thread's own (run_exec recorded the command through them)
        put(final)

    threading.Thread(target=work, name=f"exec-vm-{prepared.target.vm.pk}", daemon=True).start()

    def body():
        decoders = {name: codecs.getincrementaldecoder("utf-8")(errors="replace")
                    for name in ("stdout", "stderr")}
        try:
            while True:
                try:
                    name, data = events.get(timeout=KEEPALIVE)
                except queue.Empty:
                    yield b": keep-alive\n\n"
                    continue
                if name in decoders:
                    text = decoders[name].decode(data)
                    if text:
                        yield sse(name, text)
                    continue
                for stream, decoder in decoders.items():
                    rest = decoder.decode(b"", final=True)
                    if rest:
                        yield sse(stream, rest)
                yield sse(name, data)
                return
        finally:
            gone.set()

    response = StreamingHttpResponse(body_for(request, body()), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event on as it comes
    return response


# --- files --------------------------------------------------------------------------------


def _entry(entry) -> dict:
    return {"name": entry.name, "kind": entry.kind, "size": entry.size, "mode": f"{entry.mode:04o}",
            "mtime": entry.mtime}


def declared_size(request) -> int:
    """The upload's Content-Length: required, since a body without one (chunked) would reach
    a WSGI server's view empty and could not be checked against TT_FILE_MAX_MB beforehand."""
    raw = request.META.get("CONTENT_LENGTH") or ""
    if not raw:
        if request.META.get("HTTP_TRANSFER_ENCODING"):
            raise InvalidInput("Content-Length", "is required: send the file with its size (curl -T file, or "
                                                 "--data-binary @file), not chunked")
        return 0
    if not raw.isdigit():
        raise InvalidInput("Content-Length", "must be a number of bytes")
    return int(raw)


class FilesView(GuestView):
    @extend_schema(
        summary="Download a file from the running VM, or list a directory",
        description=(
            "The file at `path`, streamed (application/octet-stream, as an attachment, with "
            "Content-Length when the engine knows the size beforehand); with `list=true`, the "
            "directory's entries as JSON. A missing path is 404, one the guest refuses 403, a guest "
            "without an agent answering 422; a file larger than TT_FILE_MAX_MB is 413. The VM's "
            "engine and template need the `files` feature. Downloads are recorded in the VM's "
            "operations (kind vm_file_get: path and bytes, never the content)."
        ),
        parameters=[PATH_PARAM, OpenApiParameter("list", bool, required=False,
                                                 description="List the directory at `path` instead.")],
        responses={
            (200, "application/octet-stream"): OpenApiResponse(OpenApiTypes.BINARY, description="The file."),
            (200, "application/json"): OpenApiResponse(FileEntrySerializer(many=True),
                                                       description="list=true: the directory's entries."),
            **_errors(400, 401, 403, 404, 409, 413, 422, 429, 502),
        },
    )
    def get(self, request, id: int):
        vm = self.vm(request, id)
        listing = _query_flag(request, "list")
        path = _query_path(request)
        if listing:
            entries = guest_access.vm_file_list(vm, by=request.user, path=path)
            return Response([_entry(entry) for entry in entries])
        opened = guest_access.vm_file_get(vm, by=request.user, path=path)
        return download_response(request, opened, path)

    @extend_schema(
        summary="Upload a file to the running VM",
        description=(
            "The request body, as it is (any content type), becomes the file at `path`, replacing one "
            "there. It is streamed to the guest in chunks as it arrives. Its size must be declared "
            "(Content-Length; a chunked body is refused) and at most TT_FILE_MAX_MB (413 otherwise, before "
            "anything reaches the guest). `mode` sets its permission bits, `owner` its owner. Recorded in "
            "the VM's operations (kind vm_file_put: path and bytes, never the content)."
        ),
        parameters=[
            PATH_PARAM,
            OpenApiParameter("mode", {"type": "string", "pattern": limits.FILE_MODE_PATTERN}, required=False,
                             description="Permission bits in octal, e.g. 0644."),
            OpenApiParameter("owner", {"type": "string", "pattern": limits.GUEST_OWNER_PATTERN,
                                       "maxLength": 65}, required=False, description="user or user:group."),
        ],
        request={"application/octet-stream": OpenApiTypes.BINARY},
        responses={201: OpenApiResponse(FileWritten, description="Written."),
                   **_errors(400, 401, 403, 404, 409, 413, 422, 429, 502, 503)},
    )
    def put(self, request, id: int):
        vm = self.vm(request, id)
        path = _query_path(request)
        size = declared_size(request)
        stream = request._request  # the Django request: read from the socket, never parsed
        written = guest_access.vm_file_put(
            vm, by=request.user, path=path, chunks=guest_access.read_chunks(stream, size), size=size,
            mode=request.query_params.get("mode"), owner=request.query_params.get("owner", ""))
        return Response({"path": path, "size": written}, status=status.HTTP_201_CREATED)

