"""Through the API, each action leaves exactly one event of its verb, by its caller, on
the API interface, with the caller's token."""

from __future__ import annotations

import pytest

from accounts.services import token_create
from audit.models import AuditEvent
from tests.api_support import BLUEPRINT_FILE, build_full_world, token_client
from tests.support import public_key_line

# (method, path, body, verb, object type)
CALLS = [
    ("post", "/api/envs/", {"name": "fresh", "vms": [{"name": "a", "template": "tt/busybox"}]}, "env.create",
     "env"),
    ("post", "/api/envs/{env}/extend/", {"lifetime": 7200}, "env.extend", "env"),
    ("post", "/api/envs/{env}/stop/", None, "env.stop", "env"),
    ("post", "/api/envs/{env}/deny-outgoing/", {"deny": True}, "env.deny_outgoing", "env"),
    ("post", "/api/envs/{env}/destroy/", None, "env.destroy", "env"),
    ("post", "/api/envs/{env}/vms/", {"name": "extra", "template": "tt/busybox"}, "vm.add", "vm"),
    ("post", "/api/envs/{env}/peers/", {"env": "alice/peer"}, "peering.create", "env"),
    ("delete", "/api/envs/{env}/peers/{peer}/", None, "peering.end", "env"),
    ("post", "/api/envs/{peer}/clone/", {"count": 1}, "env.clone", "env"),
    ("post", "/api/vms/{stopped}/start/", None, "vm.start", "vm"),
    ("post", "/api/vms/{running}/stop/", None, "vm.stop", "vm"),
    ("post", "/api/vms/{running}/destroy/", None, "vm.destroy", "vm"),
    ("put", "/api/vms/{running}/ports/", {"ports": [22, "53/udp"]}, "vm.ports", "vm"),
    ("post", "/api/vms/{running}/snapshots/", {"name": "s2"}, "snapshot.create", "snapshot"),
    ("post", "/api/snapshots/{snapshot}/apply/", None, "snapshot.apply", "snapshot"),
    ("delete", "/api/snapshots/{snapshot}/", None, "snapshot.destroy", "snapshot"),
    ("post", "/api/keys/", {"public_key": public_key_line(comment="more")}, "sshkey.add", "sshkey"),
    ("delete", "/api/keys/{key}/", None, "sshkey.delete", "sshkey"),
    ("delete", "/api/tokens/{token}/", None, "token.revoke", "apitoken"),
    ("post", "/api/webhooks/", {"endpoint": "https://more.example.com/"}, "webhook.create", "webhook"),
    ("delete", "/api/webhooks/{webhook}/", None, "webhook.delete", "webhook"),
    ("put", "/api/notifications/settings/", {"email_enabled": False}, "notifications.email",
     "notificationsettings"),
    ("post", "/api/blueprints/", {"name": "more", "text": BLUEPRINT_FILE}, "blueprint.save", "blueprint"),
    ("post", "/api/blueprints/{blueprint}/share/", {"users": ["bob"]}, "blueprint.share", "blueprint"),
    ("delete", "/api/blueprints/{blueprint}/", None, "blueprint.delete", "blueprint"),
    ("post", "/api/blueprints/{blueprint}/launch/", {"name": "launched"}, "blueprint.launch", "env"),
]


@pytest.mark.parametrize(("method", "path", "body", "verb", "object_type"), CALLS, ids=[c[3] + " " + c[1]
                                                                                         for c in CALLS])
def test_each_api_action_is_one_event_by_its_caller(method, path, body, verb, object_type, alice, bob,
                                                    make_env, run_tasks):
    w = build_full_world(alice, make_env, run_tasks)
    token, secret = token_create(user=alice, name="caller")
    before = AuditEvent.objects.count()
    url = path.format(env=w.env.pk, peer=w.peer.pk, running=w.running.pk, stopped=w.stopped.pk,
                      snapshot=w.snapshot.pk, key=w.key.pk, token=w.token.public_id, webhook=w.webhook.pk,
                      blueprint=w.blueprint.pk)
    response = getattr(token_client(secret), method)(url, body, format="json")
    assert response.status_code < 300, response.content
    new = list(AuditEvent.objects.order_by("pk")[before:])
    assert [(e.verb, e.user, e.interface, e.token_id, e.result, e.object_type) for e in new] == [
        (verb, alice, "api", str(token.public_id), "ok", object_type)]
