"""The guests the exec and file benchmarks go into: one Debian VM on the QEMU node "bench"
(the guest agent answers) and one busybox container on the docker node "benchd", each in
an Env of its own made through the API, as a user makes them, with an API token.

Both nodes are the benchmarks' own (_common.py, _docker.py) and are removed on exit, with
the throwaway site.
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass

import _common as c
import _docker as d

DEBIAN_MEM_MB = 512
AGENT_DEADLINE_S = 420  # a Debian boot under TCG, until its guest agent answers
# The benchmark is one user calling exec far more often than a person: past the site's rate.
os.environ.setdefault("TT_RATE_EXEC", "100000/h")
os.environ.setdefault("TT_RATE_FILES", "100000/h")


@dataclass
class Guests:
    client: object  # rest_framework.test.APIClient with the user's token
    debian_id: int
    container_id: int


def prepare(cleanup: c.Cleanup) -> Guests:
    """Both nodes, a user with a token, and the two guests running, their exec answering."""
    c.throwaway_site(cleanup)  # Django set up on a throwaway database: only then its imports
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from rest_framework.test import APIClient

    from accounts.services import token_create

    cleanup.add("bench node", c.remove_node)
    cleanup.add("bench docker node", d.remove_node)
    t = time.monotonic()
    opts = {k: v for k, v in c.NODE.items() if k != "name"}
    call_command("tt_prepare_node", c.NODE["name"], template=["debian"], stdout=io.StringIO(), **opts)
    d.prepare_node()
    print(f"  nodes {c.NODE['name']} (Debian) and {d.NODE['name']} (busybox container) prepared in "
          f"{time.monotonic() - t:.1f} s")
    user = get_user_model().objects.create_user(username="bench", password="bench-pw")
    _token, secret = token_create(user=user, name="bench")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    t = time.monotonic()
    debian = create_vm(client, user, "exec-debian", "debian/12", DEBIAN_MEM_MB)
    container = create_vm(client, user, "exec-container", d.TEMPLATE, 64)
    wait_until_exec_answers(client, container)
    wait_until_exec_answers(client, debian)
    print(f"  both guests running, exec answering, after {time.monotonic() - t:.1f} s")
    settle(client, debian)
    return Guests(client=client, debian_id=debian, container_id=container)


def create_vm(client, user, env_name: str, template: str, mem_mb: int) -> int:
    """POST /api/envs/ with one VM (the task runs inline); the VM's id."""
    from envs.models import Env

    body = {"name": env_name, "vms": [{"name": "box", "template": template, "mem_mb": mem_mb}]}
    response = client.post("/api/envs/", body, format="json", HTTP_HOST="localhost")
    if response.status_code != 202:
        raise RuntimeError(f"POST /api/envs/ answered {response.status_code}: {response.content[:500]}")
    vm = Env.objects.get(owner=user, name=env_name).vms.get()
    if vm.status != "running":
        raise RuntimeError(f"VM {vm.name} of {env_name} is {vm.status} after its create")
    return vm.pk


def exec_call(client, vm_id: int, command: list[str], **extra):
    return client.post(f"/api/vms/{vm_id}/exec/", {"command": command, **extra}, format="json",
                       HTTP_HOST="localhost")


def settle(client, vm_id: int) -> None:
    """Let the Debian guest finish its first boot (cloud-init, then every unit started): its one
    vCPU under TCG is busy with it for a while after the agent first answers, and a user's
    commands meet a settled guest."""
    t = time.monotonic()
    for command in (["cloud-init", "status", "--wait"], ["systemctl", "is-system-running", "--wait"]):
        response = exec_call(client, vm_id, command, timeout=AGENT_DEADLINE_S)
        if response.status_code != 200:
            raise RuntimeError(f"{' '.join(command)}: {response.status_code} {response.content[:300]}")
    print(f"  the Debian guest settled (cloud-init done, units started) after {time.monotonic() - t:.1f} s")


def wait_until_exec_answers(client, vm_id: int) -> None:
    """Poll exec of `true` until it answers 200 (a booting guest's agent is not up yet: 422)."""
    end = time.monotonic() + AGENT_DEADLINE_S
    last = None
    while time.monotonic() < end:
        last = exec_call(client, vm_id, ["true"])
        if last.status_code == 200:
            return
        time.sleep(1)
    raise RuntimeError(f"exec in VM {vm_id} never answered 200 in {AGENT_DEADLINE_S} s: "
                       f"{last.status_code} {last.content[:300]}")
