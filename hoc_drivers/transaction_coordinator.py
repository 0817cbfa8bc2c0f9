"""Transaction Coordinator for Cross-Domain Writes: the only code that commits.

`TransactionCoordinator(db).transaction()` is the unit of work: BEGIN IMMEDIATE on entry,
COMMIT on normal exit, ROLLBACK on an exception. Nested use joins the outer transaction
through a savepoint. Events go to the `events` outbox inside the transaction and are
published, with the `on_commit` callbacks, only after COMMIT succeeds.
`RunCompletionTransaction` makes a finished run's incident, policy evaluation and trace
completion one atomic write.
"""
import json
import logging
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from functools import lru_cache

from peewee import fn

from .guard_cache import invalidate_tenant_on_commit
from .db import CommitForbidden
from .models.base import PLACEHOLDER, PreparedQuery, in_column_order, new_id, utcnow
from .models.runs import Event, Incident, PreventionRecord, Run, Trace

ACCESS = "READ+WRITE"

log = logging.getLogger(__name__)


class EventPublisher:
    """In-process publisher: subscribers per topic ('*' for all); keeps the recent events."""

    def __init__(self, history=1000):
        self._subscribers = {}
        self.published = deque(maxlen=history)

    def subscribe(self, topic, callback):
        """Call `callback(topic, payload)` for each event of `topic` ('*': every topic)."""
        self._subscribers.setdefault(topic, []).append(callback)

    def publish(self, topic, payload):
        """Deliver one event to its subscribers; a failing subscriber is logged, not raised."""
        self.published.append((topic, payload))
        for callback in self._subscribers.get(topic, []) + self._subscribers.get("*", []):
            try:
                callback(topic, payload)
            except Exception:
                log.exception("event subscriber failed for %s", topic)


class Transaction:
    """The open unit of work handed to drivers: its database, post-commit work and events."""

    def __init__(self, db):
        self.db = db
        self.is_open = True
        self.callbacks = []
        self.events = []
        self.published_topics = []
        self.callback_errors = []

    def on_commit(self, callback):
        """Run `callback()` after COMMIT succeeds; dropped if the transaction rolls back."""
        self.callbacks.append(callback)
        return callback

    def publish(self, topic, payload, tenant_id=None):
        """Add an event to the outbox (written before COMMIT, published after). Returns its id."""
        event_id = new_id()
        self.events.append((event_id, topic, payload, tenant_id, utcnow()))
        return event_id

    def write_outbox(self):
        """Write this transaction's events to the `events` table in one statement."""
        if self.events:
            params = []
            for event_id, topic, payload, tenant_id, created_at in self.events:
                params += (event_id, tenant_id, topic, json.dumps(payload),
                           Event.created_at.db_value(created_at))
            _insert_events(len(self.events)).execute(self.db, params)

    def savepoint(self):
        """A savepoint in this transaction: a failing block undoes only its own writes."""
        return _Savepoint(self)


@lru_cache(maxsize=64)
def _insert_events(count):
    """INSERT of `count` outbox events, built once per count."""
    row = {Event.id: PLACEHOLDER, Event.tenant_id: PLACEHOLDER, Event.topic: PLACEHOLDER,
           Event.payload: PLACEHOLDER, Event.created_at: PLACEHOLDER}
    return PreparedQuery(lambda: Event.insert_many([row] * count))


@lru_cache(maxsize=64)
def _mark_events_published(count):
    """UPDATE setting published_at on `count` events, built once per count."""
    return PreparedQuery(lambda: Event.update({Event.published_at: PLACEHOLDER})
                         .where(Event.id.in_([PLACEHOLDER] * count)))


class _Savepoint:
    """Context manager: SAVEPOINT on entry, RELEASE on success, ROLLBACK TO on an exception."""

    def __init__(self, tx):
        self.tx = tx

    def __enter__(self):
        if not self.tx.is_open:
            raise CommitForbidden("savepoint refused: its transaction has already ended; "
                                  "open a new one with coordinator.transaction()")
        self._marks = (len(self.tx.callbacks), len(self.tx.events))
        self._savepoint = self.tx.db.atomic()
        self._savepoint.__enter__()
        return self.tx

    def __exit__(self, exc_type, exc, tb):
        try:
            self._savepoint.__exit__(exc_type, exc, tb)
        finally:
            if exc_type is not None:
                del self.tx.callbacks[self._marks[0]:]
                del self.tx.events[self._marks[1]:]
        return False


class _TransactionScope:
    """One `with coordinator.transaction()` block: outermost opens the transaction, inner joins."""

    def __init__(self, coordinator):
        self.coordinator = coordinator

    def __enter__(self):
        state = self.coordinator._state
        tx = getattr(state, "tx", None)
        if tx is not None:
            self._inner = _Savepoint(tx)
            return self._inner.__enter__()
        self._inner = None
        db = self.coordinator.db
        self._transaction = db.transaction(lock_type="IMMEDIATE")  # outermost: BEGIN IMMEDIATE
        self._transaction.__enter__()
        tx = state.tx = Transaction(db)
        try:
            self.coordinator._mark_published(tx)
        except BaseException:
            state.tx = None
            self._transaction.__exit__(*sys.exc_info())
            raise
        return tx

    def __exit__(self, exc_type, exc, tb):
        if self._inner is not None:
            return self._inner.__exit__(exc_type, exc, tb)
        state = self.coordinator._state
        tx = state.tx
        state.tx = None
        tx.is_open = False
        if exc_type is None:
            try:
                tx.write_outbox()
            except BaseException:
                self._transaction.__exit__(*sys.exc_info())
                raise
        self._transaction.__exit__(exc_type, exc, tb)
        if exc_type is None:
            self.coordinator._after_commit(tx)
        return False


class TransactionCoordinator:
    """The sole commit authority over one database."""

    def __init__(self, db, publisher=None):
        self.db = db
        self.publisher = publisher or EventPublisher()
        self._state = _thread_state(db)
        self._published_lock = threading.Lock()
        self._published_unmarked = []

    def transaction(self):
        """Open (or join) the unit of work: `with coordinator.transaction() as tx: ...`."""
        return _TransactionScope(self)

    def current(self):
        """The transaction open in this thread, or None."""
        return getattr(self._state, "tx", None)

    def _after_commit(self, tx):
        """Publish the committed events, then run the callbacks; failures are logged."""
        for event_id, topic, payload, _, _ in tx.events:
            try:
                self.publisher.publish(topic, payload)
            except Exception as exc:
                log.exception("publishing %s failed", topic)
                tx.callback_errors.append(exc)
                continue
            tx.published_topics.append(topic)
            with self._published_lock:
                self._published_unmarked.append(event_id)
        for callback in tx.callbacks:
            try:
                callback()
            except Exception as exc:
                log.exception("post-commit callback failed")
                tx.callback_errors.append(exc)

    def _mark_published(self, tx):
        """Inside a new transaction, record the events published after earlier commits."""
        with self._published_lock:
            ids, self._published_unmarked = self._published_unmarked, []
        if ids:
            _mark_events_published(len(ids)).execute(
                tx.db, [Event.published_at.db_value(utcnow()), *ids])

    def flush_outbox(self):
        """Mark published events and publish every event left unpublished (e.g. by a crash)."""
        with self.transaction():
            pending = list(Event.select().where(Event.published_at.is_null()).order_by(Event.created_at))
        for event in pending:
            if event.id not in self._published_unmarked:
                self.publisher.publish(event.topic, event.payload)
                with self._published_lock:
                    self._published_unmarked.append(event.id)
        with self.transaction():
            pass
        return len(pending)


def open_transaction(db):
    """The coordinator transaction open on `db` in this thread, or None."""
    return getattr(getattr(db, "_hoc_transaction_state", None), "tx", None)


def _thread_state(db):
    """The per-thread open-transaction slot of `db`, shared by all its coordinators."""
    state = getattr(db, "_hoc_transaction_state", None)
    if state is None:
        state = db._hoc_transaction_state = threading.local()
    return state


# ---------------------------------------------------------------------------------------
# Run completion


class TransactionPhase(str, Enum):
    """How far a run-completion transaction got."""

    NOT_STARTED = "NOT_STARTED"
    INCIDENT_CREATED = "INCIDENT_CREATED"
    POLICY_EVALUATED = "POLICY_EVALUATED"
    TRACE_COMPLETED = "TRACE_COMPLETED"
    COMMITTED = "COMMITTED"
    EVENTS_PUBLISHED = "EVENTS_PUBLISHED"
    ROLLED_BACK = "ROLLED_BACK"
    FAILED = "FAILED"


class TransactionFailed(Exception):
    """A run-completion transaction rolled back; nothing of it was written."""

    def __init__(self, message, phase, partial_results=None, cause=None):
        super().__init__(message)
        self.phase = phase
        self.partial_results = partial_results or {}
        self.cause = cause


@dataclass
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


@dataclass
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
        """True once committed."""
        return self.phase in (TransactionPhase.COMMITTED, TransactionPhase.EVENTS_PUBLISHED)

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
    return next((code for code in FAILURE_CODES if code in haystack), "UNKNOWN")


_INCIDENT_FIELDS = in_column_order(Incident, (
    "id", "tenant_id", "title", "severity", "status", "trigger_type", "category", "description",
    "source_type", "source_run_id", "impact_scope", "affected_agent_id", "error_code",
    "error_message", "started_at", "created_at", "updated_at", "is_synthetic",
    "synthetic_scenario_id"))
_POLICY_FIELDS = in_column_order(PreventionRecord, (
    "id", "tenant_id", "policy_id", "pattern_id", "original_incident_id",
    "blocked_incident_id", "run_id", "outcome", "signature_match_confidence",
    "is_synthetic", "synthetic_scenario_id", "created_at"))


def _prepared_insert(model, names):
    """INSERT OR IGNORE of `names` RETURNING id, built once (values in column order)."""
    return PreparedQuery(lambda: model.insert({getattr(model, n): PLACEHOLDER for n in names})
                         .on_conflict_ignore().returning(model.id))


_INSERT_INCIDENT = _prepared_insert(Incident, _INCIDENT_FIELDS)
_INSERT_POLICY = _prepared_insert(PreventionRecord, _POLICY_FIELDS)
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


def _first_column(cursor):
    row = cursor.fetchone()
    return row[0] if row else None


def _create_run_incident(db, run_id, tenant_id, agent_id, error_code, error_message,
                         is_synthetic, synthetic_scenario_id, now):
    """One incident per failed run; returns (incident_id, created)."""
    code = classify_failure(error_code, error_message)
    row = {"id": new_id(), "tenant_id": tenant_id,
           "title": f"{FAILURE_TITLE.get(code, 'Run Failed')}: Run {run_id[:8]}...",
           "severity": FAILURE_SEVERITY.get(code, "medium"), "status": "open",
           "trigger_type": "run_failure", "category": FAILURE_CATEGORY.get(code, "EXECUTION_FAILURE"),
           "description": f"Run {run_id} failed with error: {code}", "source_type": "run",
           "source_run_id": run_id, "impact_scope": "single_run", "affected_agent_id": agent_id,
           "error_code": code, "error_message": error_message, "started_at": now,
           "created_at": now, "updated_at": now, "is_synthetic": bool(is_synthetic),
           "synthetic_scenario_id": synthetic_scenario_id}
    incident_id = _first_column(_INSERT_INCIDENT.execute(db, _db_values(Incident, row, _INCIDENT_FIELDS)))
    if incident_id is not None:
        _COUNT_RUN_INCIDENT.execute(db, (run_id, tenant_id))
        return incident_id, True
    return _first_column(_SELECT_RUN_INCIDENT.execute(db, (tenant_id, run_id))), False


def _create_policy_evaluation(db, run_id, tenant_id, run_status, is_synthetic,
                              synthetic_scenario_id, now):
    """One policy evaluation per run; returns its id."""
    outcome = POLICY_OUTCOMES.get(run_status.lower(), "not_applicable")
    policy_id = f"policy_eval_{run_id[:8]}"
    row = {"id": new_id(), "tenant_id": tenant_id, "policy_id": policy_id,
           "pattern_id": "policies_checked:0", "original_incident_id": run_id,
           "blocked_incident_id": run_id, "run_id": run_id, "outcome": outcome,
           "signature_match_confidence": 1.0 if outcome == "no_violation" else 0.0,
           "is_synthetic": bool(is_synthetic), "synthetic_scenario_id": synthetic_scenario_id,
           "created_at": now}
    inserted = _first_column(_INSERT_POLICY.execute(db, _db_values(PreventionRecord, row, _POLICY_FIELDS)))
    if inserted is not None:
        return inserted
    return _first_column(_SELECT_POLICY.execute(db, (tenant_id, policy_id, run_id)))


def _db_values(model, row, names):
    """The row's values in `names` order, converted by each field's db_value."""
    fields = model._meta.fields
    return [fields[n].db_value(row[n]) for n in names]


def complete_trace(db, trace_id, tenant_id, run_status, incident_id, now):
    """Mark the tenant's trace completed; False when there is no such trace."""
    cursor = _COMPLETE_TRACE.execute(db, (run_status, Trace.completed_at.db_value(now),
                                          incident_id, trace_id, tenant_id))
    return cursor.rowcount > 0


class RunCompletionTransaction:
    """A finished run's incident + policy evaluation + trace completion, committed together."""

    def __init__(self, coordinator=None, publisher=None, trace_completer=complete_trace, db=None):
        if coordinator is None:
            if db is None:
                from .db import open_database
                db = open_database()
            coordinator = TransactionCoordinator(db, publisher)
        self.coordinator = coordinator
        self.trace_completer = trace_completer

    def execute(self, run_id, tenant_id, run_status, agent_id=None, error_code=None,
                error_message=None, trace_id=None, is_synthetic=False,
                synthetic_scenario_id=None, skip_events=False):
        """Write the run's governance records atomically, then publish its events."""
        if not isinstance(tenant_id, str) or not tenant_id.strip():
            raise ValueError(f"tenant_id is required (a non-empty string), got {tenant_id!r}")
        if not all(isinstance(value, str) and value.strip() for value in (run_id, run_status)):
            raise ValueError(f"run_id and run_status are required (non-empty strings), "
                             f"got {run_id!r} and {run_status!r}")
        for name, value in (("agent_id", agent_id), ("error_code", error_code),
                            ("trace_id", trace_id), ("synthetic_scenario_id", synthetic_scenario_id)):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"{name} must be a non-empty string or None, got {value!r}")
        started = utcnow()
        result = TransactionResult(run_id=run_id)
        incident_created = False
        try:
            with self.coordinator.transaction() as tx:
                now = utcnow()
                if run_status == "failed":
                    incident_id, incident_created = _create_run_incident(
                        tx.db, run_id, tenant_id, agent_id, error_code, error_message,
                        is_synthetic, synthetic_scenario_id, now)
                    if incident_created:
                        invalidate_tenant_on_commit(tx, tenant_id)
                    result.incident_result = DomainResult("incidents", "create_incident",
                                                          incident_id, True)
                    result.phase = TransactionPhase.INCIDENT_CREATED
                policy_id = _create_policy_evaluation(tx.db, run_id, tenant_id, run_status,
                                                      is_synthetic, synthetic_scenario_id, now)
                result.policy_result = DomainResult("policies", "evaluate_policy", policy_id, True)
                result.phase = TransactionPhase.POLICY_EVALUATED
                if trace_id:
                    incident_id = result.incident_result and result.incident_result.result_id
                    if self.trace_completer(tx.db, trace_id, tenant_id, run_status, incident_id, now):
                        result.trace_result = DomainResult("traces", "complete_trace", trace_id, True)
                        result.phase = TransactionPhase.TRACE_COMPLETED
                    else:
                        result.trace_result = DomainResult(
                            "traces", "complete_trace", trace_id, False,
                            f"trace {trace_id} not found for tenant {tenant_id}")
                if not skip_events:
                    self._write_events(tx, result, run_status, trace_id, tenant_id,
                                       incident_created)
        except Exception as exc:
            reached = result.phase
            result.phase = TransactionPhase.ROLLED_BACK
            raise TransactionFailed(f"Cross-domain transaction failed: {exc}", reached,
                                    result.to_dict(), exc) from exc
        result.phase = TransactionPhase.COMMITTED
        result.events_published = list(tx.published_topics)
        if not skip_events and len(tx.published_topics) == len(tx.events):
            result.phase = TransactionPhase.EVENTS_PUBLISHED
        result.duration_ms = int((utcnow() - started).total_seconds() * 1000)
        return result

    @staticmethod
    def _write_events(tx, result, run_status, trace_id, tenant_id, incident_created):
        """Put the run's events in the outbox (published after commit)."""
        incident_id = result.incident_result.result_id if result.incident_result else None
        policy_id = result.policy_result.result_id
        tx.publish("run.completed", {"run_id": result.run_id, "status": run_status,
                                     "incident_id": incident_id, "policy_id": policy_id,
                                     "trace_id": trace_id}, tenant_id)
        if incident_created:
            tx.publish("incident.created", {"run_id": result.run_id, "incident_id": incident_id,
                                            "outcome": run_status}, tenant_id)
        tx.publish("policy.evaluated", {"run_id": result.run_id, "policy_id": policy_id,
                                        "outcome": run_status}, tenant_id)


_default_coordinator = None
_default_lock = threading.Lock()


def get_transaction_coordinator():
    """The process-wide run-completion transaction over the default database (opened lazily)."""
    global _default_coordinator
    with _default_lock:
        if _default_coordinator is None:
            _default_coordinator = RunCompletionTransaction()
        return _default_coordinator


def create_transaction_coordinator(publisher=None, db=None):
    """A fresh run-completion transaction with its own publisher."""
    return RunCompletionTransaction(publisher=publisher, db=db)
