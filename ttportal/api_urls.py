"""/api/: the REST API, its OpenAPI schema and its Swagger UI (served from local static files)."""

from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from accounts.api import QuotaView, SshKeyViewSet, TokenViewSet
from audit.api import AuditEventViewSet
from envs.api import EnvViewSet
from envs.blueprint_api import BlueprintViewSet
from envs.envfile_api import EnvFileSchemaView
from notifications.api import DeliveryViewSet, NotificationSettingsView, TestEmailView, WebhookViewSet
from operations.api import OperationViewSet
from ttportal.api import not_found
from vms.api import SnapshotViewSet, TemplateViewSet, VmViewSet
from vms.consumers import upgrade_required
from vms.guest_api import ExecView, FilesView

router = DefaultRouter()
router.register("envs", EnvViewSet, basename="env")
router.register("vms", VmViewSet, basename="vm")
router.register("blueprints", BlueprintViewSet, basename="blueprint")
router.register("snapshots", SnapshotViewSet, basename="snapshot")
router.register("templates", TemplateViewSet, basename="template")
router.register("operations", OperationViewSet, basename="operation")
router.register("tokens", TokenViewSet, basename="token")
router.register("keys", SshKeyViewSet, basename="ssh-key")
router.register("webhooks", WebhookViewSet, basename="webhook")
router.register("audit", AuditEventViewSet, basename="audit-event")
router.register("notifications/deliveries", DeliveryViewSet, basename="delivery")

app_name = "api"
urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("schema/envfile.json", EnvFileSchemaView.as_view(), name="envfile-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    path("quota/", QuotaView.as_view(), name="quota"),
    path("notifications/settings/", NotificationSettingsView.as_view(), name="notification-settings"),
    path("notifications/settings/test-email/", TestEmailView.as_view(), name="notification-test-email"),
    # Into a running guest (vms/guest_api.py): not actions of the VM view set, since neither
    # answers with an Operation and their bodies are not all JSON.
    path("vms/<int:id>/exec/", ExecView.as_view(), name="vm-exec"),
    path("vms/<int:id>/files/", FilesView.as_view(), name="vm-files"),
    # The live console: a websocket at this path (vms/routing.py); plain HTTP is told so.
    path("vms/<int:vm_id>/console/", upgrade_required, name="vm-console"),
    path("", include(router.urls)),
    # Whatever no route above takes is a JSON 404 too, never Django's HTML page.
    re_path(r"", not_found),
]
