"""worker_write_service_async: worker runs, cost records, advisories; sync and awaitable (SPEC §11)."""
import asyncio
from datetime import datetime, timedelta, timezone

import pytest
from freezegun import freeze_time
from peewee import IntegrityError

from hoc_drivers.testing import other_connection
from hoc_drivers.db import CommitForbidden
from hoc_drivers.models.cost import CostAnomaly, CostRecord, WorkerRun
from hoc_drivers.worker_write_service_async import (WorkerRunImmutable, WorkerRunReader,
                                                    WorkerWriteService, WorkerWriteServiceAsync)

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)


@pytest.fixture
def write(hoc_coordinator):
    """write(fn) runs fn(service) in one coordinator transaction and returns its result."""
    def run(fn):
        with hoc_coordinator.transaction() as tx:
            return fn(WorkerWriteService(tx))
    return run


def upsert(write, data, run_id="r1", tenant="t1"):
    return write(lambda s: s.upsert_worker_run(tenant, run_id, data))


def test_create_running_then_complete(write, hoc_no_stray_commits):
    with freeze_time(T0):
        run = upsert(write, {"task": "x", "status": "running"})
    assert (run.id, run.tenant_id, run.worker_id, run.task, run.status) == (
        "r1", "t1", "business-builder", "x", "running")
    assert run.input_json == {"task": "x"}
    assert run.started_at == run.created_at == T0 and run.completed_at is None
    assert (run.recoveries, run.policy_violations, run.output_json) == (0, 0, None)
    with freeze_time(T0 + timedelta(seconds=5)):
        run = upsert(write, {"status": "completed", "success": True, "total_tokens_used": 10,
                             "cost_cents": 3})
    assert (run.status, run.success, run.total_tokens, run.cost_cents) == ("completed", True, 10, 3)
    assert run.completed_at == T0 + timedelta(seconds=5) and run.started_at == T0
    assert run.output_json is None


def test_create_defaults_and_result_fields(write):
    queued = upsert(write, {}, run_id="q")
    assert (queued.status, queued.task, queued.started_at, queued.completed_at) == ("queued", "", None, None)
    run = upsert(write, {"task": "t", "status": "failed", "success": False, "error": "boom",
                         "artifacts": {"report": "r"}, "replay_token": {"seed": 1},
                         "total_latency_ms": 12.7, "policy_violations": ["a", "b"],
                         "recovery_log": ["r1"]}, run_id="f")
    assert (run.success, run.error, run.output_json, run.replay_token_json) == (
        False, "boom", {"report": "r"}, {"seed": 1})
    assert (run.total_latency_ms, run.policy_violations, run.recoveries) == (12, 2, 1)
    assert run.completed_at is None  # created terminal: not stamped (reference §2.4)


def test_falsy_values_follow_the_server_rules(write):
    run = upsert(write, {"status": "running", "artifacts": [], "total_latency_ms": 0,
                         "policy_violations": [], "recovery_log": None})
    assert (run.output_json, run.total_latency_ms, run.policy_violations, run.recoveries) == (
        None, None, 0, 0)


def test_update_keeps_what_the_caller_did_not_send(write):
    upsert(write, {"task": "x", "status": "running", "artifacts": {"draft": 1},
                   "total_tokens_used": 40, "recovery_log": ["a"], "policy_violations": ["p"],
                   "total_latency_ms": 100})
    run = upsert(write, {"cost_cents": 7})
    assert (run.output_json, run.total_tokens, run.recoveries, run.policy_violations,
            run.total_latency_ms, run.cost_cents, run.status) == (
        {"draft": 1}, 40, 1, 1, 100, 7, "running")


def test_started_at_is_stamped_once(write):
    with freeze_time(T0):
        upsert(write, {"status": "queued"})
    with freeze_time(T0 + timedelta(seconds=1)):
        first = upsert(write, {"status": "running"})
    with freeze_time(T0 + timedelta(seconds=2)):
        again = upsert(write, {"status": "running", "total_tokens_used": 1})
    assert first.started_at == again.started_at == T0 + timedelta(seconds=1)


@pytest.mark.parametrize("terminal", ["completed", "failed", "crashed"])
@pytest.mark.parametrize("change", [
    {"status": "queued"}, {"status": "running"}, {"success": False}, {"error": "later"},
    {"artifacts": {"new": 1}}, {"total_tokens_used": 99}, {"cost_cents": 50},
])
def test_terminal_run_result_columns_are_immutable(hoc_db, write, terminal, change):
    before = upsert(write, {"task": "x", "status": terminal, "success": True, "total_tokens_used": 10,
                            "cost_cents": 3})
    with pytest.raises(WorkerRunImmutable, match=f"TRUTH_VIOLATION: cannot mutate {terminal} worker run 'r1'"):
        upsert(write, change)
    after = WorkerRun.select().where(WorkerRun.id == "r1").get(hoc_db)
    assert (after.status, after.success, after.error, after.output_json, after.total_tokens,
            after.cost_cents, after.completed_at) == (
        before.status, before.success, before.error, before.output_json, before.total_tokens,
        before.cost_cents, before.completed_at)


def test_terminal_upsert_that_changes_nothing_is_a_no_op(write):
    with freeze_time(T0):
        upsert(write, {"status": "running"})
    with freeze_time(T0 + timedelta(seconds=3)):
        done = upsert(write, {"status": "completed", "success": True, "total_tokens_used": 10,
                              "cost_cents": 3})
    with freeze_time(T0 + timedelta(seconds=60)):
        again = upsert(write, {"status": "completed", "success": True, "total_tokens_used": 10,
                               "cost_cents": 3})
    assert again.completed_at == done.completed_at == T0 + timedelta(seconds=3)


@pytest.mark.parametrize("terminal, stamped", [("completed", True), ("failed", True), ("crashed", False)])
def test_completed_at_is_stamped_only_by_an_update_into_completed_or_failed(write, terminal, stamped):
    with freeze_time(T0):
        created = upsert(write, {"status": terminal}, run_id="born-terminal")
        upsert(write, {"status": "running"})
    with freeze_time(T0 + timedelta(seconds=7)):
        moved = upsert(write, {"status": terminal})
        again = upsert(write, {"status": terminal}, run_id="born-terminal")  # same status: a no-op
    assert created.completed_at is None and again.completed_at is None
    assert moved.completed_at == (T0 + timedelta(seconds=7) if stamped else None)
    assert moved.started_at == T0


def test_terminal_run_may_still_gain_bookkeeping_columns(write):
    upsert(write, {"status": "failed", "success": False})
    run = upsert(write, {"recovery_log": ["retry-1", "retry-2"], "total_latency_ms": 420})
    assert (run.recoveries, run.total_latency_ms, run.status) == (2, 420, "failed")


def test_database_trigger_refuses_raw_updates_of_terminal_runs(hoc_coordinator, hoc_db, write):
    upsert(write, {"status": "completed", "success": True})
    with pytest.raises(IntegrityError, match="TRUTH_VIOLATION"):
        with hoc_coordinator.transaction() as tx:
            tx.db.execute_sql("UPDATE worker_runs SET status = 'queued' WHERE id = 'r1'")
    with hoc_coordinator.transaction() as tx:
        tx.db.execute_sql("UPDATE worker_runs SET recoveries = 5 WHERE id = 'r1'")
        tx.db.execute_sql("UPDATE worker_runs SET status = 'completed' WHERE id = 'r1'")  # same value
    assert WorkerRun.select().where(WorkerRun.id == "r1").get(hoc_db).recoveries == 5


@pytest.mark.parametrize("data, message", [
    ({"status": "done"}, "unknown worker run status 'done'"),
    ({"cost_cents": -1}, "cost_cents must be a non-negative integer"),
    ({"cost_cents": 2.5}, "cost_cents must be a non-negative integer"),
    ({"total_tokens_used": "10"}, "total_tokens_used must be a non-negative integer"),
    (["not", "a", "dict"], "data must be a dict"),
])
def test_bad_upsert_input_writes_nothing(hoc_db, write, data, message):
    with pytest.raises(ValueError, match=message):
        upsert(write, data)
    assert WorkerRun.select().count(hoc_db) == 0


def test_runs_are_tenant_scoped(hoc_db, write):
    upsert(write, {"task": "mine"}, tenant="t1")
    with pytest.raises(ValueError, match="does not belong to tenant 't2'"):
        upsert(write, {"status": "running"}, tenant="t2")
    reader = WorkerRunReader(hoc_db)
    assert reader.get_worker_run("t2", "r1") is None
    assert reader.get_worker_run("t1", "r1").task == "mine"
    assert write(lambda s: s.get_worker_run("t2", "r1")) is None
    with pytest.raises(ValueError, match="tenant_id is required"):
        reader.get_worker_run(None, "r1")
    assert write(lambda s: s.delete_worker_run("t2", "r1")) is False  # another tenant's id
    assert WorkerRun.select().where(WorkerRun.id == "r1").get(hoc_db).status == "queued"


def test_delete_worker_run_even_when_terminal(hoc_db, write):
    run = upsert(write, {"status": "completed"})
    assert write(lambda s: s.delete_worker_run(run.tenant_id, run.id)) is True
    assert WorkerRun.select().count(hoc_db) == 0


def test_insert_cost_record(write):
    with freeze_time(T0):
        record = write(lambda s: s.insert_cost_record("t1", "r1", "claude-3", 30, 70, 12))
    assert (record.tenant_id, record.request_id, record.workflow_id, record.skill_id) == (
        "t1", "r1", "business-builder", "llm_invoke")
    assert (record.model, record.input_tokens, record.output_tokens) == ("claude-3", 30, 70)
    assert record.cost_cents == 12.0 and isinstance(record.cost_cents, float)
    assert (record.user_id, record.feature_tag, record.created_at) == (None, None, T0)
    assert isinstance(record.id, str) and len(record.id) == 32


@pytest.mark.parametrize("args, message", [
    (("t1", "r1", "", 1, 1, 1), "model is required"),
    (("t1", "r1", "m", -1, 1, 1), "input_tokens must be a non-negative integer"),
    (("t1", "r1", "m", 1, 1.5, 1), "output_tokens must be a non-negative integer"),
    (("t1", "r1", "m", 1, 1, -0.5), "cost_cents must be a non-negative number"),
    (("", "r1", "m", 1, 1, 1), "tenant_id is required"),
])
def test_bad_cost_record_writes_nothing(hoc_db, write, args, message):
    with pytest.raises(ValueError, match=message):
        write(lambda s: s.insert_cost_record(*args))
    assert CostRecord.select().count(hoc_db) == 0


def test_insert_cost_advisory_as_the_server_edition(write):
    snapshot = {"budget_id": "b1", "daily_limit_cents": 1000, "warn_threshold_pct": 80,
                "hard_limit_enabled": False}
    with freeze_time(T0):
        advisory = write(lambda s: s.insert_cost_advisory("t1", "r1", 900, 800.0, snapshot))
    assert (advisory.anomaly_type, advisory.severity, advisory.entity_type, advisory.entity_id) == (
        "BUDGET_WARNING", "medium", "tenant", "t1")
    assert (advisory.current_value_cents, advisory.expected_value_cents) == (900.0, 800.0)
    assert advisory.deviation_pct == 12.5 and advisory.threshold_pct == 80.0
    assert advisory.message == "Daily spend (900¢) exceeds 80% warning threshold (800¢)"
    assert advisory.metadata_json == {"run_id": "r1", "budget_snapshot": snapshot}
    assert (advisory.resolved, advisory.breach_count, advisory.incident_id) == (False, 1, None)
    assert advisory.detected_at == T0


def test_advisory_edges(hoc_db, write):
    zero = write(lambda s: s.insert_cost_advisory("t1", "r1", 5, 0, {"warn_threshold_pct": 80.0}))
    assert zero.deviation_pct == 0
    assert zero.message == "Daily spend (5¢) exceeds 80.0% warning threshold (0¢)"
    bare = write(lambda s: s.insert_cost_advisory("t1", "r2", 10, 5, {}))
    assert (bare.threshold_pct, bare.deviation_pct) == (0.0, 100.0)
    with pytest.raises(ValueError, match="budget_snapshot must be a dict"):
        write(lambda s: s.insert_cost_advisory("t1", "r3", 10, 5, None))
    assert CostAnomaly.select().count(hoc_db) == 2


WRITES = {
    "upsert_worker_run": lambda s: s.upsert_worker_run("t1", "r9", {"task": "x"}),
    "update_worker_run": lambda s: s.upsert_worker_run("t1", "r1", {"status": "running"}),
    "insert_cost_record": lambda s: s.insert_cost_record("t1", "r1", "m", 1, 2, 3),
    "insert_cost_advisory": lambda s: s.insert_cost_advisory("t1", "r1", 9, 8, {}),
    "delete_worker_run": lambda s: s.delete_worker_run("t1", "r1"),
}


@pytest.mark.parametrize("name", sorted(WRITES))
def test_every_write_is_refused_outside_a_coordinator_transaction(hoc_coordinator, hoc_db, write, name):
    upsert(write, {"task": "x"})
    with hoc_coordinator.transaction() as closed:
        pass
    with pytest.raises(CommitForbidden):
        WRITES[name](WorkerWriteService(closed))
    assert [(r.id, r.status) for r in WorkerRun.select().execute(hoc_db)] == [("r1", "queued")]
    assert CostRecord.select().count(hoc_db) == CostAnomaly.select().count(hoc_db) == 0


# ---------------------------------------------------------------------------------------
# the awaitable facade


def test_async_facade_runs_each_call_in_its_own_committed_transaction(hoc_coordinator, hoc_db):
    service = WorkerWriteServiceAsync(hoc_coordinator)

    async def scenario():
        created = await service.upsert_worker_run("t1", "r1", {"task": "x", "status": "running"})
        done = await service.upsert_worker_run("t1", "r1", {"status": "completed", "success": True})
        record = await service.insert_cost_record("t1", "r1", "m", 3, 7, 4)
        advisory = await service.insert_cost_advisory("t1", "r1", 900, 800.0, {"warn_threshold_pct": 80})
        fetched = await service.get_worker_run("t1", "r1")
        hidden = await service.get_worker_run("t2", "r1")
        return created, done, record, advisory, fetched, hidden

    created, done, record, advisory, fetched, hidden = asyncio.run(scenario())
    assert (created.status, done.status, fetched.status, hidden) == ("running", "completed", "completed", None)
    assert (record.cost_cents, advisory.anomaly_type) == (4.0, "BUDGET_WARNING")
    assert hoc_coordinator.current() is None
    # committed: a fresh connection sees every row
    other = other_connection(hoc_db)
    assert other.execute("SELECT status FROM worker_runs").fetchall() == [("completed",)]
    assert other.execute("SELECT count(*) FROM cost_records").fetchone() == (1,)
    other.close()


def test_async_failure_rolls_back_its_own_transaction(hoc_coordinator, hoc_db, write):
    upsert(write, {"status": "completed", "success": True})
    service = WorkerWriteServiceAsync(hoc_coordinator)
    with pytest.raises(WorkerRunImmutable):
        asyncio.run(service.upsert_worker_run("t1", "r1", {"status": "failed"}))
    assert WorkerRun.select().where(WorkerRun.id == "r1").get(hoc_db).status == "completed"


def test_async_calls_join_the_callers_transaction(hoc_coordinator, hoc_db):
    service = WorkerWriteServiceAsync(hoc_coordinator)

    async def inside_a_transaction_that_fails():
        with hoc_coordinator.transaction() as tx:
            await service.upsert_worker_run("t1", "r1", {"task": "x"})
            await service.insert_cost_record("t1", "r1", "m", 1, 1, 1)
            assert (await service.get_worker_run("t1", "r1")).task == "x"  # sees its own write
            assert tx.db.in_transaction()
            raise RuntimeError("caller fails after the awaits")

    with pytest.raises(RuntimeError):
        asyncio.run(inside_a_transaction_that_fails())
    assert WorkerRun.select().count(hoc_db) == CostRecord.select().count(hoc_db) == 0


def test_concurrent_async_writes_all_commit(hoc_coordinator, hoc_db):
    service = WorkerWriteServiceAsync(hoc_coordinator)

    async def many():
        await asyncio.gather(*(service.upsert_worker_run("t1", f"r{i}", {"task": str(i)})
                               for i in range(12)))
        await asyncio.gather(*(service.insert_cost_record("t1", f"r{i}", "m", 1, 1, i)
                               for i in range(12)))

    asyncio.run(many())
    assert WorkerRun.select().count(hoc_db) == CostRecord.select().count(hoc_db) == 12
