"""What a VM of a cloud-init template gets on its first boot: its owner's keys as they
were when it was made, and their own #cloud-config, checked before anything is made."""

from __future__ import annotations

import pytest
from django.urls import reverse

from accounts.services import ssh_key_add, ssh_key_delete
from envs.models import Env
from tests.api_support import client_for
from tests.support import TEMPLATE_VOLUME, public_key_line
from ttportal import limits
from ttportal.errors import ConflictingInput, InvalidInput
from vms.models import CLOUD_INIT, VmTemplate
from vms.new_vms import NewVm
from vms.userdata import check_user_data

GOOD = "#cloud-config\npackages: [curl]\nruncmd:\n  - [sh, -c, 'echo hi > /tmp/hi']\n"


@pytest.fixture
def cloud_template(template):
    return VmTemplate.objects.create(
        name="debian/12", path=TEMPLATE_VOLUME, compatible_engines=["libvirt"], size_mb=20, min_mem_mb=64,
        features=["ssh:22", CLOUD_INIT, "guest-agent"],
    )


# --- the user-data rule -------------------------------------------------------------------


@pytest.mark.parametrize("value", [
    GOOD, "#cloud-config", "#cloud-config\n", "#cloud-config  \r\n{}\n", None, "",
])
def test_it_takes_a_cloud_config_or_none(value):
    assert check_user_data(value, "user_data") == (value or "")


@pytest.mark.parametrize("value", [
    "packages: [curl]\n",  # no #cloud-config line: cloud-init would not read it as one
    "#!/bin/sh\necho hi\n",
    "#cloud-config-archive\n[]\n",
    "#cloud-config\nbad\x00byte: 1\n",
    "#cloud-config\n" + "a" * limits.USER_DATA_MAX,
    42,
])
def test_it_refuses_what_the_schema_states_as_malformed(value):
    with pytest.raises(InvalidInput) as exc:
        check_user_data(value, "vms[0].user_data")
    assert not isinstance(exc.value, ConflictingInput)
    assert exc.value.field == "vms[0].user_data"


@pytest.mark.parametrize(("value", "says"), [
    ("#cloud-config\npackages: [curl\n", "is not valid YAML"),
    ("#cloud-config\nruncmd:\n\t- ls\n", "line 3"),
    ("#cloud-config\n- just\n- a list\n", "must be a YAML mapping"),
    ("#cloud-config\nhello\n", "must be a YAML mapping"),
])
def test_it_refuses_yaml_that_does_not_parse_to_a_mapping_naming_where(value, says):
    with pytest.raises(ConflictingInput) as exc:
        check_user_data(value, "user_data")
    assert says in exc.value.message and exc.value.field == "user_data"


DEEP = {  # each nested 3,000 levels (a RecursionError in PyYAML's composer, once a 500)
    "flow lists": "#cloud-config\nx: " + "[" * 3000 + "]" * 3000 + "\n",
    "flow mappings": "#cloud-config\nx: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n",
    "block sequences": "#cloud-config\nx:\n  " + "- " * 3000 + "1\n",
}


def _indented(levels: int) -> str:
    return "#cloud-config\n" + "".join(" " * i + f"k{i}:\n" for i in range(levels)) + " " * levels + "v\n"


@pytest.mark.parametrize("value", [*DEEP.values(), _indented(limits.USER_DATA_DEPTH_MAX + 1),
                                   "#cloud-config\nx: " + "[" * 21 + "]" * 21 + "\n"],
                         ids=[*DEEP, "block mappings, 21 deep", "flow lists, 21 deep"])
def test_it_refuses_user_data_nested_too_deep_naming_the_field(value):
    with pytest.raises(ConflictingInput) as exc:
        check_user_data(value, "vms[0].user_data")
    assert exc.value.field == "vms[0].user_data"
    assert exc.value.message == "must not nest lists and mappings more than 20 levels deep"


def test_it_takes_user_data_nested_as_deep_as_allowed():
    for value in (_indented(limits.USER_DATA_DEPTH_MAX), "#cloud-config\nx: " + "[" * 19 + "]" * 19 + "\n"):
        assert check_user_data(value, "user_data") == value


def test_a_document_of_many_aliases_costs_no_more_than_its_size():
    laughs = "#cloud-config\na: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(20)
    )
    assert check_user_data(laughs, "user_data") == laughs


# --- keys and user-data on the VM -----------------------------------------------------------


def test_a_new_vm_keeps_the_keys_its_owner_had_then(alice, cloud_template, make_env):
    first = ssh_key_add(user=alice, public_key=public_key_line(comment="first"))
    second = ssh_key_add(user=alice, public_key=public_key_line("ecdsa", comment="second"))
    env = make_env(alice, vms=[NewVm(name="web", template="debian/12", user_data=GOOD)])
    web = env.vms.get()
    assert web.ssh_keys == [first.line, second.line]
    ssh_key_delete(key=first, by=alice)
    web.refresh_from_db()
    seed = web.to_spec().cloud_init
    assert seed.ssh_keys == (first.line, second.line)  # made with both: keeps both
    assert (seed.hostname, seed.user_data) == ("web", GOOD)
    assert seed.instance_id.startswith(web.engine_name + "-")


def test_a_vm_without_cloud_init_gets_no_keys_and_no_seed(alice, template, make_env):
    ssh_key_add(user=alice, public_key=public_key_line())
    vm = make_env(alice).vms.get()
    assert vm.ssh_keys == [] and vm.to_spec().cloud_init is None


def test_each_vm_is_its_own_instance(alice, cloud_template, make_env):
    env = make_env(alice, vms=[NewVm(name="a", template="debian/12"), NewVm(name="b", template="debian/12")])
    ids = {vm.to_spec().cloud_init.instance_id for vm in env.vms.all()}
    assert len(ids) == 2


# --- through the API ---------------------------------------------------------------------


def _create(user, **vm):
    return client_for(user).post("/api/envs/", {"name": "demo", "vms": [{"name": "web", **vm}]})


def test_the_api_takes_user_data_and_shows_it_back(alice, cloud_template, run_tasks):
    with run_tasks():
        response = _create(alice, template="debian/12", user_data=GOOD)
    assert response.status_code == 202, response.json()
    vm = Env.objects.get(name="demo").vms.get()
    body = client_for(alice).get(f"/api/vms/{vm.pk}/").json()
    assert body["user_data"] == GOOD


@pytest.mark.parametrize(("vm", "status", "says"), [
    ({"template": "debian/12", "user_data": "runcmd: [ls]\n"}, 400, "#cloud-config"),
    ({"template": "debian/12", "user_data": "#cloud-config\nruncmd: [ls\n"}, 422, "is not valid YAML"),
    ({"template": "tt/busybox", "user_data": GOOD}, 422, "does not run cloud-init"),
    ({"template": "debian/12", "user_data": DEEP["flow lists"]}, 422, "more than 20 levels deep"),
    ({"template": "debian/12", "user_data": DEEP["block sequences"]}, 422, "more than 20 levels deep"),
])
def test_the_api_refuses_bad_user_data_naming_the_field(alice, cloud_template, db_state, vm, status, says):
    before = db_state()
    response = _create(alice, **vm)
    assert response.status_code == status
    error = response.json()
    assert error["field"] == "vms[0].user_data" and says in error["message"]
    assert db_state() == before


def test_the_portal_refuses_deep_user_data_on_the_field(alice, cloud_template, make_env, client, db_state):
    env = make_env(alice)
    client.force_login(alice)
    before = db_state()
    response = client.post(reverse("envs:add_vm", args=[env.pk]), {
        "name": "deep", "template": str(cloud_template.pk), "cpu_num": "1", "mem_mb": "128",
        "net_kind": "nat", "user_data": DEEP["flow mappings"]})
    assert response.status_code == 200
    assert response.context["form"].errors["user_data"] == [
        "must not nest lists and mappings more than 20 levels deep"]
    assert db_state() == before
