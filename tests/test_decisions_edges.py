"""Decision records at their edges: every emitter keeps the run, request and role it is given,
once-only keys through the service, empty ids that bind nothing, the logs an operator reads
(shadow comparisons, unreadable reads), and a record returned even when nothing could be read."""
import logging

import pytest

from hoc_drivers import decisions as d

T = "tenant-a"


def stored(coordinator, tenant_id=T, **filters):
    return [r.to_dict() for r in d.list_decisions(coordinator.db, tenant_id, **filters)]


def in_own_transaction(coordinator, write, *args, **kwargs):
    with coordinator.transaction() as tx:
        return write(tx, *args, **kwargs)


# Emitters that take a run, a request and a causal role from the caller, with arguments that
# make each one emit.
PASS_THROUGH = {
    "routing": lambda tx, **ids: d.emit_routing_decision(tx, T, routed=True, selected_agent="a",
                                                         eligible_agents=["a"], **ids),
    "recovery": lambda tx, **ids: d.emit_recovery_decision(tx, T, evaluated=True, triggered=False,
                                                           **ids),
    "memory": lambda tx, **ids: d.emit_memory_decision(tx, T, queried=True, matched=False,
                                                       injected=False, **ids),
    "policy": lambda tx, **ids: d.emit_policy_decision(tx, T, policy_id="p", evaluated=True,
                                                       violated=False, **ids),
    "budget": lambda tx, **ids: d.emit_budget_decision(tx, T, budget_requested=1,
                                                       budget_available=2, **ids),
}


@pytest.mark.parametrize("name", PASS_THROUGH)
@pytest.mark.parametrize("role", ["pre_run", "in_run", "post_run"])
def test_an_emitter_stores_the_run_request_and_role_it_is_given(hoc_coordinator, name, role):
    record = in_own_transaction(hoc_coordinator, PASS_THROUGH[name], run_id="run-7",
                                request_id="req-7", causal_role=role)
    (row,) = stored(hoc_coordinator, request_id="req-7")
    assert (row["run_id"], row["request_id"], row["causal_role"]) == ("run-7", "req-7", role)
    assert row == record.to_dict()


def test_memory_without_sources_has_no_sources_detail(hoc_coordinator):
    with hoc_coordinator.transaction() as tx:
        none = d.emit_memory_decision(tx, T, "run-1", True, True, True, sources=None)
        empty = d.emit_memory_decision(tx, T, "run-1", True, True, True, sources=[])
    assert none.details == empty.details == {}
    assert [r["details"] for r in stored(hoc_coordinator)] == [{}, {}]


def test_a_budget_check_is_soft_unless_told_otherwise(hoc_coordinator):
    record = in_own_transaction(hoc_coordinator, d.emit_budget_decision, T, "run-1", 150, 100)
    assert record.decision_inputs["enforcement"] == "soft"
    assert record.decision_outcome is d.DecisionOutcome.SELECTED  # soft: exceeded, proceeded


@pytest.mark.parametrize("call, message", [
    (lambda tx: d.emit_recovery_evaluation_decision(tx, T, None, "req-1", "R1", "retry", "x"),
     "run_id is required"),
    (lambda tx: d.emit_care_optimization_decision(tx, T, "", "a", "b", 0.9, ["latency_p50"]),
     "request_id is required"),
])
def test_a_missing_id_is_named_in_the_error(hoc_coordinator, call, message):
    with pytest.raises(ValueError, match=message):
        in_own_transaction(hoc_coordinator, call)
    assert stored(hoc_coordinator) == []


def test_append_with_a_key_writes_once_and_reports_the_duplicate(hoc_coordinator):
    def record(reason):
        return d.DecisionRecord(decision_type="routing", decision_source="human",
                                decision_trigger="explicit", decision_outcome="selected",
                                decision_reason=reason, tenant_id=T)

    with hoc_coordinator.transaction() as tx:
        service = d.get_decision_service(tx)
        first = service.append(record("first"), idempotency_key="route:req-1")
        again = service.append(record("second"), idempotency_key="route:req-1")
        unkeyed = [service.append(record("free")) for _ in range(2)]
        assert d.DecisionRecordReader(tx.db).exists("route:req-1")
        assert not d.DecisionRecordReader(tx.db).exists("route:req-2")
    assert (first, again, unkeyed) == (d.AppendResult.WRITTEN, d.AppendResult.DUPLICATE,
                                       [d.AppendResult.WRITTEN] * 2)
    assert sorted(r["decision_reason"] for r in stored(hoc_coordinator)) == ["first", "free", "free"]


@pytest.mark.parametrize("request_id, run_id", [("req-1", ""), ("req-1", None), ("", "run-1")])
def test_backfill_with_an_empty_request_or_run_binds_nothing(hoc_coordinator, request_id, run_id):
    with hoc_coordinator.transaction() as tx:
        d.emit_routing_decision(tx, T, None, True, "a", ["a"], request_id="req-1")
        d.emit_routing_decision(tx, T, None, True, "a", ["a"], request_id="")
    assert in_own_transaction(hoc_coordinator, d.backfill_run_id_for_request, T, request_id,
                              run_id) == 0
    assert [r["run_id"] for r in stored(hoc_coordinator)] == [None, None]


def test_shadow_mode_logs_the_comparison_and_writes_nothing(hoc_coordinator, caplog):
    with caplog.at_level(logging.INFO, logger="hoc_drivers.decisions"):
        with hoc_coordinator.transaction() as tx:
            diverged = d.emit_care_optimization_decision(tx, T, "req-1", "a", "b", 0.75,
                                                         ["latency_p50"], shadow_mode=True)
            same = d.emit_care_optimization_decision(tx, T, "req-2", "a", "a", 0.25,
                                                     ["latency_p50"], shadow_mode=True)
    assert diverged is None and same is None and stored(hoc_coordinator) == []
    assert [r.getMessage() for r in caplog.records if r.name == "hoc_drivers.decisions"] == [
        "care_optimization_shadow_comparison request=req-1 diverged=True confidence=0.75",
        "care_optimization_shadow_comparison request=req-2 diverged=False confidence=0.25"]


def test_an_unreadable_kill_switch_is_logged_with_its_cause_and_taken_as_on(hoc_coordinator, caplog):
    with caplog.at_level(logging.WARNING, logger="hoc_drivers.decisions"):
        with hoc_coordinator.transaction() as tx:
            tx.db.execute_sql("DROP TABLE decision_settings")
            assert d.emit_care_optimization_decision(tx, T, "req-1", "a", "b", 0.9,
                                                     ["latency_p50"]) is None
    (warning,) = [r for r in caplog.records if r.name == "hoc_drivers.decisions"]
    assert warning.getMessage() == "is_care_kill_switch_active failed; taking True"
    assert warning.exc_info is not None and "decision_settings" in str(warning.exc_info[1])


def test_care_goes_on_when_its_once_only_check_cannot_read(hoc_coordinator, caplog):
    # an unreadable key counts as new: the record is built and the (failing) insert decides
    with caplog.at_level(logging.WARNING, logger="hoc_drivers.decisions"):
        with hoc_coordinator.transaction() as tx:
            tx.db.execute_sql("DROP TABLE decision_records")
            record = d.emit_care_optimization_decision(tx, T, "req-1", "a", "b", 0.9, ["latency_p50"])
    assert record is not None and record.request_id == "req-1"
    assert record.decision_outcome is d.DecisionOutcome.OPTIMIZED_SELECTED
    messages = [r.getMessage() for r in caplog.records if r.name == "hoc_drivers.decisions"]
    assert messages[0] == "DecisionRecordReader.exists failed; taking False"
    assert messages[1].startswith(f"decision record {record.decision_id} (care_routing_optimized)")
