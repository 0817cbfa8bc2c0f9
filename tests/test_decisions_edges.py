"""Decision records at their edges: every emitter keeps the run, request and role it is given,
once-only keys through the service, empty ids that bind nothing, errors that name the field,
records read back as enums, the default limit and the time window, the policy mirror's row,
the logs an operator reads (shadow comparisons, the kill switch, failed writes and reads, with
their tracebacks), and a record returned even when nothing could be read."""
import logging
from datetime import datetime, timezone

import pytest
from freezegun import freeze_time

from hoc_drivers import decisions as d
from hoc_drivers.models.decisions import DecisionSetting, PolicyDecision

T = "tenant-a"


def stored(coordinator, tenant_id=T, **filters):
    return [r.to_dict() for r in d.list_decisions(coordinator.db, tenant_id, **filters)]


def in_own_transaction(coordinator, write, *args, **kwargs):
    with coordinator.transaction() as tx:
        return write(tx, *args, **kwargs)


def with_traceback(record):
    """True when a log record carries the exception that caused it (an operator's traceback)."""
    return isinstance(record.exc_info, tuple) and record.exc_info[1] is not None


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
    assert with_traceback(warning) and "decision_settings" in str(warning.exc_info[1])


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


def test_an_unknown_enum_value_lists_the_values_it_may_take():
    with pytest.raises(ValueError) as caught:
        d.DecisionRecord(decision_type="routing", decision_source="robot",
                         decision_trigger="explicit", decision_outcome="none")
    assert str(caught.value) == ("decision_source: unknown value 'robot' "
                                 "(expected one of: human, system, hybrid)")
    with pytest.raises(ValueError, match=r"^decision_type: unknown value 'whim' \(expected one of: routing, "):
        d.make_idempotency_key("whim", T, "req-1")
    with pytest.raises(ValueError, match=r"^an idempotency key is made of JSON values: Object of type set"):
        d.make_idempotency_key("routing", T, {1, 2})


def test_a_once_only_emitter_names_the_input_that_is_not_json(hoc_coordinator):
    """Its key holds values of its inputs; the inputs' error, naming the field, comes first."""
    with pytest.raises(ValueError, match=r"^decision_inputs is not JSON-serialisable"):
        in_own_transaction(hoc_coordinator, d.emit_recovery_evaluation_decision, T, "run-1", "req-1", "R1",
                           "retry", {1, 2})
    assert stored(hoc_coordinator) == []


def test_records_read_back_carry_enum_members_like_the_ones_written(hoc_coordinator):
    written = in_own_transaction(hoc_coordinator, d.emit_policy_decision, T, "run-1", "p", True, True,
                                 "error")
    (read,) = d.list_decisions(hoc_coordinator.db, T)
    assert (read.decision_type, read.decision_source, read.decision_trigger, read.decision_outcome,
            read.causal_role) == (d.DecisionType.POLICY, d.DecisionSource.SYSTEM,
                                  d.DecisionTrigger.EXPLICIT, d.DecisionOutcome.BLOCKED,
                                  d.CausalRole.IN_RUN)
    assert read.decision_outcome is written.decision_outcome


def _routing_records(coordinator, count):
    with coordinator.transaction() as tx:
        return [d.emit_routing_decision(tx, T, f"run-{i}", True, "a", ["a"]) for i in range(count)]


def test_a_list_holds_at_most_1000_records_unless_told_otherwise(hoc_coordinator):
    _routing_records(hoc_coordinator, 1001)
    assert len(d.list_decisions(hoc_coordinator.db, T)) == 1000
    assert len(d.DecisionRecordReader(hoc_coordinator.db).list(T)) == 1000
    assert len(d.list_decisions(hoc_coordinator.db, T, limit=1001)) == 1001


def test_a_list_window_keeps_since_and_drops_until(hoc_coordinator):
    with hoc_coordinator.transaction() as tx:
        for day in (1, 2, 3):
            d.DecisionRecordService(tx).emit(d.DecisionRecord(
                decision_type="routing", decision_source="human", decision_trigger="explicit",
                decision_outcome="none", tenant_id=T, run_id=f"day-{day}",
                decided_at=datetime(2026, 1, day, tzinfo=timezone.utc)))

    def runs(**window):
        return [r.run_id for r in d.list_decisions(hoc_coordinator.db, T, **window)]

    assert runs(since=datetime(2026, 1, 2, tzinfo=timezone.utc)) == ["day-2", "day-3"]
    assert runs(until=datetime(2026, 1, 2, tzinfo=timezone.utc)) == ["day-1"]
    assert runs(newest_first=True, offset=1) == ["day-2", "day-1"]


def test_backfill_logs_what_it_bound_and_names_the_request_when_it_fails(hoc_coordinator, caplog):
    in_own_transaction(hoc_coordinator, d.emit_routing_decision, T, None, True, "a", ["a"],
                       request_id="req-1")
    with caplog.at_level(logging.DEBUG, logger="hoc_drivers.decisions"):
        assert in_own_transaction(hoc_coordinator, d.backfill_run_id_for_request, T, "req-1",
                                  "run-1") == 1
        with hoc_coordinator.transaction() as tx:
            tx.db.execute_sql("DROP TABLE decision_records")
            assert d.backfill_run_id_for_request(tx, T, "req-2", "run-2") == 0
    records = [r for r in caplog.records if r.name == "hoc_drivers.decisions"]
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (logging.DEBUG, "backfilled run_id run-1 on 1 decisions of request req-1"),
        (logging.WARNING, "backfill of request req-2: not written")]
    assert with_traceback(records[1])


def test_the_kill_switch_logs_each_change_for_the_operator(hoc_coordinator, caplog):
    with caplog.at_level(logging.WARNING, logger="hoc_drivers.decisions"):
        in_own_transaction(hoc_coordinator, d.activate_care_kill_switch)
        in_own_transaction(hoc_coordinator, d.deactivate_care_kill_switch)
    assert [r.getMessage() for r in caplog.records if r.name == "hoc_drivers.decisions"] == [
        "care_kill_switch_activated", "care_kill_switch_deactivated"]


def test_only_the_kill_switch_setting_turns_care_off(hoc_coordinator):
    with hoc_coordinator.transaction() as tx:
        DecisionSetting.insert(key="some_other_setting", value=True).execute(tx.db)
    assert d.is_care_kill_switch_active(hoc_coordinator.db) is False
    assert in_own_transaction(hoc_coordinator, d.emit_care_optimization_decision, T, "req-1", "a", "b",
                              0.9, ["latency_p50"]) is not None


@pytest.mark.parametrize("fields, message", [
    (dict(decision_id=""), "decision_id must be a non-empty string, got ''"),
    (dict(tenant_id=" "), "tenant_id must be a non-empty string, got ' '"),
    (dict(decided_at="2026-01-01T00:00:00+00:00"), "decided_at must be a datetime"),
    (dict(decision_inputs=["a"]), "decision_inputs must be a JSON object (dict), got list"),
    (dict(details="x"), "details must be a JSON object (dict), got str"),
])
def test_a_bad_record_field_is_named_in_the_error(fields, message):
    with pytest.raises(ValueError) as caught:
        d.DecisionRecord(decision_type="routing", decision_source="human",
                         decision_trigger="explicit", decision_outcome="none", **fields)
    assert str(caught.value) == message


def test_the_policy_mirror_holds_the_run_time_and_full_confidence(hoc_coordinator):
    decided_at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    record = d.DecisionRecord(decision_type="budget", decision_source="system",
                              decision_trigger="explicit", decision_outcome="rejected",
                              tenant_id=T, run_id="run-1", decided_at=decided_at)
    with hoc_coordinator.transaction() as tx:
        assert d.DecisionRecordService(tx).emit(record) is True
    (mirror,) = PolicyDecision.select().execute(hoc_coordinator.db)
    assert (mirror.id, mirror.tenant_id, mirror.run_id, mirror.policy_type, mirror.decision,
            mirror.rationale, mirror.capture_confidence_score, mirror.created_at) == (
        record.decision_id, T, "run-1", "budget", "denied", "", 1.0, decided_at)


def test_failed_writes_are_reported_and_logged_by_what_they_wrote(hoc_coordinator, caplog):
    record = d.DecisionRecord(decision_type="policy", decision_source="system",
                              decision_trigger="explicit", decision_outcome="selected", tenant_id=T)
    with caplog.at_level(logging.WARNING, logger="hoc_drivers.decisions"):
        with hoc_coordinator.transaction() as tx:
            tx.db.execute_sql("DROP TABLE policy_decisions")
            assert d.DecisionRecordService(tx).append(record) is d.AppendResult.WRITTEN
            tx.db.execute_sql("DROP TABLE decision_records")
            assert d.DecisionRecordService(tx).append(record) is d.AppendResult.FAILED
    warnings = [r for r in caplog.records if r.name == "hoc_drivers.decisions"]
    assert [r.getMessage() for r in warnings] == [
        f"policy_decisions mirror of {record.decision_id}: not written",
        f"decision record {record.decision_id} (policy): not written"]
    assert all(with_traceback(r) for r in warnings)


def test_once_only_emitters_log_their_key_and_the_others_do_not(hoc_coordinator, caplog):
    with caplog.at_level(logging.INFO, logger="hoc_drivers.decisions"):
        with hoc_coordinator.transaction() as tx:
            d.emit_routing_decision(tx, T, "run-1", True, "a", ["a"])
            d.emit_budget_enforcement_decision(tx, T, "run-1", 100, 110, 10, 3, 5)
            d.emit_budget_enforcement_decision(tx, T, "run-1", 100, 110, 10, 3, 5)  # a repeat
    assert [r.getMessage() for r in caplog.records if r.name == "hoc_drivers.decisions"] == [
        'budget_enforcement decision emitted: tenant=tenant-a outcome=execution_halted '
        'key=["budget_enforcement", "tenant-a", "run-1"]']


def test_the_kill_switch_records_when_it_last_changed(hoc_coordinator):
    on, off = (datetime(2026, 3, day, 12, tzinfo=timezone.utc) for day in (1, 2))
    with freeze_time(on):
        in_own_transaction(hoc_coordinator, d.activate_care_kill_switch)
    with freeze_time(off):
        in_own_transaction(hoc_coordinator, d.deactivate_care_kill_switch)
    (setting,) = DecisionSetting.select().execute(hoc_coordinator.db)
    assert (setting.key, setting.value, setting.updated_at) == (d.CARE_KILL_SWITCH_KEY, False, off)


def test_a_record_changed_after_it_was_made_is_stored_as_changed(hoc_coordinator):
    """The service stores the record's fields as they are when it is appended: an enum field
    set to its text afterwards stores that text, and a JSON field changed in place stores its
    new content."""
    record = d.DecisionRecord(decision_type="routing", decision_source="system", decision_trigger="explicit",
                              decision_outcome="selected", decision_inputs={"a": 1}, tenant_id=T,
                              run_id="run-1")
    record.decision_outcome = "rejected"  # text, not the enum member
    record.decision_inputs["b"] = 2
    with hoc_coordinator.transaction() as tx:
        assert d.DecisionRecordService(tx).emit(record)
    [row] = stored(hoc_coordinator)
    assert (row["decision_outcome"], row["decision_inputs"]) == ("rejected", {"a": 1, "b": 2})


@pytest.mark.sqlite_only
def test_a_record_is_appended_without_a_savepoint_on_sqlite(hoc_coordinator):
    """SQLite undoes a failing statement by itself and keeps the transaction, so an append sends
    its INSERT alone (a savepoint is PostgreSQL's need)."""
    sent = []
    record = d.DecisionRecord(decision_type="policy", decision_source="system", decision_trigger="explicit",
                              decision_outcome="selected", tenant_id=T, run_id="run-1")
    with hoc_coordinator.transaction() as tx:
        conn = tx.db.connection()
        conn.set_trace_callback(sent.append)
        try:
            assert d.DecisionRecordService(tx).emit(record)
        finally:
            conn.set_trace_callback(None)
    assert [statement.split()[:3] for statement in sent] == [["INSERT", "INTO", '"decision_records"'],
                                                             ["INSERT", "INTO", '"policy_decisions"']]


@pytest.mark.parametrize("change, message", [
    (lambda record: record.decision_inputs.update(x=float("nan")), "decision_inputs is not JSON-serialisable"),
    (lambda record: record.details.update(x={1, 2}), "details is not JSON-serialisable"),
    (lambda record: record.decision_inputs.update(x="a\x00b"), "decision_inputs must not contain a NUL"),
])
def test_json_changed_in_place_after_the_record_was_made_is_checked_when_it_is_appended(hoc_coordinator,
                                                                                      change, message):
    """The JSON fields' content is checked (and encoded) when the record is appended, so a
    change made in place after the record was made cannot store text that is not JSON."""
    record = d.DecisionRecord(decision_type="routing", decision_source="system", decision_trigger="explicit",
                              decision_outcome="selected", decision_inputs={"a": 1}, details={"b": 2}, tenant_id=T)
    change(record)
    with pytest.raises(ValueError, match=message):
        with hoc_coordinator.transaction() as tx:
            d.DecisionRecordService(tx).emit(record)
    assert stored(hoc_coordinator) == []
