"""The Env page's VM table, whose rows are HTML built in envs/vm_table.py: well-formed,
escaped, and with the actions each VM's state allows."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from django.urls import reverse
from django.utils import timezone

from tests.support import T0
from vms.models import Vm, VmTemplate

pytestmark = pytest.mark.usefixtures("frozen_clock")

VOID = {"input", "br", "img", "meta", "link", "hr"}


class Rows(HTMLParser):
    """The VM table's rows: for each <tr>, its cells (each the list of its texts) and its
    buttons' formactions; fails on a tag closed out of order."""

    def __init__(self):
        super().__init__()
        self.open: list[str] = []
        self.rows: list[dict] = []
        self.in_table = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and "vms" in (attrs.get("class") or "").split():
            self.in_table = True
        if tag not in VOID:
            self.open.append(tag)
        if not self.in_table:
            return
        if tag == "tr" and self.open[-2] == "tbody":
            self.rows.append({"id": attrs["id"], "cells": [], "actions": [], "disabled": []})
        elif tag == "td" and self.rows:
            self.rows[-1]["cells"].append([])
        elif tag == "button" and "formaction" in attrs:
            self.rows[-1]["actions"].append(attrs["formaction"])
            self.rows[-1]["disabled"].append("disabled" in attrs)

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open[-1:]}"
        self.open.pop()
        if tag == "table":
            self.in_table = False

    def handle_data(self, data):
        if self.in_table and self.rows and self.rows[-1]["cells"] and data.strip():
            self.rows[-1]["cells"][-1].append(data.strip())


def rows_of(client, env) -> dict[str, dict]:
    parser = Rows()
    parser.feed(client.get(reverse("envs:detail", args=[env.pk])).content.decode())
    assert parser.open == []
    return {row["cells"][0][0]: row for row in parser.rows}  # by the VM's name


def urls(vm: Vm, *actions: str) -> list[str]:
    return [reverse(f"vms:{action}", args=[vm.pk]) for action in actions]


def test_each_row_has_its_cells_and_the_actions_its_state_allows(client, alice, make_env):
    env = make_env(alice, vms=3)
    vm0, vm1, vm2 = env.vms.order_by("name")
    Vm.objects.filter(pk=vm1.pk).update(status=Vm.Status.STOPPED)
    Vm.objects.filter(pk=vm2.pk).update(status=Vm.Status.STARTING)
    client.force_login(alice)
    rows = rows_of(client, env)
    assert list(rows) == ["vm0", "vm1", "vm2"]
    assert all(len(row["cells"]) == 7 for row in rows.values())
    assert rows["vm0"]["id"] == f"vm-{vm0.pk}"
    assert rows["vm0"]["actions"] == urls(vm0, "stop", "destroy")
    assert rows["vm1"]["actions"] == urls(vm1, "start", "destroy")
    assert rows["vm2"]["actions"] == []  # nothing while it starts
    assert rows["vm0"]["cells"][1] == ["running"] and rows["vm1"]["cells"][1] == ["stopped"]
    assert rows["vm0"]["cells"][4] == ["1 vCPU · 256 MiB", "disk 20 MiB"]


def test_a_vm_on_a_node_that_is_down_is_unknown_and_offers_no_action(client, alice, make_env, node):
    env = make_env(alice, vms=1)
    node.down_since = timezone.now()
    node.save(update_fields=["down_since"])
    client.force_login(alice)
    row = rows_of(client, env)["vm0"]
    assert row["cells"][1] == [Vm.UNKNOWN] and row["actions"] == []


def test_the_cooldown_disables_each_gated_button(client, alice, make_env, settings, time_machine):
    time_machine.move_to(T0, tick=False)
    env = make_env(alice, vms=2)
    settings.TT_MGMT_COOLDOWN = 60
    client.force_login(alice)
    rows = rows_of(client, env)
    assert [row["disabled"] for row in rows.values()] == [[True, True], [True, True]]
    time_machine.move_to(T0.replace(minute=5), tick=False)
    rows = rows_of(client, env)
    assert [row["disabled"] for row in rows.values()] == [[False, False], [False, False]]


def test_what_an_operator_named_is_escaped_in_the_row(client, alice, make_env, template, node):
    env = make_env(alice, vms=1)
    VmTemplate.objects.filter(pk=template.pk).update(name='tt/<b>"bold"&co')
    node.name = "n<1>"
    node.save(update_fields=["name"])
    client.force_login(alice)
    body = client.get(reverse("envs:detail", args=[env.pk])).content.decode()
    assert "tt/&lt;b&gt;&quot;bold&quot;&amp;co" in body and "node n&lt;1&gt;" in body
    assert "<b>" not in body
    origin = 'tt/<b>"bold"&co · QEMU/KVM (libvirt) · node n<1>'
    assert rows_of(client, env)["vm0"]["cells"][0] == ["vm0", origin]
