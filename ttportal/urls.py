from django.contrib import admin
from django.urls import include, path

admin.site.site_header = "TT Portal operations"
admin.site.site_title = "TT Portal"
admin.site.index_title = "Nodes, templates and every Env"

urlpatterns = [
    path("admin/", admin.site.urls),
    # The REST API, its schema (/api/schema/) and Swagger UI (/api/docs/).
    path("api/", include("ttportal.api_urls")),
    # The portal: My Envs at "/", sign-in under accounts/.
    path("", include("ttportal.portal_urls")),
]
