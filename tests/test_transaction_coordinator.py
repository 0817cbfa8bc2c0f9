"""The coordinator: one transaction, post-commit work only after COMMIT, atomic run completion."""

import sqlite3

import pytest

from hoc_drivers.testing import other_connection
from hoc_drivers.models.runs import Event, Incident, PreventionRecord, Run, Trace
from hoc_drivers.run_completion import classify_failure
from hoc_drivers.transaction_coordinator import (
    RunCompletionTransaction, TransactionCoordinator, TransactionFailed, TransactionPhase,
    create_transaction_coordinator, get_transaction_coordinator)


def count(model, db):
    return model.select().count(db)


def by_id(model, db, key):
    return model.select().where(model._meta.primary_key == key).get(db)


def test_exception_rolls_back_every_write_and_publishes_nothing(hoc_db, hoc_coordinator,
                                                                hoc_publisher):
    with pytest.raises(RuntimeError):
        with hoc_coordinator.transaction() as tx:
            Run.insert(id="r1", tenant_id="t1").execute(tx.db)
            Trace.insert(trace_id="tr1", tenant_id="t1", run_id="r1").execute(tx.db)
            tx.publish("run.completed", {"run_id": "r1"}, "t1")
            raise RuntimeError("boom")
    assert (count(Run, hoc_db), count(Trace, hoc_db), count(Event, hoc_db)) == (0, 0, 0)
    assert list(hoc_publisher.published) == []


def test_callbacks_run_after_commit_and_never_after_rollback(hoc_db, hoc_coordinator):
    seen = []

    def visible_elsewhere():
        other = other_connection(hoc_db)
        seen.append(other.execute("SELECT count(*) FROM runs").fetchone()[0])
        other.close()

    with hoc_coordinator.transaction() as tx:
        Run.insert(id="r1", tenant_id="t1").execute(tx.db)
        tx.on_commit(visible_elsewhere)
        assert seen == []
    assert seen == [1]  # ran after COMMIT: another connection already sees the row

    with pytest.raises(ValueError):
        with hoc_coordinator.transaction() as tx:
            tx.on_commit(lambda: seen.append("rolled back"))
            raise ValueError
    assert seen == [1]


def test_failing_callback_is_recorded_and_does_not_hide_the_others(hoc_coordinator):
    seen = []
    with hoc_coordinator.transaction() as tx:
        tx.on_commit(lambda: 1 / 0)
        tx.on_commit(lambda: seen.append("second"))
    assert seen == ["second"]
    assert isinstance(tx.callback_errors[0], ZeroDivisionError)


def test_nested_transaction_joins_the_outer_one(hoc_db, hoc_coordinator):
    with hoc_coordinator.transaction() as outer:
        with hoc_coordinator.transaction() as inner:
            assert inner is outer
            Run.insert(id="r1", tenant_id="t1").execute(inner.db)
        with pytest.raises(KeyError):
            with hoc_coordinator.transaction() as inner:
                Run.insert(id="r2", tenant_id="t1").execute(inner.db)
                inner.on_commit(lambda: pytest.fail("callback of a rolled-back savepoint ran"))
                raise KeyError
        # nothing is committed before the outer block ends
        assert hoc_coordinator.current() is outer
    assert [r.id for r in Run.select().execute(hoc_db)] == ["r1"]


def test_savepoint_undoes_only_its_own_writes(hoc_db, hoc_coordinator):
    with hoc_coordinator.transaction() as tx:
        Run.insert(id="kept", tenant_id="t1").execute(tx.db)
        with pytest.raises(RuntimeError):
            with tx.savepoint():
                Run.insert(id="undone", tenant_id="t1").execute(tx.db)
                raise RuntimeError
    assert [r.id for r in Run.select().execute(hoc_db)] == ["kept"]


def failed_run(coordinator, run_id="run-0001", **kwargs):
    return RunCompletionTransaction(coordinator).execute(
        "t1", run_id, "failed", error_message="worker hit AGENT_CRASH", **kwargs)


def test_failed_run_writes_incident_policy_and_trace_atomically(hoc_db, hoc_coordinator,
                                                                 hoc_publisher):
    with hoc_coordinator.transaction():
        Trace.insert(trace_id="tr1", tenant_id="t1", run_id="run-0001").execute(hoc_db)
    visible_at_publish = []
    hoc_publisher.subscribe("incident.created", lambda topic, payload: visible_at_publish.append(
        other_connection(hoc_db).execute(
            f"SELECT count(*) FROM incidents WHERE id = {hoc_db.param}",
            (payload["incident_id"],)).fetchone()[0]))

    result = failed_run(hoc_coordinator, trace_id="tr1")

    assert result.phase is TransactionPhase.EVENTS_PUBLISHED
    assert result.is_complete() and result.all_domains_succeeded()
    incident = by_id(Incident, hoc_db, result.incident_result.result_id)
    assert (incident.title, incident.severity, incident.category, incident.status) == (
        "Agent Crash: Run run-0001...", "critical", "EXECUTION_FAILURE", "open")
    assert incident.description == "Run run-0001 failed with error: AGENT_CRASH"
    assert (incident.trigger_type, incident.source_type, incident.impact_scope) == (
        "run_failure", "run", "single_run")
    policy = by_id(PreventionRecord, hoc_db, result.policy_result.result_id)
    assert (policy.outcome, policy.signature_match_confidence) == ("not_applicable", 0.0)
    trace = by_id(Trace, hoc_db, "tr1")
    assert (trace.status, trace.incident_id) == ("failed", incident.id)
    assert trace.completed_at is not None
    assert visible_at_publish == [1]  # published only after COMMIT
    assert result.events_published == ["run.completed", "incident.created", "policy.evaluated"]
    payloads = dict(hoc_publisher.published)
    assert payloads["run.completed"] == {"run_id": "run-0001", "status": "failed",
                                         "incident_id": incident.id, "policy_id": policy.id,
                                         "trace_id": "tr1"}
    assert payloads["incident.created"] == {"run_id": "run-0001", "incident_id": incident.id,
                                            "outcome": "failed"}
    assert payloads["policy.evaluated"] == {"run_id": "run-0001", "policy_id": policy.id,
                                            "outcome": "failed"}
    assert Event.select().count(hoc_db) == 3


def test_injected_failure_at_trace_step_leaves_nothing(hoc_db, hoc_coordinator, hoc_publisher):
    def broken_trace_store(*args):
        raise OSError("trace store unavailable")

    transaction = RunCompletionTransaction(hoc_coordinator, trace_completer=broken_trace_store)
    with pytest.raises(TransactionFailed) as failure:
        transaction.execute("t1", "run-0002", "failed", error_message="STEP_FAILURE", trace_id="tr9")
    assert failure.value.phase is TransactionPhase.POLICY_EVALUATED
    assert isinstance(failure.value.cause, OSError)
    assert failure.value.partial_results["phase"] == "ROLLED_BACK"
    assert (count(Incident, hoc_db), count(PreventionRecord, hoc_db),
            count(Event, hoc_db)) == (0, 0, 0)
    assert list(hoc_publisher.published) == []


def test_missing_trace_is_a_failed_domain_result_not_fatal(hoc_db, hoc_coordinator):
    result = failed_run(hoc_coordinator, trace_id="no-such-trace")
    assert result.is_complete() and not result.all_domains_succeeded()
    assert "not found" in result.trace_result.error
    assert count(Incident, hoc_db) == 1


def test_completing_a_run_twice_keeps_one_incident_and_one_policy_row(hoc_db, hoc_coordinator):
    first = failed_run(hoc_coordinator)
    second = failed_run(hoc_coordinator)
    assert first.incident_result.result_id == second.incident_result.result_id
    assert (count(Incident, hoc_db), count(PreventionRecord, hoc_db)) == (1, 1)
    # issue 13: a repeat is a no-op that says so; it publishes nothing again
    assert second.phase is TransactionPhase.ALREADY_COMPLETED and second.is_complete()
    assert second.events_published == [] and count(Event, hoc_db) == 3
    assert second.policy_result.result_id == first.policy_result.result_id


def test_a_repeat_with_another_status_changes_nothing(hoc_db, hoc_coordinator, hoc_publisher):
    RunCompletionTransaction(hoc_coordinator).execute("t1", "run-7", "succeeded")
    published = len(hoc_publisher.published)
    again = RunCompletionTransaction(hoc_coordinator).execute("t1", "run-7", "failed",
                                                              error_message="AGENT_CRASH")
    assert again.phase is TransactionPhase.ALREADY_COMPLETED and again.incident_result is None
    assert count(Incident, hoc_db) == 0 and len(hoc_publisher.published) == published


def test_inside_an_enclosing_transaction_it_reports_joined_and_rolls_back_with_it(
        hoc_db, hoc_coordinator, hoc_publisher):
    with pytest.raises(RuntimeError):
        with hoc_coordinator.transaction():
            result = failed_run(hoc_coordinator)
            assert result.phase is TransactionPhase.JOINED and not result.is_complete()
            assert result.events_published == [] and list(hoc_publisher.published) == []
            raise RuntimeError("the caller fails after the completion")
    assert (count(Incident, hoc_db), count(PreventionRecord, hoc_db), count(Event, hoc_db)) == (0, 0, 0)
    with hoc_coordinator.transaction():
        failed_run(hoc_coordinator)
    assert [topic for topic, _ in hoc_publisher.published] == [
        "run.completed", "incident.created", "policy.evaluated"]  # published when the caller committed


def test_trace_of_another_tenant_is_not_touched(hoc_db, hoc_coordinator):
    with hoc_coordinator.transaction():
        Trace.insert(trace_id="tr1", tenant_id="other", run_id="r").execute(hoc_db)
    result = failed_run(hoc_coordinator, trace_id="tr1")
    assert not result.trace_result.success
    assert by_id(Trace, hoc_db, "tr1").status == "running"


@pytest.mark.parametrize("status, outcome, confidence, incident", [
    ("succeeded", "no_violation", 1.0, False), ("completed", "no_violation", 1.0, False),
    ("success", "no_violation", 1.0, False), ("failed", "not_applicable", 0.0, True),
    ("FAILED", "not_applicable", 0.0, False), ("error", "not_applicable", 0.0, False),
    ("halted", "advisory", 0.0, False), ("blocked", "advisory", 0.0, False),
    ("cancelled", "not_applicable", 0.0, False),
])
def test_policy_outcome_and_incident_rule(hoc_db, hoc_coordinator, status, outcome, confidence,
                                          incident):
    result = RunCompletionTransaction(hoc_coordinator).execute("t1", "run-x", status)
    policy = by_id(PreventionRecord, hoc_db, result.policy_result.result_id)
    assert (policy.outcome, policy.signature_match_confidence) == (outcome, confidence)
    assert (count(Incident, hoc_db) == 1) is incident


@pytest.mark.parametrize("code, message, expected, severity, title, category", [
    (None, "EXECUTION_TIMEOUT after 30s", "EXECUTION_TIMEOUT", "high", "Execution Timeout",
     "EXECUTION_FAILURE"),
    (None, "budget_exceeded and agent_crash", "AGENT_CRASH", "critical", "Agent Crash",
     "EXECUTION_FAILURE"),
    (None, "step_failure at 3", "STEP_FAILURE", "high", "Step Failure", "EXECUTION_FAILURE"),
    ("SKILL_ERROR", None, "SKILL_ERROR", "high", "Skill Error", "EXECUTION_FAILURE"),
    (None, "budget_exceeded", "BUDGET_EXCEEDED", "medium", "Budget Exceeded", "BUDGET_EXCEEDED"),
    ("RATE_LIMIT_EXCEEDED", None, "RATE_LIMIT_EXCEEDED", "medium", "Rate Limit Hit", "RATE_LIMIT"),
    (None, "resource_exhaustion: oom", "RESOURCE_EXHAUSTION", "medium", "Run Failed",
     "RESOURCE_EXHAUSTION"),
    (None, "cancelled by user", "CANCELLED", "low", "Run Failed", "MANUAL"),
    (None, "manual_stop by ops", "MANUAL_STOP", "low", "Run Failed", "MANUAL"),
    (None, "retry_exhausted", "RETRY_EXHAUSTED", "medium", "Run Failed", "EXECUTION_FAILURE"),
    (None, "", "UNKNOWN", "medium", "Run Failed", "EXECUTION_FAILURE"),
])
def test_failure_classification(hoc_db, hoc_coordinator, code, message, expected, severity,
                                title, category):
    assert classify_failure(code, message) == expected
    result = RunCompletionTransaction(hoc_coordinator).execute(
        "t1", "abcdefgh-123", "failed", agent_id="agent-7", error_code=code, error_message=message)
    incident = by_id(Incident, hoc_db, result.incident_result.result_id)
    assert (incident.error_code, incident.severity, incident.category) == (expected, severity,
                                                                          category)
    assert incident.title == f"{title}: Run abcdefgh..."
    assert (incident.affected_agent_id, incident.error_message) == ("agent-7", message)


def test_skip_events_commits_without_events(hoc_db, hoc_coordinator, hoc_publisher):
    result = failed_run(hoc_coordinator, skip_events=True)
    assert result.phase is TransactionPhase.COMMITTED and result.events_published == []
    assert count(Event, hoc_db) == 0 and list(hoc_publisher.published) == []


def test_publisher_failure_keeps_the_commit(hoc_db, hoc_coordinator, hoc_publisher):
    def broken(topic, payload):
        raise ConnectionError("bus down")
    hoc_publisher.publish = broken
    result = failed_run(hoc_coordinator)
    assert result.phase is TransactionPhase.COMMITTED and result.events_published == []
    assert count(Incident, hoc_db) == 1


def test_events_left_unpublished_by_a_crash_are_published_by_flush(hoc_db, hoc_coordinator,
                                                                  hoc_publisher):
    raw = other_connection(hoc_db)
    raw.execute("INSERT INTO events (id, topic, payload, created_at) VALUES "
                "('e1', 'run.completed', '{\"run_id\": \"r\"}', '2026-01-01 00:00:00.000000')")
    raw.commit()
    raw.close()
    assert hoc_coordinator.flush_outbox() == 1
    assert list(hoc_publisher.published) == [("run.completed", {"run_id": "r"})]
    assert by_id(Event, hoc_db, "e1").published_at is not None


@pytest.mark.sqlite_only  # lowers SQLite's bound-variable limit
def test_a_transaction_publishes_and_marks_more_events_than_one_statement_may_bind(
        hoc_db, hoc_coordinator, hoc_publisher):
    hoc_db.connection().setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)  # SQLite's old default
    with hoc_coordinator.transaction() as tx:
        for number in range(1200):
            tx.publish("run.completed", {"n": number})
    hoc_coordinator.mark_published()
    assert hoc_publisher.published[-1] == ("run.completed", {"n": 1199})
    assert Event.select().count(hoc_db) == 1200
    assert Event.select().where(Event.published_at.is_null()).count(hoc_db) == 0
    assert hoc_coordinator.flush_outbox() == 0


def test_tenant_is_required(hoc_coordinator):
    with pytest.raises(ValueError, match="tenant_id"):
        RunCompletionTransaction(hoc_coordinator).execute("", "r", "failed")


@pytest.mark.parametrize("run_id, tenant_id, status, message", [
    ("r", 5, "failed", "tenant_id is required"),
    ("r", " ", "failed", "tenant_id is required"),
    (["r"], "t1", "failed", "run_id and run_status are required"),
    ("r", "t1", 1, "run_id and run_status are required"),
])
def test_ids_of_the_wrong_type_are_refused_before_any_write(hoc_db, hoc_coordinator, run_id,
                                                            tenant_id, status, message):
    with pytest.raises(ValueError, match=message):
        RunCompletionTransaction(hoc_coordinator).execute(tenant_id, run_id, status)
    assert hoc_db.execute_sql("SELECT COUNT(*) FROM incidents").fetchone() == (0,)
    assert hoc_db.execute_sql("SELECT COUNT(*) FROM prevention_records").fetchone() == (0,)


@pytest.mark.parametrize("option", ["agent_id", "error_code", "trace_id", "synthetic_scenario_id"])
@pytest.mark.parametrize("value", ["", "  ", 5])
def test_blank_or_wrong_typed_optional_ids_are_refused_before_any_write(hoc_db, hoc_coordinator,
                                                                         option, value):
    with pytest.raises(ValueError, match=f"{option} must be a non-empty string or None"):
        RunCompletionTransaction(hoc_coordinator).execute("t1", "r1", "failed", **{option: value})
    assert hoc_db.execute_sql("SELECT COUNT(*) FROM incidents").fetchone() == (0,)


def test_with_several_bad_optional_ids_the_first_in_argument_order_is_named(hoc_coordinator):
    options = ["agent_id", "error_code", "trace_id", "synthetic_scenario_id"]
    for first, option in enumerate(options):
        bad = {name: "" for name in options[first:]}
        with pytest.raises(ValueError, match=f"^{option} must be a non-empty string or None"):
            RunCompletionTransaction(hoc_coordinator).execute("t1", "r1", "failed", **bad)


def test_factories_open_the_given_database(hoc_db, hoc_publisher):
    transaction = RunCompletionTransaction(create_transaction_coordinator(hoc_db, hoc_publisher))
    transaction.execute("t1", "r1", "succeeded")
    assert hoc_publisher.published[0][0] == "run.completed"


def test_get_transaction_coordinator_wraps_the_given_database_and_creates_no_file(
        hoc_db, tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    coordinator = get_transaction_coordinator(hoc_db)
    assert isinstance(coordinator, TransactionCoordinator)
    assert coordinator.db is hoc_db
    with coordinator.transaction() as tx:
        Run.insert(id="r1", tenant_id="t1").execute(tx.db)
    assert count(Run, hoc_db) == 1
    assert not (cwd / "hoc.db").exists() and list(cwd.iterdir()) == []


def test_a_finished_transaction_cannot_be_written_through(hoc_db, hoc_coordinator):
    from hoc_drivers.db import CommitForbidden

    with hoc_coordinator.transaction() as tx:
        pass
    with pytest.raises(CommitForbidden, match="already ended"):
        with tx.savepoint():
            Run.insert(id="late", tenant_id="t1").execute(tx.db)
    assert Run.select().count(hoc_db) == 0
