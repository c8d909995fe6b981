from envs.services import env_create, env_destroy
from operations.models import Operation
from vms.models import Vm
from vms.new_vms import NewVm
from vms.services import snapshot_apply, snapshot_create, vm_stop


def test_it_runs_a_whole_life(alice, template, run_tasks):
    with run_tasks():
        op = env_create(owner=alice, by=alice, name="demo",
                        vms=[NewVm(name="web", template="tt/busybox", ports=[80, "53/udp"])])
    op.refresh_from_db()
    assert op.status == "succeeded", op.error_message
    vm = Vm.objects.get(env=op.env, name="web")
    assert vm.status == "running"
    with run_tasks():
        op = vm_stop(vm=vm, by=alice)
    op.refresh_from_db()
    vm.refresh_from_db()
    assert op.status == "succeeded", op.error_message
    assert vm.status == "stopped"
    with run_tasks():
        op = snapshot_create(vm=vm, by=alice, name="s1")
    op.refresh_from_db()
    assert op.status == "succeeded", op.error_message
    with run_tasks():
        op = snapshot_apply(snapshot=op.snapshot, by=alice)
    op.refresh_from_db()
    assert op.status == "succeeded", op.error_message
    with run_tasks():
        op = env_destroy(env=op.env, by=alice)
    op.refresh_from_db()
    assert op.status == "succeeded", op.error_message
    assert Operation.objects.count() == 5
