from django.apps import AppConfig


class EnginesHistoryConfig(AppConfig):
    """Label `engines`: the historical migrations of Node and NodeHeartbeat (see the
    package's docstring). No models: they are `nodes`' now."""

    name = "nodes.history"
    label = "engines"
    verbose_name = "Engines (migration history only)"
