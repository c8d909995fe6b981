"""The Env page's VM table: its rows read in a fixed number of queries, and their HTML.

An Env may hold a hundred VMs (bench/list_latency.py measures one). Each row shows some
25 values; through Django's template engine every `{{ }}` resolves its lookup, localizes
and escapes (about 4 µs each, an int through number_format 6 µs), so the rows alone took
12 ms of the page. Here a row is one format string with its values escaped once: under a
millisecond for the hundred. The markup is what templates/envs/detail.html had; the page
around the table stays a template.

Snapshots, the blacklist and the port editor live on each VM's own page, so a row stays
short. Display values are computed once per row in `vm_rows`, the HTML from them in
`rows_html`; tests/envs/test_vm_table.py checks both against what the page shows.
"""

from __future__ import annotations

from html import escape

from django.db.models import Count, IntegerField, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from envs.models import Env
from envs.templatetags.portal import mib
from vms import state
from vms.models import PortMapping, Snapshot, Vm, engine_label, port_label, ssh_commands
from vms.state import VmAction


def url_maker(name: str):
    """pk -> the URL of `name`, reversed once per page instead of once per row (a reverse()
    per VM, action and snapshot was a sixth of an Env page with 100 VMs)."""
    sentinel = 987654321
    head, _, tail = reverse(name, args=[sentinel]).partition(str(sentinel))
    return lambda pk: f"{head}{pk}{tail}"


_VM_URLS = ("detail", "start", "stop", "destroy")
# What a row shows: plain values, no model instances (a hundred Vm objects with their
# JSON fields cost more than the rest of the page).
_VM_ROW_FIELDS = ("pk", "name", "status", "net_busy", "net_kind", "addr", "ip", "cpu_num", "mem_mb",
                  "disk_mb", "template__name", "node_id", "node__public_host", "node__kind", "node__name",
                  "node__down_since", "snapshot_count")


def _snapshot_count() -> Coalesce:
    """A VM's snapshots, counted per row through the index on vm_id. A join with a
    Count() made PostgreSQL hash every snapshot of the site (a sequential scan that grew
    with all the VMs, not with the Env's)."""
    per_vm = (Snapshot.objects.filter(vm=OuterRef("pk")).order_by().values("vm")
              .annotate(n=Count("pk")).values("n"))
    return Coalesce(Subquery(per_vm, output_field=IntegerField()), Value(0))


def vm_rows(env: Env, may: dict[str, bool] | None = None) -> list[dict]:
    """The Env's live VMs as the table shows them, in two queries whatever their number.

    The ports are asked by the rows' ids: a subquery (`vm__in=<the Env's VMs>`) made
    PostgreSQL scan every port of the site instead of its index on vm_id. `may`: which of
    vm_start, vm_stop, vm_destroy the viewer may take (vms.policy.allowed_actions; None: all)."""
    rows = list(env.vms.live().annotate(snapshot_count=_snapshot_count()).order_by("name")
                .values(*_VM_ROW_FIELDS))
    ports: dict[int, list[tuple[int, int, str]]] = {row["pk"]: [] for row in rows}
    if ports:
        for vm_id, public, inner, protocol in (
            PortMapping.objects.filter(vm_id__in=list(ports)).order_by("protocol", "inner_port")
            .values_list("vm_id", "public_port", "inner_port", "protocol")
        ):
            ports[vm_id].append((public, inner, protocol))
    live = env.status == Env.Status.ACTIVE
    urls = {name: url_maker(f"vms:{name}") for name in _VM_URLS}
    for row in rows:
        row["urls"] = {name: make(row["pk"]) for name, make in urls.items()}
        node_up = row["node__down_since"] is None
        row["actions"] = {action: live and node_up and state.allowed(row["status"], action)
                          and (may is None or may[f"vm_{action}"])
                          for action in (VmAction.START, VmAction.STOP, VmAction.DESTROY)}
        if not node_up:
            row["status"] = Vm.UNKNOWN
        host = row["node__public_host"]
        row["ports"] = [(f"{host}:{public}", port_label(inner, protocol))
                        for public, inner, protocol in ports[row["pk"]]]
        row["ssh"] = ssh_commands(host, ports[row["pk"]])
        row["engine"] = engine_label(row["node__kind"])
        row["size"] = f"{row['cpu_num']} vCPU · {mib(row['mem_mb'])}"
        row["disk"] = f"disk {mib(row['disk_mb'])}"
        row["show_ip"] = row["ip"] and row["ip"] != row["addr"]
        row["no_ports"] = "flat: its own address" if row["net_kind"] == Vm.NetKind.FLAT else "none"
    return rows


def node_count(rows: list[dict]) -> int:
    """How many nodes the rows' VMs run on (what Env.node_count asks the database)."""
    return len({row["node_id"] for row in rows})


_COPY = '<button type="button" class="btn btn-xs copy" hidden>Copy</button>'


def _ports_html(row: dict) -> str:
    items = [f'\n      <li><code class="copy-src">{escape(endpoint)}</code> <span aria-hidden="true">→</span>'
             f'<span class="sr-only">to</span> <code>{escape(inner)}</code> {_COPY}</li>'
             for endpoint, inner in row["ports"]]
    if not items:
        items.append(f'\n      <li class="muted">{escape(row["no_ports"])}</li>')
    items.append("\n      ")
    items += [f'<li class="ssh"><code class="copy-src">{escape(line)}</code> {_COPY}</li>'
              for line in row["ssh"]]
    return "".join(items)


def _actions_html(row: dict, gate: str) -> str:
    urls, actions, parts = row["urls"], row["actions"], []
    parts.append(f'<button type="submit" formaction="{urls["start"]}" class="btn btn-sm"{gate}>Start</button>'
                 if actions[VmAction.START] else "")
    parts.append(f'<button type="submit" formaction="{urls["stop"]}" class="btn btn-sm"{gate}>Stop</button>'
                 if actions[VmAction.STOP] else "")
    parts.append(
        '<details class="danger inline-details"><summary class="btn btn-sm btn-danger">Destroy…</summary>\n'
        f'        <button type="submit" formaction="{urls["destroy"]}" class="btn btn-sm btn-danger"{gate}>'
        f'Yes, destroy {escape(row["name"])}</button></details>' if actions[VmAction.DESTROY] else "")
    return "\n      ".join(parts)


def row_html(row: dict, gate: str) -> str:
    """One `<tr>` of the table; `gate`: the attributes of a cooldown-gated button (safe HTML)."""
    detail, status = row["urls"]["detail"], escape(row["status"])
    busy = ' <span class="status status-running-op">network change…</span>' if row["net_busy"] else ""
    inner_ip = (f'<div class="muted small">inner <code>{escape(row["ip"])}</code></div>'
                if row["show_ip"] else "")
    return (
        f'\n  <tr id="vm-{row["pk"]}">\n'
        f'    <td><a class="strong" href="{detail}">{escape(row["name"])}</a><div class="muted small">'
        f'{escape(row["template__name"])} · {escape(row["engine"])} · node {escape(row["node__name"])}'
        '</div></td>\n'
        f'    <td><span class="status status-{status}">{status}</span>{busy}</td>\n'
        f'    <td><code>{escape(row["addr"] or "—")}</code>{inner_ip}</td>\n'
        f'    <td><ul class="portmap">{_ports_html(row)}\n    </ul></td>\n'
        f'    <td class="nowrap">{escape(row["size"])}'
        f'<div class="muted small">{escape(row["disk"])}</div></td>\n'
        f'    <td class="num"><a href="{detail}#snapshots">{row["snapshot_count"]}</a></td>\n'
        f'    <td class="actions-col">\n      {_actions_html(row, gate)}\n'
        f'      <a class="btn btn-sm" href="{detail}">Manage</a>\n    </td>\n  </tr>\n  '
    )


def _gate(cooldown: int) -> str:
    """The attributes of a cooldown-gated button while the cooldown runs: disabled until
    portal.js counts it down. The page states "available in N s" once, above the table,
    rather than on every row. Built once per page, not once per button."""
    if not cooldown:
        return ""
    return format_html(' disabled data-cooldown="{}" title="available in {} s"', cooldown, cooldown)


def rows_html(rows: list[dict], cooldown: int) -> SafeString:
    """The table's body (`cooldown`: the Env's, in seconds). Every value is escaped in
    row_html; the URLs and ids in it are the project's own."""
    gate = _gate(cooldown)
    return mark_safe("".join(row_html(row, gate) for row in rows))
