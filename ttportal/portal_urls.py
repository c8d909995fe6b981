"""The portal's pages, mounted at the site root (ttportal/urls.py)."""

from django.urls import include, path

from accounts import views as account_views
from envs import blueprint_views
from envs import views as env_views
from notifications.urls import portal_patterns as notification_patterns
from vms import guest_views
from vms import views as vm_views

env_patterns = [
    path("", env_views.env_list, name="list"),
    path("envs/new/", env_views.env_create, name="create"),
    path("envs/<int:pk>/", env_views.env_detail, name="detail"),
    path("envs/<int:pk>/tt.yaml", env_views.env_download, name="download"),
    path("envs/<int:pk>/operations/", env_views.env_operations, name="operations"),
    path("envs/<int:pk>/start/", env_views.env_start, name="start"),
    path("envs/<int:pk>/stop/", env_views.env_stop, name="stop"),
    path("envs/<int:pk>/extend/", env_views.env_extend, name="extend"),
    path("envs/<int:pk>/outgoing/", env_views.env_outgoing, name="outgoing"),
    path("envs/<int:pk>/idle-suspend/", env_views.env_idle_suspend, name="idle_suspend"),
    path("envs/<int:pk>/destroy/", env_views.env_destroy, name="destroy"),
    path("envs/<int:pk>/clone/", env_views.env_clone, name="clone"),
    path("envs/<int:pk>/vms/new/", env_views.env_add_vm, name="add_vm"),
    path("envs/<int:pk>/peer/", env_views.env_peer, name="peer"),
    path("envs/<int:pk>/unpeer/<int:other>/", env_views.env_unpeer, name="unpeer"),
    path("envs/<int:pk>/share/", env_views.env_share, name="share"),
    path("envs/<int:pk>/members/<int:member>/role/", env_views.env_member_role, name="member_role"),
    path("envs/<int:pk>/members/<int:member>/remove/", env_views.env_unshare, name="unshare"),
    path("envs/<int:pk>/transfer/", env_views.env_transfer, name="transfer"),
    path("envs/<int:pk>/blueprint/", blueprint_views.env_save_blueprint, name="save_blueprint"),
    path("blueprints/", blueprint_views.blueprint_list, name="blueprints"),
    path("blueprints/<int:pk>/", blueprint_views.blueprint_detail, name="blueprint"),
    path("blueprints/<int:pk>/tt.yaml", blueprint_views.blueprint_download, name="blueprint_download"),
    path("blueprints/<int:pk>/launch/", blueprint_views.blueprint_launch, name="blueprint_launch"),
    path("blueprints/<int:pk>/share/", blueprint_views.blueprint_share, name="blueprint_share"),
    path("blueprints/<int:pk>/publish/", blueprint_views.blueprint_publish, name="blueprint_publish"),
    path("blueprints/<int:pk>/delete/", blueprint_views.blueprint_delete, name="blueprint_delete"),
]

vm_patterns = [
    path("templates/", vm_views.template_list, name="templates"),
    path("vms/<int:pk>/", vm_views.vm_detail, name="detail"),
    path("vms/<int:pk>/guest/", vm_views.vm_guest, name="guest"),
    path("vms/<int:pk>/start/", vm_views.vm_start, name="start"),
    path("vms/<int:pk>/suspend/", vm_views.vm_suspend, name="suspend"),
    path("vms/<int:pk>/stop/", vm_views.vm_stop, name="stop"),
    path("vms/<int:pk>/destroy/", vm_views.vm_destroy, name="destroy"),
    path("vms/<int:pk>/blacklist/", vm_views.vm_blacklist, name="blacklist"),
    path("vms/<int:pk>/ports/", vm_views.vm_ports, name="ports"),
    path("vms/<int:pk>/snapshots/", vm_views.snapshot_create, name="snapshot_create"),
    path("vms/<int:pk>/run/", guest_views.vm_run, name="run"),
    path("vms/<int:pk>/upload/", guest_views.vm_upload, name="upload"),
    path("vms/<int:pk>/download/", guest_views.vm_download, name="download"),
    path("snapshots/<int:pk>/apply/", vm_views.snapshot_apply, name="snapshot_apply"),
    path("snapshots/<int:pk>/delete/", vm_views.snapshot_destroy, name="snapshot_destroy"),
]

token_patterns = [
    path("tokens/", account_views.token_list, name="tokens"),
    path("tokens/<uuid:pk>/revoke/", account_views.token_revoke, name="revoke"),
    path("keys/", account_views.ssh_key_list, name="ssh_keys"),
    path("keys/<int:pk>/delete/", account_views.ssh_key_delete, name="ssh_key_delete"),
]

urlpatterns = [
    path("accounts/login/", account_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", account_views.LogoutView.as_view(), name="logout"),
    # Single sign-on (accounts/oidc.py): 404 unless TT_OIDC_ISSUER is set. The provider
    # knows the callback as the client's redirect URI.
    path("oidc/authenticate/", account_views.OidcStart.as_view(), name="oidc_authentication_init"),
    path("oidc/callback/", account_views.OidcCallback.as_view(), name="oidc_authentication_callback"),
    path("", include((env_patterns, "envs"))),
    path("", include((vm_patterns, "vms"))),
    path("", include((token_patterns, "accounts"))),
    path("notifications/", include((notification_patterns, "notifications"))),
]
