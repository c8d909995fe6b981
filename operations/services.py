"""Operators' actions on operations themselves: hand a stuck one to a worker now, or end one."""

from __future__ import annotations

from django.utils import timezone

from audit.recording import audited
from operations import lease, recovery, runner
from operations.models import Operation
from ttportal.errors import ErrorCode, IllegalState, TTError
from ttportal.permissions import check_staff


@audited("operation.retry")
def operation_retry(*, op: Operation, by) -> Operation:
    """Hand a stuck operation to a worker now instead of at the next recovery pass."""
    check_staff(by, "operation_retry")
    op.refresh_from_db()
    if not op.is_live:
        raise IllegalState(f"operation {op.pk} has ended ({op.status})")
    now = timezone.now()
    if not recovery.is_stuck(op, now):
        raise IllegalState(
            f"operation {op.pk} is held by {lease.describe(op.worker) or 'its worker'}, lease renewed "
            f"{int((now - (op.heartbeat_at or now)).total_seconds())} s ago; it is not stuck"
        )
    runner.dispatch(op.pk)
    return op


@audited("operation.fail")
def operation_fail(*, op: Operation, by) -> Operation:
    """End a live operation now as failed (`cancelled`), settling what it claimed.

    Meant for a stuck one; on one a live worker still runs, that worker is fenced
    out (its next write matches nothing) and whatever its engine call still
    finishes is left to reconciliation.
    """
    check_staff(by, "operation_fail")
    error = TTError(f"ended by {by.get_username()} from the admin", code=ErrorCode.CANCELLED)
    if not runner.end_now(op, error):
        raise IllegalState(f"operation {op.pk} has ended ({op.status})")
    return op
