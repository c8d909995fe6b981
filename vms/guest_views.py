"""The VM page's ways into its running guest: run a command, upload a file, download one.

Thin like the other portal views: the VM found among those the user can see (anyone
else's is a 404), vms.guest_access called with by=request.user, and the outcome said.
A refusal (bad input, no permission, a VM not running, a template without the feature,
a missing path) is a message on the VM page; a rate limit the 429 page, as elsewhere.

The upload is a multipart form. Django writes its file to a temporary file as it arrives
(never whole in memory) and our upload handler stops it past TT_FILE_MAX_MB; that
handler must be in place before anything reads the form, CSRF's check included, hence
the view is csrf_exempt and checks CSRF itself inside (Django's documented way).
"""

from __future__ import annotations

import posixpath
import shlex

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.files.uploadhandler import FileUploadHandler, StopUpload, TemporaryFileUploadHandler
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_POST

from engines.guest_io import EXEC_TIMEOUT_DEFAULT
from engines.specs import Feature
from ttportal import limits
from ttportal.errors import InvalidInput, RateLimited, TooLarge, TTError
from ttportal.portal import describe, rate_limited, refused_here
from ttportal.streaming import download_response
from vms import guest_access, policy
from vms.guest_target import ACTION, check_way_in
from vms.models import Vm

# How much of a command's output the page shows (the API gives all it kept).
SHOWN_OUTPUT = 64 * 1024


def _vm(request: HttpRequest, pk: int) -> Vm:
    vms = Vm.objects.visible_to(request.user).select_related("env", "node", "template")
    return get_object_or_404(vms, pk=pk)


def _page(vm: Vm) -> str:
    return reverse("vms:detail", args=[vm.pk]) + "#into-guest"


def ways_in(vm: Vm, user) -> dict[str, str]:
    """For the VM page: "exec" and "files" each mapped to "" when this user can use it now,
    else why not (in words)."""
    why = {}
    for feature in (Feature.EXEC, Feature.FILES):
        try:
            check_way_in(vm, feature)
        except TTError as exc:
            why[str(feature)] = exc.message
            continue
        if not policy.may_manage(user, vm.env, ACTION[feature]):
            why[str(feature)] = "You may not do this on another user's VM."
        elif vm.env.status != vm.env.Status.ACTIVE or vm.status != Vm.Status.RUNNING:
            why[str(feature)] = "Only a running VM can be entered."
        else:
            why[str(feature)] = ""
    return why


def _refused(request: HttpRequest, exc: Exception, vm: Vm, what: str) -> HttpResponse:
    # The guest refusing a path is said here; who may not is the 403 page, as elsewhere.
    error = exc if isinstance(exc, guest_access.DeniedInGuest) else refused_here(exc)
    if isinstance(error, RateLimited):
        return rate_limited(request, error, _page(vm))
    field = f" ({error.field})" if getattr(error, "field", None) else ""
    messages.error(request, f"{what}{field}: {describe(error)}")
    return HttpResponseRedirect(_page(vm))


# --- run a command ---------------------------------------------------------------------------


def command_argv(text: str, shell: bool) -> list[str]:
    """The command line typed: through `sh -c` when asked, else split as a shell would
    split words (quotes kept together), without running one."""
    if shell:
        return ["sh", "-c", text]
    try:
        return shlex.split(text)
    except ValueError as exc:  # an unclosed quote
        raise InvalidInput("command", f"cannot be split into words: {exc}") from None


@require_POST
@login_required
def vm_run(request: HttpRequest, pk: int) -> HttpResponse:
    """Run the command typed on the VM page and show how it ended."""
    vm = _vm(request, pk)
    text = request.POST.get("command", "")
    timeout_text = request.POST.get("timeout", "").strip()
    try:
        argv = command_argv(text, request.POST.get("shell") == "on")
        try:
            timeout = int(timeout_text) if timeout_text else int(EXEC_TIMEOUT_DEFAULT)
        except ValueError:
            raise InvalidInput("timeout", "must be a whole number of seconds between 1 and 600") from None
        result = guest_access.vm_exec(vm, by=request.user, command=argv, stdin=request.POST.get("stdin", ""),
                                      timeout=timeout)
    except Exception as exc:
        return _refused(request, exc, vm, "The command was not run")
    shown = {name: (data[:SHOWN_OUTPUT].decode("utf-8", errors="replace"), len(data) > SHOWN_OUTPUT)
             for name, data in (("stdout", result.stdout), ("stderr", result.stderr))}
    return render(request, "vms/exec_result.html", {
        "vm": vm, "command": text, "shell": request.POST.get("shell") == "on", "result": result,
        "stdout": shown["stdout"][0], "stdout_cut": shown["stdout"][1] or result.stdout_truncated,
        "stderr": shown["stderr"][0], "stderr_cut": shown["stderr"][1] or result.stderr_truncated,
        "timeout": timeout,
    })


# --- files -----------------------------------------------------------------------------------


# What a form's body holds besides its file: the other fields and the boundaries.
FORM_OVERHEAD = 64 * 1024


def _too_large() -> TooLarge:
    return TooLarge(f"is larger than the {limits.file_max_bytes() // (1024 * 1024)} MiB a file copied to a "
                    f"guest may hold (TT_FILE_MAX_MB)", field="file", limit=limits.file_max_bytes())


class LimitedUpload(FileUploadHandler):
    """Stops a form's upload once it passes TT_FILE_MAX_MB, before it is all written to disk."""

    def __init__(self, request=None):
        super().__init__(request)
        self.seen = 0
        self.too_large = False

    def receive_data_chunk(self, raw_data, start):
        self.seen += len(raw_data)
        if self.seen > limits.file_max_bytes():
            self.too_large = True
            raise StopUpload(connection_reset=True)
        return raw_data

    def file_complete(self, file_size):
        return None


@csrf_exempt  # checked below, once our upload handler is in place
@require_POST
@login_required
def vm_upload(request: HttpRequest, pk: int) -> HttpResponse:
    """Upload the form's file to the path given, then back to the VM page with a message."""
    declared = request.META.get("CONTENT_LENGTH") or ""
    if declared.isdigit() and int(declared) > limits.file_max_bytes() + FORM_OVERHEAD:
        # Refused unread (so before CSRF's check, whose token is in the body): nothing is done.
        vm = _vm(request, pk)
        return _refused(request, _too_large(), vm, "The file was not uploaded")
    limit = LimitedUpload(request)
    request.upload_handlers = [limit, TemporaryFileUploadHandler(request)]
    return _upload(request, pk, limit)


@csrf_protect
def _upload(request: HttpRequest, pk: int, limit: LimitedUpload) -> HttpResponse:
    vm = _vm(request, pk)
    upload = request.FILES.get("file")
    try:
        if limit.too_large:
            raise _too_large()
        if upload is None:
            raise InvalidInput("file", "is required: choose a file to upload")
        path = request.POST.get("path", "").strip()
        if path.endswith("/"):  # a directory: the file keeps its name there
            path += posixpath.basename(upload.name or "upload")
        written = guest_access.vm_file_put(vm, by=request.user, path=path,
                                           chunks=upload.chunks(guest_access.CHUNK), size=upload.size,
                                           mode=request.POST.get("mode", "").strip() or None)
    except Exception as exc:
        return _refused(request, exc, vm, "The file was not uploaded")
    finally:
        if upload is not None:
            upload.close()
    messages.success(request, f"Uploaded {written} bytes to {path}.")
    return HttpResponseRedirect(_page(vm))


@require_POST  # it records a copy and counts against the rate: a form with its CSRF token
@login_required
def vm_download(request: HttpRequest, pk: int) -> HttpResponse:
    """The file at the form's path in the guest, as an attachment."""
    vm = _vm(request, pk)
    path = request.POST.get("path", "").strip()
    try:
        opened = guest_access.vm_file_get(vm, by=request.user, path=path)
    except Exception as exc:
        return _refused(request, exc, vm, f"{path or 'The file'} was not downloaded")
    return download_response(request, opened, path)
