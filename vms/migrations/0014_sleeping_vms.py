# A sleeping Env's VMs give their node back their vCPUs and memory (issue 27, envs/sleep.py).
#
# The node's use counters (0011_node_usage.py) leave out the vCPUs and memory of a VM that is
# suspended while `asleep_at` is set; any change of status (a wake, a start, a destroy) counts
# them again in the same statement, as every other rule. The triggers of 0011 are made again
# with that rule, and the counters filled again. Adding a nullable column rebuilds no table on
# SQLite (its triggers stay until dropped here).

import importlib

from django.db import migrations, models

base = importlib.import_module("vms.migrations.0011_node_usage")

LIVE = base.LIVE
SAVED = base.SAVED
SNAPSHOTS = base.SNAPSHOTS
# The vCPUs and memory a VM holds on its node: none while it sleeps saved.
ASLEEP = "({r}.asleep_at IS NOT NULL AND {r}.status = 'suspended')"
CPU = f"CASE WHEN {ASLEEP} THEN 0 ELSE {{r}}.cpu_num END"
MEM = f"CASE WHEN {ASLEEP} THEN 0 ELSE {{r}}.mem_mb END"


def vm_change(r: str, sign: str, *, with_snapshots: bool) -> str:
    snapshots = f", snapshots_mb = snapshots_mb {sign} {SNAPSHOTS.format(r=r)}" if with_snapshots else ""
    return (f"UPDATE vms_nodeusage SET vms = vms {sign} 1, cpu = cpu {sign} {CPU.format(r=r)}, "
            f"mem_mb = mem_mb {sign} {MEM.format(r=r)}, disk_mb = disk_mb {sign} {r}.disk_mb, "
            f"saved_mb = saved_mb {sign} {SAVED.format(r=r)}{snapshots} "
            f"WHERE node_id = {r}.node_id AND {LIVE.format(r=r)};")


VM_COLUMNS = "node_id, status, cpu_num, mem_mb, disk_mb, warm_pool_id, asleep_at"
VM_SAME = (f"OLD.node_id = NEW.node_id AND ({LIVE.format(r='OLD')}) = ({LIVE.format(r='NEW')}) "
           f"AND {CPU.format(r='OLD')} = {CPU.format(r='NEW')} AND {MEM.format(r='OLD')} = {MEM.format(r='NEW')} "
           f"AND OLD.disk_mb = NEW.disk_mb AND {SAVED.format(r='OLD')} = {SAVED.format(r='NEW')}")

TRIGGERS = {
    **base.TRIGGERS,
    "vms_usage_vm_insert": ("vms_vm", "INSERT", vm_change("NEW", "+", with_snapshots=False)),
    "vms_usage_vm_update": ("vms_vm", f"UPDATE OF {VM_COLUMNS}",
                            vm_change("OLD", "-", with_snapshots=True) + "\n"
                            + vm_change("NEW", "+", with_snapshots=True)),
    "vms_usage_vm_delete": ("vms_vm", "DELETE", vm_change("OLD", "-", with_snapshots=True)),
}

FILL = base.FILL.replace(
    "(SELECT coalesce(sum(v.cpu_num), 0) FROM",
    f"(SELECT coalesce(sum({CPU.format(r='v')}), 0) FROM",
).replace(
    "(SELECT coalesce(sum(v.mem_mb), 0) FROM",
    f"(SELECT coalesce(sum({MEM.format(r='v')}), 0) FROM",
)
assert FILL != base.FILL


def _make(triggers: dict, vm_same: str, fill: str):
    def make(apps, schema_editor):
        vendor = schema_editor.connection.vendor
        for name, (table, event, body) in triggers.items():
            if vendor == "postgresql":
                guard = f"IF ({vm_same}) THEN RETURN NULL; END IF;\n" if name == "vms_usage_vm_update" else ""
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
        for statement in base._statements(fill):
            schema_editor.execute(statement)

    return make


create_triggers = _make(TRIGGERS, VM_SAME, FILL)
create_old_triggers = _make(base.TRIGGERS, base.VM_SAME, base.FILL)
drop_triggers = base.drop_triggers


def forward(apps, schema_editor):
    drop_triggers(apps, schema_editor)
    create_triggers(apps, schema_editor)


def backward(apps, schema_editor):
    drop_triggers(apps, schema_editor)
    create_old_triggers(apps, schema_editor)


class Migration(migrations.Migration):

    dependencies = [
        ('vms', '0013_clone_disk_bases'),
    ]

    operations = [
        migrations.AddField(
            model_name='vm',
            name='asleep_at',
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.RunPython(forward, backward),
    ]
