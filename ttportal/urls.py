from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

admin.site.site_header = "TT Portal operations"
admin.site.site_title = "TT Portal"
admin.site.index_title = "Nodes, templates and every Env"

urlpatterns = [
    path("admin/", admin.site.urls),
    # The portal pages arrive with the portal issue; until then the admin is the UI.
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
]
