"""The one rule for a live VM (vms.models.live_vms): every place that counts or lists
live VMs gives the same answer for every status."""

from __future__ import annotations

import pytest
from django.db.models import Count

from envs.models import Env
from nodes.models import Node
from vms.models import Vm, VmTemplate, live_vms


@pytest.mark.parametrize("status", Vm.Status.values)
def test_it_counts_a_vm_as_live_until_it_is_destroyed(alice, make_env, status):
    env = make_env(alice)
    Vm.objects.filter(env=env).update(status=status)
    vm = Vm.objects.get(env=env)
    live = status != Vm.Status.DESTROYED

    assert vm.is_live is live
    assert Vm.objects.live().filter(pk=vm.pk).exists() is live
    assert env.vms.live().count() == int(live)
    for model in (Env, Node, VmTemplate):  # the portal's and the admins' counts
        counted = model.objects.annotate(n=Count("vms", filter=live_vms())).get(vms=vm).n
        assert counted == int(live), model
