"""The audit log in the admin: read only for everyone (superusers too: no add, change or
delete), filtered by user, verb, object type, result, interface and time, and exported as
CSV or JSON lines (streamed: the whole log may be large)."""

from __future__ import annotations

import csv
import io
import json

from django.contrib import admin
from django.http import StreamingHttpResponse
from django.utils import timezone
from django.utils.http import content_disposition_header

from audit.models import AuditEvent
from ttportal.streaming import body_for

EXPORT_FIELDS = ("id", "at", "user_id", "username", "system", "owner_id", "verb", "object_type", "object_id",
                 "object_name", "env_id", "interface", "address", "user_agent", "token_id", "result", "code",
                 "detail")
EXPORT_CHUNK = 1000


def _rows(queryset):
    for row in queryset.order_by("at", "id").values_list(*EXPORT_FIELDS).iterator(chunk_size=EXPORT_CHUNK):
        yield dict(zip(EXPORT_FIELDS, row, strict=True))


def _csv_lines(queryset):
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_FIELDS)
    for row in _rows(queryset):
        writer.writerow([json.dumps(v, sort_keys=True) if k == "detail" else
                         (v.isoformat() if k == "at" else ("" if v is None else v)) for k, v in row.items()])
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def _json_lines(queryset):
    for row in _rows(queryset):
        row["at"] = row["at"].isoformat()
        yield (json.dumps(row, sort_keys=True) + "\n").encode()


def export_response(request, queryset, kind: str) -> StreamingHttpResponse:
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    if kind == "csv":
        body, content_type, name = _csv_lines(queryset), "text/csv; charset=utf-8", f"audit-{stamp}.csv"
    else:
        body, content_type, name = _json_lines(queryset), "application/x-ndjson", f"audit-{stamp}.jsonl"
    response = StreamingHttpResponse(body_for(request, body), content_type=content_type)
    response["Content-Disposition"] = content_disposition_header(as_attachment=True, filename=name)
    return response


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ("at", "actor", "verb", "object_type", "object_name", "result", "code", "interface",
                    "address", "for_whom")
    list_filter = ("verb", "object_type", "result", "interface", "at")
    search_fields = ("username", "system", "verb", "object_name", "object_id", "address", "token_id")
    date_hierarchy = "at"
    fields = EXPORT_FIELDS
    readonly_fields = fields
    actions = ("export_csv", "export_jsonl")
    list_per_page = 100
    show_full_result_count = False  # a count of a large log is slow; the pages do not need it

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_list_filter(self, request):
        # "by user": the users who acted, as a filter of their names (a list of every user
        # would be long; the search box takes any other name).
        return ("verb", "object_type", "result", "interface", ("user", admin.RelatedOnlyFieldListFilter),
                "at")

    @admin.display(description="who", ordering="username")
    def actor(self, event: AuditEvent) -> str:
        return event.actor

    @admin.display(description="for")
    def for_whom(self, event: AuditEvent) -> str:
        return str(event.owner_id) if event.owner_id and event.owner_id != event.user_id else ""

    @admin.action(description="Export the selected events as CSV", permissions=["view"])
    def export_csv(self, request, queryset):
        return export_response(request, queryset, "csv")

    @admin.action(description="Export the selected events as JSON lines", permissions=["view"])
    def export_jsonl(self, request, queryset):
        return export_response(request, queryset, "jsonl")

    def get_urls(self):
        from django.urls import path

        urls = super().get_urls()
        mine = [path(f"export.{kind}", self.admin_site.admin_view(self._export_view(kind)),
                     name=f"audit_auditevent_export_{kind}") for kind in ("csv", "jsonl")]
        return mine + urls

    def _export_view(self, kind: str):
        def view(request):
            from django.core.exceptions import PermissionDenied

            if not self.has_view_permission(request):
                raise PermissionDenied
            # The list's own filters (?verb=..&at__gte=..) apply to the export, whole.
            changelist = self.get_changelist_instance(request)
            return export_response(request, changelist.get_queryset(request), kind)
        return view
