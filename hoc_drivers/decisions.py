"""Decision Records: the append-only decision sink, with no commit of its own.

Every choice the system makes (routing, recovery, memory, policy, budget, the Phase-5 kinds) appends one
`DecisionRecord`; policy-like ones are mirrored to `policy_decisions`. Writers take the coordinator's
transaction `tx` first, then the tenant; readers take the database first. Each write statement is its own
non-blocking unit (`write_non_blocking`), with no savepoint: SQLite's statement journal undoes a failing
statement and keeps `tx` open, so a storage failure is logged, reported (False, None or 0) and leaves `tx`
usable; invalid input is a `ValueError`. Once-only emitters store their key in a unique column. The CARE
kill switch is system-wide and persisted in the database.
"""
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum

from peewee import SQL

from .listing import page
from .models.base import (PLACEHOLDER, PreparedInsert, PreparedQuery, as_utc, new_id, timestamp_text, utcnow)
from .models.decisions import (CausalRole, DecisionOutcome, DecisionRecordRow, DecisionSetting,  # noqa: F401
                               DecisionSource, DecisionTrigger, DecisionType, PolicyDecision)
from .validation import (NON_EMPTY, json_object_text, require_database, require_dict, require_tenant, require_text,
                         require_transaction)

ACCESS = "READ+WRITE"

log = logging.getLogger(__name__)


class CARESignalAccessError(Exception):
    """CARE optimisation asked for a signal it may not use (forbidden or unknown)."""


# Types mirrored to policy_decisions; outcomes mirrored as "allowed" (all others "denied").
MIRRORED_TYPES = frozenset({DecisionType.POLICY, DecisionType.POLICY_PRE_CHECK,
                            DecisionType.BUDGET, DecisionType.BUDGET_ENFORCEMENT})
ALLOWED_OUTCOMES = frozenset({DecisionOutcome.SELECTED, DecisionOutcome.NONE})
# The system's trigger per decision type (explicit for the types not listed).
TRIGGERS = {DecisionType.RECOVERY: DecisionTrigger.REACTIVE, DecisionType.BUDGET_ENFORCEMENT: DecisionTrigger.REACTIVE,
            DecisionType.RECOVERY_EVALUATION: DecisionTrigger.REACTIVE,
            DecisionType.CARE_ROUTING_OPTIMIZED: DecisionTrigger.AUTONOMOUS}

CARE_ALLOWED_SIGNALS = frozenset({"latency_p50", "latency_p95", "cost_per_run", "success_rate", "recovery_occurred",
                                  "agent_availability", "context_size_bucket"})
CARE_FORBIDDEN_SIGNALS = frozenset({"policy_outcome", "budget_halt_reason", "recovery_class", "customer_content",
                                    "safety_events", "founder_overrides", "failure_details", "user_feedback"})
CARE_CONFIDENCE_THRESHOLD = 0.50
CARE_KILL_SWITCH_KEY = "care_optimization_kill_switch"

# A record's fields in the seed's order (`to_dict`, the stored row).
RECORD_FIELDS = ("decision_id", "decision_type", "decision_source", "decision_trigger", "decision_inputs",
                 "decision_outcome", "decision_reason", "run_id", "workflow_id", "tenant_id", "request_id",
                 "causal_role", "decided_at", "details")
_ENUM_FIELDS = {"decision_type": DecisionType, "decision_source": DecisionSource, "decision_trigger": DecisionTrigger,
                "decision_outcome": DecisionOutcome, "causal_role": CausalRole}

# enum -> its members by value and by themselves (one dict lookup instead of Enum's __call__)
_MEMBERS = {enum: {**{m.value: m for m in enum}, **{m: m for m in enum}} for enum in _ENUM_FIELDS.values()}
_TYPES, _SOURCES, _TRIGGERS, _OUTCOMES, _ROLES = (_MEMBERS[enum] for enum in _ENUM_FIELDS.values())


def _member(enum, value, name):
    """`value` as a member of `enum`; a clear ValueError for anything else."""
    try:
        return _MEMBERS[enum][value]
    except (KeyError, TypeError):  # unknown, or unhashable
        allowed = ", ".join(m.value for m in enum)
        raise ValueError(f"{name}: unknown value {value!r} (expected one of: {allowed})") from None


def _plain(value):
    """An enum as its value, a datetime as ISO-8601 text, anything else unchanged."""
    if isinstance(value, Enum):
        return value.value
    return value.isoformat() if isinstance(value, datetime) else value


@dataclass
class DecisionRecord:
    """One decision: who decided, why, when in the run, what was decided and on what inputs.

    Made, it has its enum fields as members, a UTC `decided_at`, and dicts for its JSON fields,
    whose content (strict JSON within the limits) is checked when it is appended, so a change
    made in place afterwards is checked too (ValueError then, nothing written)."""

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
        try:  # each enum field as its member: one dict lookup each
            self.decision_type = _TYPES[self.decision_type]
            self.decision_source = _SOURCES[self.decision_source]
            self.decision_trigger = _TRIGGERS[self.decision_trigger]
            self.decision_outcome = _OUTCOMES[self.decision_outcome]
            self.causal_role = _ROLES[self.causal_role]
        except (KeyError, TypeError):  # unknown or unhashable: _member names the field that is wrong
            fields = vars(self)
            fields.update({name: _member(enum, fields[name], name) for name, enum in _ENUM_FIELDS.items()})
        require_text(self.tenant_id, "tenant_id", NON_EMPTY)
        require_text(self.decision_id, "decision_id", NON_EMPTY)
        decided_at = self.decided_at
        if not isinstance(decided_at, datetime):
            raise ValueError("decided_at must be a datetime")
        if decided_at.tzinfo is not timezone.utc:  # utcnow()'s, the default, is already
            self.decided_at = as_utc(decided_at)
        if not (isinstance(self.decision_inputs, dict) and isinstance(self.details, dict)):
            require_dict(self.decision_inputs, "decision_inputs")  # names the one that is not
            require_dict(self.details, "details")

    @classmethod
    def _from_row(cls, row):
        """A record read back from the database (`row`: RECORD_FIELDS by name, as peewee
        converts them). Trusted, since it was checked when written: built without
        `__post_init__`, enum fields looked up from their stored values."""
        record = cls.__new__(cls)
        vars(record).update(row, **{name: _MEMBERS[enum][row[name]] for name, enum in _ENUM_FIELDS.items()})
        return record

    def to_dict(self):
        """The record's 14 fields; enums as their values, decided_at as ISO-8601 text."""
        return {name: _plain(getattr(self, name)) for name in RECORD_FIELDS}


# Writing inside the caller's transaction
def write_non_blocking(tx, statement, failure, description, logger=log):
    """Run `statement(tx.db)` without ever failing `tx`: a storage failure is logged (as
    `description`, or what it returns when a function) and gives `failure`. Never commits.
    Each write is its own unit, undone alone when it fails (as in `tx.statement_savepoint`, whose
    `with` block it spares SQLite); a further write is a nested call. `tx` is the caller's
    transaction, already checked."""
    try:
        if not tx.statements_abort:  # SQLite: the failing statement alone is undone, by SQLite
            return statement(tx.db)
        with tx.savepoint():
            return statement(tx.db)
    except Exception:
        logger.warning("%s: not written", description() if callable(description) else description, exc_info=True)
        return failure


_INSERT_DECISION = PreparedInsert(DecisionRecordRow, (*RECORD_FIELDS, "idempotency_key"),
                                  conflict_target=[DecisionRecordRow.idempotency_key])
_INSERT_MIRROR = PreparedInsert(PolicyDecision, ("id", "tenant_id", "run_id", "policy_type", "decision", "rationale",
                                                 "capture_confidence_score", "created_at"),
                                conflict_target=[PolicyDecision.id])
_DECISION_WITH_KEY = PreparedQuery(lambda: DecisionRecordRow.select(SQL("1")).where(
    DecisionRecordRow.idempotency_key == PLACEHOLDER).limit(1))
_BACKFILL_RUN_ID = PreparedQuery(lambda: DecisionRecordRow.update(
    {DecisionRecordRow.run_id: PLACEHOLDER}).where(
    (DecisionRecordRow.tenant_id == PLACEHOLDER) & (DecisionRecordRow.request_id == PLACEHOLDER)
    & DecisionRecordRow.run_id.is_null() & (DecisionRecordRow.causal_role == PLACEHOLDER)))


def _mirror_row(record):
    """The policy_decisions row of a policy-like record."""
    allowed = record.decision_outcome in ALLOWED_OUTCOMES
    return {"id": record.decision_id, "tenant_id": record.tenant_id, "run_id": record.run_id,
            "policy_type": record.decision_type.value, "decision": "allowed" if allowed else "denied",
            "rationale": record.decision_reason or "", "capture_confidence_score": 1.0,
            "created_at": record.decided_at}


def make_idempotency_key(decision_type, tenant_id, *parts):
    """The unique key of a once-only decision: its type, tenant and identifying values (JSON
    values; anything else is a ValueError)."""
    kind = _member(DecisionType, decision_type, "decision_type").value
    try:
        return json.dumps([kind, tenant_id, *parts])
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"an idempotency key is made of JSON values: {exc}") from None


class AppendResult(str, Enum):
    """What `DecisionRecordService.append` did."""

    WRITTEN = "written"
    DUPLICATE = "duplicate"
    FAILED = "failed"


# Read once here: an Enum member is a slow class attribute to look up, and every append returns one.
_WRITTEN, _DUPLICATE, _FAILED = AppendResult.WRITTEN, AppendResult.DUPLICATE, AppendResult.FAILED


def _json_texts(record):
    """The stored texts of `record`'s JSON fields (inputs, details), checked (ValueError) when
    it is appended, so a change made in place after the record was made is checked too."""
    return (json_object_text(record.decision_inputs, "decision_inputs"),
            json_object_text(record.details, "details"))


def _append(tx, record, idempotency_key, texts):
    """`DecisionRecordService.append` in the checked transaction `tx`, with `record`'s
    `_json_texts`."""
    inputs, details = texts
    mirror = _mirror_row(record) if record.decision_type in MIRRORED_TYPES else None

    def write(db):
        r, text = record, str.__str__  # its fields in _INSERT_DECISION's order, as stored (an enum as its text)
        row = (r.decision_id, text(r.decision_type), text(r.decision_source), text(r.decision_trigger),
               inputs, text(r.decision_outcome), r.decision_reason, r.run_id, r.workflow_id, r.tenant_id,
               r.request_id, text(r.causal_role), timestamp_text(r.decided_at), details, idempotency_key)
        if _INSERT_DECISION.execute(db, row).rowcount == 0:
            return _DUPLICATE
        if mirror is not None:
            write_non_blocking(tx, lambda db: _INSERT_MIRROR.execute(db, mirror), None,
                               f"policy_decisions mirror of {record.decision_id}")
        return _WRITTEN

    return write_non_blocking(tx, write, _FAILED,
                              lambda: f"decision record {record.decision_id} ({record.decision_type.value})")


class DecisionRecordService:
    """Appends decision records inside the caller's transaction; never commits, never blocks."""

    ACCESS = "WRITE"

    def __init__(self, tx):
        self.tx = require_transaction(tx, check_open=False)

    def emit(self, record):
        """Append `record` (and its policy mirror). True when written, False on a storage failure."""
        return self.append(record) is _WRITTEN

    def append(self, record, idempotency_key=None):
        """Append `record`; with an `idempotency_key`, only when no record holds that key yet.

        Returns WRITTEN, DUPLICATE (a record with that key exists; nothing written) or FAILED
        (storage failure, logged). A failing policy mirror is logged and keeps the record.
        """
        self.tx.require_open()
        return _append(self.tx, record, idempotency_key, _json_texts(record))


def get_decision_service(tx):
    """The seed's name for the decision sink: a `DecisionRecordService` on transaction `tx`."""
    return DecisionRecordService(tx)


class DecisionRecordReader:
    """Reads decision records, always filtered by tenant."""

    ACCESS = "READ"

    def __init__(self, db):
        self.db = require_database(db)

    def list(self, tenant_id, run_id=None, request_id=None, decision_type=None, limit=1000, *,
             since=None, until=None, offset=0, newest_first=False):
        """The tenant's records by decided_at, oldest (or `newest_first`) first; window: listing.page."""
        require_tenant(tenant_id)
        row = DecisionRecordRow
        if decision_type is not None:
            decision_type = _member(DecisionType, decision_type, "decision_type").value
        query = row.select(*(getattr(row, name) for name in RECORD_FIELDS)).where(row.tenant_id == tenant_id)
        for column, value in ((row.run_id, run_id), (row.request_id, request_id), (row.decision_type, decision_type)):
            if value is not None:
                query = query.where(column == value)
        query = page(query, row.decided_at, since, until, offset, limit, newest_first).dicts()
        return [DecisionRecord._from_row(r) for r in query.execute(self.db)]

    def exists(self, key):
        """True when a record holds idempotency `key`."""
        return _DECISION_WITH_KEY.execute(self.db, [key]).fetchone() is not None


def list_decisions(db, tenant_id, run_id=None, request_id=None, decision_type=None, limit=1000, **window):
    """The tenant's decision records, by run, request and type; as DecisionRecordReader.list."""
    return DecisionRecordReader(db).list(tenant_id, run_id, request_id, decision_type, limit, **window)


def backfill_run_id_for_request(tx, tenant_id, request_id, run_id):
    """Bind the request's pre-run decisions (no run_id yet) to `run_id`; returns how many.

    In-run and post-run records and records that already have a run are never touched, so a
    second call returns 0, as does an empty request or run id. A storage failure is logged and
    returns 0; a missing or non-string tenant is a ValueError.
    """
    require_transaction(tx)
    require_tenant(tenant_id)
    if not request_id or not run_id:
        return 0
    params = [run_id, tenant_id, request_id, CausalRole.PRE_RUN.value]
    count = write_non_blocking(tx, lambda db: _BACKFILL_RUN_ID.execute(db, params).rowcount, 0,
                               f"backfill of request {request_id}")
    if count:
        log.debug("backfilled run_id %s on %d decisions of request %s", run_id, count, request_id)
    return count


# CARE kill switch (system-wide) and signal guard
def _set_kill_switch(tx, active):
    """Store the kill switch (raises on a storage failure: an operator must know it failed)."""
    DecisionSetting.insert(key=CARE_KILL_SWITCH_KEY, value=active, updated_at=utcnow()) \
        .on_conflict(conflict_target=[DecisionSetting.key],
                     preserve=[DecisionSetting.value, DecisionSetting.updated_at]) \
        .execute(tx.db)
    log.warning("care_kill_switch_%s", "activated" if active else "deactivated")
    return True


def activate_care_kill_switch(tx):
    """Turn CARE optimisation off everywhere (persisted when `tx` commits); returns True."""
    return _set_kill_switch(require_transaction(tx), True)


def deactivate_care_kill_switch(tx):
    """Allow CARE optimisation again (persisted when `tx` commits); returns True."""
    return _set_kill_switch(require_transaction(tx), False)


def is_care_kill_switch_active(db):
    """True when the persisted CARE kill switch is on (off when never set)."""
    query = DecisionSetting.select(DecisionSetting.value).where(DecisionSetting.key == CARE_KILL_SWITCH_KEY)
    return any(row.value is True for row in query.execute(require_database(db)))


def check_signal_access(signal_name):
    """True for a signal CARE may use; CARESignalAccessError for a forbidden or unknown one."""
    if signal_name in CARE_FORBIDDEN_SIGNALS:
        raise CARESignalAccessError(f"Forbidden signal access: '{signal_name}' is not allowed for CARE optimization")
    if signal_name not in CARE_ALLOWED_SIGNALS:
        raise CARESignalAccessError(f"Unknown signal: '{signal_name}' is not in the allowed signal list")
    return True


# Emitters: each returns the record it built (written or, on a storage failure, not); the
# once-only ones return None when their rule or their key says not to emit.
def _emit(tx, tenant_id, decision_type, outcome, reason, inputs, details, once_per=None, **fields):
    """Append the system's record of `decision_type` in the checked transaction `tx` and return
    it. With `once_per` (what identifies it besides type and tenant) a repeat writes nothing and
    returns None."""
    require_transaction(tx)
    record = DecisionRecord(decision_type=decision_type, decision_source=DecisionSource.SYSTEM,
                            decision_trigger=TRIGGERS.get(decision_type, DecisionTrigger.EXPLICIT),
                            decision_outcome=outcome, decision_reason=reason, decision_inputs=inputs,
                            details=details, tenant_id=tenant_id, **fields)
    texts = _json_texts(record)  # before the key, which holds values of the inputs: their error names the field
    key = None if once_per is None else make_idempotency_key(decision_type, tenant_id, *once_per)
    if _append(tx, record, key, texts) is _DUPLICATE:
        return None
    if key is not None:
        log.info("%s decision emitted: tenant=%s outcome=%s key=%s", decision_type.value,
                 tenant_id, outcome.value, key)
    return record


def emit_routing_decision(tx, tenant_id, run_id, routed, selected_agent, eligible_agents, rejection_reason=None,
                          details=None, request_id=None, causal_role=CausalRole.PRE_RUN):
    """Record a routing choice: selected, rejected (with a reason) or none."""
    outcome = (DecisionOutcome.SELECTED if routed and selected_agent else
               DecisionOutcome.REJECTED if not routed and rejection_reason else DecisionOutcome.NONE)
    agents = list(eligible_agents or [])
    reason = f"Selected {selected_agent}" if routed else rejection_reason
    return _emit(tx, tenant_id, DecisionType.ROUTING, outcome, reason,
                 {"eligible_agents": agents, "agents_count": len(agents)}, details or {},
                 run_id=run_id, request_id=request_id, causal_role=causal_role)


def emit_recovery_decision(tx, tenant_id, run_id, evaluated, triggered, action=None, candidates_count=0, reason=None,
                           request_id=None, causal_role=CausalRole.IN_RUN):
    """Record whether recovery was evaluated and triggered."""
    outcome, default = (
        (DecisionOutcome.SKIPPED, "Recovery not evaluated (success path)") if not evaluated else
        (DecisionOutcome.SELECTED, f"Recovery action: {action}") if triggered else
        (DecisionOutcome.NONE, "Recovery evaluated but not triggered"))
    return _emit(tx, tenant_id, DecisionType.RECOVERY, outcome, reason or default,
                 {"evaluated": evaluated, "candidates_count": candidates_count}, {"action": action} if action else {},
                 run_id=run_id, request_id=request_id, causal_role=causal_role)


def emit_memory_decision(tx, tenant_id, run_id, queried, matched, injected, sources=None, reason=None,
                         request_id=None, causal_role=CausalRole.IN_RUN):
    """Record whether memory was queried, matched and injected."""
    outcome, default = (
        (DecisionOutcome.SKIPPED, "Memory not queried (injection disabled)") if not queried else
        (DecisionOutcome.NONE, "Memory queried but no matches") if not matched else
        (DecisionOutcome.SELECTED, f"Memory injected from {len(sources or [])} sources") if injected else
        (DecisionOutcome.BLOCKED, "Memory matched but injection blocked"))
    return _emit(tx, tenant_id, DecisionType.MEMORY, outcome, reason or default,
                 {"queried": queried, "matched": matched, "injected": injected},
                 {"sources": sources} if sources else {},
                 run_id=run_id, request_id=request_id, causal_role=causal_role)


def emit_policy_decision(tx, tenant_id, run_id, policy_id, evaluated, violated, severity="warning", reason=None,
                         request_id=None, causal_role=CausalRole.IN_RUN, details=None):
    """Record a policy evaluation: skipped, blocked (violated, severity "error"), rejected or selected.

    `details` (ours) adds caller context, e.g. a PLang execution id and final action; the
    standard `violated` and `severity` keys always win.
    """
    outcome = (DecisionOutcome.SKIPPED if not evaluated else
               DecisionOutcome.BLOCKED if violated and severity == "error" else
               DecisionOutcome.REJECTED if violated else DecisionOutcome.SELECTED)
    return _emit(tx, tenant_id, DecisionType.POLICY, outcome, reason or f"Policy {policy_id}: {severity}",
                 {"policy_id": policy_id, "severity": severity},
                 {**(details or {}), "violated": violated, "severity": severity},
                 run_id=run_id, request_id=request_id, causal_role=causal_role)


def emit_budget_decision(tx, tenant_id, run_id, budget_requested, budget_available, enforcement="soft",
                         simulation_feasible=None, proceeded=True, reason=None, request_id=None,
                         causal_role=CausalRole.PRE_RUN):
    """Record a budget check: blocked (hard limit exceeded), rejected or selected."""
    requested, available = budget_requested, budget_available
    exceeded = requested > available
    if enforcement == "hard" and exceeded:
        outcome, default = DecisionOutcome.BLOCKED, f"Budget exceeded: {requested} > {available} (hard limit)"
    elif exceeded and not proceeded:
        outcome, default = DecisionOutcome.REJECTED, f"Budget exceeded: {requested} > {available}"
    elif exceeded:
        outcome = DecisionOutcome.SELECTED
        default = f"Budget exceeded but proceeded (advisory): {requested} > {available}"
    else:
        outcome, default = DecisionOutcome.SELECTED, f"Budget within limits: {requested} <= {available}"
    return _emit(tx, tenant_id, DecisionType.BUDGET, outcome, reason or default,
                 {"budget_requested": requested, "budget_available": available, "enforcement": enforcement},
                 {"exceeded": exceeded, "simulation_feasible": simulation_feasible, "proceeded": proceeded},
                 run_id=run_id, request_id=request_id, causal_role=causal_role)


def emit_budget_enforcement_decision(tx, tenant_id, run_id, budget_limit_cents, budget_consumed_cents,
                                     step_cost_cents, completed_steps, total_steps):
    """Record that a hard budget halted a run; once per run (a second call returns None)."""
    require_text(run_id, "run_id")
    return _emit(tx, tenant_id, DecisionType.BUDGET_ENFORCEMENT, DecisionOutcome.EXECUTION_HALTED,
        f"Hard budget limit reached: {budget_consumed_cents}c consumed >= {budget_limit_cents}c limit",
        {"budget_limit_cents": budget_limit_cents, "budget_consumed_cents": budget_consumed_cents,
         "step_cost_cents": step_cost_cents, "completed_steps": completed_steps, "total_steps": total_steps},
        {"enforcement_mode": "hard", "halt_point": f"after_step_{completed_steps}",
         "remaining_steps": total_steps - completed_steps},
        once_per=(run_id,), run_id=run_id, causal_role=CausalRole.IN_RUN)


def emit_policy_precheck_decision(tx, tenant_id, request_id, posture, passed, service_available, violations=None):
    """Record a blocking pre-run policy check: iff posture "strict" and (failed or unavailable).

    Once per (request, outcome); otherwise, and on a repeat, returns None.
    """
    require_transaction(tx)
    require_text(request_id, "request_id")
    if posture != "strict" or (passed and service_available):
        return None
    if not service_available:
        outcome = DecisionOutcome.POLICY_UNAVAILABLE
        reason = "Policy service unavailable (strict mode blocks execution)"
    else:
        outcome = DecisionOutcome.POLICY_BLOCKED
        reason = "Policy pre-check failed: " + (", ".join(violations or []) or "Unknown violation")
    return _emit(tx, tenant_id, DecisionType.POLICY_PRE_CHECK, outcome, reason,
                 {"posture": posture, "violations": list(violations or []), "service_available": service_available},
                 {"posture": posture, "blocked": True, "passed": passed, "service_available": service_available},
                 once_per=(request_id, outcome.value), run_id=None, request_id=request_id,
                 causal_role=CausalRole.PRE_RUN)


def emit_recovery_evaluation_decision(tx, tenant_id, run_id, request_id, recovery_class, recovery_action,
                                      failure_type, failure_context=None):
    """Record a post-run recovery evaluation; once per (run, failure type).

    R1 with an action: recovery_applied; R2 with an action: recovery_suggested; anything
    else: recovery_skipped.
    """
    require_text(run_id, "run_id")
    outcome, reason = {
        "R1": (DecisionOutcome.RECOVERY_APPLIED, f"R1: Auto-recovery applied - {recovery_action}"),
        "R2": (DecisionOutcome.RECOVERY_SUGGESTED, f"R2: Recovery suggested (requires approval) - {recovery_action}"),
    }.get(recovery_class if recovery_action else None,
          (DecisionOutcome.RECOVERY_SKIPPED, f"R3: Recovery skipped - {failure_type}"))
    return _emit(tx, tenant_id, DecisionType.RECOVERY_EVALUATION, outcome, reason,
                 {"recovery_class": recovery_class, "recovery_action": recovery_action, "failure_type": failure_type},
                 {"failure_context": failure_context or {}, "recovery_bounded": recovery_class == "R1",
                  "requires_approval": recovery_class == "R2"},
                 once_per=(run_id, failure_type), run_id=run_id, request_id=request_id,
                 causal_role=CausalRole.POST_RUN)


def _read_or(tx, fallback, read, *args):
    """`read(*args)` in `tx`; when it fails, logged, `fallback` (and `tx` goes on)."""
    try:
        with tx.statement_savepoint():
            return read(*args)
    except Exception:
        log.warning("%s failed; taking %r", read.__qualname__, fallback, exc_info=True)
        return fallback


def emit_care_optimization_decision(tx, tenant_id, request_id, baseline_agent, optimized_agent, confidence_score,
                                    signals_used, optimization_enabled=True, shadow_mode=False):
    """Record that CARE chose an optimised agent over the baseline; once per request.

    Gates, in order, each returning None: kill switch on (or unreadable), disabled, shadow mode,
    confidence below 0.50, optimised == baseline, already emitted for this request. Then every
    signal used must pass `check_signal_access` (CARESignalAccessError before any write).
    """
    require_transaction(tx)
    require_text(request_id, "request_id")
    if _read_or(tx, True, is_care_kill_switch_active, tx.db) or not optimization_enabled:
        return None
    if shadow_mode:
        log.info("care_optimization_shadow_comparison request=%s diverged=%s confidence=%s",
                 request_id, baseline_agent != optimized_agent, confidence_score)
        return None
    if confidence_score < CARE_CONFIDENCE_THRESHOLD or baseline_agent == optimized_agent:
        return None
    kind = DecisionType.CARE_ROUTING_OPTIMIZED  # an unreadable key counts as new: the unique insert decides
    if _read_or(tx, False, DecisionRecordReader(tx.db).exists, make_idempotency_key(kind, tenant_id, request_id)):
        return None
    signals = list(signals_used)
    for name in signals:
        check_signal_access(name)
    inputs = {"baseline_agent": baseline_agent, "optimized_agent": optimized_agent,
              "confidence_score": confidence_score, "signals_used": signals}
    return _emit(tx, tenant_id, kind, DecisionOutcome.OPTIMIZED_SELECTED,
                 f"Optimization selected {optimized_agent} over baseline {baseline_agent}", inputs, dict(inputs),
                 once_per=(request_id,), run_id=None, request_id=request_id, causal_role=CausalRole.PRE_RUN)
