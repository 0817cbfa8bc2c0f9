"""Discovery Ledger: aggregating signal records, with no commit of its own.

A passive notebook of curiosity ("operators keep querying prediction_events"): each signal
of one key (artifact, field, signal_type; a missing field counts as one value) is one row
whose `seen_count` grows. `emit_signal(tx, ...)` is one upsert statement in the caller's
transaction (`decisions.write_non_blocking`: a failing one is undone alone, by SQLite's statement
journal, or on PostgreSQL by a savepoint); `get_signals(db, ...)` reads.
`DiscoverySignal` is the server edition's checked signal input: `emit_signal` builds one from its
arguments, and `emit_signal(tx, **signal.to_dict())` records a signal built beforehand. The
ledger is system-wide (no tenant): it describes our own artifacts, not customer data. Nothing
depends on it, so a storage failure is logged and never raised into the caller; invalid input
is a `ValueError`.
"""
import logging
from dataclasses import asdict, dataclass
from numbers import Real

from peewee import EXCLUDED, fn

from . import settings
from .decisions import write_non_blocking
from .dialect import insertion_order, json_merge_patch, statement_savepoint
from .listing import page
from .models.base import PreparedInsert, new_id, utcnow
from .models.ledger import LEDGER_STATUSES, DiscoveryLedgerEntry as Entry
from .validation import (NON_EMPTY, optional_text, require_database, require_json_object, require_text,
                         require_transaction)

ACCESS = "READ+WRITE"

log = logging.getLogger(__name__)

STATUSES = LEDGER_STATUSES

# What a repeated key does to the existing row.
_AGGREGATE = {Entry.seen_count: Entry.seen_count + 1,
              Entry.last_seen_at: EXCLUDED.last_seen_at,
              Entry.evidence: json_merge_patch(Entry.evidence, EXCLUDED.evidence),
              Entry.confidence: fn.COALESCE(EXCLUDED.confidence, Entry.confidence)}


def _upsert(key_columns, field_condition):
    """The insert of a new signal that aggregates into the row of its key (one of the two
    partial unique keys) and returns the row's id; built once."""
    return PreparedInsert(Entry, ("id", "artifact", "field", "signal_type", "evidence", "confidence",
                                  "detected_by", "phase", "environment", "notes", "status",
                                  "seen_count", "first_seen_at", "last_seen_at"),
                          conflict_target=key_columns, conflict_where=field_condition,
                          update=_AGGREGATE, returning=Entry.id)


_UPSERT_WITH_FIELD = _upsert([Entry.artifact, Entry.field, Entry.signal_type],
                             Entry.field.is_null(False))
_UPSERT_WITHOUT_FIELD = _upsert([Entry.artifact, Entry.signal_type], Entry.field.is_null())


def _unit_interval(value, name):
    """A number within 0..1 as a float (None stays None); ValueError otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{name} must be a number between 0 and 1, got {value!r}")
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
    return number


def validate_signal(artifact, signal_type, evidence, detected_by, field=None, confidence=None):
    """Check a signal's input; returns its confidence as a float (or None).

    Raises ValueError for an empty artifact, signal type or detector, a field that is not a
    non-empty string, evidence that is not a JSON object, or a confidence outside 0..1.
    """
    require_text(artifact, "artifact", NON_EMPTY)
    require_text(signal_type, "signal_type", NON_EMPTY)
    require_text(detected_by, "detected_by", NON_EMPTY)
    optional_text(field, "field")
    require_json_object(evidence, "evidence")
    return _unit_interval(confidence, "confidence")


@dataclass
class DiscoverySignal:
    """One signal to record, checked when built (`validate_signal`; confidence a float in 0..1).

    The server edition's model holds confidence as a Decimal; here it is the float the ledger stores.
    """

    artifact: str
    signal_type: str
    evidence: dict
    detected_by: str
    field: str | None = None
    confidence: float | None = None
    notes: str | None = None

    def __post_init__(self):
        self.confidence = validate_signal(self.artifact, self.signal_type, self.evidence, self.detected_by,
                                          self.field, self.confidence)

    def to_dict(self):
        """The signal's fields by name: `emit_signal`'s keyword arguments."""
        return asdict(self)


def emit_signal(tx, artifact, signal_type, evidence, detected_by, field=None, confidence=None,
                notes=None, phase=None, environment=None):
    """Record a discovery signal in `tx`; returns the id of its (new or aggregated) row, None on
    a storage failure (logged).

    A repeated key increments seen_count, refreshes last_seen_at, merges the evidence (SQLite
    `json_patch`: new keys win, old-only keys stay) and keeps the old confidence when the new
    one is None; detected_by, phase, environment, notes and status keep their first values.
    phase / environment default to settings ledger.phase / ledger.environment ($AOS_PHASE,
    $AOS_ENVIRONMENT, the settings file, else "C" / "local").
    """
    require_transaction(tx)
    signal = DiscoverySignal(artifact, signal_type, evidence, detected_by, field, confidence, notes)
    now = utcnow()
    row = {
        "id": new_id(), **signal.to_dict(),
        "phase": settings.get("ledger.phase", phase),
        "environment": settings.get("ledger.environment", environment),
        "status": "observed", "seen_count": 1, "first_seen_at": now, "last_seen_at": now}
    statement = _UPSERT_WITHOUT_FIELD if field is None else _UPSERT_WITH_FIELD
    return write_non_blocking(tx, lambda db: statement.execute(db, row).fetchone()[0], None,
                              f"discovery signal {artifact}/{field}/{signal_type}", log)


def _signal_dict(entry):
    """A ledger row as a plain dict (timestamps aware UTC, evidence a dict)."""
    return {"id": entry.id, "artifact": entry.artifact, "field": entry.field,
            "signal_type": entry.signal_type, "evidence": entry.evidence,
            "confidence": entry.confidence, "detected_by": entry.detected_by,
            "phase": entry.phase, "environment": entry.environment,
            "seen_count": entry.seen_count, "status": entry.status, "notes": entry.notes,
            "first_seen_at": entry.first_seen_at, "last_seen_at": entry.last_seen_at}


def get_signals(db, artifact=None, signal_type=None, status=None, limit=100, *, since=None, until=None,
                offset=0, newest_first=False):
    """Signals, most seen first, then most recently seen; filters apply when given. With
    `newest_first`, most recently seen first; `since` / `until` / `offset` window on
    last_seen_at (listing.page).

    `limit` is an integer from 1 to 10,000 (anything else is a ValueError) or None for no
    limit. A storage failure is logged and gives [].
    """
    require_database(db)
    query = Entry.select()
    if artifact:
        query = query.where(Entry.artifact == artifact)
    if signal_type:
        query = query.where(Entry.signal_type == signal_type)
    if status:
        query = query.where(Entry.status == status)
    query = page(query, Entry.last_seen_at, since, until, offset, limit, allow_all=True)
    if not newest_first:
        query = query.order_by(Entry.seen_count.desc(), Entry.last_seen_at.desc(), insertion_order())
    try:
        with statement_savepoint(db):
            return [_signal_dict(e) for e in query.execute(db)]
    except Exception:
        log.warning("Failed to query discovery signals", exc_info=True)
        return []
