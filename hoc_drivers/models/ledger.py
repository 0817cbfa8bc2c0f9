"""The discovery ledger (ledger)."""
from peewee import Check, FloatField, IntegerField

from .base import BaseModel, CharField, JSONField, TextField, UtcDateTimeField, insertion_seq, new_id, unique_id, utcnow

LEDGER_STATUSES = ("observed", "ignored", "promoted")


class DiscoveryLedgerEntry(BaseModel):
    """One aggregated discovery signal: repeated signals of one key raise `seen_count`.

    The key is (artifact, field, signal_type) with a NULL field counted as one value: two
    partial unique indexes, one for rows with a field and one for rows without.
    """

    seq = insertion_seq()
    id = unique_id(new_id)
    artifact = TextField()
    field = TextField(null=True)
    signal_type = TextField(index=True)
    evidence = JSONField()
    confidence = FloatField(null=True)
    detected_by = TextField()
    phase = TextField()
    environment = TextField()
    notes = TextField(null=True)
    status = CharField(default="observed", constraints=[
        Check("status IN (%s)" % ", ".join(f"'{s}'" for s in LEDGER_STATUSES))])
    seen_count = IntegerField(default=1)
    first_seen_at = UtcDateTimeField(default=utcnow)
    last_seen_at = UtcDateTimeField(default=utcnow)

    class Meta:
        table_name = "discovery_ledger"


DiscoveryLedgerEntry.add_index(DiscoveryLedgerEntry.index(
    DiscoveryLedgerEntry.artifact, DiscoveryLedgerEntry.field, DiscoveryLedgerEntry.signal_type,
    unique=True, where=DiscoveryLedgerEntry.field.is_null(False),
    name="discovery_ledger_unique_signal"))
DiscoveryLedgerEntry.add_index(DiscoveryLedgerEntry.index(
    DiscoveryLedgerEntry.artifact, DiscoveryLedgerEntry.signal_type,
    unique=True, where=DiscoveryLedgerEntry.field.is_null(),
    name="discovery_ledger_unique_signal_no_field"))

MODELS = [DiscoveryLedgerEntry]
