"""Run completion at its edges: the JSON shape of its result, the rows it writes (synthetic
runs, the policy evaluation's ids), an incident that already existed, the guard fact and the
outbox tenant, the transaction's one timestamp, how far a failing commit got, how long it took,
and the wording of what it refuses."""
import logging
import re
import sqlite3
from datetime import datetime, timezone

import peewee
import pytest
from freezegun import freeze_time

from hoc_drivers.bus import subscribe
from hoc_drivers.facts import GuardStateChanged
from hoc_drivers.models.runs import Event, Incident, PreventionRecord, Run, Trace
from hoc_drivers.run_completion import complete_trace
from hoc_drivers.testing import refuse_writes
from hoc_drivers.transaction_coordinator import (RunCompletionTransaction, TransactionFailed,
                                                 TransactionPhase)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
ALL_TOPICS = ["run.completed", "incident.created", "policy.evaluated"]


def add_trace(coordinator, trace_id, tenant_id="t1", run_id="run-0001"):
    with coordinator.transaction() as tx:
        Trace.insert(trace_id=trace_id, tenant_id=tenant_id, run_id=run_id).execute(tx.db)


def complete(coordinator, run_id, status="failed", tenant_id="t1", **options):
    return RunCompletionTransaction(coordinator).execute(tenant_id, run_id, status, **options)


def incident_of(db, run_id):
    return Incident.select().where(Incident.source_run_id == run_id).get(db)


def policy_of(db, run_id):
    return PreventionRecord.select().where(PreventionRecord.run_id == run_id).get(db)


def step(domain, action, result_id, success=True, error=None):
    """A domain step as `to_dict()` gives it, stamped at T0."""
    return {"domain": domain, "action": action, "result_id": result_id, "success": success,
            "error": error, "timestamp": T0.isoformat()}


def test_the_result_as_json_names_every_step_and_says_how_far_it_got(hoc_db, hoc_coordinator):
    with freeze_time(T0):  # also stops the monotonic clock: duration_ms is 0
        add_trace(hoc_coordinator, "tr1")
        failed = complete(hoc_coordinator, "run-0001", error_message="AGENT_CRASH", trace_id="tr1")
        lost = complete(hoc_coordinator, "run-0002", "succeeded", trace_id="nope")
        again = complete(hoc_coordinator, "run-0001", error_message="AGENT_CRASH")
    incident_id, policy_id = incident_of(hoc_db, "run-0001").id, policy_of(hoc_db, "run-0001").id
    assert failed.to_dict() == {
        "run_id": "run-0001", "phase": "EVENTS_PUBLISHED", "is_complete": True,
        "all_domains_succeeded": True,
        "incident": step("incidents", "create_incident", incident_id),
        "policy": step("policies", "evaluate_policy", policy_id),
        "trace": step("traces", "complete_trace", "tr1"),
        "events_published": ALL_TOPICS, "duration_ms": 0}
    # a succeeded run has no incident; a trace that is not there fails its step, not the run
    assert lost.to_dict() == {
        "run_id": "run-0002", "phase": "EVENTS_PUBLISHED", "is_complete": True,
        "all_domains_succeeded": False, "incident": None,
        "policy": step("policies", "evaluate_policy", policy_of(hoc_db, "run-0002").id),
        "trace": step("traces", "complete_trace", "nope", False, "trace nope not found for tenant t1"),
        "events_published": ["run.completed", "policy.evaluated"], "duration_ms": 0}
    # a repeat reports the records the first completion wrote, as succeeded steps
    assert again.to_dict() == {
        "run_id": "run-0001", "phase": "ALREADY_COMPLETED", "is_complete": True,
        "all_domains_succeeded": True,
        "incident": step("incidents", "create_incident", incident_id),
        "policy": step("policies", "evaluate_policy", policy_id), "trace": None,
        "events_published": [], "duration_ms": 0}


def test_every_step_is_stamped_with_the_transactions_one_timestamp(hoc_db, hoc_coordinator):
    later = T0.replace(hour=13)
    with freeze_time(T0) as clock:
        with hoc_coordinator.transaction() as tx:
            def slow_trace_store(*args):
                clock.move_to(later)  # the clock moves on during the completion
                return complete_trace(*args)

            first = RunCompletionTransaction(hoc_coordinator, slow_trace_store).execute(
                "t1", "run-0001", "failed", error_message="STEP_FAILURE", trace_id="missing")
        clock.move_to(T0.replace(hour=14))
        with hoc_coordinator.transaction() as replay:
            clock.move_to(T0.replace(hour=15))
            again = complete(hoc_coordinator, "run-0001")
    assert first.phase is TransactionPhase.JOINED
    assert tx.now == T0 and replay.now == T0.replace(hour=14)
    steps = (first.incident_result, first.policy_result, first.trace_result)
    assert [result.timestamp for result in steps] == [T0, T0, T0]
    assert incident_of(hoc_db, "run-0001").created_at == T0
    assert again.phase is TransactionPhase.ALREADY_COMPLETED
    assert again.incident_result.timestamp == again.policy_result.timestamp == replay.now


@pytest.mark.parametrize("synthetic", [False, True])
def test_both_records_carry_the_runs_synthetic_scenario_and_the_policy_evaluations_ids(
        hoc_db, hoc_coordinator, synthetic):
    options = {"is_synthetic": True, "synthetic_scenario_id": "scn-1"} if synthetic else {}
    complete(hoc_coordinator, "abcdefghij-42", error_message="AGENT_CRASH", **options)
    incident, policy = incident_of(hoc_db, "abcdefghij-42"), policy_of(hoc_db, "abcdefghij-42")
    expected = (True, "scn-1") if synthetic else (False, None)  # a real run by default
    assert (incident.is_synthetic, incident.synthetic_scenario_id) == expected
    assert (policy.is_synthetic, policy.synthetic_scenario_id) == expected
    assert (policy.policy_id, policy.pattern_id) == ("policy_eval_abcdefgh", "policies_checked:0")
    assert (policy.original_incident_id, policy.blocked_incident_id, policy.tenant_id) == (
        "abcdefghij-42", "abcdefghij-42", "t1")


@pytest.fixture
def guard_facts(hoc_db):
    """The GuardStateChanged facts delivered after commits on `hoc_db`."""
    seen = []

    def on_fact(fact):
        seen.append(fact)

    stop = subscribe(hoc_db, GuardStateChanged, on_fact)
    yield seen
    stop()


def test_a_new_incident_tells_the_guard_its_tenant_changed_and_nothing_else_does(
        hoc_coordinator, guard_facts):
    complete(hoc_coordinator, "run-0001", tenant_id="acme", error_message="AGENT_CRASH")
    assert guard_facts == [GuardStateChanged("acme")]
    complete(hoc_coordinator, "run-0001", tenant_id="acme", error_message="AGENT_CRASH")  # a replay
    complete(hoc_coordinator, "run-0002", "succeeded", tenant_id="acme")
    assert guard_facts == [GuardStateChanged("acme")]


def test_a_failed_runs_existing_incident_is_linked_not_created_again(hoc_db, hoc_coordinator,
                                                                    hoc_publisher, guard_facts):
    with hoc_coordinator.transaction() as tx:
        for tenant in ("other", "t1"):  # the other tenant's incident of the same run id first
            Incident.insert(id=f"inc-{tenant}", tenant_id=tenant, title="earlier", severity="high",
                            trigger_type="run_failure", source_type="run",
                            source_run_id="run-0001").execute(tx.db)
        Run.insert(id="run-0001", tenant_id="t1", incident_count=1).execute(tx.db)
    add_trace(hoc_coordinator, "tr1")
    result = complete(hoc_coordinator, "run-0001", error_message="AGENT_CRASH", trace_id="tr1")
    assert result.phase is TransactionPhase.EVENTS_PUBLISHED
    assert result.incident_result.result_id == "inc-t1" and result.incident_result.success
    assert Trace.select().where(Trace.trace_id == "tr1").get(hoc_db).incident_id == "inc-t1"
    assert Incident.select().count(hoc_db) == 2
    assert Run.select().where(Run.id == "run-0001").get(hoc_db).incident_count == 1
    # nothing new: no incident.created event, no guard fact
    assert result.events_published == ["run.completed", "policy.evaluated"]
    assert dict(hoc_publisher.published)["run.completed"]["incident_id"] == "inc-t1"
    assert guard_facts == []


def test_every_event_of_a_completion_belongs_to_its_tenant(hoc_db, hoc_coordinator):
    complete(hoc_coordinator, "run-0001", tenant_id="acme", error_message="AGENT_CRASH")
    events = Event.select().execute(hoc_db)
    assert sorted((event.topic, event.tenant_id) for event in events) == sorted(
        (topic, "acme") for topic in ALL_TOPICS)


@pytest.mark.parametrize("trace, reached", [(True, TransactionPhase.TRACE_COMPLETED),
                                            (False, TransactionPhase.POLICY_EVALUATED)])
def test_an_outbox_that_refuses_the_events_rolls_everything_back_and_says_how_far_it_got(
        hoc_db, hoc_coordinator, hoc_publisher, trace, reached):
    add_trace(hoc_coordinator, "tr1")
    with hoc_coordinator.transaction() as tx:
        refuse_writes(tx, "events", "outbox unavailable")
    with pytest.raises(TransactionFailed, match="outbox unavailable") as failure:
        complete(hoc_coordinator, "run-0001", error_message="AGENT_CRASH",
                 trace_id="tr1" if trace else None)
    assert failure.value.phase is reached
    assert failure.value.partial_results["phase"] == "ROLLED_BACK"
    assert (Incident.select().count(hoc_db), PreventionRecord.select().count(hoc_db)) == (0, 0)
    assert Trace.select().where(Trace.trace_id == "tr1").get(hoc_db).status == "running"
    assert list(hoc_publisher.published) == []


def test_duration_ms_is_the_milliseconds_the_completion_took(hoc_coordinator):
    with freeze_time(T0) as clock:
        def slow_trace_store(*args):
            clock.tick(1.5)
            return complete_trace(*args)

        add_trace(hoc_coordinator, "tr1")
        result = RunCompletionTransaction(hoc_coordinator, slow_trace_store).execute(
            "t1", "run-0001", "failed", trace_id="tr1")
    assert result.duration_ms == 1500 and result.to_dict()["duration_ms"] == 1500


def test_what_it_refuses_names_the_argument(hoc_coordinator):
    with pytest.raises(TypeError, match="^RunCompletionTransaction takes a TransactionCoordinator, "
                                        "got str$"):
        RunCompletionTransaction("hoc.db")
    transaction = RunCompletionTransaction(hoc_coordinator)
    for args, named in ((("t1", ["r"], "failed"), "run_id=['r']"),
                        (("t1", "r", 1), "run_status=1"), (("t1", "r", " "), "run_status=' '")):
        with pytest.raises(ValueError, match=re.escape(
                f"run_id and run_status are required (non-empty strings), got {named}")):
            transaction.execute(*args)


class HidingNul(str):
    def __contains__(self, part):
        return False  # the text is what is stored, whatever `in` says


@pytest.mark.parametrize("argument", ["tenant_id", "run_id", "run_status", "trace_id", "agent_id",
                                      "error_code", "synthetic_scenario_id"])
def test_a_nul_that_a_str_subclass_hides_from_in_is_refused_before_anything_is_written(
        hoc_db, hoc_coordinator, argument):
    add_trace(hoc_coordinator, "tr1")
    values = {"tenant_id": "t1", "run_id": "run-0001", "run_status": "failed", "trace_id": "tr1"}
    values[argument] = HidingNul("x\x00y")
    with pytest.raises(ValueError, match=f"^{argument} must not contain a NUL character"):
        RunCompletionTransaction(hoc_coordinator).execute(**values)
    assert (PreventionRecord.select().count(hoc_db), Event.select().count(hoc_db)) == (0, 0)
    assert Trace.select().where(Trace.trace_id == "tr1").get(hoc_db).status == "running"


class DataError(Exception):
    """A trace store's own error that happens to share a name with a driver error."""


@pytest.mark.parametrize("error", [sqlite3.OperationalError("trace store is locked"),
                                   DataError("trace store says no")])
def test_a_trace_completers_own_error_reaches_the_caller_as_it_was_raised(hoc_db, hoc_coordinator, error):
    def failing_trace_store(*args):
        raise error

    with pytest.raises(TransactionFailed) as failure:
        RunCompletionTransaction(hoc_coordinator, failing_trace_store).execute(
            "t1", "run-0001", "failed", trace_id="tr1")
    assert failure.value.cause is error and failure.value.phase is TransactionPhase.POLICY_EVALUATED
    assert PreventionRecord.select().count(hoc_db) == 0


@pytest.mark.parametrize("debug", [False, True])
def test_a_failing_statement_is_peewees_error_over_the_drivers_own_whether_or_not_sql_is_logged(
        hoc_db, hoc_coordinator, caplog, debug):
    with hoc_coordinator.transaction() as tx:
        refuse_writes(tx, "incidents", "incidents unavailable")
    with caplog.at_level(logging.DEBUG if debug else logging.WARNING, logger="peewee"):
        with pytest.raises(TransactionFailed, match="incidents unavailable") as failure:
            complete(hoc_coordinator, "run-0001", error_message="AGENT_CRASH")
    cause = failure.value.cause
    assert isinstance(cause, peewee.IntegrityError)
    assert not isinstance(cause.orig, peewee.PeeweeException)  # the driver's error, with its details
    assert failure.value.phase is TransactionPhase.NOT_STARTED
    assert PreventionRecord.select().count(hoc_db) == 0


def test_a_trace_completer_gets_the_incident_and_the_transactions_time_and_the_status_is_stored_as_given(
        hoc_db, hoc_coordinator):
    calls = []

    def recording_trace_store(tx, tenant_id, trace_id, run_status, incident_id, now):
        calls.append((tenant_id, trace_id, run_status, incident_id, now, tx.now))
        return complete_trace(tx, tenant_id, trace_id, run_status, incident_id, now)

    add_trace(hoc_coordinator, "tr1")
    result = RunCompletionTransaction(hoc_coordinator, recording_trace_store).execute(
        "t1", "run-0001", "failed", trace_id="tr1")
    ((tenant_id, trace_id, status, incident_id, now, tx_now),) = calls
    assert (tenant_id, trace_id, status) == ("t1", "tr1", "failed")
    assert incident_id == result.incident_result.result_id == incident_of(hoc_db, "run-0001").id
    assert isinstance(now, datetime) and now is tx_now
    add_trace(hoc_coordinator, "tr2", run_id="run-0002")
    complete(hoc_coordinator, "run-0002", status="Halted", trace_id="tr2")  # the built-in completion
    assert Trace.select().where(Trace.trace_id == "tr2").get(hoc_db).status == "Halted"


def test_its_statements_are_built_once_per_kind_of_database_and_reused(hoc_db, hoc_coordinator, monkeypatch):
    from hoc_drivers import run_completion

    monkeypatch.setattr(run_completion, "_BUILT", {})  # as in a fresh process
    complete(hoc_coordinator, "run-0001")
    built = run_completion._BUILT[type(hoc_db)]
    complete(hoc_coordinator, "run-0002")
    assert list(run_completion._BUILT) == [type(hoc_db)] and run_completion._BUILT[type(hoc_db)] is built
    assert [sql for sql, _ in built] == [statement.sql(hoc_db)[0] for statement in (
        run_completion._INSERT_POLICY, run_completion._INSERT_INCIDENT, run_completion._COUNT_RUN_INCIDENT,
        run_completion._COMPLETE_TRACE)]
    assert PreventionRecord.select().count(hoc_db) == 2


def test_complete_trace_says_whether_the_tenant_had_the_trace(hoc_db, hoc_coordinator):
    add_trace(hoc_coordinator, "tr1")
    with hoc_coordinator.transaction() as tx:
        assert complete_trace(tx, "t1", "tr1", "failed", None, tx.now) is True
        assert complete_trace(tx, "t1", "nope", "failed", None, tx.now) is False
        assert complete_trace(tx, "t2", "tr1", "failed", None, tx.now) is False  # another tenant's
