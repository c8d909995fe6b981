# Node and NodeHeartbeat move here from the `engines` label (nodes/history): their
# tables (engines_node, engines_nodeheartbeat), rows, indexes and constraints stay as
# they are; only Django's idea of which app owns them changes. The other apps' foreign
# keys are pointed here by their own next migration, then the `engines` label lets go
# of the models (engines 0006).

import django.core.validators
import django.db.models.deletion
from django.db import migrations, models

import nodes.models


def adopt_content_types(apps, schema_editor):
    """The models' content types (and so their permissions, such as view_node, with
    whoever holds them, and the admin's log entries) follow them to `nodes`."""
    content_type = apps.get_model("contenttypes", "ContentType")
    for model in ("node", "nodeheartbeat"):
        if not content_type.objects.filter(app_label="nodes", model=model).exists():
            content_type.objects.filter(app_label="engines", model=model).update(app_label="nodes")


def return_content_types(apps, schema_editor):
    content_type = apps.get_model("contenttypes", "ContentType")
    content_type.objects.filter(app_label="nodes", model__in=("node", "nodeheartbeat")).update(
        app_label="engines")


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("engines", "0005_node_disk"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='Node',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('name', models.SlugField(max_length=63, unique=True)),
                        ('kind', models.CharField(choices=[('libvirt', 'QEMU/KVM (libvirt)'), ('docker', 'Docker'), ('firecracker', 'Firecracker')], default='libvirt', max_length=16)),
                        ('uri', models.CharField(help_text="Where the engine listens: qemu:///system, qemu+ssh://host/system, unix:///run/docker.sock. test:///default is libvirt's in-process test driver: it boots nothing and is for tests only.", max_length=255)),
                        ('public_host', models.CharField(help_text='Address clients dial to reach forwarded ports.', max_length=255)),
                        ('vm_network', models.CharField(default='10.100.0.0/16', help_text="The VMs' network; a VM's address is this network plus its MAC's low bits.", max_length=18, validators=[nodes.models.validate_vm_network])),
                        ('mac_prefix', models.CharField(default='52:54:00', max_length=8, validators=[django.core.validators.RegexValidator('^[0-9a-f]{2}:[0-9a-f]{2}:[0-9a-f]{2}$')])),
                        ('port_min', models.PositiveIntegerField(default=20000, validators=[django.core.validators.MinValueValidator(1024), django.core.validators.MaxValueValidator(65535)])),
                        ('port_max', models.PositiveIntegerField(default=29999, validators=[django.core.validators.MinValueValidator(1024), django.core.validators.MaxValueValidator(65535)])),
                        ('pool_name', models.CharField(default='tt-pool', max_length=64)),
                        ('network_name', models.CharField(default='tt-net', max_length=64)),
                        ('bridge', models.CharField(default='ttbr0', help_text='Linux bridge of the VM network (at most 15 characters).', max_length=15, validators=[django.core.validators.RegexValidator('^[a-zA-Z0-9_-]{1,15}$')])),
                        ('binary', models.CharField(blank=True, help_text='Firecracker nodes: the firecracker binary (empty: `firecracker` on PATH).', max_length=255)),
                        ('jailer', models.CharField(blank=True, help_text='Firecracker nodes: the jailer binary; empty runs firecracker without it.', max_length=255)),
                        ('cpu_capacity', models.PositiveIntegerField(default=0, help_text='vCPUs offered; 0 = unlimited')),
                        ('mem_capacity_mb', models.PositiveIntegerField(default=0, help_text='MiB offered; 0 = unlimited')),
                        ('disk_capacity_mb', models.PositiveIntegerField(default=0, help_text="MiB of disk offered to guests (their disks, snapshots, saved memory); 0 = the size of the filesystem that holds them, as the node's heartbeat reports it. Set it when that filesystem holds other things too.")),
                        ('enabled', models.BooleanField(default=True)),
                        ('drained', models.BooleanField(default=False, help_text='Drained: no new VM is placed here; what runs keeps running and can be managed.')),
                        ('own_cluster', models.BooleanField(default=False, help_text="Its tasks run on a task cluster named after the node, on its own host (./tt.sh node-worker NAME), which must beat: a node that stops beating is down. Off: the site's cluster runs them (one host).")),
                        ('down_since', models.DateTimeField(blank=True, editable=False, help_text='Set when its cluster stopped beating; cleared by the next beat.', null=True)),
                        ('notes', models.TextField(blank=True)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                    ],
                    options={
                        'db_table': 'engines_node',
                        'ordering': ['name'],
                    },
                ),
                migrations.CreateModel(
                    name='NodeHeartbeat',
                    fields=[
                        ('node', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='heartbeat', serialize=False, to='nodes.node')),
                        ('beat_at', models.DateTimeField()),
                        ('worker', models.CharField(help_text='The worker process that beat.', max_length=200)),
                        ('cpu_free', models.IntegerField(blank=True, help_text='vCPUs free; empty = unlimited.', null=True)),
                        ('mem_free_mb', models.BigIntegerField(blank=True, help_text='MiB free; empty = unlimited.', null=True)),
                        ('ports_free', models.IntegerField(help_text='Public ports free (TCP and UDP counted apart: the fewer).')),
                        ('addresses_free', models.IntegerField()),
                        ('vms_running', models.IntegerField(help_text='Instances the engine reports running.')),
                        ('host_cpus', models.PositiveIntegerField(default=0, help_text='CPUs of the host the cluster runs on.')),
                        ('host_mem_mb', models.PositiveBigIntegerField(default=0, help_text='Memory of that host.')),
                        ('disk_total_mb', models.BigIntegerField(blank=True, help_text='Size of the filesystem holding the guest disks; empty = unknown.', null=True)),
                        ('disk_free_mb', models.BigIntegerField(blank=True, help_text='What may still be written there; empty = unknown.', null=True)),
                        ('engine_ok', models.BooleanField(default=True)),
                        ('engine_note', models.CharField(blank=True, help_text="What the engine's health check said.", max_length=500)),
                    ],
                    options={
                        'db_table': 'engines_nodeheartbeat',
                    },
                ),
                migrations.AddConstraint(
                    model_name='node',
                    constraint=models.CheckConstraint(condition=models.Q(('port_min__lte', models.F('port_max'))), name='node_port_range_ordered'),
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(adopt_content_types, return_content_types),
    ]
