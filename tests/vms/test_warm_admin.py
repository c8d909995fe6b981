"""Warm pools in the admin: set up through the form (which calls vms.warm), shown with what
their spares hold, and deleted only once they hold none."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.admin_support import make_operator, messages_of, post_action
from vms.models import CLOUD_INIT, Vm, WarmPool

POOLS = reverse("admin:vms_warmpool_changelist")


@pytest.fixture
def root(client, db):
    return make_operator(client)


def add_pool(client, node, template, run_tasks, **fields):
    data = {"node": node.pk, "template": template.pk, "size": 2, "sizes": "1x128", "keep": "saved",
            "enabled": "on", "spares-TOTAL_FORMS": 0, "spares-INITIAL_FORMS": 0, **fields}
    with run_tasks():
        return client.post(reverse("admin:vms_warmpool_add"), data)


def test_an_operator_sets_up_a_pool_and_sees_what_it_holds(client, root, node, template, run_tasks):
    response = add_pool(client, node, template, run_tasks)
    assert response.status_code == 302, response.content.decode()[:2000]
    pool = WarmPool.objects.get()
    assert pool.vm_sizes == [{"cpu_num": 1, "mem_mb": 128, "disk_mb": 0}] and pool.env.is_warm_pool
    assert pool.spares.live().filter(status=Vm.Status.SUSPENDED).count() == 2
    page = client.get(POOLS).content.decode()
    assert "2 ready of 2" in page and "2 vCPUs, 256 MiB of the node" in page
    page = client.get(reverse("admin:vms_warmpool_change", args=[pool.pk])).content.decode()
    assert "disk:" in page and "spare-" in page  # what they hold, and the spares listed


def test_bad_sizes_and_a_cloud_init_template_are_refused_naming_the_field(client, root, node, template,
                                                                          run_tasks):
    response = add_pool(client, node, template, run_tasks, sizes="1x128\nplenty")
    assert response.status_code == 200
    assert "&#x27;plenty&#x27;: one size per line" in response.content.decode()
    template.features = [CLOUD_INIT]
    template.save()
    response = add_pool(client, node, template, run_tasks)
    assert response.status_code == 200 and "runs cloud-init" in response.content.decode()
    assert not WarmPool.objects.exists()


def test_a_pool_with_spares_is_not_deleted_and_tend_can_be_asked_for(client, root, node, template, run_tasks):
    add_pool(client, node, template, run_tasks)
    pool = WarmPool.objects.get()
    response = client.post(reverse("admin:vms_warmpool_delete", args=[pool.pk]), {"post": "yes"})
    assert response.status_code == 403 and WarmPool.objects.exists()
    with run_tasks():
        response = post_action(client, POOLS, "tend", [pool])
    assert ("success", "Tending queued: 1 warm pool.") in messages_of(response)
    pool.enabled = False  # switched off: its spares are discarded, and then it can go
    with run_tasks():
        client.post(reverse("admin:vms_warmpool_change", args=[pool.pk]), {
            "size": 2, "sizes": "1x128", "keep": "saved", "spares-TOTAL_FORMS": 0, "spares-INITIAL_FORMS": 0})
    assert not pool.spares.live().exists()
    response = client.post(reverse("admin:vms_warmpool_delete", args=[pool.pk]), {"post": "yes"})
    assert response.status_code == 302 and not WarmPool.objects.exists()


def test_the_audit_log_has_each_pool_change_by_its_operator_and_nothing_for_the_refills(
        client, root, node, template, run_tasks):
    from audit.models import AuditEvent

    def log():
        return [(e.verb, e.user, e.interface, e.object_type, e.result, e.code)
                for e in AuditEvent.objects.exclude(verb="login").order_by("pk")]

    add_pool(client, node, template, run_tasks)  # saved, then filled by its tend task
    pool = WarmPool.objects.get()
    assert pool.spares.live().count() == 2
    assert log() == [("warm_pool.save", root, "admin", "warmpool", "ok", "")]
    # Deleting it while it holds spares: the admin does not offer it (403), no service ran.
    response = client.post(reverse("admin:vms_warmpool_delete", args=[pool.pk]), {"post": "yes"})
    assert response.status_code == 403 and WarmPool.objects.exists()
    assert len(log()) == 1
    with run_tasks():  # switched off: its spares are discarded, by the system, unrecorded
        client.post(reverse("admin:vms_warmpool_change", args=[pool.pk]), {
            "size": 2, "sizes": "1x128", "keep": "saved", "spares-TOTAL_FORMS": 0, "spares-INITIAL_FORMS": 0})
    client.post(reverse("admin:vms_warmpool_delete", args=[pool.pk]), {"post": "yes"})
    assert not WarmPool.objects.exists()
    assert log()[1:] == [("warm_pool.save", root, "admin", "warmpool", "ok", ""),
                         ("warm_pool.delete", root, "admin", "warmpool", "ok", "")]
