"""Cross-Domain Governance Functions (mandatory): cost-anomaly incidents and limit breaches.

Each write succeeds or raises `GovernanceError`; nothing is ever skipped silently. The
writers take the caller's coordinator transaction first, then the tenant
(`create_incident_from_cost_anomaly(tx, tenant_id, ...)`), write on `tx.db` and never commit,
so a `GovernanceError` that the caller lets propagate rolls its whole transaction back. A
transaction that has ended raises `CommitForbidden`; anything but a transaction, `TypeError`. A new
incident notes `GuardStateChanged(tenant)` on the transaction: guard caches drop the tenant
after COMMIT. `table_exists(db, name)` is the one reader.

A cost-anomaly incident carries the overage twice, as the server edition: `cost_delta_cents`
(current - expected, in cents) and `cost_impact` (the overage / 100, in currency units with
two decimals: 5000 cents -> 50.00, -50 -> -0.50).
"""
import logging
from decimal import Decimal, InvalidOperation

from .commit_guard import CommitForbidden
from .facts import tenant_changed
from .models.base import PLACEHOLDER, PreparedInsert, PreparedQuery, new_id
from .models.cost import BREACH_TYPES, LimitBreach
from .models.runs import Incident, Run
from .validation import (optional_text, require_database, require_json_object, require_tenant, require_text,
                         require_transaction)

ACCESS = "READ+WRITE"

log = logging.getLogger(__name__)

ANOMALY_SEVERITY_MAP = {"CRITICAL": "critical", "HIGH": "high", "MEDIUM": "medium", "LOW": "low"}
# Looked up with the anomaly type as given (case-sensitive, as the server edition).
ANOMALY_TRIGGER_TYPE_MAP = {"BUDGET_EXCEEDED": "budget_breach", "USER_SPIKE": "cost_spike",
                            "TENANT_SPIKE": "cost_spike", "DRIFT": "cost_drift"}
DEFAULT_TRIGGER_TYPE = "cost_anomaly"


class GovernanceError(Exception):
    """A mandatory governance write failed; the caller's transaction must not commit."""

    def __init__(self, message, domain, operation, entity_id=None):
        self.message = message
        self.domain = domain
        self.operation = operation
        self.entity_id = entity_id
        super().__init__(message)

    def __str__(self):
        text = f"[{self.domain}] {self.operation}: {self.message}"
        return f"{text} (entity_id={self.entity_id})" if self.entity_id else text

    def __repr__(self):
        return (f"GovernanceError(domain={self.domain!r}, operation={self.operation!r}, "
                f"entity_id={self.entity_id!r}, message={self.message!r})")


# Built once (Peewee's SQL generation costs more than the INSERT itself); values bound per call.
_INSERT_ANOMALY_INCIDENT = PreparedInsert(Incident, (
    "id", "tenant_id", "anomaly_id", "title", "severity", "status", "trigger_type",
    "trigger_value", "cost_delta_cents", "cost_impact", "source_type", "category", "description",
    "impact_scope", "affected_agent_id", "affected_count", "cause_type", "lifecycle_state",
    "domain", "started_at", "created_at", "updated_at"),
    conflict_target=(Incident.tenant_id, Incident.anomaly_id), returning=Incident.id)
_SELECT_ANOMALY_INCIDENT = PreparedQuery(lambda: Incident.select(Incident.id).where(
    (Incident.tenant_id == PLACEHOLDER) & (Incident.anomaly_id == PLACEHOLDER)))
_INSERT_BREACH = PreparedInsert(LimitBreach, (
    "id", "tenant_id", "limit_id", "breach_type", "value_at_breach", "limit_value", "run",
    "incident", "details", "breached_at"))


def _cents(value, name):
    """A whole number of cents (an int, or an integral float or Decimal); anything else is refused."""
    if value.__class__ is int:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise ValueError(f"{name} must be a number of cents, got {value!r}")
    number = Decimal(value)
    if not number.is_finite() or number != number.to_integral_value():
        raise ValueError(f"{name} must be a whole number of cents, got {value!r}")
    return value


def create_incident_from_cost_anomaly(tx, tenant_id, anomaly_id, anomaly_type, severity,
                                      current_value_cents, expected_value_cents,
                                      entity_type=None, entity_id=None, description=None):
    """Create the incident of a cost anomaly (one per tenant and anomaly); returns its id.

    Calling again with the same (tenant_id, anomaly_id) returns the existing incident's id
    and writes nothing. A new incident notes `GuardStateChanged(tenant_id)` on `tx`.
    An unknown severity is stored as "medium" (SPEC §1); amounts are whole cents; the overage
    is stored as `cost_delta_cents` and, in currency units with two decimals, as `cost_impact`.
    Raises GovernanceError (domain "Analytics") on any failure, bad input included.
    """
    require_transaction(tx)
    try:
        require_tenant(tenant_id)
        require_text(anomaly_id, "anomaly_id")
        require_text(anomaly_type, "anomaly_type")
        if not isinstance(severity, str):
            raise ValueError(f"severity must be a string, got {severity!r}")
        if entity_type is not None or entity_id is not None or description is not None:
            for name, value in (("entity_type", entity_type), ("entity_id", entity_id), ("description", description)):
                optional_text(value, name)
        current = _cents(current_value_cents, "current_value_cents")
        expected = _cents(expected_value_cents, "expected_value_cents")
        overage = current - expected
        if not description:
            description = (f"Detected {anomaly_type} anomaly. Current: ${current / 100:.2f}, "
                           f"Expected: ${expected / 100:.2f}.")
            if entity_type and entity_id:
                description += f" Entity: {entity_type}/{entity_id}"
        now, impact = tx.now_text, _currency_text(overage)
        delta = str(overage) if overage.__class__ is int else str(Decimal(str(overage)))
        row = (new_id(), tenant_id, anomaly_id, f"Cost anomaly: {anomaly_type} (+${impact})",
               ANOMALY_SEVERITY_MAP.get(severity.upper(), "medium"), "open",
               ANOMALY_TRIGGER_TYPE_MAP.get(anomaly_type, DEFAULT_TRIGGER_TYPE), str(overage), delta,
               impact, "cost_anomaly", "COST_ANOMALY", description, entity_type or "tenant",
               entity_id if entity_type == "agent" else None, 1, "SYSTEM", "ACTIVE", "Analytics",
               now, now, now)  # in _INSERT_ANOMALY_INCIDENT's order
        created = _INSERT_ANOMALY_INCIDENT.execute_validated(tx.db, row).fetchone()  # every text checked above
        if created is not None:
            tx.note(tenant_changed(tenant_id))
            if log.isEnabledFor(logging.INFO):
                log.info("incident %s created for cost anomaly %s of tenant %s",
                         created[0], anomaly_id, tenant_id)
            return created[0]
        return _SELECT_ANOMALY_INCIDENT.execute(tx.db, (tenant_id, anomaly_id)).fetchone()[0]
    except (CommitForbidden, GovernanceError):
        raise
    except Exception as error:  # a mandatory write's failure, bad input included
        raise GovernanceError(str(error) or type(error).__name__, "Analytics", "create_incident_from_cost_anomaly",
                              anomaly_id) from error


def _currency_text(cents):
    """A whole number of cents in currency units with two decimals, exactly: 5000 -> "50.00",
    -50 -> "-0.50"."""
    whole, part = divmod(abs(int(cents)), 100)
    return f"{'-' if cents < 0 else ''}{whole}.{part:02d}"


def _exact_decimal(value, name, required):
    """`value` as an exact finite Decimal (floats via their repr); None only when optional."""
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal, str)):
        raise ValueError(f"{name} must be a decimal number, got {value!r}")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{name} must be a decimal number, got {value!r}") from None
    if not number.is_finite():
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def _require_owned(db, model, key, entity_id, tenant_id, what):
    """The referenced row must exist and belong to the tenant."""
    exists = (model.select(key).where((key == entity_id) & (model.tenant_id == tenant_id))
              .exists(db))
    if not exists:
        raise ValueError(f"{what} {entity_id!r} not found for tenant {tenant_id!r}")


def record_limit_breach(tx, tenant_id, limit_id, breach_type, value_at_breach, limit_value,
                        run_id=None, incident_id=None, details=None):
    """Record a breach of a policy limit; returns the breach id.

    `breach_type` is one of BREACHED, EXHAUSTED, THROTTLED, VIOLATED; the values are stored as
    exact Decimals; a given run or incident must belong to the tenant; `details` must be a JSON
    object within the JSON limits (validation.MAX_JSON_DEPTH / MAX_JSON_BYTES). Raises GovernanceError
    (domain "Policies") on any failure.
    """
    require_transaction(tx)
    try:
        require_tenant(tenant_id)
        require_text(limit_id, "limit_id")
        if breach_type not in BREACH_TYPES:
            raise ValueError(f"unknown breach_type {breach_type!r} "
                             f"(expected one of: {', '.join(BREACH_TYPES)})")
        row = {"id": new_id(), "tenant_id": tenant_id, "limit_id": limit_id,
               "breach_type": breach_type,
               "value_at_breach": _exact_decimal(value_at_breach, "value_at_breach", False),
               "limit_value": _exact_decimal(limit_value, "limit_value", True),
               "run": run_id, "incident": incident_id, "details": details,
               "breached_at": tx.now}
        if details is not None:
            require_json_object(details, "details")
        if run_id is not None:
            _require_owned(tx.db, Run, Run.id, run_id, tenant_id, "run")
        if incident_id is not None:
            _require_owned(tx.db, Incident, Incident.id, incident_id, tenant_id, "incident")
        _INSERT_BREACH.execute(tx.db, row)
        return row["id"]
    except (CommitForbidden, GovernanceError):
        raise
    except Exception as error:  # a mandatory write's failure, bad input included
        raise GovernanceError(str(error) or type(error).__name__, "Policies", "record_limit_breach",
                              limit_id) from error


def table_exists(db, name):
    """True when the table exists in `db`; False when not, or when the check itself fails."""
    require_database(db)
    try:
        return db.table_exists(name)
    except Exception:
        log.warning("table_exists(%r) failed", name, exc_info=True)
        return False
