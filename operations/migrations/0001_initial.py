"""Operation moves from envs to operations: the model only. Its table (envs_operation), rows,
indexes and constraints stay as they are; envs 0016 drops it from envs' state."""

import django.db.models.deletion
import django.utils.timezone
import operations.registry
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('nodes', '0001_initial'),
        ('envs', '0016_operation_node_app'),
        ('vms', '0010_node_app'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[migrations.CreateModel(
            name='Operation',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('kind', models.CharField(choices=operations.registry.kind_choices, max_length=32)),
                ('status', models.CharField(choices=[('queued', 'Queued'), ('running', 'Running'), ('succeeded', 'Succeeded'), ('failed', 'Failed')], default='queued', max_length=16)),
                ('target', models.CharField(blank=True, help_text='What it acted on, kept after deletion.', max_length=200)),
                ('params', models.JSONField(blank=True, default=dict)),
                ('progress', models.PositiveSmallIntegerField(default=0)),
                ('error_code', models.CharField(blank=True, choices=[('invalid', 'Invalid input'), ('forbidden', 'Not allowed'), ('not_found', 'Not found'), ('cooldown', 'Management cooldown active'), ('illegal_state', 'Illegal state for this action'), ('unsupported_feature', 'Engine lacks a feature'), ('resources_exhausted', 'No free address or port'), ('no_capacity', 'No node has room for it'), ('idempotency_key_reused', 'Idempotency key used for another request'), ('storage_create_image', 'Creating the runtime image failed'), ('storage_destroy_image', 'Destroying the runtime image failed'), ('net_set', 'Setting up the network failed'), ('net_unset', 'Removing the network failed'), ('net_outgoing', 'Changing egress rules failed'), ('net_blacklist', 'Changing the blacklist failed'), ('define_vm', 'Defining the VM failed'), ('undefine_vm', 'Removing the VM definition failed'), ('start_vm', 'Starting the VM failed'), ('stop_vm', 'Stopping the VM failed'), ('suspend_vm', 'Suspending the VM failed'), ('update_vm', 'Updating the VM failed'), ('meta_create_cache', 'Caching the VM config failed'), ('meta_restore_cache', 'Restoring the VM config failed'), ('snapshot_create', 'Creating the snapshot failed'), ('snapshot_destroy', 'Destroying the snapshot failed'), ('snapshot_apply', 'Applying the snapshot failed'), ('engine_init', 'Engine initialisation failed'), ('sys_io', 'I/O error'), ('drift', 'The node does not run what the database says'), ('worker_lost', 'The worker running it was lost, every attempt'), ('node_down', "Its node's task cluster stopped beating"), ('disk_exceeded', 'Stopped: it wrote more than its disk size'), ('timeout', 'It ran past the task time limit'), ('cancelled', 'An operator ended it'), ('internal', 'Internal error')], max_length=32)),
                ('error_message', models.TextField(blank=True)),
                ('log', models.TextField(blank=True)),
                ('idempotency_key', models.CharField(blank=True, default='', max_length=128)),
                ('request_fingerprint', models.CharField(blank=True, default='', max_length=64)),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                ('started_at', models.DateTimeField(blank=True, null=True)),
                ('finished_at', models.DateTimeField(blank=True, null=True)),
                ('attempt', models.PositiveSmallIntegerField(default=0, help_text='How many times a worker has taken it (0: not yet).')),
                ('worker', models.CharField(blank=True, help_text='The worker holding its lease.', max_length=200)),
                ('heartbeat_at', models.DateTimeField(blank=True, help_text='When its worker last renewed the lease.', null=True)),
                ('dispatched_at', models.DateTimeField(blank=True, help_text='When a task for it was last handed to the broker.', null=True)),
                ('env', models.ForeignKey(blank=True, help_text='Empty only for what concerns a node alone (drift no Env owns).', null=True, on_delete=django.db.models.deletion.CASCADE, related_name='operations', to='envs.env')),
                ('node', models.ForeignKey(blank=True, help_text='The node whose task cluster runs it.', null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='operations', to='nodes.node')),
                ('requested_by', models.ForeignKey(blank=True, help_text='Who asked (an operator acting for an owner shows here).', null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='operations', to=settings.AUTH_USER_MODEL)),
                ('snapshot', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='operations', to='vms.snapshot')),
                ('vm', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='operations', to='vms.vm')),
            ],
            options={
                'db_table': 'envs_operation',
                'ordering': ['-created_at', '-id'],
                'indexes': [models.Index(fields=['status', 'created_at'], name='operation_status_idx')],
                'constraints': [models.UniqueConstraint(condition=models.Q(('idempotency_key', ''), _negated=True), fields=('requested_by', 'idempotency_key'), name='operation_idempotency_key_unique_per_user')],
            },
        )]),
    ]
