"""Governance signals (governance_signal_driver): one verdict per (scope, signal_type) at a time."""
from peewee import Check

from ..verdicts import DECISIONS, SIGNAL_TYPES
from .base import BaseModel, CharField, JSONField, TextField, UtcDateTimeField, insertion_seq, new_id, unique_id, utcnow



def _one_of(column, values):
    """A CHECK constraint: `column` holds one of `values`."""
    return Check(f"{column} IN ({', '.join(repr(v) for v in values)})")


class GovernanceSignal(BaseModel):
    """A verdict (CLEAN / BLOCKED / WARN / PENDING) on a scope; NULL superseded_at = active."""

    seq = insertion_seq()
    id = unique_id(new_id)
    signal_type = CharField(max_length=50, constraints=[_one_of("signal_type", SIGNAL_TYPES)])
    scope = CharField(max_length=500)
    decision = CharField(max_length=20, constraints=[_one_of("decision", DECISIONS)])
    reason = TextField(null=True)
    constraints = JSONField(null=True)
    recorded_by = CharField(max_length=100)
    recorded_at = UtcDateTimeField(default=utcnow)
    expires_at = UtcDateTimeField(null=True)
    superseded_by = CharField(null=True)
    superseded_at = UtcDateTimeField(null=True)

    class Meta:
        table_name = "governance_signals"
        indexes = ((("scope", "signal_type", "decision"), False),)


# At most one active signal per (scope, signal_type): a database guarantee, and the index
# every "is this scope blocked?" lookup uses.
GovernanceSignal.add_index(
    GovernanceSignal.index(GovernanceSignal.scope, GovernanceSignal.signal_type, unique=True,
                           name="governance_signals_active")
    .where(GovernanceSignal.superseded_at.is_null()))

MODELS = [GovernanceSignal]
