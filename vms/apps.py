from django.apps import AppConfig


class VmsConfig(AppConfig):
    name = "vms"
    verbose_name = "VMs, templates and snapshots"
