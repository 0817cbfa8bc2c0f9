"""Facts a writer records on its transaction (`tx.note(fact)`) about what it changed.

Writers only state what happened; they never call the code that reacts. After COMMIT (never
after a rollback) the coordinator hands each distinct fact to the subscribers of that database
(`bus.subscribe`): the guard cache drops the tenant's entries, a serving
alert sender wakes up.
"""
from dataclasses import dataclass

# The guard console's read models (SPEC §3), as a GuardStateChanged endpoint names them.
STATUS = "status"
SNAPSHOT = "snapshot"
INCIDENTS = "incidents"


@dataclass(frozen=True)
class GuardStateChanged:
    """Tenant `tenant_id`'s guard read models changed (all of them, or only `endpoint`'s)."""

    tenant_id: str
    endpoint: str | None = None


@dataclass(frozen=True)
class AlertQueued:
    """An alert was queued or revived and may be due for delivery."""
