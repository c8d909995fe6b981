from django.apps import AppConfig


class EnginesConfig(AppConfig):
    name = "engines"
    verbose_name = "Nodes and engines"
