"""What the guard's reads mean, as plain functions of plain values (standard library only).

The Peewee readers (governance_signal_driver, guard_write_driver's GuardReader,
guard_read_driver) and the CLI's read-only gates (hoc_drivers.gates: the standard sqlite3
module, no Peewee) run the same SELECTs and hand what they read to these functions, so both
decide alike: what blocks a scope, whether a switch is frozen at a given time, what a guard
status holds. A row here is any object with the model's field names as attributes (a model
instance, or the gates' plain rows); timestamps are aware UTC datetimes, stored as sortable
UTC text (`db_time`, `as_utc`).
"""
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import SimpleNamespace

from .validation import require_text

SIGNAL_TYPES = ("BLCA_STATUS", "CI_STATUS", "DEPLOYMENT_GATE", "SESSION_BLOCK", "MANUAL_OVERRIDE")
DECISIONS = ("CLEAN", "BLOCKED", "WARN", "PENDING")
ENTITY_TYPES = ("tenant", "key")
MAX_SCOPE_LENGTH = 500


_UTC = timezone.utc


def utcnow():
    """The current time as an aware UTC datetime."""
    return datetime.now(_UTC)


def as_utc(value):
    """Normalise a datetime (naive means UTC) or ISO string to an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    zone = value.tzinfo
    if zone is None:
        return value.replace(tzinfo=_UTC)
    return value if zone is _UTC else value.astimezone(_UTC)


def db_time(value):
    """An aware (or naive-as-UTC) datetime as stored: 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC."""
    zone = value.tzinfo
    if zone is None:
        return value.isoformat(" ", "microseconds")
    if zone is not _UTC:  # `utcnow()`'s times are in UTC already
        value = value.astimezone(_UTC)
    return value.isoformat(" ", "microseconds")[:-6]  # without "+00:00" (`replace` costs more)


# ---------------------------------------------------------------------------------------
# governance signals


def require_short_text(value, name, max_length):
    """`value` when it is non-empty text of at most `max_length` characters, else ValueError."""
    require_text(value, name)
    if len(value) > max_length:
        raise ValueError(f"{name} is too long ({len(value)} characters; at most {max_length})")


def require_choice(value, name, choices):
    """ValueError naming the choices unless `value` is one of them."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r} (expected one of: {', '.join(choices)})")


def validate_scope(scope, signal_type=None):
    """Raise ValueError unless `scope` is a usable scope and `signal_type` None or known."""
    require_short_text(scope, "scope", MAX_SCOPE_LENGTH)
    if signal_type is not None:
        require_choice(signal_type, "signal type", SIGNAL_TYPES)


def signal_to_dict(signal):
    """A signal as a plain dict (the server edition's GovernanceSignalResponse fields)."""
    return {name: getattr(signal, name) for name in (
        "id", "signal_type", "scope", "decision", "reason", "constraints", "recorded_by",
        "recorded_at", "expires_at", "superseded_by", "superseded_at")}


@dataclass
class GovernanceCheckResult:
    """The verdict on a scope: blocked when any active signal is BLOCKED."""

    scope: str
    is_blocked: bool
    blocking_signals: list = field(default_factory=list)
    warning_signals: list = field(default_factory=list)
    last_checked: datetime | None = None

    def to_dict(self):
        """Plain dict; signals as dicts."""
        return {"scope": self.scope, "is_blocked": self.is_blocked,
                "blocking_signals": [signal_to_dict(s) for s in self.blocking_signals],
                "warning_signals": [signal_to_dict(s) for s in self.warning_signals],
                "last_checked": self.last_checked}


def governance_verdict(scope, signals, now):
    """The verdict on `scope` from its active signals (read at `now`): BLOCKED ones block,
    WARN ones warn, CLEAN and PENDING do neither."""
    blocking = [s for s in signals if s.decision == "BLOCKED"]
    warning = [s for s in signals if s.decision == "WARN"]
    return GovernanceCheckResult(scope, bool(blocking), blocking, warning, now)


def any_blocked(decisions):
    """True when one of the active signals' `decisions` is BLOCKED."""
    return any(decision == "BLOCKED" for decision in decisions)


# ---------------------------------------------------------------------------------------
# kill switches and the guard status

SWITCH_FIELDS = ("tenant_id", "entity_type", "entity_id", "is_frozen", "frozen_at", "frozen_by",
                 "freeze_reason", "frozen_until", "auto_triggered", "trigger_type", "unfrozen_at",
                 "unfrozen_by", "unfreeze_reason")


def frozen_at(is_frozen, frozen_until, now):
    """True when a switch stored as `is_frozen` is frozen at `now` (a timed freeze ends at
    `frozen_until`)."""
    return bool(is_frozen) and (frozen_until is None or frozen_until > now)


def never_frozen(tenant_id, entity_type, entity_id):
    """The switch of an entity that has no row yet: unfrozen, nothing recorded."""
    return SimpleNamespace(**{**dict.fromkeys(SWITCH_FIELDS), "tenant_id": tenant_id,
                              "entity_type": entity_type, "entity_id": entity_id,
                              "is_frozen": False, "auto_triggered": False})


def switch_status(state, now):
    """The switch as a dict of SWITCH_FIELDS; `is_frozen` is whether it is frozen at `now`."""
    status = {key: getattr(state, key) for key in SWITCH_FIELDS}
    status["is_frozen"] = frozen_at(state.is_frozen, state.frozen_until, now)
    return status


def guard_status(tenant_id, now, switch, counts, blocked):
    """The guard console's status of a tenant at `now` from what its two SELECTs read:
    `switch`, the tenant switch's (frozen now?, frozen_at, frozen_by, freeze_reason,
    frozen_until) or None; `counts`, (keys frozen now, open incidents, the last incident's
    created_at, the first end of the tenant's timed freezes); `blocked`, whether a governance
    signal blocks the tenant. Timestamps as stored (text)."""
    frozen = bool(switch and switch[0])
    frozen_keys, open_incidents, last_incident, first_end = counts
    return {"tenant_id": tenant_id, "is_frozen": frozen,
            "frozen_at": as_utc(switch[1]) if frozen else None,
            "frozen_by": switch[2] if frozen else None,
            "freeze_reason": switch[3] if frozen else None,
            "frozen_until": as_utc(switch[4]) if frozen else None,
            "frozen_keys": frozen_keys, "open_incidents": open_incidents,
            "governance_blocked": blocked,
            "last_incident_time": as_utc(last_incident),
            "next_unfreeze_at": as_utc(first_end),
            "computed_at": now}
