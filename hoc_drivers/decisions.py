"""Decision Records: the append-only decision sink, with no commit of its own.

Whenever the system makes a choice (routing, recovery, memory, policy, budget and the
Phase-5 kinds) one `DecisionRecord` is appended to `decision_records`; policy-like records
are mirrored to `policy_decisions`. Every function takes the `TransactionCoordinator` first.

Writing never blocks the caller: inside the caller's coordinator transaction a record joins
it through a savepoint (and is gone if the caller rolls back); outside one the coordinator
opens a short transaction for it. A storage failure is logged and reported (False, None or
0); invalid input is a `ValueError` at call time. The emitters that write once per key store
that key in a unique column, so concurrent callers leave one row. The CARE kill switch is
stored in the database, so it holds across processes and restarts.
"""
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from peewee import SQL

from .models.base import PLACEHOLDER, PreparedQuery, as_utc, in_column_order, new_id, utcnow
from .models.decisions import DecisionRecordRow, DecisionSetting, PolicyDecision
from .validation import require_limit

ACCESS = "READ+WRITE"

log = logging.getLogger(__name__)


class DecisionType(str, Enum):
    """What kind of choice was made."""

    ROUTING = "routing"
    RECOVERY = "recovery"
    MEMORY = "memory"
    POLICY = "policy"
    BUDGET = "budget"
    BUDGET_ENFORCEMENT = "budget_enforcement"
    POLICY_PRE_CHECK = "policy_pre_check"
    RECOVERY_EVALUATION = "recovery_evaluation"
    CARE_ROUTING_OPTIMIZED = "care_routing_optimized"


class DecisionSource(str, Enum):
    """Who decided."""

    HUMAN = "human"
    SYSTEM = "system"
    HYBRID = "hybrid"


class DecisionTrigger(str, Enum):
    """Why the decision happened."""

    EXPLICIT = "explicit"
    AUTONOMOUS = "autonomous"
    REACTIVE = "reactive"


class DecisionOutcome(str, Enum):
    """What was decided."""

    SELECTED = "selected"
    REJECTED = "rejected"
    SKIPPED = "skipped"
    BLOCKED = "blocked"
    NONE = "none"
    EXECUTION_HALTED = "execution_halted"
    POLICY_BLOCKED = "policy_blocked"
    POLICY_UNAVAILABLE = "policy_unavailable"
    RECOVERY_APPLIED = "recovery_applied"
    RECOVERY_SUGGESTED = "recovery_suggested"
    RECOVERY_SKIPPED = "recovery_skipped"
    BASELINE_SELECTED = "baseline_selected"
    OPTIMIZED_SELECTED = "optimized_selected"


class CausalRole(str, Enum):
    """When in the run's lifecycle the decision was made."""

    PRE_RUN = "pre_run"
    IN_RUN = "in_run"
    POST_RUN = "post_run"


class CARESignalAccessError(Exception):
    """CARE optimisation asked for a signal it may not use (forbidden or unknown)."""


# Types mirrored to policy_decisions; outcomes mirrored as "allowed" (all others "denied").
MIRRORED_TYPES = frozenset({DecisionType.POLICY, DecisionType.POLICY_PRE_CHECK,
                            DecisionType.BUDGET, DecisionType.BUDGET_ENFORCEMENT})
ALLOWED_OUTCOMES = frozenset({DecisionOutcome.SELECTED, DecisionOutcome.NONE})

CARE_ALLOWED_SIGNALS = frozenset({"latency_p50", "latency_p95", "cost_per_run", "success_rate",
                                  "recovery_occurred", "agent_availability",
                                  "context_size_bucket"})
CARE_FORBIDDEN_SIGNALS = frozenset({"policy_outcome", "budget_halt_reason", "recovery_class",
                                    "customer_content", "safety_events", "founder_overrides",
                                    "failure_details", "user_feedback"})
CARE_CONFIDENCE_THRESHOLD = 0.50
CARE_KILL_SWITCH_KEY = "care_optimization_kill_switch"
JSON_ENCODER = json.JSONEncoder(allow_nan=False)  # strict JSON: NaN / Infinity are refused


def _member(enum, value, name):
    """`value` as a member of `enum`; a clear ValueError for anything else."""
    if isinstance(value, enum):
        return value
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(m.value for m in enum)
        raise ValueError(f"{name}: unknown value {value!r} (expected one of: {allowed})") from None


def _require_tenant(tenant_id):
    """A clear ValueError unless `tenant_id` is a non-empty string."""
    if not isinstance(tenant_id, str) or not tenant_id.strip():
        raise ValueError(f"tenant_id is required (a non-empty string), got {tenant_id!r}")


def _json_text(value, name):
    """`value` (a dict) as JSON text; a clear ValueError when it is not a JSON object."""
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a JSON object (dict), got {type(value).__name__}")
    try:
        return JSON_ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} is not JSON-serialisable: {exc}") from None


@dataclass
class DecisionRecord:
    """One decision: who decided, why, when in the run, what was decided and on what inputs."""

    decision_type: DecisionType
    decision_source: DecisionSource
    decision_trigger: DecisionTrigger
    decision_outcome: DecisionOutcome
    decision_inputs: dict = field(default_factory=dict)
    decision_reason: str | None = None
    run_id: str | None = None
    workflow_id: str | None = None
    tenant_id: str = "default"
    request_id: str | None = None
    causal_role: CausalRole = CausalRole.IN_RUN
    decided_at: datetime = field(default_factory=utcnow)
    details: dict = field(default_factory=dict)
    decision_id: str = field(default_factory=new_id)

    def __post_init__(self):
        self.decision_type = _member(DecisionType, self.decision_type, "decision_type")
        self.decision_source = _member(DecisionSource, self.decision_source, "decision_source")
        self.decision_trigger = _member(DecisionTrigger, self.decision_trigger, "decision_trigger")
        self.decision_outcome = _member(DecisionOutcome, self.decision_outcome, "decision_outcome")
        self.causal_role = _member(CausalRole, self.causal_role, "causal_role")
        if not isinstance(self.tenant_id, str) or not self.tenant_id:
            raise ValueError("tenant_id must be a non-empty string")
        if not isinstance(self.decision_id, str) or not self.decision_id:
            raise ValueError("decision_id must be a non-empty string")
        if not isinstance(self.decided_at, datetime):
            raise ValueError("decided_at must be a datetime")
        self.decided_at = as_utc(self.decided_at)
        for name in ("decision_inputs", "details"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"{name} must be a JSON object (dict)")

    def to_dict(self):
        """The record's 14 fields; enums as their values, decided_at as ISO-8601 text."""
        return {
            "decision_id": self.decision_id,
            "decision_type": self.decision_type.value,
            "decision_source": self.decision_source.value,
            "decision_trigger": self.decision_trigger.value,
            "decision_inputs": self.decision_inputs,
            "decision_outcome": self.decision_outcome.value,
            "decision_reason": self.decision_reason,
            "run_id": self.run_id,
            "workflow_id": self.workflow_id,
            "tenant_id": self.tenant_id,
            "request_id": self.request_id,
            "causal_role": self.causal_role.value,
            "decided_at": self.decided_at.isoformat(),
            "details": self.details,
        }


# ---------------------------------------------------------------------------------------
# Writing through the coordinator


def write_non_blocking(coordinator, work, failure, description, logger=log):
    """`work(db)` in the caller's transaction (through a savepoint, so a failure undoes only its
    own writes) or, with none open, in a short coordinator transaction of its own; never a
    commit of its own. A storage failure is logged and gives `failure`.
    """
    try:
        with coordinator.transaction() as tx:
            return work(tx.db)
    except Exception:
        logger.warning("%s: not written", description, exc_info=True)
        return failure


_DECISION_COLUMNS = in_column_order(DecisionRecordRow, (
    "decision_id", "decision_type", "decision_source", "decision_trigger", "decision_inputs",
    "decision_outcome", "decision_reason", "run_id", "workflow_id", "tenant_id", "request_id",
    "causal_role", "decided_at", "details", "idempotency_key"))
_MIRROR_COLUMNS = in_column_order(PolicyDecision, (
    "id", "tenant_id", "run_id", "policy_type", "decision", "rationale", "is_synthetic",
    "synthetic_scenario_id", "capture_confidence_score", "created_at"))

_INSERT_DECISION = PreparedQuery(lambda: DecisionRecordRow.insert(
    {getattr(DecisionRecordRow, n): PLACEHOLDER for n in _DECISION_COLUMNS})
    .on_conflict(action="nothing", conflict_target=[DecisionRecordRow.idempotency_key]))
_INSERT_MIRROR = PreparedQuery(lambda: PolicyDecision.insert(
    {getattr(PolicyDecision, n): PLACEHOLDER for n in _MIRROR_COLUMNS})
    .on_conflict(action="nothing", conflict_target=[PolicyDecision.id]))
_DECISION_WITH_KEY = PreparedQuery(lambda: DecisionRecordRow.select(SQL("1")).where(
    DecisionRecordRow.idempotency_key == PLACEHOLDER).limit(1))
_BACKFILL_RUN_ID = PreparedQuery(lambda: DecisionRecordRow.update(
    {DecisionRecordRow.run_id: PLACEHOLDER}).where(
    (DecisionRecordRow.tenant_id == PLACEHOLDER) & (DecisionRecordRow.request_id == PLACEHOLDER)
    & DecisionRecordRow.run_id.is_null() & (DecisionRecordRow.causal_role == PLACEHOLDER)))


def _decision_params(record, idempotency_key):
    """The record's row values in column order, in database form (ValueError on bad JSON)."""
    values = {
        "decision_id": record.decision_id,
        "decision_type": record.decision_type.value,
        "decision_source": record.decision_source.value,
        "decision_trigger": record.decision_trigger.value,
        "decision_inputs": _json_text(record.decision_inputs, "decision_inputs"),
        "decision_outcome": record.decision_outcome.value,
        "decision_reason": record.decision_reason,
        "run_id": record.run_id,
        "workflow_id": record.workflow_id,
        "tenant_id": record.tenant_id,
        "request_id": record.request_id,
        "causal_role": record.causal_role.value,
        "decided_at": DecisionRecordRow.decided_at.db_value(record.decided_at),
        "details": _json_text(record.details, "details"),
        "idempotency_key": idempotency_key,
    }
    return [values[n] for n in _DECISION_COLUMNS]


def _mirror_params(record):
    """The policy_decisions row of a policy-like record, in column order and database form."""
    allowed = record.decision_outcome in ALLOWED_OUTCOMES
    values = {
        "id": record.decision_id,
        "tenant_id": record.tenant_id,
        "run_id": record.run_id,
        "policy_type": record.decision_type.value,
        "decision": "allowed" if allowed else "denied",
        "rationale": record.decision_reason or "",
        "is_synthetic": False,
        "synthetic_scenario_id": None,
        "capture_confidence_score": 1.0,
        "created_at": PolicyDecision.created_at.db_value(record.decided_at),
    }
    return [values[n] for n in _MIRROR_COLUMNS]


def make_idempotency_key(decision_type, tenant_id, *parts):
    """The unique key of a once-only decision: its type, tenant and identifying values."""
    return json.dumps([_member(DecisionType, decision_type, "decision_type").value,
                       tenant_id, *parts])


class AppendResult(str, Enum):
    """What `DecisionRecordService.append` did."""

    WRITTEN = "written"
    DUPLICATE = "duplicate"
    FAILED = "failed"


class DecisionRecordService:
    """Appends decision records through the coordinator; never commits, never blocks the caller."""

    ACCESS = "WRITE"

    def __init__(self, coordinator):
        self.coordinator = coordinator

    def emit(self, record):
        """Append `record` (and its policy mirror). True when written, False on a storage failure."""
        return self.append(record) is AppendResult.WRITTEN

    def append(self, record, idempotency_key=None):
        """Append `record`; with an `idempotency_key`, only when no record holds that key yet.

        Returns WRITTEN, DUPLICATE (a record with that key exists; nothing written) or FAILED
        (storage failure, logged). Invalid record content raises ValueError before any write.
        """
        params = _decision_params(record, idempotency_key)
        mirror = _mirror_params(record) if record.decision_type in MIRRORED_TYPES else None

        def write(db):
            if _INSERT_DECISION.execute(db, params).rowcount == 0:
                return AppendResult.DUPLICATE
            if mirror is not None:
                _write_mirror(db, mirror, record.decision_id)
            return AppendResult.WRITTEN

        return write_non_blocking(self.coordinator, write, AppendResult.FAILED,
                                  f"decision record {record.decision_id} ({record.decision_type.value})")


def _write_mirror(db, params, decision_id):
    """Best-effort mirror row; a failing statement undoes only itself and keeps the decision."""
    try:
        _INSERT_MIRROR.execute(db, params)
    except Exception:
        log.warning("policy_decisions mirror of %s: not written", decision_id, exc_info=True)


class DecisionRecordReader:
    """Reads decision records, always filtered by tenant."""

    ACCESS = "READ"

    def __init__(self, coordinator):
        self.coordinator = coordinator

    def list(self, tenant_id, run_id=None, request_id=None, decision_type=None, limit=1000):
        """The tenant's records, oldest first (decided_at, then insertion order), at most `limit`."""
        _require_tenant(tenant_id)
        require_limit(limit)
        row = DecisionRecordRow
        query = row.select().where(row.tenant_id == tenant_id)
        if run_id is not None:
            query = query.where(row.run_id == run_id)
        if request_id is not None:
            query = query.where(row.request_id == request_id)
        if decision_type is not None:
            query = query.where(row.decision_type
                                == _member(DecisionType, decision_type, "decision_type").value)
        query = query.order_by(row.decided_at, SQL("rowid")).limit(limit)
        return [_record_from_row(r) for r in query.execute(self.coordinator.db)]

    def exists(self, key):
        """True when a record holds idempotency `key`."""
        return _DECISION_WITH_KEY.execute(self.coordinator.db, [key]).fetchone() is not None


def _record_from_row(row):
    """A stored row as a DecisionRecord."""
    return DecisionRecord(
        decision_id=row.decision_id, decision_type=row.decision_type,
        decision_source=row.decision_source, decision_trigger=row.decision_trigger,
        decision_inputs=row.decision_inputs, decision_outcome=row.decision_outcome,
        decision_reason=row.decision_reason, run_id=row.run_id, workflow_id=row.workflow_id,
        tenant_id=row.tenant_id, request_id=row.request_id, causal_role=row.causal_role,
        decided_at=row.decided_at, details=row.details)


def list_decisions(coordinator, tenant_id, run_id=None, request_id=None, decision_type=None,
                   limit=1000):
    """The tenant's decision records, optionally by run, request and type; oldest first."""
    return DecisionRecordReader(coordinator).list(tenant_id, run_id, request_id, decision_type,
                                                  limit)


def backfill_run_id_for_request(coordinator, request_id, run_id, tenant_id):
    """Bind the request's pre-run decisions (no run_id yet) to `run_id`; returns how many.

    In-run and post-run records and records that already have a run are never touched, so a
    second call returns 0, as does an empty request or run id. A storage failure is logged and
    returns 0; a missing or non-string tenant is a ValueError.
    """
    _require_tenant(tenant_id)
    if not request_id or not run_id:
        return 0

    def bind(db):
        return _BACKFILL_RUN_ID.execute(
            db, [run_id, tenant_id, request_id, CausalRole.PRE_RUN.value]).rowcount

    count = write_non_blocking(coordinator, bind, 0, f"backfill of request {request_id}")
    if count:
        log.debug("backfilled run_id %s on %d decisions of request %s", run_id, count, request_id)
    return count


# ---------------------------------------------------------------------------------------
# CARE kill switch and signal guard


def _set_kill_switch(coordinator, active):
    """Store the kill switch (raises on a storage failure: an operator must know it failed)."""
    with coordinator.transaction() as tx:
        DecisionSetting.insert(key=CARE_KILL_SWITCH_KEY, value=active, updated_at=utcnow()) \
            .on_conflict(conflict_target=[DecisionSetting.key],
                         preserve=[DecisionSetting.value, DecisionSetting.updated_at]) \
            .execute(tx.db)


def activate_care_kill_switch(coordinator):
    """Turn CARE optimisation off everywhere (persisted); returns True."""
    _set_kill_switch(coordinator, True)
    log.warning("care_kill_switch_activated")
    return True


def deactivate_care_kill_switch(coordinator):
    """Allow CARE optimisation again (persisted); returns True."""
    _set_kill_switch(coordinator, False)
    log.info("care_kill_switch_deactivated")
    return True


def is_care_kill_switch_active(coordinator):
    """True when the persisted CARE kill switch is on (off when never set)."""
    query = DecisionSetting.select(DecisionSetting.value).where(
        DecisionSetting.key == CARE_KILL_SWITCH_KEY)
    return any(row.value is True for row in query.execute(coordinator.db))


def check_signal_access(signal_name):
    """True for a signal CARE may use; CARESignalAccessError for a forbidden or unknown one."""
    if signal_name in CARE_FORBIDDEN_SIGNALS:
        raise CARESignalAccessError(
            f"Forbidden signal access: '{signal_name}' is not allowed for CARE optimization")
    if signal_name not in CARE_ALLOWED_SIGNALS:
        raise CARESignalAccessError(
            f"Unknown signal: '{signal_name}' is not in the allowed signal list")
    return True


# ---------------------------------------------------------------------------------------
# Emitters: every one returns the record it built (written or, on a storage failure, not);
# the once-only emitters return None when their rule or their key says not to emit.


def _emit(coordinator, record):
    """Append `record`; return it whether or not storage succeeded."""
    DecisionRecordService(coordinator).append(record)
    return record


def _emit_once(coordinator, record, key):
    """Append `record` unless a record holds `key`; None when it already did."""
    result = DecisionRecordService(coordinator).append(record, key)
    return None if result is AppendResult.DUPLICATE else record


def _system_record(decision_type, trigger, outcome, **fields):
    """A record decided by the system."""
    return DecisionRecord(decision_type=decision_type, decision_source=DecisionSource.SYSTEM,
                          decision_trigger=trigger, decision_outcome=outcome, **fields)


def _require(value, name):
    """A clear ValueError when a required identifier is missing or empty."""
    if not value:
        raise ValueError(f"{name} is required")


def emit_routing_decision(coordinator, run_id, routed, selected_agent, eligible_agents,
                          rejection_reason=None, tenant_id="default", details=None,
                          request_id=None, causal_role=CausalRole.PRE_RUN):
    """Record a routing choice: selected, rejected (with a reason) or none."""
    if routed and selected_agent:
        outcome = DecisionOutcome.SELECTED
    elif not routed and rejection_reason:
        outcome = DecisionOutcome.REJECTED
    else:
        outcome = DecisionOutcome.NONE
    agents = list(eligible_agents or [])
    return _emit(coordinator, _system_record(
        DecisionType.ROUTING, DecisionTrigger.EXPLICIT, outcome,
        decision_inputs={"eligible_agents": agents, "agents_count": len(agents)},
        decision_reason=f"Selected {selected_agent}" if routed else rejection_reason,
        run_id=run_id, tenant_id=tenant_id, request_id=request_id, causal_role=causal_role,
        details=details or {}))


def emit_recovery_decision(coordinator, run_id, evaluated, triggered, action=None,
                           candidates_count=0, reason=None, tenant_id="default",
                           request_id=None, causal_role=CausalRole.IN_RUN):
    """Record whether recovery was evaluated and triggered."""
    if not evaluated:
        outcome, default = DecisionOutcome.SKIPPED, "Recovery not evaluated (success path)"
    elif triggered:
        outcome, default = DecisionOutcome.SELECTED, f"Recovery action: {action}"
    else:
        outcome, default = DecisionOutcome.NONE, "Recovery evaluated but not triggered"
    return _emit(coordinator, _system_record(
        DecisionType.RECOVERY, DecisionTrigger.REACTIVE, outcome,
        decision_inputs={"evaluated": evaluated, "candidates_count": candidates_count},
        decision_reason=reason or default, run_id=run_id, tenant_id=tenant_id,
        request_id=request_id, causal_role=causal_role,
        details={"action": action} if action else {}))


def emit_memory_decision(coordinator, run_id, queried, matched, injected, sources=None,
                         reason=None, tenant_id="default", request_id=None,
                         causal_role=CausalRole.IN_RUN):
    """Record whether memory was queried, matched and injected."""
    if not queried:
        outcome, default = DecisionOutcome.SKIPPED, "Memory not queried (injection disabled)"
    elif not matched:
        outcome, default = DecisionOutcome.NONE, "Memory queried but no matches"
    elif injected:
        outcome = DecisionOutcome.SELECTED
        default = f"Memory injected from {len(sources or [])} sources"
    else:
        outcome, default = DecisionOutcome.BLOCKED, "Memory matched but injection blocked"
    return _emit(coordinator, _system_record(
        DecisionType.MEMORY, DecisionTrigger.EXPLICIT, outcome,
        decision_inputs={"queried": queried, "matched": matched, "injected": injected},
        decision_reason=reason or default, run_id=run_id, tenant_id=tenant_id,
        request_id=request_id, causal_role=causal_role,
        details={"sources": sources} if sources else {}))


def emit_policy_decision(coordinator, run_id, policy_id, evaluated, violated,
                         severity="warning", reason=None, tenant_id="default",
                         request_id=None, causal_role=CausalRole.IN_RUN, details=None):
    """Record a policy evaluation: skipped, blocked (violated, severity "error"), rejected or selected.

    `details` (ours) adds caller context, e.g. a PLang execution id and final action; the
    standard `violated` and `severity` keys always win.
    """
    if not evaluated:
        outcome = DecisionOutcome.SKIPPED
    elif violated and severity == "error":
        outcome = DecisionOutcome.BLOCKED
    elif violated:
        outcome = DecisionOutcome.REJECTED
    else:
        outcome = DecisionOutcome.SELECTED
    return _emit(coordinator, _system_record(
        DecisionType.POLICY, DecisionTrigger.EXPLICIT, outcome,
        decision_inputs={"policy_id": policy_id, "severity": severity},
        decision_reason=reason or f"Policy {policy_id}: {severity}", run_id=run_id,
        tenant_id=tenant_id, request_id=request_id, causal_role=causal_role,
        details={**(details or {}), "violated": violated, "severity": severity}))


def emit_budget_decision(coordinator, run_id, budget_requested, budget_available,
                         enforcement="soft", simulation_feasible=None, proceeded=True,
                         reason=None, tenant_id="default", request_id=None,
                         causal_role=CausalRole.PRE_RUN):
    """Record a budget check: blocked (hard limit exceeded), rejected or selected."""
    requested, available = budget_requested, budget_available
    exceeded = requested > available
    if enforcement == "hard" and exceeded:
        outcome = DecisionOutcome.BLOCKED
        default = f"Budget exceeded: {requested} > {available} (hard limit)"
    elif exceeded and not proceeded:
        outcome, default = DecisionOutcome.REJECTED, f"Budget exceeded: {requested} > {available}"
    elif exceeded:
        outcome = DecisionOutcome.SELECTED
        default = f"Budget exceeded but proceeded (advisory): {requested} > {available}"
    else:
        outcome, default = DecisionOutcome.SELECTED, f"Budget within limits: {requested} <= {available}"
    return _emit(coordinator, _system_record(
        DecisionType.BUDGET, DecisionTrigger.EXPLICIT, outcome,
        decision_inputs={"budget_requested": requested, "budget_available": available,
                         "enforcement": enforcement},
        decision_reason=reason or default, run_id=run_id, tenant_id=tenant_id,
        request_id=request_id, causal_role=causal_role,
        details={"exceeded": exceeded, "simulation_feasible": simulation_feasible,
                 "proceeded": proceeded}))


def emit_budget_enforcement_decision(coordinator, run_id, budget_limit_cents,
                                     budget_consumed_cents, step_cost_cents, completed_steps,
                                     total_steps, tenant_id="default"):
    """Record that a hard budget halted a run; once per run (a second call returns None)."""
    _require(run_id, "run_id")
    record = _system_record(
        DecisionType.BUDGET_ENFORCEMENT, DecisionTrigger.REACTIVE,
        DecisionOutcome.EXECUTION_HALTED, causal_role=CausalRole.IN_RUN, run_id=run_id,
        tenant_id=tenant_id,
        decision_reason=(f"Hard budget limit reached: {budget_consumed_cents}c consumed >= "
                         f"{budget_limit_cents}c limit"),
        decision_inputs={"budget_limit_cents": budget_limit_cents,
                         "budget_consumed_cents": budget_consumed_cents,
                         "step_cost_cents": step_cost_cents, "completed_steps": completed_steps,
                         "total_steps": total_steps},
        details={"enforcement_mode": "hard", "halt_point": f"after_step_{completed_steps}",
                 "remaining_steps": total_steps - completed_steps})
    return _emit_once(coordinator, record,
                      make_idempotency_key(DecisionType.BUDGET_ENFORCEMENT, tenant_id, run_id))


def emit_policy_precheck_decision(coordinator, request_id, posture, passed, service_available,
                                  violations=None, tenant_id="default"):
    """Record a blocking pre-run policy check: iff posture "strict" and (failed or unavailable).

    Once per (request, outcome); otherwise, and on a repeat, returns None.
    """
    _require(request_id, "request_id")
    if posture != "strict" or (passed and service_available):
        return None
    if not service_available:
        outcome = DecisionOutcome.POLICY_UNAVAILABLE
        reason = "Policy service unavailable (strict mode blocks execution)"
    else:
        outcome = DecisionOutcome.POLICY_BLOCKED
        reason = "Policy pre-check failed: " + (", ".join(violations or []) or "Unknown violation")
    record = _system_record(
        DecisionType.POLICY_PRE_CHECK, DecisionTrigger.EXPLICIT, outcome,
        causal_role=CausalRole.PRE_RUN, run_id=None, request_id=request_id, tenant_id=tenant_id,
        decision_reason=reason,
        decision_inputs={"posture": posture, "violations": list(violations or []),
                         "service_available": service_available},
        details={"posture": posture, "blocked": True, "passed": passed,
                 "service_available": service_available})
    emitted = _emit_once(coordinator, record, make_idempotency_key(
        DecisionType.POLICY_PRE_CHECK, tenant_id, request_id, outcome.value))
    if emitted:
        log.info("policy_precheck_decision_emitted request=%s outcome=%s", request_id, outcome.value)
    return emitted


RECOVERY_OUTCOMES = {"R1": DecisionOutcome.RECOVERY_APPLIED, "R2": DecisionOutcome.RECOVERY_SUGGESTED}


def emit_recovery_evaluation_decision(coordinator, run_id, request_id, recovery_class,
                                      recovery_action, failure_type, failure_context=None,
                                      tenant_id="default"):
    """Record a post-run recovery evaluation; once per (run, failure type).

    R1 with an action: recovery_applied; R2 with an action: recovery_suggested; anything
    else: recovery_skipped.
    """
    _require(run_id, "run_id")
    outcome = RECOVERY_OUTCOMES.get(recovery_class) if recovery_action else None
    if outcome is DecisionOutcome.RECOVERY_APPLIED:
        reason = f"R1: Auto-recovery applied - {recovery_action}"
    elif outcome is DecisionOutcome.RECOVERY_SUGGESTED:
        reason = f"R2: Recovery suggested (requires approval) - {recovery_action}"
    else:
        outcome, reason = DecisionOutcome.RECOVERY_SKIPPED, f"R3: Recovery skipped - {failure_type}"
    record = _system_record(
        DecisionType.RECOVERY_EVALUATION, DecisionTrigger.REACTIVE, outcome,
        causal_role=CausalRole.POST_RUN, run_id=run_id, request_id=request_id,
        tenant_id=tenant_id, decision_reason=reason,
        decision_inputs={"recovery_class": recovery_class, "recovery_action": recovery_action,
                         "failure_type": failure_type},
        details={"failure_context": failure_context or {},
                 "recovery_bounded": recovery_class == "R1",
                 "requires_approval": recovery_class == "R2"})
    emitted = _emit_once(coordinator, record, make_idempotency_key(
        DecisionType.RECOVERY_EVALUATION, tenant_id, run_id, failure_type))
    if emitted:
        log.info("recovery_evaluation_decision_emitted run=%s outcome=%s", run_id, outcome.value)
    return emitted


def _kill_switch_blocks(coordinator):
    """The kill switch for an emitter: an unreadable switch counts as on (fails safe)."""
    try:
        return is_care_kill_switch_active(coordinator)
    except Exception:
        log.warning("CARE kill switch unreadable; treating it as active", exc_info=True)
        return True


def _already_emitted(coordinator, key):
    """True when a record holds `key`; an unreadable table counts as not (the insert decides)."""
    try:
        return DecisionRecordReader(coordinator).exists(key)
    except Exception:
        log.warning("decision idempotency check failed", exc_info=True)
        return False


def emit_care_optimization_decision(coordinator, request_id, baseline_agent, optimized_agent,
                                    confidence_score, signals_used, optimization_enabled=True,
                                    shadow_mode=False, tenant_id="default"):
    """Record that CARE chose an optimised agent over the baseline; once per request.

    Gates, in order, each returning None: kill switch on, optimisation disabled, shadow mode,
    confidence below 0.50, optimised == baseline, already emitted for this request. Then every
    signal used must pass `check_signal_access` (CARESignalAccessError before any write).
    """
    _require(request_id, "request_id")
    if _kill_switch_blocks(coordinator) or not optimization_enabled:
        return None
    if shadow_mode:
        log.info("care_optimization_shadow_comparison request=%s diverged=%s confidence=%s",
                 request_id, baseline_agent != optimized_agent, confidence_score)
        return None
    if confidence_score < CARE_CONFIDENCE_THRESHOLD or baseline_agent == optimized_agent:
        return None
    key = make_idempotency_key(DecisionType.CARE_ROUTING_OPTIMIZED, tenant_id, request_id)
    if _already_emitted(coordinator, key):
        return None
    signals = list(signals_used)
    for name in signals:
        check_signal_access(name)
    inputs = {"baseline_agent": baseline_agent, "optimized_agent": optimized_agent,
              "confidence_score": confidence_score, "signals_used": signals}
    record = _system_record(
        DecisionType.CARE_ROUTING_OPTIMIZED, DecisionTrigger.AUTONOMOUS,
        DecisionOutcome.OPTIMIZED_SELECTED, causal_role=CausalRole.PRE_RUN, run_id=None,
        request_id=request_id, tenant_id=tenant_id,
        decision_reason=f"Optimization selected {optimized_agent} over baseline {baseline_agent}",
        decision_inputs=inputs, details=dict(inputs))
    emitted = _emit_once(coordinator, record, key)
    if emitted:
        log.info("care_optimization_decision_emitted request=%s optimized=%s", request_id,
                 optimized_agent)
    return emitted
