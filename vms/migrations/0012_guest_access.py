"""Into the guest (issue 25): the permissions to run commands in, copy files to and from, and
use the console of another user's VM; and the templates that can (`exec`, `files`): those
whose guest runs the QEMU guest agent, and every container image."""

from django.db import migrations

WAYS_IN = ["exec", "files"]


def declare_ways_in(apps, schema_editor):
    VmTemplate = apps.get_model("vms", "VmTemplate")
    for template in VmTemplate.objects.all():
        features = list(template.features or [])
        engines = template.compatible_engines or []
        if "guest-agent" in features or "docker" in engines:
            template.features = features + [f for f in WAYS_IN if f not in features]
            template.save(update_fields=["features"])


def forget_ways_in(apps, schema_editor):
    VmTemplate = apps.get_model("vms", "VmTemplate")
    for template in VmTemplate.objects.all():
        features = [f for f in (template.features or []) if f not in WAYS_IN]
        if features != template.features:
            template.features = features
            template.save(update_fields=["features"])


class Migration(migrations.Migration):

    dependencies = [
        ('vms', '0011_node_usage'),
    ]

    operations = [
        migrations.AlterModelOptions(
            name='vm',
            options={'ordering': ['env_id', 'name', 'id'], 'permissions': [('exec_vm', "Can run commands in another user's VM"), ('files_vm', "Can copy files to and from another user's VM"), ('console_vm', "Can use the console of another user's VM")]},
        ),
        migrations.RunPython(declare_ways_in, forget_ways_in),
    ]
