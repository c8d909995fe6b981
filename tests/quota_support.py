"""Helpers for the quota tests: the same request made through each interface (the service,
the portal, the API, the admin), and what each must say when a quota refuses it.

Every interface goes through the same services, so each says the same words: the API as
a 403 `quota_exceeded` naming the quota, its limit, the use and what the request adds; the
portal and the admin as a form error (a 200 re-rendering the form) or, for actions without
a form, a flash message.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from tests.api_support import client_for
from ttportal.errors import QuotaExceeded
from vms.new_vms import NewVm

INTERFACES = ["service", "portal", "api", "admin"]
_keys = itertools.count(1)


def new_vms(template, count: int = 1, *, prefix: str = "vm", **fields) -> list[NewVm]:
    return [NewVm(name=f"{prefix}{i}", template=template.name, **fields) for i in range(count)]


@dataclass
class Outcome:
    """What one request got: accepted, or refused with this message (and, from the API, body)."""

    accepted: bool
    message: str = ""
    body: dict | None = None
    status: int = 0


def _portal_rows(template, vms: list[NewVm]) -> dict:
    data = {"vms-TOTAL_FORMS": str(len(vms)), "vms-INITIAL_FORMS": "0", "vms-MIN_NUM_FORMS": "1",
            "vms-MAX_NUM_FORMS": "100"}
    for i, vm in enumerate(vms):
        row = {"name": vm.name, "template": str(template.pk), "cpu_num": str(vm.cpu_num),
               "mem_mb": str(vm.mem_mb), "disk_mb": "" if vm.disk_mb is None else str(vm.disk_mb),
               "ports": ", ".join(str(port) for port in vm.ports), "net_kind": "nat"}
        data.update({f"vms-{i}-{key}": value for key, value in row.items()})
    return data


def _api_vm(vm: NewVm) -> dict:
    body = {"name": vm.name, "template": vm.template, "cpu_num": vm.cpu_num, "mem_mb": vm.mem_mb}
    if vm.disk_mb is not None:
        body["disk_mb"] = vm.disk_mb
    if vm.ports:
        body["ports"] = list(vm.ports)
    return body


def _form_refusal(response) -> Outcome:
    assert response.status_code == 200, response.status_code
    errors = list(response.context["form"].non_field_errors())
    assert errors, response.context["form"].errors
    return Outcome(False, errors[0], status=200)


def operator() -> object:
    """A staff superuser for the admin interface (made once per test)."""
    user_model = get_user_model()
    return (user_model.objects.filter(username="root").first()
            or user_model.objects.create_superuser("root", "root@example.com", "pw-root"))


def create_env(interface: str, owner, template, *, name: str, vms: list[NewVm], lifetime: int | None = None,
               **service_args) -> Outcome:
    """Ask for a new Env of `owner`'s through `interface` (the admin: an operator for them)."""
    if interface == "service":
        from envs.services import env_create

        try:
            env_create(owner=owner, by=service_args.pop("by", owner), name=name, vms=vms, lifetime=lifetime,
                       **service_args)
        except QuotaExceeded as exc:
            return Outcome(False, exc.message)
        return Outcome(True)
    if interface == "api":
        body = {"name": name, "vms": [_api_vm(vm) for vm in vms]}
        if lifetime is not None:
            body["lifetime"] = lifetime
        response = client_for(owner).post("/api/envs/", body, format="json")
        if response.status_code == 202:
            return Outcome(True, status=202)
        return Outcome(False, response.json().get("message", ""), response.json(), response.status_code)
    data = {"name": name, "lifetime_hours": str((lifetime or 3600) / 3600),
            "idempotency_key": f"k{next(_keys)}", **_portal_rows(template, vms)}
    client = Client()
    if interface == "portal":
        client.force_login(owner)
        response = client.post(reverse("envs:create"), data)
    else:
        client.force_login(operator())
        response = client.post(reverse("admin:envs_env_add"), {**data, "owner": str(owner.pk)})
    if response.status_code == 302:
        return Outcome(True, status=302)
    return _form_refusal(response)


def add_vm(interface: str, env, template, vm: NewVm) -> Outcome:
    """One more VM in `env` through `interface` (the admin has no such page)."""
    owner = env.owner
    if interface == "service":
        from vms.services import vm_add

        try:
            vm_add(env=env, spec=vm, by=owner)
        except QuotaExceeded as exc:
            return Outcome(False, exc.message)
        return Outcome(True)
    if interface == "api":
        response = client_for(owner).post(f"/api/envs/{env.pk}/vms/", _api_vm(vm), format="json")
        if response.status_code == 202:
            return Outcome(True, status=202)
        return Outcome(False, response.json().get("message", ""), response.json(), response.status_code)
    client = Client()
    client.force_login(owner)
    row = {key.split("-", 2)[2]: value for key, value in _portal_rows(template, [vm]).items()
           if key.startswith("vms-0-")}
    response = client.post(reverse("envs:add_vm", args=[env.pk]),
                           {**row, "idempotency_key": f"k{next(_keys)}"})
    if response.status_code == 302:
        return Outcome(True, status=302)
    return _form_refusal(response)


def assert_refused(outcome: Outcome, interface: str, *, quota: str, limit: int, used: int, requested: int,
                   says: str) -> None:
    """Refused by `quota` with the same words everywhere; from the API, a 403 with the numbers."""
    assert not outcome.accepted, outcome
    assert outcome.message.startswith("quota exceeded: "), outcome.message
    assert says in outcome.message, outcome.message
    if interface == "api":
        assert outcome.status == 403
        assert outcome.body == {"code": "quota_exceeded", "message": outcome.message, "quota": quota,
                                "limit": limit, "used": used, "requested": requested}
