from django.contrib import admin
from django.urls import include, path, re_path
from django.views import defaults
from django.views.generic import RedirectView

from ttportal.api import handler
from ttportal.errors import ErrorCode
from ttportal.metrics import metrics

admin.site.site_header = "TT Portal operations"
admin.site.site_title = "TT Portal"
admin.site.index_title = "Nodes, templates and every Env"

urlpatterns = [
    # Nodes were the `engines` app's in the admin until they became `nodes`' own: old
    # bookmarks land on the same page. Before admin.site.urls, which would 404 them.
    re_path(r"^admin/engines/(?P<rest>(node|nodeheartbeat)/.*)$",
            RedirectView.as_view(url="/admin/nodes/%(rest)s", query_string=True, permanent=True)),
    path("admin/", admin.site.urls),
    # The REST API, its schema (/api/schema/) and Swagger UI (/api/docs/).
    path("api/", include("ttportal.api_urls")),
    # Prometheus (ttportal/metrics.py); /healthz and /readyz are nodes.health's middleware.
    path("metrics", metrics, name="metrics"),
    # The portal: My Envs at "/", sign-in under accounts/.
    path("", include("ttportal.portal_urls")),
]

# With DEBUG off, Django's own error pages: JSON ones under /api/ (ttportal.api.JsonErrors
# covers the rest, DEBUG or not).
handler400 = handler(400, ErrorCode.INVALID, "bad request", defaults.bad_request)
handler403 = handler(403, ErrorCode.FORBIDDEN, "forbidden", defaults.permission_denied)
handler404 = handler(404, ErrorCode.NOT_FOUND, "no such API resource", defaults.page_not_found)
handler500 = handler(500, ErrorCode.INTERNAL, "internal error; it has been logged", defaults.server_error)
