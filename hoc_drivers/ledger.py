"""Discovery Ledger: aggregating signal records, with no commit of its own.

A passive notebook of curiosity ("operators keep querying prediction_events"): each signal
of one key (artifact, field, signal_type; a missing field counts as one value) is one row
whose `seen_count` grows. `emit_signal` is one upsert statement; inside the caller's
coordinator transaction it joins it through a savepoint, outside one it asks the coordinator
for a short transaction. The ledger is system-wide (no tenant): it describes our own
artifacts, not customer data. Nothing depends on it, so it never raises into the caller
for storage failures; invalid input is a `ValueError`.
"""
import logging
import os
from numbers import Real

from peewee import EXCLUDED, SQL, fn

from .decisions import JSON_ENCODER, write_non_blocking
from .models.base import PLACEHOLDER, PreparedQuery, in_column_order, new_id, utcnow
from .models.ledger import LEDGER_STATUSES, DiscoveryLedgerEntry as Entry
from .validation import require_limit

ACCESS = "READ+WRITE"

log = logging.getLogger(__name__)

PHASE_ENV, DEFAULT_PHASE = "AOS_PHASE", "C"
ENVIRONMENT_ENV, DEFAULT_ENVIRONMENT = "AOS_ENVIRONMENT", "local"
STATUSES = LEDGER_STATUSES

_COLUMNS = in_column_order(Entry, (
    "id", "artifact", "field", "signal_type", "evidence", "confidence", "detected_by", "phase",
    "environment", "notes", "status", "seen_count", "first_seen_at", "last_seen_at"))


def _upsert(key_columns, field_condition):
    """The aggregating upsert on one of the two partial unique keys, built once."""
    return PreparedQuery(lambda: Entry.insert({getattr(Entry, n): PLACEHOLDER for n in _COLUMNS})
                         .on_conflict(conflict_target=key_columns, conflict_where=field_condition,
                                      update={Entry.seen_count: Entry.seen_count + 1,
                                              Entry.last_seen_at: EXCLUDED.last_seen_at,
                                              Entry.evidence: fn.json_patch(Entry.evidence,
                                                                            EXCLUDED.evidence),
                                              Entry.confidence: fn.COALESCE(EXCLUDED.confidence,
                                                                            Entry.confidence)})
                         .returning(Entry.id))


_UPSERT_WITH_FIELD = _upsert([Entry.artifact, Entry.field, Entry.signal_type],
                             Entry.field.is_null(False))
_UPSERT_WITHOUT_FIELD = _upsert([Entry.artifact, Entry.signal_type], Entry.field.is_null())


def _text(value, name, required=True):
    """A non-empty string (or None when not `required`); ValueError otherwise."""
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    return value


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
    """Check a signal's input; returns (evidence as JSON text, confidence as float or None).

    Raises ValueError for an empty artifact, signal type or detector, a field that is not a
    string, evidence that is not a JSON object, or a confidence outside 0..1.
    """
    _text(artifact, "artifact")
    _text(signal_type, "signal_type")
    _text(detected_by, "detected_by")
    _text(field, "field", required=False)
    if not isinstance(evidence, dict):
        raise ValueError(f"evidence must be a JSON object, got {type(evidence).__name__}")
    try:
        evidence_text = JSON_ENCODER.encode(evidence)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"evidence is not JSON-serialisable: {exc}") from None
    return evidence_text, _unit_interval(confidence, "confidence")


def emit_signal(coordinator, artifact, signal_type, evidence, detected_by, field=None,
                confidence=None, notes=None, phase=None, environment=None):
    """Record a discovery signal; returns the id of its (new or aggregated) row, None on failure.

    A repeated key increments seen_count, refreshes last_seen_at, merges the evidence (SQLite
    `json_patch`: new keys win, old-only keys stay) and keeps the old confidence when the new
    one is None; detected_by, phase, environment, notes and status keep their first values.
    phase / environment default to $AOS_PHASE ("C") / $AOS_ENVIRONMENT ("local").
    """
    evidence_text, confidence = validate_signal(artifact, signal_type, evidence, detected_by,
                                                field, confidence)
    now = Entry.last_seen_at.db_value(utcnow())
    values = {
        "id": new_id(), "artifact": artifact, "field": field, "signal_type": signal_type,
        "evidence": evidence_text, "confidence": confidence, "detected_by": detected_by,
        "phase": os.environ.get(PHASE_ENV, DEFAULT_PHASE) if phase is None else phase,
        "environment": (os.environ.get(ENVIRONMENT_ENV, DEFAULT_ENVIRONMENT)
                        if environment is None else environment),
        "notes": notes, "status": "observed", "seen_count": 1,
        "first_seen_at": now, "last_seen_at": now,
    }
    params = [values[n] for n in _COLUMNS]
    statement = _UPSERT_WITHOUT_FIELD if field is None else _UPSERT_WITH_FIELD

    def upsert(db):
        return statement.execute(db, params).fetchone()[0]

    return write_non_blocking(coordinator, upsert, None,
                              f"discovery signal {artifact}/{field}/{signal_type}", log)


def _signal_dict(entry):
    """A ledger row as a plain dict (timestamps aware UTC, evidence a dict)."""
    return {"id": entry.id, "artifact": entry.artifact, "field": entry.field,
            "signal_type": entry.signal_type, "evidence": entry.evidence,
            "confidence": entry.confidence, "detected_by": entry.detected_by,
            "phase": entry.phase, "environment": entry.environment,
            "seen_count": entry.seen_count, "status": entry.status, "notes": entry.notes,
            "first_seen_at": entry.first_seen_at, "last_seen_at": entry.last_seen_at}


def get_signals(coordinator, artifact=None, signal_type=None, status=None, limit=100):
    """Signals, most seen first, then most recently seen; filters apply when given.

    `limit` is an integer from 1 to 10,000 (anything else is a ValueError) or None for no
    limit. A storage failure is logged and gives [].
    """
    require_limit(limit, allow_none=True)
    query = Entry.select()
    if artifact:
        query = query.where(Entry.artifact == artifact)
    if signal_type:
        query = query.where(Entry.signal_type == signal_type)
    if status:
        query = query.where(Entry.status == status)
    query = query.order_by(Entry.seen_count.desc(), Entry.last_seen_at.desc(), SQL("rowid"))
    try:
        return [_signal_dict(e) for e in query.limit(limit).execute(coordinator.db)]
    except Exception:
        log.warning("Failed to query discovery signals", exc_info=True)
        return []
