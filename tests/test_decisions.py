"""Decision records: emission rules, outcome maps, idempotency, the transaction rule, CARE guards."""
import logging
import multiprocessing
from datetime import datetime, timezone
from typing import Callable, NamedTuple

import pytest

from hoc_drivers import decisions as d
from hoc_drivers.audit import audit_package
from hoc_drivers.db import connect_database
from hoc_drivers.models.decisions import DecisionRecordRow, PolicyDecision
from hoc_drivers.models.runs import Run
from hoc_drivers.transaction_coordinator import TransactionCoordinator
from hoc_drivers.testing import other_connection, run_at_once

T = "tenant-a"


def rows(coordinator, tenant_id=T, **filters):
    return [r.to_dict() for r in d.list_decisions(coordinator.db, tenant_id, **filters)]


def in_own_transaction(coordinator, write, *args, **kwargs):
    with coordinator.transaction() as tx:
        return write(tx, *args, **kwargs)


def mirror_rows(db):
    return {p.id: (p.tenant_id, p.policy_type, p.decision, p.rationale)
            for p in PolicyDecision.select().execute(db)}


# ---------------------------------------------------------------------------------------
# Every emitter's emit / don't-emit rule and outcome map, one row per case


class Case(NamedTuple):
    name: str
    emitter: Callable
    kwargs: dict
    expected: dict | None          # a subset of to_dict(); None: nothing is emitted
    before: Callable | None = None


ROUTING = dict(run_id="run-1", eligible_agents=["agent-a", "agent-b"], tenant_id=T)
RECOVERY = dict(run_id="run-1", tenant_id=T)
MEMORY = dict(run_id="run-1", tenant_id=T)
POLICY = dict(run_id="run-1", policy_id="pol-1", tenant_id=T)
BUDGET = dict(run_id="run-1", tenant_id=T)
PRECHECK = dict(request_id="req-1", tenant_id=T)
RECOVERY_EVAL = dict(run_id="run-1", request_id="req-1", tenant_id=T)
CARE = dict(request_id="req-1", baseline_agent="agent-a", optimized_agent="agent-b",
            signals_used=["latency_p50", "success_rate"], tenant_id=T)

CASES = [
    # routing: selected / rejected / none (always emits; pre_run by default)
    Case("routing selected", d.emit_routing_decision,
         dict(ROUTING, routed=True, selected_agent="agent-a"),
         dict(decision_type="routing", decision_trigger="explicit", decision_outcome="selected",
              decision_reason="Selected agent-a", causal_role="pre_run",
              decision_inputs={"eligible_agents": ["agent-a", "agent-b"], "agents_count": 2},
              details={})),
    Case("routing rejected", d.emit_routing_decision,
         dict(ROUTING, routed=False, selected_agent=None, rejection_reason="no capacity"),
         dict(decision_outcome="rejected", decision_reason="no capacity")),
    Case("routing none (not routed, no reason)", d.emit_routing_decision,
         dict(ROUTING, routed=False, selected_agent=None),
         dict(decision_outcome="none", decision_reason=None)),
    Case("routing none (routed without an agent)", d.emit_routing_decision,
         dict(ROUTING, routed=True, selected_agent=None, details={"hint": 1}),
         dict(decision_outcome="none", decision_reason="Selected None", details={"hint": 1})),
    # recovery
    Case("recovery skipped", d.emit_recovery_decision,
         dict(RECOVERY, evaluated=False, triggered=False),
         dict(decision_type="recovery", decision_trigger="reactive", decision_outcome="skipped",
              decision_reason="Recovery not evaluated (success path)", causal_role="in_run",
              decision_inputs={"evaluated": False, "candidates_count": 0}, details={})),
    Case("recovery selected", d.emit_recovery_decision,
         dict(RECOVERY, evaluated=True, triggered=True, action="retry", candidates_count=2),
         dict(decision_outcome="selected", decision_reason="Recovery action: retry",
              details={"action": "retry"})),
    Case("recovery none", d.emit_recovery_decision,
         dict(RECOVERY, evaluated=True, triggered=False),
         dict(decision_outcome="none", decision_reason="Recovery evaluated but not triggered")),
    Case("recovery caller reason wins", d.emit_recovery_decision,
         dict(RECOVERY, evaluated=False, triggered=False, reason="operator said no"),
         dict(decision_outcome="skipped", decision_reason="operator said no")),
    # memory
    Case("memory skipped", d.emit_memory_decision,
         dict(MEMORY, queried=False, matched=False, injected=False),
         dict(decision_type="memory", decision_trigger="explicit", decision_outcome="skipped",
              decision_reason="Memory not queried (injection disabled)", causal_role="in_run",
              decision_inputs={"queried": False, "matched": False, "injected": False})),
    Case("memory none", d.emit_memory_decision,
         dict(MEMORY, queried=True, matched=False, injected=False),
         dict(decision_outcome="none", decision_reason="Memory queried but no matches")),
    Case("memory selected", d.emit_memory_decision,
         dict(MEMORY, queried=True, matched=True, injected=True, sources=["kb", "chat"]),
         dict(decision_outcome="selected", decision_reason="Memory injected from 2 sources",
              details={"sources": ["kb", "chat"]})),
    Case("memory blocked", d.emit_memory_decision,
         dict(MEMORY, queried=True, matched=True, injected=False),
         dict(decision_outcome="blocked", decision_reason="Memory matched but injection blocked")),
    # policy
    Case("policy skipped", d.emit_policy_decision,
         dict(POLICY, evaluated=False, violated=False),
         dict(decision_type="policy", decision_trigger="explicit", decision_outcome="skipped",
              decision_reason="Policy pol-1: warning", causal_role="in_run",
              decision_inputs={"policy_id": "pol-1", "severity": "warning"},
              details={"violated": False, "severity": "warning"})),
    Case("policy blocked (violated, severity error)", d.emit_policy_decision,
         dict(POLICY, evaluated=True, violated=True, severity="error"),
         dict(decision_outcome="blocked", decision_reason="Policy pol-1: error")),
    Case("policy rejected (violated, other severity)", d.emit_policy_decision,
         dict(POLICY, evaluated=True, violated=True, severity="ERROR"),
         dict(decision_outcome="rejected")),
    Case("policy selected", d.emit_policy_decision,
         dict(POLICY, evaluated=True, violated=False, reason="clean"),
         dict(decision_outcome="selected", decision_reason="clean")),
    # budget
    Case("budget blocked (hard, exceeded)", d.emit_budget_decision,
         dict(BUDGET, budget_requested=150, budget_available=100, enforcement="hard",
              proceeded=True),
         dict(decision_type="budget", decision_trigger="explicit", decision_outcome="blocked",
              decision_reason="Budget exceeded: 150 > 100 (hard limit)", causal_role="pre_run",
              decision_inputs={"budget_requested": 150, "budget_available": 100,
                               "enforcement": "hard"},
              details={"exceeded": True, "simulation_feasible": None, "proceeded": True})),
    Case("budget rejected (exceeded, not proceeded)", d.emit_budget_decision,
         dict(BUDGET, budget_requested=150, budget_available=100, proceeded=False),
         dict(decision_outcome="rejected", decision_reason="Budget exceeded: 150 > 100")),
    Case("budget selected (exceeded, proceeded)", d.emit_budget_decision,
         dict(BUDGET, budget_requested=150, budget_available=100),
         dict(decision_outcome="selected",
              decision_reason="Budget exceeded but proceeded (advisory): 150 > 100")),
    Case("budget selected (within limits, equal)", d.emit_budget_decision,
         dict(BUDGET, budget_requested=100, budget_available=100, enforcement="hard"),
         dict(decision_outcome="selected", decision_reason="Budget within limits: 100 <= 100")),
    # budget enforcement (5A)
    Case("budget enforcement halts", d.emit_budget_enforcement_decision,
         dict(run_id="run-1", budget_limit_cents=100, budget_consumed_cents=110,
              step_cost_cents=10, completed_steps=3, total_steps=5, tenant_id=T),
         dict(decision_type="budget_enforcement", decision_source="system",
              decision_trigger="reactive", decision_outcome="execution_halted",
              causal_role="in_run", request_id=None, run_id="run-1",
              decision_reason="Hard budget limit reached: 110c consumed >= 100c limit",
              decision_inputs={"budget_limit_cents": 100, "budget_consumed_cents": 110,
                               "step_cost_cents": 10, "completed_steps": 3, "total_steps": 5},
              details={"enforcement_mode": "hard", "halt_point": "after_step_3",
                       "remaining_steps": 2})),
    # policy pre-check (5B): iff strict and (failed or unavailable)
    Case("precheck advisory failed: nothing", d.emit_policy_precheck_decision,
         dict(PRECHECK, posture="advisory", passed=False, service_available=False), None),
    Case("precheck Strict (case matters): nothing", d.emit_policy_precheck_decision,
         dict(PRECHECK, posture="Strict", passed=False, service_available=True), None),
    Case("precheck strict passed and available: nothing", d.emit_policy_precheck_decision,
         dict(PRECHECK, posture="strict", passed=True, service_available=True), None),
    Case("precheck strict failed", d.emit_policy_precheck_decision,
         dict(PRECHECK, posture="strict", passed=False, service_available=True,
              violations=["DENY_ALL: Request denied by policy", "PII"]),
         dict(decision_type="policy_pre_check", decision_trigger="explicit",
              decision_outcome="policy_blocked", causal_role="pre_run", run_id=None,
              request_id="req-1",
              decision_reason="Policy pre-check failed: DENY_ALL: Request denied by policy, PII",
              decision_inputs={"posture": "strict", "service_available": True,
                               "violations": ["DENY_ALL: Request denied by policy", "PII"]},
              details={"posture": "strict", "blocked": True, "passed": False,
                       "service_available": True})),
    Case("precheck strict failed, no violations", d.emit_policy_precheck_decision,
         dict(PRECHECK, posture="strict", passed=False, service_available=True),
         dict(decision_outcome="policy_blocked",
              decision_reason="Policy pre-check failed: Unknown violation")),
    Case("precheck strict unavailable", d.emit_policy_precheck_decision,
         dict(PRECHECK, posture="strict", passed=False, service_available=False),
         dict(decision_outcome="policy_unavailable",
              decision_reason="Policy service unavailable (strict mode blocks execution)")),
    Case("precheck strict passed but unavailable", d.emit_policy_precheck_decision,
         dict(PRECHECK, posture="strict", passed=True, service_available=False),
         dict(decision_outcome="policy_unavailable")),
    # recovery evaluation (5C): R1 / R2 with an action, else skipped
    Case("recovery evaluation R1", d.emit_recovery_evaluation_decision,
         dict(RECOVERY_EVAL, recovery_class="R1", recovery_action="retry_same_request",
              failure_type="network_timeout", failure_context={"attempt": 1}),
         dict(decision_type="recovery_evaluation", decision_trigger="reactive",
              decision_outcome="recovery_applied", causal_role="post_run", run_id="run-1",
              request_id="req-1",
              decision_reason="R1: Auto-recovery applied - retry_same_request",
              decision_inputs={"recovery_class": "R1", "recovery_action": "retry_same_request",
                               "failure_type": "network_timeout"},
              details={"failure_context": {"attempt": 1}, "recovery_bounded": True,
                       "requires_approval": False})),
    Case("recovery evaluation R2", d.emit_recovery_evaluation_decision,
         dict(RECOVERY_EVAL, recovery_class="R2", recovery_action="suggest_alternative_tool",
              failure_type="tool_failure"),
         dict(decision_outcome="recovery_suggested",
              decision_reason="R2: Recovery suggested (requires approval) - suggest_alternative_tool",
              details={"failure_context": {}, "recovery_bounded": False,
                       "requires_approval": True})),
    Case("recovery evaluation R3", d.emit_recovery_evaluation_decision,
         dict(RECOVERY_EVAL, recovery_class="R3", recovery_action=None,
              failure_type="policy_violation"),
         dict(decision_outcome="recovery_skipped",
              decision_reason="R3: Recovery skipped - policy_violation")),
    Case("recovery evaluation R1 without an action", d.emit_recovery_evaluation_decision,
         dict(RECOVERY_EVAL, recovery_class="R1", recovery_action=None,
              failure_type="budget_exhausted"),
         dict(decision_outcome="recovery_skipped",
              details={"failure_context": {}, "recovery_bounded": True,
                       "requires_approval": False})),
    Case("recovery evaluation unknown class (lower case)", d.emit_recovery_evaluation_decision,
         dict(RECOVERY_EVAL, recovery_class="r1", recovery_action="retry",
              failure_type="unknown_failure"),
         dict(decision_outcome="recovery_skipped")),
    # CARE optimisation (5D): gates in order, each silent
    Case("care kill switch on: nothing", d.emit_care_optimization_decision,
         dict(CARE, confidence_score=0.9), None, before=d.activate_care_kill_switch),
    Case("care disabled: nothing", d.emit_care_optimization_decision,
         dict(CARE, confidence_score=0.9, optimization_enabled=False), None),
    Case("care shadow mode: nothing", d.emit_care_optimization_decision,
         dict(CARE, confidence_score=0.9, shadow_mode=True), None),
    Case("care low confidence: nothing", d.emit_care_optimization_decision,
         dict(CARE, confidence_score=0.30), None),
    Case("care same agent: nothing", d.emit_care_optimization_decision,
         dict(CARE, confidence_score=0.85, optimized_agent="agent-a"), None),
    Case("care confidence exactly 0.50 passes", d.emit_care_optimization_decision,
         dict(CARE, confidence_score=0.50), dict(decision_outcome="optimized_selected")),
    Case("care optimised", d.emit_care_optimization_decision,
         dict(CARE, confidence_score=0.85),
         dict(decision_type="care_routing_optimized", decision_trigger="autonomous",
              decision_outcome="optimized_selected", causal_role="pre_run", run_id=None,
              decision_reason="Optimization selected agent-b over baseline agent-a",
              decision_inputs={"baseline_agent": "agent-a", "optimized_agent": "agent-b",
                               "confidence_score": 0.85,
                               "signals_used": ["latency_p50", "success_rate"]},
              details={"baseline_agent": "agent-a", "optimized_agent": "agent-b",
                       "confidence_score": 0.85,
                       "signals_used": ["latency_p50", "success_rate"]})),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_emission_rule_and_outcome(hoc_coordinator, case):
    if case.before:
        in_own_transaction(hoc_coordinator, case.before)
    record = in_own_transaction(hoc_coordinator, case.emitter, **case.kwargs)
    stored = rows(hoc_coordinator)
    if case.expected is None:
        assert record is None
        assert stored == []
        return
    written = record.to_dict()
    assert {k: written[k] for k in case.expected} == case.expected
    assert written["decision_source"] == "system" and written["tenant_id"] == T
    assert stored == [written]  # what was returned is exactly what was stored


@pytest.mark.parametrize("emit, outcome, mirrored", [
    (lambda tx: d.emit_policy_decision(tx, T, "run-1", "pol-1", True, False), "selected", "allowed"),
    (lambda tx: d.emit_policy_decision(tx, T, "run-1", "pol-1", False, False), "skipped", "denied"),
    (lambda tx: d.emit_policy_decision(tx, T, "run-1", "pol-1", True, True, "error"), "blocked", "denied"),
    (lambda tx: d.emit_budget_decision(tx, T, "run-1", 10, 100), "selected", "allowed"),
    (lambda tx: d.emit_budget_decision(tx, T, "run-1", 150, 100, "hard"), "blocked", "denied"),
    (lambda tx: d.emit_budget_enforcement_decision(tx, T, "run-1", 100, 110, 10, 3, 5),
     "execution_halted", "denied"),
    (lambda tx: d.emit_policy_precheck_decision(tx, T, "req-1", "strict", False, True),
     "policy_blocked", "denied"),
    (lambda tx: d.emit_routing_decision(tx, T, "run-1", True, "a", ["a"]), "selected", None),
    (lambda tx: d.emit_memory_decision(tx, T, "run-1", True, True, True), "selected", None),
    (lambda tx: d.emit_recovery_evaluation_decision(tx, T, "run-1", "req-1", "R1", "retry", "x"),
     "recovery_applied", None),
])
def test_policy_like_types_are_mirrored_to_policy_decisions(hoc_coordinator, hoc_db, emit,
                                                             outcome, mirrored):
    record = in_own_transaction(hoc_coordinator, emit)
    assert record.decision_outcome.value == outcome
    expected = {} if mirrored is None else {record.decision_id: (
        T, record.decision_type.value, mirrored, record.decision_reason)}
    assert mirror_rows(hoc_db) == expected


def test_emit_policy_decision_takes_extra_details_for_dag_runs(hoc_coordinator):
    record = in_own_transaction(
        hoc_coordinator, d.emit_policy_decision, T, None, "fixtures/policies/safety.plang", True, True,
        severity="error", reason="PLang final action: deny", request_id="exec_0123456789abcdef",
        details={"final_action": "deny", "violated": "ignored"})
    assert record.decision_outcome is d.DecisionOutcome.BLOCKED
    assert rows(hoc_coordinator, request_id="exec_0123456789abcdef")[0]["details"] == {
        "final_action": "deny", "violated": True, "severity": "error"}


# ---------------------------------------------------------------------------------------
# The record itself


def test_decision_record_defaults_and_to_dict():
    before = datetime.now(timezone.utc)
    record = d.DecisionRecord(decision_type="budget_enforcement", decision_source="system",
                              decision_trigger="reactive", decision_outcome="execution_halted",
                              run_id="test-run-id")
    assert before <= record.decided_at <= datetime.now(timezone.utc)
    assert len(record.decision_id) == 32 and int(record.decision_id, 16) >= 0
    assert record.causal_role is d.CausalRole.IN_RUN and record.tenant_id == "default"
    assert record.decision_type is d.DecisionType.BUDGET_ENFORCEMENT
    data = record.to_dict()
    assert list(data) == ["decision_id", "decision_type", "decision_source", "decision_trigger",
                          "decision_inputs", "decision_outcome", "decision_reason", "run_id",
                          "workflow_id", "tenant_id", "request_id", "causal_role",
                          "decided_at", "details"]
    assert data["decided_at"].endswith("+00:00") and data["decision_outcome"] == "execution_halted"


def test_naive_decided_at_is_taken_as_utc():
    record = d.DecisionRecord(decision_type="routing", decision_source="human",
                              decision_trigger="explicit", decision_outcome="none",
                              decided_at=datetime(2026, 1, 2, 3, 4, 5))
    assert record.decided_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def test_every_enum_has_the_specified_values():
    assert [m.value for m in d.DecisionType] == [
        "routing", "recovery", "memory", "policy", "budget", "budget_enforcement",
        "policy_pre_check", "recovery_evaluation", "care_routing_optimized"]
    assert [m.value for m in d.DecisionSource] == ["human", "system", "hybrid"]
    assert [m.value for m in d.DecisionTrigger] == ["explicit", "autonomous", "reactive"]
    assert [m.value for m in d.DecisionOutcome] == [
        "selected", "rejected", "skipped", "blocked", "none", "execution_halted",
        "policy_blocked", "policy_unavailable", "recovery_applied", "recovery_suggested",
        "recovery_skipped", "baseline_selected", "optimized_selected"]
    assert [m.value for m in d.CausalRole] == ["pre_run", "in_run", "post_run"]


@pytest.mark.parametrize("call, message", [
    (lambda tx: d.DecisionRecordService(tx).emit(d.DecisionRecord(
        decision_type="routing", decision_source="robot", decision_trigger="explicit",
        decision_outcome="none")), "decision_source: unknown value 'robot'"),
    (lambda tx: d.emit_routing_decision(tx, T, "run-1", True, "a", ["a"],
                                        details={"when": object()}), "details is not JSON"),
    (lambda tx: d.emit_recovery_evaluation_decision(tx, T, "run-1", "req-1", "R1", "retry", "x",
                                                    failure_context={"bad": {1, 2}}),
     "details is not JSON"),
    (lambda tx: d.emit_routing_decision(tx, T, "run-1", True, "a", ["a"],
                                        causal_role="later"), "causal_role: unknown value"),
    (lambda tx: d.emit_memory_decision(tx, "", "run-1", True, True, True),
     "tenant_id must be a non-empty string"),
    (lambda tx: d.emit_budget_enforcement_decision(tx, T, None, 1, 2, 1, 1, 2),
     "run_id is required"),
    (lambda tx: d.emit_policy_precheck_decision(tx, T, "", "strict", False, True),
     "request_id is required"),
    (lambda tx: d.list_decisions(tx.db, T, decision_type="nope"), "decision_type: unknown value"),
])
def test_invalid_input_is_a_value_error_at_call_time_and_writes_nothing(hoc_coordinator, call,
                                                                        message):
    with pytest.raises(ValueError, match=message):
        in_own_transaction(hoc_coordinator, call)
    assert DecisionRecordRow.select().count(hoc_coordinator.db) == 0


# ---------------------------------------------------------------------------------------
# Once-only emitters


ONCE_ONLY = {
    "budget_enforcement": lambda tx, tenant=T: d.emit_budget_enforcement_decision(
        tx, tenant, "run-1", 100, 110, 10, 3, 5),
    "policy_pre_check": lambda tx, tenant=T: d.emit_policy_precheck_decision(
        tx, tenant, "req-1", "strict", False, True, ["DENY_ALL"]),
    "recovery_evaluation": lambda tx, tenant=T: d.emit_recovery_evaluation_decision(
        tx, tenant, "run-1", "req-1", "R1", "retry_same_request", "network_timeout"),
    "care_routing_optimized": lambda tx, tenant=T: d.emit_care_optimization_decision(
        tx, tenant, "req-1", "agent-a", "agent-b", 0.85, ["latency_p50"]),
}


@pytest.mark.parametrize("name", ONCE_ONLY)
def test_once_only_emitter_called_twice_writes_one_row(hoc_coordinator, name):
    first = in_own_transaction(hoc_coordinator, ONCE_ONLY[name])
    second = in_own_transaction(hoc_coordinator, ONCE_ONLY[name])
    other_tenant = in_own_transaction(hoc_coordinator, ONCE_ONLY[name], "tenant-b")
    assert first is not None and second is None and other_tenant is not None
    assert [r["decision_id"] for r in rows(hoc_coordinator)] == [first.decision_id]
    assert len(rows(hoc_coordinator, "tenant-b")) == 1


def _emit_in_child(path, name, results, barrier):
    db = connect_database(path)
    coordinator = TransactionCoordinator(db)
    barrier.wait()
    record = in_own_transaction(coordinator, ONCE_ONLY[name])
    results.put(record is not None)
    db.close()


@pytest.mark.parametrize("name", ONCE_ONLY)
def test_once_only_emitter_from_four_processes_at_once_writes_one_row(hoc_db, hoc_coordinator,
                                                                     name):
    results = multiprocessing.get_context("fork").Queue()
    assert run_at_once(_emit_in_child, hoc_db.database, name, results) == [0, 0, 0, 0]
    assert sorted(results.get(timeout=5) for _ in range(4)) == [False, False, False, True]
    assert len(rows(hoc_coordinator)) == 1


def test_precheck_blocked_and_unavailable_are_separate_keys(hoc_coordinator):
    precheck = d.emit_policy_precheck_decision
    assert in_own_transaction(hoc_coordinator, precheck, T, "req-1", "strict", False, True)
    assert in_own_transaction(hoc_coordinator, precheck, T, "req-1", "strict", False, False)
    assert in_own_transaction(hoc_coordinator, precheck, T, "req-1", "strict", True, False) is None
    assert [r["decision_outcome"] for r in rows(hoc_coordinator, request_id="req-1")] == [
        "policy_blocked", "policy_unavailable"]


def test_recovery_evaluations_of_one_run_keep_their_order(hoc_coordinator):
    for cls, action, failure in [("R1", "retry_same_request", "network_timeout"),
                                 ("R2", "suggest_manual_intervention", "network_timeout_persistent"),
                                 ("R3", None, "recovery_failure"),
                                 ("R1", "retry_same_request", "network_timeout")]:
        in_own_transaction(hoc_coordinator, d.emit_recovery_evaluation_decision, T, "run-1", "req-1",
                           cls, action, failure)
    stored = rows(hoc_coordinator, run_id="run-1", decision_type="recovery_evaluation")
    assert [r["decision_outcome"] for r in stored] == [
        "recovery_applied", "recovery_suggested", "recovery_skipped"]
    assert {r["causal_role"] for r in stored} == {"post_run"}


# ---------------------------------------------------------------------------------------
# The transaction rule


def test_decision_in_a_rolled_back_transaction_is_gone(hoc_coordinator):
    with pytest.raises(RuntimeError):
        with hoc_coordinator.transaction() as tx:
            assert d.emit_routing_decision(tx, T, "run-1", True, "a", ["a"])
            assert d.emit_budget_enforcement_decision(tx, T, "run-1", 1, 2, 1, 1, 2)
            assert len(rows(hoc_coordinator)) == 2  # visible inside the caller's transaction
            raise RuntimeError("caller fails")
    assert rows(hoc_coordinator) == []
    assert mirror_rows(hoc_coordinator.db) == {}
    # the once-only key went with it: the run can be halted for real now
    assert in_own_transaction(hoc_coordinator, d.emit_budget_enforcement_decision, T, "run-1", 1, 2, 1, 1, 2)


def test_decision_with_no_transaction_is_committed_by_the_coordinator(hoc_db, hoc_coordinator):
    assert hoc_coordinator.current() is None
    record = in_own_transaction(hoc_coordinator, d.emit_policy_decision, T, "run-1", "pol-1", True, False)
    other = other_connection(hoc_db)
    try:
        assert other.execute("SELECT decision_id FROM decision_records").fetchall() == [
            (record.decision_id,)]
        assert other.execute("SELECT decision FROM policy_decisions").fetchall() == [("allowed",)]
    finally:
        other.close()


def test_storage_failure_returns_false_and_leaves_the_caller_transaction_usable(hoc_coordinator,
                                                                              caplog):
    record = d.DecisionRecord(decision_type="policy", decision_source="system",
                              decision_trigger="explicit", decision_outcome="selected",
                              tenant_id=T)
    with hoc_coordinator.transaction() as tx:
        service = d.DecisionRecordService(tx)
        Run.insert(id="run-1", tenant_id=T).execute(tx.db)
        assert service.emit(record) is True
        with caplog.at_level(logging.WARNING, logger="hoc_drivers.decisions"):
            assert service.emit(record) is False  # same decision_id: the insert fails
        assert "not written" in caplog.text
        Run.insert(id="run-2", tenant_id=T).execute(tx.db)
    assert [r.id for r in Run.select().order_by(Run.id).execute(hoc_coordinator.db)] == ["run-1", "run-2"]
    assert len(rows(hoc_coordinator)) == 1


def test_emitters_return_the_record_when_storage_fails(hoc_coordinator):
    with hoc_coordinator.transaction() as tx:
        tx.db.execute_sql("DROP TABLE decision_records")
        record = d.emit_budget_enforcement_decision(tx, T, "run-1", 1, 2, 1, 1, 2)
        assert record is not None and record.run_id == "run-1"
        assert d.backfill_run_id_for_request(tx, T, "req-1", "run-1") == 0
        Run.insert(id="run-1", tenant_id=T).execute(tx.db)
    assert Run.select().count(hoc_coordinator.db) == 1


def test_a_failing_mirror_keeps_the_decision(hoc_coordinator):
    with hoc_coordinator.transaction() as tx:
        tx.db.execute_sql("DROP TABLE policy_decisions")
        assert d.DecisionRecordService(tx).emit(d.DecisionRecord(
            decision_type="policy", decision_source="system", decision_trigger="explicit",
            decision_outcome="blocked", tenant_id=T)) is True
    assert [r["decision_outcome"] for r in rows(hoc_coordinator)] == ["blocked"]


def test_neither_decisions_nor_ledger_can_commit(hoc_no_stray_commits, hoc_coordinator):
    from hoc_drivers import ledger

    audit = {row.script: row for row in audit_package()}
    for script in ("decisions.py", "ledger.py"):
        assert (audit[script].transaction, audit[script].verdict) == ("Flush only", "OK")

    def every_path():
        with hoc_coordinator.transaction() as tx:
            d.emit_policy_decision(tx, T, "run-1", "pol-1", True, False, request_id="req-1",
                                   causal_role="pre_run")
            d.emit_budget_enforcement_decision(tx, T, "run-1", 1, 2, 1, 1, 2)
            d.emit_care_optimization_decision(tx, T, "req-1", "a", "b", 0.9, ["latency_p50"])
            d.backfill_run_id_for_request(tx, T, "req-1", "run-9")
            d.activate_care_kill_switch(tx)
            ledger.emit_signal(tx, "table", "high_operator_access", {"n": 1}, "ops")
            ledger.get_signals(tx.db)
            d.list_decisions(tx.db, T)

    every_path()  # its own transaction
    assert len(rows(hoc_coordinator)) == 3 and d.is_care_kill_switch_active(hoc_coordinator.db)
    in_own_transaction(hoc_coordinator, d.deactivate_care_kill_switch)
    with pytest.raises(RuntimeError):
        with hoc_coordinator.transaction():
            every_path()  # joined: nothing of it may survive the caller's rollback
            raise RuntimeError
    assert len(rows(hoc_coordinator)) == 3
    assert not d.is_care_kill_switch_active(hoc_coordinator.db)
    assert ledger.get_signals(hoc_coordinator.db)[0]["seen_count"] == 1
    # hoc_no_stray_commits: the guarded database refused no commit and no write on the way


# ---------------------------------------------------------------------------------------
# Backfill


def test_backfill_binds_only_pre_run_records_without_a_run(hoc_coordinator):
    c = hoc_coordinator
    with c.transaction() as tx:
        pre = d.emit_routing_decision(tx, T, None, True, "a", ["a"], request_id="req-1")
        d.emit_policy_precheck_decision(tx, T, "req-1", "strict", False, True)
        in_run = d.emit_memory_decision(tx, T, None, False, False, False, request_id="req-1")
        bound = d.emit_budget_decision(tx, T, "run-0", 1, 2, request_id="req-1")
        other_tenant = d.emit_routing_decision(tx, "tenant-b", None, True, "a", ["a"], request_id="req-1")
    assert in_own_transaction(c, d.backfill_run_id_for_request, T, "req-1", "run-1") == 2
    assert in_own_transaction(c, d.backfill_run_id_for_request, T, "req-1", "run-1") == 0
    by_id = {r["decision_id"]: r["run_id"] for r in rows(c)}
    assert by_id[pre.decision_id] == "run-1"
    assert by_id[in_run.decision_id] is None and by_id[bound.decision_id] == "run-0"
    assert sorted(by_id.values(), key=str) == [None, "run-0", "run-1", "run-1"]
    assert rows(c, "tenant-b")[0]["decision_id"] == other_tenant.decision_id
    assert rows(c, "tenant-b")[0]["run_id"] is None
    assert in_own_transaction(c, d.backfill_run_id_for_request, T, "", "run-1") == 0


# ---------------------------------------------------------------------------------------
# CARE: kill switch and signal guard


def _activate_in_child(path):
    in_own_transaction(TransactionCoordinator(connect_database(path)), d.activate_care_kill_switch)


def test_kill_switch_set_by_one_process_is_seen_by_another_and_after_restart(hoc_db,
                                                                            hoc_coordinator):
    assert d.is_care_kill_switch_active(hoc_coordinator.db) is False
    child = multiprocessing.get_context("fork").Process(target=_activate_in_child,
                                                         args=(hoc_db.database,))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert d.is_care_kill_switch_active(hoc_coordinator.db) is True
    assert in_own_transaction(hoc_coordinator, d.emit_care_optimization_decision, T, "req-1", "a", "b", 0.9,
                              ["latency_p50"]) is None
    reopened = TransactionCoordinator(connect_database(hoc_db.database))
    try:
        assert d.is_care_kill_switch_active(reopened.db) is True
        assert in_own_transaction(reopened, d.deactivate_care_kill_switch) is True
    finally:
        reopened.db.close()
    assert d.is_care_kill_switch_active(hoc_coordinator.db) is False


def test_unreadable_kill_switch_counts_as_on(hoc_coordinator):
    with hoc_coordinator.transaction() as tx:
        tx.db.execute_sql("DROP TABLE decision_settings")
        assert d.emit_care_optimization_decision(tx, T, "req-1", "a", "b", 0.9, ["latency_p50"]) is None
        with pytest.raises(Exception, match="decision_settings"), tx.statement_savepoint():
            d.activate_care_kill_switch(tx)  # an operator action fails loudly (and the caller goes on)
        tx.db.execute_sql("SELECT 1")


@pytest.mark.parametrize("name", sorted(d.CARE_ALLOWED_SIGNALS))
def test_allowed_signals_pass(name):
    assert d.check_signal_access(name) is True


@pytest.mark.parametrize("name", sorted(d.CARE_FORBIDDEN_SIGNALS))
def test_forbidden_signals_raise(name):
    with pytest.raises(d.CARESignalAccessError, match=f"Forbidden signal access: '{name}'"):
        d.check_signal_access(name)


@pytest.mark.parametrize("name", ["Latency_P50", "latency", ""])
def test_unknown_signals_raise(name):
    with pytest.raises(d.CARESignalAccessError, match="Unknown signal"):
        d.check_signal_access(name)


def test_care_checks_signals_after_the_gates_and_before_any_write(hoc_coordinator):
    c, care = hoc_coordinator, d.emit_care_optimization_decision
    assert in_own_transaction(c, care, T, "req-1", "a", "a", 0.9, ["policy_outcome"]) is None
    with pytest.raises(d.CARESignalAccessError):
        in_own_transaction(c, care, T, "req-1", "a", "b", 0.9, ["latency_p50", "user_feedback"])
    assert rows(hoc_coordinator) == []
    assert in_own_transaction(c, care, T, "req-1", "a", "b", 0.9, ["latency_p50"])
    # already emitted for this request: silent, even with a forbidden signal
    assert in_own_transaction(c, care, T, "req-1", "a", "c", 0.9, ["user_feedback"]) is None


def test_list_is_tenant_filtered_and_filters_by_run_request_and_type(hoc_coordinator):
    c = hoc_coordinator
    with c.transaction() as tx:
        d.emit_routing_decision(tx, T, "run-1", True, "a", ["a"], request_id="req-1")
        d.emit_policy_decision(tx, T, "run-2", "p", True, False, request_id="req-2")
        d.emit_policy_decision(tx, "tenant-b", "run-1", "p", True, False)
    assert len(rows(c)) == 2
    assert [r["decision_type"] for r in rows(c, run_id="run-1")] == ["routing"]
    assert [r["run_id"] for r in rows(c, request_id="req-2")] == ["run-2"]
    assert [r["run_id"] for r in rows(c, decision_type=d.DecisionType.POLICY)] == ["run-2"]
    assert len(d.list_decisions(c.db, T, limit=1)) == 1
    with pytest.raises(ValueError):
        d.list_decisions(c.db, "")


@pytest.mark.parametrize("tenant_id", [123, None, "", "  ", ["tenant-a"]])
def test_reads_refuse_a_missing_or_non_string_tenant(hoc_coordinator, tenant_id):
    c = hoc_coordinator
    pre = in_own_transaction(c, d.emit_routing_decision, T, None, True, "a", ["a"], request_id="req-1")
    with pytest.raises(ValueError, match="tenant_id is required"):
        d.list_decisions(c.db, tenant_id)
    with pytest.raises(ValueError, match="tenant_id is required"):
        in_own_transaction(c, d.backfill_run_id_for_request, tenant_id, "req-1", "run-1")
    assert [r["run_id"] for r in rows(c) if r["decision_id"] == pre.decision_id] == [None]


@pytest.mark.parametrize("limit", ["10", True, 0, -1, 10_001, 2**70, 1.5, None])
def test_list_refuses_a_bad_limit(hoc_coordinator, limit):
    in_own_transaction(hoc_coordinator, d.emit_routing_decision, T, "run-1", True, "a", ["a"])
    with pytest.raises(ValueError, match="limit must be an integer from 1 to 10000"):
        d.list_decisions(hoc_coordinator.db, T, limit=limit)
    assert len(d.list_decisions(hoc_coordinator.db, T, limit=10_000)) == 1
