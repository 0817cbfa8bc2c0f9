"""The run-completion transaction: a finished run's incident, policy evaluation and trace
completion, written together in one coordinator transaction (SPEC §0).

`RunCompletionTransaction(coordinator).execute(tenant_id, run_id, run_status, ...)` opens (or
joins) the coordinator's transaction, writes, and reports how far it got
(`TransactionResult`). A new incident notes `GuardStateChanged` for the tenant, so guard caches
drop it after COMMIT. The seed's names are importable from `transaction_coordinator` too.
"""
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from time import monotonic

from peewee import PeeweeException, fn

from .facts import tenant_changed
from .models.base import (PLACEHOLDER, PreparedInsert, PreparedQuery, new_ordered_id, peewee_exceptions,
                          statement_runner, utcnow)
from .models.runs import Incident, PreventionRecord, Run, Trace
from .validation import optional_text, refuse_nul, require_tenant, require_text

ACCESS = "WRITE"

# The wording of a missing run id or status (callers match "run_id and run_status are required").
_RUN_ID_AND_STATUS = "run_id and run_status are required (non-empty strings), got {name}={value!r}"


class TransactionPhase(str, Enum):
    """How far a run-completion transaction got."""

    NOT_STARTED = "NOT_STARTED"
    INCIDENT_CREATED = "INCIDENT_CREATED"
    POLICY_EVALUATED = "POLICY_EVALUATED"
    TRACE_COMPLETED = "TRACE_COMPLETED"
    COMMITTED = "COMMITTED"
    EVENTS_PUBLISHED = "EVENTS_PUBLISHED"
    JOINED = "JOINED"  # written inside the caller's transaction: commits (or not) with it
    ALREADY_COMPLETED = "ALREADY_COMPLETED"  # the run was completed before: nothing written
    ROLLED_BACK = "ROLLED_BACK"
    FAILED = "FAILED"


# The phases the hot path sets, read once here (an Enum member is a slow class attribute to look up).
(_INCIDENT_CREATED, _POLICY_EVALUATED, _TRACE_COMPLETED, _COMMITTED, _EVENTS_PUBLISHED, _JOINED,
 _ALREADY_COMPLETED) = (TransactionPhase.INCIDENT_CREATED, TransactionPhase.POLICY_EVALUATED,
                        TransactionPhase.TRACE_COMPLETED, TransactionPhase.COMMITTED,
                        TransactionPhase.EVENTS_PUBLISHED, TransactionPhase.JOINED,
                        TransactionPhase.ALREADY_COMPLETED)


class TransactionFailed(Exception):
    """A run-completion transaction rolled back; nothing of it was written."""

    def __init__(self, message, phase, partial_results=None, cause=None):
        super().__init__(message)
        self.phase = phase
        self.partial_results = partial_results or {}
        self.cause = cause


@dataclass(slots=True)
class DomainResult:
    """The outcome of one domain step of a run-completion transaction."""

    domain: str
    action: str
    result_id: str | None = None
    success: bool = False
    error: str | None = None
    timestamp: datetime = field(default_factory=utcnow)

    def to_dict(self):
        """JSON-ready dict (timestamp as ISO text)."""
        return {"domain": self.domain, "action": self.action, "result_id": self.result_id,
                "success": self.success, "error": self.error,
                "timestamp": self.timestamp.isoformat()}


@dataclass(slots=True)
class TransactionResult:
    """The outcome of `RunCompletionTransaction.execute`."""

    run_id: str
    incident_result: DomainResult | None = None
    policy_result: DomainResult | None = None
    trace_result: DomainResult | None = None
    phase: TransactionPhase = TransactionPhase.NOT_STARTED
    events_published: list = field(default_factory=list)
    duration_ms: int = 0

    def is_complete(self):
        """True once committed (by this call, or by the call that completed the run before)."""
        return self.phase in (TransactionPhase.COMMITTED, TransactionPhase.EVENTS_PUBLISHED,
                              TransactionPhase.ALREADY_COMPLETED)

    def all_domains_succeeded(self):
        """True when no domain step that ran failed."""
        return all(r is None or r.success
                   for r in (self.incident_result, self.policy_result, self.trace_result))

    def to_dict(self):
        """JSON-ready dict."""
        def part(result):
            return result.to_dict() if result else None
        return {"run_id": self.run_id, "phase": self.phase.value,
                "is_complete": self.is_complete(),
                "all_domains_succeeded": self.all_domains_succeeded(),
                "incident": part(self.incident_result), "policy": part(self.policy_result),
                "trace": part(self.trace_result), "events_published": list(self.events_published),
                "duration_ms": self.duration_ms}


# Error codes in the order they are searched for; severity and category of each.
FAILURE_CODES = ("EXECUTION_TIMEOUT", "AGENT_CRASH", "STEP_FAILURE", "SKILL_ERROR",
                 "BUDGET_EXCEEDED", "RATE_LIMIT_EXCEEDED", "RESOURCE_EXHAUSTION", "CANCELLED",
                 "MANUAL_STOP", "RETRY_EXHAUSTED")
FAILURE_SEVERITY = {"AGENT_CRASH": "critical", "EXECUTION_TIMEOUT": "high",
                    "STEP_FAILURE": "high", "SKILL_ERROR": "high", "CANCELLED": "low",
                    "MANUAL_STOP": "low"}
FAILURE_CATEGORY = {"BUDGET_EXCEEDED": "BUDGET_EXCEEDED", "RATE_LIMIT_EXCEEDED": "RATE_LIMIT",
                    "RESOURCE_EXHAUSTION": "RESOURCE_EXHAUSTION", "CANCELLED": "MANUAL",
                    "MANUAL_STOP": "MANUAL"}
FAILURE_TITLE = {"EXECUTION_TIMEOUT": "Execution Timeout", "AGENT_CRASH": "Agent Crash",
                 "BUDGET_EXCEEDED": "Budget Exceeded", "RATE_LIMIT_EXCEEDED": "Rate Limit Hit",
                 "STEP_FAILURE": "Step Failure", "SKILL_ERROR": "Skill Error"}
POLICY_OUTCOMES = {"succeeded": "no_violation", "completed": "no_violation",
                   "success": "no_violation", "failed": "not_applicable",
                   "failure": "not_applicable", "error": "not_applicable",
                   "halted": "advisory", "blocked": "advisory"}
RUN_STATUSES = ("succeeded", "completed", "success", "failed", "failure", "error",
                "halted", "blocked", "cancelled", "crashed")


def classify_failure(error_code=None, error_message=None):
    """The first known failure code in `error_code` or the upper-cased message, else UNKNOWN."""
    haystack = f"{error_code or ''} {(error_message or '').upper()}"
    for code in FAILURE_CODES:
        if code in haystack:
            return code
    return "UNKNOWN"


_INSERT_INCIDENT = PreparedInsert(Incident, (
    "id", "tenant_id", "title", "severity", "status", "trigger_type", "category", "description",
    "source_type", "source_run_id", "impact_scope", "affected_agent_id", "error_code",
    "error_message", "started_at", "created_at", "updated_at", "is_synthetic",
    "synthetic_scenario_id"), ignore_conflicts=True, returning=Incident.id)
_INSERT_POLICY = PreparedInsert(PreventionRecord, (
    "id", "tenant_id", "policy_id", "pattern_id", "original_incident_id",
    "blocked_incident_id", "run_id", "outcome", "signature_match_confidence",
    "is_synthetic", "synthetic_scenario_id", "created_at"), ignore_conflicts=True,
    returning=PreventionRecord.id)
_SELECT_RUN_INCIDENT = PreparedQuery(lambda: Incident.select(Incident.id).where(
    (Incident.tenant_id == PLACEHOLDER) & (Incident.source_type == "run")
    & (Incident.source_run_id == PLACEHOLDER)))
_SELECT_POLICY = PreparedQuery(lambda: PreventionRecord.select(PreventionRecord.id).where(
    (PreventionRecord.tenant_id == PLACEHOLDER) & (PreventionRecord.policy_id == PLACEHOLDER)
    & (PreventionRecord.run_id == PLACEHOLDER)))
_COUNT_RUN_INCIDENT = PreparedQuery(lambda: Run.update(incident_count=Run.incident_count + 1)
                                    .where((Run.id == PLACEHOLDER) & (Run.tenant_id == PLACEHOLDER)))
_COMPLETE_TRACE = PreparedQuery(lambda: Trace.update(
    {Trace.status: PLACEHOLDER, Trace.completed_at: PLACEHOLDER,
     Trace.incident_id: fn.COALESCE(PLACEHOLDER, Trace.incident_id)})
    .where((Trace.trace_id == PLACEHOLDER) & (Trace.tenant_id == PLACEHOLDER)))


_COMPLETED_AT = Trace.completed_at  # the field itself (Peewee's class attribute is a descriptor call)


def _first_column(cursor):
    row = cursor.fetchone()
    return row[0] if row else None


def _incident_row(tenant_id, run_id, agent_id, error_code, error_message, is_synthetic,
                  synthetic_scenario_id, now):
    """The incident of a failed run, stamped `now` (as stored), in _INSERT_INCIDENT's order."""
    if error_message is not None and "\x00" in error_message:  # the one text `execute` left unchecked
        raise refuse_nul("error_message")
    code = classify_failure(error_code, error_message)
    return (new_ordered_id(), tenant_id, f"{FAILURE_TITLE.get(code, 'Run Failed')}: Run {run_id[:8]}...",
            FAILURE_SEVERITY.get(code, "medium"), "open", "run_failure",
            FAILURE_CATEGORY.get(code, "EXECUTION_FAILURE"), f"Run {run_id} failed with error: {code}",
            "run", run_id, "single_run", agent_id, code, error_message, now, now, now,
            bool(is_synthetic), synthetic_scenario_id)


def _run_incident(tx, tenant_id, run_id):
    """The id of the tenant's incident of the run, or None."""
    return _first_column(_SELECT_RUN_INCIDENT.execute(tx.db, (tenant_id, run_id)))


def complete_trace(tx, tenant_id, trace_id, run_status, incident_id, now):
    """Mark the tenant's trace completed (inside `tx`); False when there is no such trace."""
    cursor = _COMPLETE_TRACE.execute(tx.db, (run_status, _COMPLETED_AT.db_value(now),
                                          incident_id, trace_id, tenant_id))
    return cursor.rowcount > 0


_OWN_TRACE_COMPLETER = complete_trace  # as defined: run completion runs its statement itself


def _statements(db):
    """Run completion's statements in `db`'s dialect, (SQL, merge) each (`PreparedQuery.built`):
    policy INSERT, incident INSERT, the run's incident count, trace completion."""
    found = _BUILT.get(db.__class__)
    if found is None:
        found = _BUILT[db.__class__] = tuple(statement.built(db) for statement in (
            _INSERT_POLICY, _INSERT_INCIDENT, _COUNT_RUN_INCIDENT, _COMPLETE_TRACE))
    return found


_BUILT = {}  # database class -> `_statements` of its dialect


class RunCompletionTransaction:
    """A finished run's incident + policy evaluation + trace completion, committed together."""

    def __init__(self, coordinator, trace_completer=complete_trace):
        if not hasattr(coordinator, "transaction"):
            raise TypeError(f"RunCompletionTransaction takes a TransactionCoordinator, "
                            f"got {type(coordinator).__name__}")
        self.coordinator = coordinator
        self.trace_completer = trace_completer

    def execute(self, tenant_id, run_id, run_status, agent_id=None, error_code=None,
                error_message=None, trace_id=None, is_synthetic=False,
                synthetic_scenario_id=None, skip_events=False):
        """Write the run's governance records atomically, then publish its events.

        A run is completed once: completing it again writes and publishes nothing and reports
        ALREADY_COMPLETED (with the existing policy evaluation and incident). Inside an
        enclosing coordinator transaction it joins that transaction (a savepoint) and reports
        JOINED: its rows commit, and its events are published, only when the caller's do."""
        require_tenant(tenant_id)
        require_text(run_id, "run_id", _RUN_ID_AND_STATUS)
        require_text(run_status, "run_status", _RUN_ID_AND_STATUS)
        optional_text(agent_id, "agent_id")
        optional_text(error_code, "error_code")
        optional_text(trace_id, "trace_id")
        optional_text(synthetic_scenario_id, "synthetic_scenario_id")
        started = monotonic()
        result = TransactionResult(run_id)
        try:
            with self.coordinator.transaction() as tx:
                joined = tx.savepoints > 0  # inside the caller's transaction: this call's savepoint
                self._write(tx, result, tenant_id, run_id, run_status, agent_id, error_code,
                            error_message, trace_id, is_synthetic, synthetic_scenario_id, skip_events)
        except Exception as exc:
            reached = result.phase
            result.phase = TransactionPhase.ROLLED_BACK
            raise TransactionFailed(f"Cross-domain transaction failed: {exc}", reached,
                                    result.to_dict(), exc) from exc
        if result.phase is not _ALREADY_COMPLETED:
            result.phase = _JOINED if joined else _COMMITTED
        if not joined:
            result.events_published = list(tx.published_topics)
            if tx.events and len(tx.published_topics) == len(tx.events):
                result.phase = _EVENTS_PUBLISHED
        result.duration_ms = int((monotonic() - started) * 1000)
        return result

    def _write(self, tx, result, tenant_id, run_id, run_status, agent_id, error_code,
               error_message, trace_id, is_synthetic, synthetic_scenario_id, skip_events):
        """The writes of one completion, recording in `result` how far they got (every row and
        result stamped with the transaction's one timestamp). Its own statements run through one
        `statement_runner`, and their driver errors become Peewee's here; a caller's
        `trace_completer` runs outside that, so its errors stay its own."""
        completes_trace = trace_id if self.trace_completer is _OWN_TRACE_COMPLETER else None
        try:
            incident_id, incident_created, completed = self._write_rows(
                tx, result, tenant_id, run_id, run_status, agent_id, error_code, error_message,
                completes_trace, is_synthetic, synthetic_scenario_id)
        except PeeweeException:
            raise  # Peewee's already (a look-up through `execute`; every statement under --debug)
        except Exception:
            with peewee_exceptions:
                raise
        if result.phase is _ALREADY_COMPLETED:
            return
        if trace_id:
            now = tx.now
            if completed is None:  # the caller's completer
                completed = self.trace_completer(tx, tenant_id, trace_id, run_status, incident_id, now)
            if completed:
                result.trace_result = DomainResult("traces", "complete_trace", trace_id, True, None, now)
                result.phase = _TRACE_COMPLETED
            else:
                result.trace_result = DomainResult(
                    "traces", "complete_trace", trace_id, False,
                    f"trace {trace_id} not found for tenant {tenant_id}", now)
        if not skip_events:
            self._write_events(tx, result, run_status, trace_id, tenant_id, incident_created)

    @staticmethod
    def _write_rows(tx, result, tenant_id, run_id, run_status, agent_id, error_code, error_message,
                    trace_id, is_synthetic, synthetic_scenario_id):
        """`_write`'s own statements: the policy evaluation, the incident and, given `trace_id`,
        the trace's completion. Returns (incident id, whether this call created it, whether the
        trace was completed: None when it was not tried here)."""
        db, now, stamp = tx.db, tx.now, tx.now_text
        run = statement_runner(db)
        (policy_sql, _), (incident_sql, _), (count_sql, count_merge), (trace_sql, _) = _statements(db)
        outcome = POLICY_OUTCOMES.get(run_status.lower(), "not_applicable")
        row = (new_ordered_id(), tenant_id, f"policy_eval_{run_id[:8]}", "policies_checked:0", run_id, run_id,
               run_id, outcome, 1.0 if outcome == "no_violation" else 0.0, bool(is_synthetic),
               synthetic_scenario_id, stamp)  # in _INSERT_POLICY's order
        policy_id = _first_column(run(policy_sql, _INSERT_POLICY.row_params(row)))
        if policy_id is None:  # completed before: report what that completion wrote
            policy_id = _first_column(_SELECT_POLICY.execute(db, (tenant_id, row[2], run_id)))
            incident_id = _run_incident(tx, tenant_id, run_id)
            if incident_id is not None:
                result.incident_result = DomainResult("incidents", "create_incident", incident_id, True, None, now)
            result.policy_result = DomainResult("policies", "evaluate_policy", policy_id, True, None, now)
            result.phase = _ALREADY_COMPLETED
            return incident_id, False, None
        incident_id, incident_created = None, False
        if run_status == "failed":  # one incident per failed run
            row = _incident_row(tenant_id, run_id, agent_id, error_code, error_message, is_synthetic,
                                synthetic_scenario_id, stamp)
            incident_id = _first_column(run(incident_sql, _INSERT_INCIDENT.row_params(row)))
            if incident_id is None:  # the run's incident is there already
                incident_id = _run_incident(tx, tenant_id, run_id)
            else:
                run(count_sql, count_merge((run_id, tenant_id)))
                tx.note(tenant_changed(tenant_id))
                incident_created = True
            result.incident_result = DomainResult("incidents", "create_incident", incident_id, True, None, now)
            result.phase = _INCIDENT_CREATED
        result.policy_result = DomainResult("policies", "evaluate_policy", policy_id, True, None, now)
        result.phase = _POLICY_EVALUATED
        completed = None
        if trace_id:  # what complete_trace runs, through the same runner
            completed = run(trace_sql, (run_status, stamp, incident_id, trace_id, tenant_id)).rowcount > 0
        return incident_id, incident_created, completed

    @staticmethod
    def _write_events(tx, result, run_status, trace_id, tenant_id, incident_created):
        """Put the run's events in the outbox (published after commit): constant topics, and a
        tenant `execute` validated."""
        incident_id = result.incident_result.result_id if result.incident_result else None
        policy_id = result.policy_result.result_id
        tx.publish_validated("run.completed", {"run_id": result.run_id, "status": run_status,
                                               "incident_id": incident_id, "policy_id": policy_id,
                                               "trace_id": trace_id}, tenant_id)
        if incident_created:
            tx.publish_validated("incident.created", {"run_id": result.run_id, "incident_id": incident_id,
                                                      "outcome": run_status}, tenant_id)
        tx.publish_validated("policy.evaluated", {"run_id": result.run_id, "policy_id": policy_id,
                                                  "outcome": run_status}, tenant_id)
