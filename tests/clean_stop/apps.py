"""An operation kind that only blocks, for the clean-stop tests and bench.

`test_block` sleeps `params["seconds"]` in one call, as an engine call that cannot be
interrupted does, then succeeds. It claims nothing, so it has nothing to settle, and
running it again is harmless.
"""

from __future__ import annotations

import time

from django.apps import AppConfig
from django.db.models import TextChoices


class BlockKind(TextChoices):
    TEST_BLOCK = "test_block", "Test: block"


def block(op, progress) -> None:
    seconds = float(op.params.get("seconds", 60))
    progress(1, f"blocking for {seconds} s")
    time.sleep(seconds)


class CleanStopConfig(AppConfig):
    name = "tests.clean_stop"
    label = "tt_clean_stop"
    verbose_name = "Clean stop (tests)"

    def ready(self) -> None:
        from operations import registry

        registry.register_kinds(BlockKind)
        registry.register_steps({BlockKind.TEST_BLOCK: registry.Step(run=block)})


def dispatch_block(seconds: float):
    """A `test_block` operation of `seconds`, handed to the site's cluster."""
    from operations import runner
    from operations.models import Operation

    op = Operation.objects.create(kind=BlockKind.TEST_BLOCK, target="clean stop", params={"seconds": seconds})
    runner.dispatch(op.pk)
    return op


def handed_back(op) -> bool:
    """Released by its worker (operations/runner.hand_back), for the next claim to take at once."""
    return op.status == "running" and op.worker == "" and op.heartbeat_at is None
