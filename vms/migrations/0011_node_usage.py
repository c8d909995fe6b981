# Per-node use kept as counters (vms.models.NodeUsage), for placement to read one row per
# node instead of summing every VM, port and snapshot (issue 24, item 4).
#
# The database keeps them, with triggers: whatever changes a VM, a port, a snapshot or a
# warm pool (services, steps, the reconcile, the admin, bulk inserts, cascades) changes
# the counters in the same statement, so in the same transaction. A new node gets its
# row from a trigger too. The rules are the ones placement summed by (vms/node_usage.py:
# counted() is the same rule in the ORM, which the reconcile pass and the tests compare
# the counters with):
# - a live VM (status not destroyed) holds 1 VM, its cpu_num, mem_mb and disk_mb;
# - and its memory on disk (saved_mb) while suspending or suspended, unless it is a
#   spare of a pool that keeps spares paused in memory;
# - each snapshot of a live VM holds its VM's disk_mb (snapshots_mb);
# - each port mapping holds one public port of its protocol on its node.
# A VM row that changes (its status, sizes, node or pool) takes its old contribution
# off and adds its new one. On PostgreSQL a change that alters no counter (running ->
# stopping) touches no counter row, so it never waits on a placement's transaction.
# Decrements are plain UPDATEs: a row that is missing is created by the reconcile pass
# and never by a delete (a table flush deleting VMs after the counters leaves none).
# The SQL below is the migration's own (frozen): a later change of the rules is a new
# migration.

import django.db.models.deletion
from django.db import migrations, models

LIVE = "{r}.status <> 'destroyed'"
# A VM's memory written to its node's disk (libvirt's managed save).
SAVED = ("CASE WHEN {r}.status IN ('suspending', 'suspended') AND ({r}.warm_pool_id IS NULL OR EXISTS "
         "(SELECT 1 FROM vms_warmpool p WHERE p.id = {r}.warm_pool_id AND p.keep = 'saved')) "
         "THEN {r}.mem_mb ELSE 0 END")
SNAPSHOTS = "(SELECT count(*) FROM vms_snapshot s WHERE s.vm_id = {r}.id) * {r}.disk_mb"


def vm_change(r: str, sign: str, *, with_snapshots: bool) -> str:
    """The UPDATE that adds (sign '+') or takes off ('-') what VM row `r` (NEW, OLD) holds."""
    snapshots = f", snapshots_mb = snapshots_mb {sign} {SNAPSHOTS.format(r=r)}" if with_snapshots else ""
    return (f"UPDATE vms_nodeusage SET vms = vms {sign} 1, cpu = cpu {sign} {r}.cpu_num, "
            f"mem_mb = mem_mb {sign} {r}.mem_mb, disk_mb = disk_mb {sign} {r}.disk_mb, "
            f"saved_mb = saved_mb {sign} {SAVED.format(r=r)}{snapshots} "
            f"WHERE node_id = {r}.node_id AND {LIVE.format(r=r)};")


def port_change(r: str, sign: str) -> str:
    return (f"UPDATE vms_nodeusage SET "
            f"tcp_ports = tcp_ports {sign} CASE WHEN {r}.protocol = 'tcp' THEN 1 ELSE 0 END, "
            f"udp_ports = udp_ports {sign} CASE WHEN {r}.protocol = 'udp' THEN 1 ELSE 0 END "
            f"WHERE node_id = {r}.node_id;")


def snapshot_change(r: str, sign: str) -> str:
    """A snapshot counts its VM's disk on its VM's node while the VM is live."""
    return (f"UPDATE vms_nodeusage SET snapshots_mb = snapshots_mb {sign} "
            f"(SELECT v.disk_mb FROM vms_vm v WHERE v.id = {r}.vm_id) "
            f"WHERE node_id = (SELECT v.node_id FROM vms_vm v WHERE v.id = {r}.vm_id AND {LIVE.format(r='v')});")


# The pool's spares that are suspended: their saved memory counts or not by the pool's keep.
POOL_KEEP_CHANGE = (
    "UPDATE vms_nodeusage SET saved_mb = saved_mb + "
    "((CASE WHEN NEW.keep = 'saved' THEN 1 ELSE 0 END) - (CASE WHEN OLD.keep = 'saved' THEN 1 ELSE 0 END)) * "
    "(SELECT coalesce(sum(v.mem_mb), 0) FROM vms_vm v WHERE v.warm_pool_id = NEW.id "
    "AND v.status IN ('suspending', 'suspended') AND v.node_id = vms_nodeusage.node_id) "
    "WHERE node_id IN (SELECT v.node_id FROM vms_vm v WHERE v.warm_pool_id = NEW.id "
    "AND v.status IN ('suspending', 'suspended'));"
)
NODE_ROW = ("INSERT INTO vms_nodeusage (node_id, vms, cpu, mem_mb, disk_mb, saved_mb, snapshots_mb, tcp_ports, "
            "udp_ports) VALUES (NEW.id, 0, 0, 0, 0, 0, 0, 0, 0) ON CONFLICT (node_id) DO NOTHING;")

# What a VM update must change: only these columns are read by the counters.
VM_COLUMNS = "node_id, status, cpu_num, mem_mb, disk_mb, warm_pool_id"
# The same VM row holding the same: nothing to do (PostgreSQL skips the counter row).
VM_SAME = (f"OLD.node_id = NEW.node_id AND ({LIVE.format(r='OLD')}) = ({LIVE.format(r='NEW')}) "
           f"AND OLD.cpu_num = NEW.cpu_num AND OLD.mem_mb = NEW.mem_mb AND OLD.disk_mb = NEW.disk_mb "
           f"AND {SAVED.format(r='OLD')} = {SAVED.format(r='NEW')}")

# name -> (table, event, body); each body runs once per row.
TRIGGERS = {
    "vms_usage_node_insert": ("engines_node", "INSERT", NODE_ROW),
    "vms_usage_vm_insert": ("vms_vm", "INSERT", vm_change("NEW", "+", with_snapshots=False)),
    "vms_usage_vm_update": ("vms_vm", f"UPDATE OF {VM_COLUMNS}",
                            vm_change("OLD", "-", with_snapshots=True) + "\n"
                            + vm_change("NEW", "+", with_snapshots=True)),
    "vms_usage_vm_delete": ("vms_vm", "DELETE", vm_change("OLD", "-", with_snapshots=True)),
    "vms_usage_port_insert": ("vms_portmapping", "INSERT", port_change("NEW", "+")),
    "vms_usage_port_update": ("vms_portmapping", "UPDATE OF node_id, protocol",
                              port_change("OLD", "-") + "\n" + port_change("NEW", "+")),
    "vms_usage_port_delete": ("vms_portmapping", "DELETE", port_change("OLD", "-")),
    "vms_usage_snapshot_insert": ("vms_snapshot", "INSERT", snapshot_change("NEW", "+")),
    "vms_usage_snapshot_update": ("vms_snapshot", "UPDATE OF vm_id",
                                  snapshot_change("OLD", "-") + "\n" + snapshot_change("NEW", "+")),
    "vms_usage_snapshot_delete": ("vms_snapshot", "DELETE", snapshot_change("OLD", "-")),
    "vms_usage_pool_update": ("vms_warmpool", "UPDATE OF keep", POOL_KEEP_CHANGE),
}

# Every node's counters from scratch (run once here; the reconcile pass uses counted()).
FILL = f"""
DELETE FROM vms_nodeusage;
INSERT INTO vms_nodeusage (node_id, vms, cpu, mem_mb, disk_mb, saved_mb, snapshots_mb, tcp_ports, udp_ports)
SELECT n.id,
  (SELECT count(*) FROM vms_vm v WHERE v.node_id = n.id AND {LIVE.format(r='v')}),
  (SELECT coalesce(sum(v.cpu_num), 0) FROM vms_vm v WHERE v.node_id = n.id AND {LIVE.format(r='v')}),
  (SELECT coalesce(sum(v.mem_mb), 0) FROM vms_vm v WHERE v.node_id = n.id AND {LIVE.format(r='v')}),
  (SELECT coalesce(sum(v.disk_mb), 0) FROM vms_vm v WHERE v.node_id = n.id AND {LIVE.format(r='v')}),
  (SELECT coalesce(sum({SAVED.format(r='v')}), 0) FROM vms_vm v WHERE v.node_id = n.id AND {LIVE.format(r='v')}),
  (SELECT coalesce(sum(v.disk_mb), 0) FROM vms_snapshot s JOIN vms_vm v ON v.id = s.vm_id
   WHERE v.node_id = n.id AND {LIVE.format(r='v')}),
  (SELECT count(*) FROM vms_portmapping m WHERE m.node_id = n.id AND m.protocol = 'tcp'),
  (SELECT count(*) FROM vms_portmapping m WHERE m.node_id = n.id AND m.protocol = 'udp')
FROM engines_node n;
"""


def _statements(sql: str) -> list[str]:
    return [s.strip() for s in sql.split(";\n") if s.strip()]


def create_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    for name, (table, event, body) in TRIGGERS.items():
        if vendor == "postgresql":
            # The VM update's counter row is left alone when nothing it counts changed.
            # (In parentheses: plpgsql ends an IF condition at the first THEN outside them.)
            guard = f"IF ({VM_SAME}) THEN RETURN NULL; END IF;\n" if name == "vms_usage_vm_update" else ""
            schema_editor.execute(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
                f"BEGIN\n{guard}{body}\nRETURN NULL;\nEND $$;")
            schema_editor.execute(
                f"CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW EXECUTE FUNCTION {name}();")
        elif vendor == "sqlite":
            schema_editor.execute(f"CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW\n"
                                  f"BEGIN\n{body}\nEND;")
        else:
            raise NotImplementedError(f"node usage counters need triggers written for {vendor}")
    for statement in _statements(FILL):
        schema_editor.execute(statement)


def drop_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    for name, (table, _, _) in TRIGGERS.items():
        if vendor == "postgresql":
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {name} ON {table};")
            schema_editor.execute(f"DROP FUNCTION IF EXISTS {name}();")
        else:
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {name};")


class Migration(migrations.Migration):

    dependencies = [
        ('nodes', '0001_initial'),
        ('vms', '0010_node_app'),
    ]

    operations = [
        migrations.CreateModel(
            name='NodeUsage',
            fields=[
                ('node', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='usage', serialize=False, to='nodes.node')),
                ('vms', models.IntegerField(default=0, help_text='Live VMs (not destroyed; warm spares too).')),
                ('cpu', models.BigIntegerField(default=0, help_text='Their vCPUs.')),
                ('mem_mb', models.BigIntegerField(default=0, help_text='Their memory, MiB.')),
                ('disk_mb', models.BigIntegerField(default=0, help_text='Their disks (disk_mb each), MiB.')),
                ('saved_mb', models.BigIntegerField(default=0, help_text="Memory saved on the node's disk: suspended or suspending VMs but the spares of pools that keep them paused, MiB.")),
                ('snapshots_mb', models.BigIntegerField(default=0, help_text="Their snapshots, each estimated at its VM's disk_mb, MiB.")),
                ('tcp_ports', models.IntegerField(default=0, help_text='Public TCP ports forwarded.')),
                ('udp_ports', models.IntegerField(default=0, help_text='Public UDP ports forwarded.')),
            ],
        ),
        migrations.RunPython(create_triggers, drop_triggers),
    ]
