"""Governance Signals: explicit BLOCKED / WARN / CLEAN / PENDING verdicts per scope.

Tools (BLCA, CI, ops, a person) record a verdict for a (scope, signal_type); the new verdict
supersedes the active one (superseded_at = now, superseded_by = the new id), so each
(scope, signal_type) has at most one active signal — a partial unique index guarantees it.
Engines ask "is this scope blocked, and why?": a scope is blocked while ANY of its active,
unexpired signals says BLOCKED; WARN warns and never blocks; CLEAN and PENDING do neither.
A signal expiring exactly now is expired. Signals are keyed by scope, which may itself be a
tenant, a session, a PR or a file path (the table has no tenant column, as SPEC §6 says).

`GovernanceSignalReader(db)` only SELECTs; `GovernanceSignalWriter(tx)` writes inside the
caller's coordinator transaction and never commits; `GovernanceSignalService(tx)`, the server
edition's name, is both on the transaction's database (its reads see its own writes). The scope
plays the tenant's role: it is the first argument of every read and write. A recorded signal
notes `GuardStateChanged(scope)` on the transaction, since a scope naming a tenant changes that
tenant's guard status. All three take `clock=` (aware UTC now) for exact tests.
"""
from datetime import datetime

from .dialect import tenant_lock
from .facts import GuardStateChanged
from .listing import page
from .models.base import PLACEHOLDER, PreparedQuery, new_id, utcnow
from .models.governance import GovernanceSignal
from .validation import require_database, require_json_object, require_transaction
from .verdicts import (DECISIONS, SIGNAL_TYPES, GovernanceCheckResult, any_blocked, governance_verdict,
                       require_choice, require_short_text, signal_to_dict, validate_scope)

ACCESS = "READ+WRITE"

__all__ = ["DECISIONS", "SIGNAL_TYPES", "GovernanceCheckResult", "GovernanceSignal",
           "GovernanceSignalReader", "GovernanceSignalWriter", "GovernanceSignalService",
           "check_governance_status", "is_governance_blocked", "record_governance_signal",
           "signal_to_dict", "validate_scope", "validate_signal"]

MAX_RECORDED_BY_LENGTH = 100


def validate_signal(scope, signal_type, decision, recorded_by, reason=None, constraints=None,
                    expires_at=None, now=None):
    """Raise ValueError naming the first bad argument of a signal to record; else return None.

    `constraints`, when given, must be a JSON object within the JSON limits (validation:
    MAX_JSON_DEPTH levels, MAX_JSON_BYTES); `expires_at`, when given, an aware datetime after
    `now` (when `now` is given).
    """
    require_choice(signal_type, "signal type", SIGNAL_TYPES)
    require_choice(decision, "decision", DECISIONS)
    validate_scope(scope)
    require_short_text(recorded_by, "recorded_by", MAX_RECORDED_BY_LENGTH)
    if reason is not None and not isinstance(reason, str):
        raise ValueError(f"reason must be a string, got {type(reason).__name__}")
    if constraints is not None:
        require_json_object(constraints, "constraints")
    if expires_at is not None:
        if not isinstance(expires_at, datetime) or expires_at.tzinfo is None:
            raise ValueError("expires_at must be a timezone-aware datetime")
        if now is not None and expires_at <= now:
            raise ValueError(f"expires_at {expires_at.isoformat()} is not after now ({now.isoformat()})")


def _active_where(scope, signal_type, now):
    """Conditions for the active signals of a scope (unexpired at `now` unless now is None)."""
    where = (GovernanceSignal.scope == scope) & GovernanceSignal.superseded_at.is_null()
    if signal_type is not None:
        where &= GovernanceSignal.signal_type == signal_type
    if now is not None:
        where &= GovernanceSignal.expires_at.is_null() | (GovernanceSignal.expires_at > now)
    return where


def _active_decision_query(with_type):
    """Decisions of the active, unexpired signals: parameters scope[, signal type], now.

    Filtering on decision in SQL would tempt SQLite to the (scope, signal_type, decision)
    index, which also holds every superseded row; selecting it keeps the lookup on the
    partial index of active rows (at most one per type), however long a scope's history.
    """
    where = _active_where(PLACEHOLDER, PLACEHOLDER if with_type else None, PLACEHOLDER)
    return PreparedQuery(lambda: GovernanceSignal.select(GovernanceSignal.decision).where(where))


_ACTIVE_DECISIONS = _active_decision_query(with_type=False)
_ACTIVE_DECISION_OF_TYPE = _active_decision_query(with_type=True)


class GovernanceSignalReader:
    """Reads governance signals; only SELECTs."""

    ACCESS = "READ"

    def __init__(self, db, clock=utcnow):
        self.db = require_database(db)
        self.clock = clock

    def check_governance(self, scope, signal_type=None, include_expired=False):
        """The scope's active signals split into blocking (BLOCKED) and warning (WARN) ones.

        Active = not superseded and, unless `include_expired`, not expired (expires_at > now).
        Signals come oldest first (recorded_at, then id).
        """
        validate_scope(scope, signal_type)
        now = self.clock()
        signals = self._active(scope, signal_type, None if include_expired else now)
        return governance_verdict(scope, signals, now)

    def is_blocked(self, scope, signal_type=None):
        """True when the scope (or that signal type of it) has an active, unexpired BLOCKED signal."""
        validate_scope(scope, signal_type)
        now = GovernanceSignal.expires_at.db_value(self.clock())
        if signal_type is None:
            cursor = _ACTIVE_DECISIONS.execute(self.db, (scope, now))
        else:
            cursor = _ACTIVE_DECISION_OF_TYPE.execute(self.db, (scope, signal_type, now))
        return any_blocked(decision for (decision,) in cursor)

    def get_active_signals(self, scope, signal_type=None):
        """The scope's active, unexpired signals (any decision), oldest first."""
        validate_scope(scope, signal_type)
        return self._active(scope, signal_type, self.clock())

    def list_active_signals(self, scope, signal_type=None, since=None, until=None, offset=0, limit=None):
        """The scope's active, unexpired signals, newest first (window on recorded_at: listing.page)."""
        validate_scope(scope, signal_type)
        query = GovernanceSignal.select().where(_active_where(scope, signal_type, self.clock()))
        query = page(query, GovernanceSignal.recorded_at, since, until, offset, limit, allow_all=True)
        return list(query.execute(self.db))

    def _active(self, scope, signal_type, now):
        query = (GovernanceSignal.select().where(_active_where(scope, signal_type, now))
                 .order_by(GovernanceSignal.recorded_at, GovernanceSignal.id))
        return list(query.execute(self.db))


class GovernanceSignalWriter:
    """Records and clears signals inside the caller's coordinator transaction; never commits."""

    ACCESS = "WRITE"

    def __init__(self, tx, clock=utcnow):
        self.tx = require_transaction(tx, check_open=False)
        self.clock = clock

    def record_signal(self, scope, signal_type, decision, recorded_by, reason=None,
                      constraints=None, expires_at=None):
        """Supersede the active signal of (scope, signal_type), then insert this one; return it.

        Superseding happens even when the decision is unchanged, and reaches expired but
        unsuperseded signals too. Records of one scope run one after the other
        (`dialect.tenant_lock`), so each supersedes the one committed before it. Raises
        ValueError (nothing written) on bad input.
        """
        self.tx.require_open()
        now = self.clock()
        validate_signal(scope, signal_type, decision, recorded_by, reason, constraints,
                        expires_at, now)
        signal = GovernanceSignal(
            id=new_id(), signal_type=signal_type, scope=scope, decision=decision, reason=reason,
            constraints=constraints, recorded_by=recorded_by, recorded_at=now,
            expires_at=expires_at, superseded_by=None, superseded_at=None)
        tenant_lock(self.tx, "governance_signals", scope)  # concurrent records of the scope wait here
        (GovernanceSignal
         .update(superseded_at=now, superseded_by=signal.id)
         .where(_active_where(scope, signal_type, None))
         .execute(self.tx.db))
        GovernanceSignal.insert(signal.__data__).execute(self.tx.db)
        self.tx.note(GuardStateChanged(scope))  # a scope naming a tenant: its guard status
        return signal

    def clear_signal(self, scope, signal_type, cleared_by, reason=None):
        """Record a CLEAN signal (no constraints, no expiry); reason defaults to 'Cleared by X'."""
        return self.record_signal(scope, signal_type, "CLEAN", cleared_by,
                                  reason=reason if reason is not None else f"Cleared by {cleared_by}")


class GovernanceSignalService(GovernanceSignalWriter, GovernanceSignalReader):
    """The seed's one-object service: `GovernanceSignalService(tx)` records, clears and reads
    signals on the transaction's database."""

    ACCESS = "READ+WRITE"

    def __init__(self, tx, clock=utcnow):
        super().__init__(tx, clock)
        self.db = self.tx.db  # what the reads run on


def check_governance_status(db, scope, signal_type=None, clock=utcnow):
    """The scope's verdict (`GovernanceCheckResult`) read from database `db`."""
    return GovernanceSignalReader(db, clock).check_governance(scope, signal_type)


def is_governance_blocked(db, scope, signal_type=None, clock=utcnow):
    """True when the scope is blocked, read from database `db`."""
    return GovernanceSignalReader(db, clock).is_blocked(scope, signal_type)


def record_governance_signal(tx, scope, signal_type, decision, recorded_by, reason=None,
                             constraints=None, expires_at=None, clock=utcnow):
    """Record a signal inside the coordinator transaction `tx` (supersedes the active one)."""
    return GovernanceSignalWriter(tx, clock).record_signal(
        scope, signal_type, decision, recorded_by, reason, constraints, expires_at)
