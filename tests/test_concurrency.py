"""Coordinator transactions raced from several processes on one real database, both backends.

SQLite runs writers one at a time (BEGIN IMMEDIATE); PostgreSQL runs them at once, so each
read-then-write needs the lock or constraint docs/concurrency.md names for it. Every test here
forks processes (`run_at_once`) that repeat the raced write over several keys, so the writes
really overlap, and checks each key's outcome exactly. docs/concurrency.md's table is checked
to name functions that exist.
"""
import importlib
import multiprocessing
import re
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from hoc_drivers import dialect, idempotency
from hoc_drivers.alert_config import AlertConfig, AlertConfigWriter, ThresholdSignal
from hoc_drivers.alert_driver import AlertQueueWriter, delete_old_alerts
from hoc_drivers.alert_emitter import AlertEmitter
from hoc_drivers.db import connect_database
from hoc_drivers.dialect import for_update
from hoc_drivers.governance_signal_driver import GovernanceSignalReader, record_governance_signal
from hoc_drivers.models.alerts import AlertQueueItem, StoredAlertConfig, StoredThresholdSignal
from hoc_drivers.models.base import utcnow
from hoc_drivers.models.governance import GovernanceSignal
from hoc_drivers.models.runs import Event, Incident, PreventionRecord, Run
from hoc_drivers.models.cost import WorkerRun
from hoc_drivers.run_completion import RunCompletionTransaction
from hoc_drivers.testing import other_connection, run_at_once
from hoc_drivers.transaction_coordinator import TransactionCoordinator
from hoc_drivers.worker_write_service_async import WorkerRunImmutable, WorkerRunReader, WorkerWriteService

DOC = Path(__file__).resolve().parent.parent / "docs" / "concurrency.md"
T = "tenant-a"
PROCESSES = 8
KEYS = 12  # raced one after the other: the processes drift apart, yet most keys overlap


def _race(work, url, *args, processes=PROCESSES):
    """Run `work(coordinator, index, *args)` in `processes` forked processes at once, each on
    its own connection with its own index; returns what each returned (an exception's repr
    instead when it raised)."""
    results = multiprocessing.get_context("fork").Queue()
    codes = run_at_once(_child, work, url, args, results, processes=processes)
    assert codes == [0] * processes
    return [results.get(timeout=30) for _ in range(processes)]


def _child(work, url, args, results, barrier):
    db = connect_database(url)
    db.connection()  # connected before the barrier: the work itself races
    coordinator = TransactionCoordinator(db)
    index = barrier.wait(timeout=30)  # 0 .. processes - 1, one each
    try:
        results.put(work(coordinator, index, *args))
    except Exception as exc:  # reported to the parent, which asserts there is none
        results.put(repr(exc))
    finally:
        db.close()


def _in_transactions(coordinator, write, keys):
    """`write(tx, key)` for each key, each in its own transaction; their results in key order."""
    outcomes = []
    for key in keys:
        with coordinator.transaction() as tx:
            outcomes.append(write(tx, key))
    return outcomes


def _by_key(outcomes):
    """Per key (position), what each process got for it."""
    assert all(isinstance(o, list) for o in outcomes), outcomes
    return list(zip(*outcomes, strict=True))


# ------------------------------------------------------------------ idempotency claims

def _claim(tx, key):
    claim = idempotency.claim_or_get(tx, T, key, "agent", "fp")
    return claim.run_id, claim.created, claim.replaced_run_id


def _claim_all(coordinator, index):
    return _in_transactions(coordinator, _claim, [f"k{i}" for i in range(KEYS)])


def _key_holders(db):
    return {key: run_id for run_id, key in Run.select(Run.id, Run.idempotency_key)
            .where(Run.idempotency_key.is_null(False)).tuples().execute(db)}


def test_processes_claiming_one_key_at_once_make_one_owner(hoc_coordinator):
    per_key = _by_key(_race(_claim_all, hoc_coordinator.db.database))
    holders = _key_holders(hoc_coordinator.db)
    for i, claims in enumerate(per_key):
        assert {run_id for run_id, _, _ in claims} == {holders[f"k{i}"]}
        assert sorted(created for _, created, _ in claims) == [False] * (PROCESSES - 1) + [True]
    assert Run.select().count(hoc_coordinator.db) == KEYS


def test_processes_claiming_one_expired_key_at_once_replace_it_once(hoc_coordinator):
    long_ago = utcnow() - timedelta(days=30)
    with hoc_coordinator.transaction() as tx:
        old = [idempotency.claim_or_get(tx, T, f"k{i}", "agent", "fp", clock=lambda: long_ago).run_id
               for i in range(KEYS)]
    per_key = _by_key(_race(_claim_all, hoc_coordinator.db.database))
    holders = _key_holders(hoc_coordinator.db)
    for i, claims in enumerate(per_key):
        new = holders[f"k{i}"]
        assert new != old[i] and {run_id for run_id, _, _ in claims} == {new}, claims
        assert sorted((created, replaced) for _, created, replaced in claims) == \
            [(False, None)] * (PROCESSES - 1) + [(True, old[i])]
    assert Run.select().count(hoc_coordinator.db) == 2 * KEYS  # each old run kept, without its key


# ------------------------------------------------------------------ run completions

def _complete(coordinator, index, shares):
    """Complete the runs of `shares[index]` (one list for all: index 0), each once; phases."""
    transaction = RunCompletionTransaction(coordinator)
    return [transaction.execute(T, run_id, "failed", error_message="AGENT_CRASH").phase.value
            for run_id in shares[index % len(shares)]]


def _runs(coordinator, count):
    with coordinator.transaction() as tx:
        return [idempotency.claim_or_get(tx, T, f"run-{i}", run_id=f"run-{i}").run_id for i in range(count)]


def _assert_completed_once(db, runs):
    assert Incident.select().count(db) == len(runs)
    assert PreventionRecord.select().count(db) == len(runs)
    assert Event.select().count(db) == 3 * len(runs)  # run.completed, incident.created, policy.evaluated
    assert [count for (count,) in Run.select(Run.incident_count).tuples().execute(db)] == [1] * len(runs)


def test_four_processes_completing_their_own_runs_lose_nothing(hoc_coordinator):
    runs = _runs(hoc_coordinator, 4 * KEYS)
    outcomes = _race(_complete, hoc_coordinator.db.database, [runs[w::4] for w in range(4)], processes=4)
    assert outcomes == [["EVENTS_PUBLISHED"] * KEYS] * 4
    _assert_completed_once(hoc_coordinator.db, runs)


def test_four_processes_completing_the_same_runs_complete_each_once(hoc_coordinator):
    runs = _runs(hoc_coordinator, KEYS)
    for phases in _by_key(_race(_complete, hoc_coordinator.db.database, [runs], processes=4)):
        assert sorted(phases) == ["ALREADY_COMPLETED"] * 3 + ["EVENTS_PUBLISHED"], phases
    _assert_completed_once(hoc_coordinator.db, runs)


# ------------------------------------------------------------------ governance signals

def _record_signals(coordinator, index):
    return _in_transactions(coordinator, lambda tx, scope: record_governance_signal(
        tx, scope, "BLCA_STATUS", "BLOCKED" if index % 2 else "CLEAN", f"tool-{index}").id,
        [f"scope-{i}" for i in range(KEYS)])


def test_processes_recording_a_scope_signal_at_once_leave_one_active_each_superseding_the_last(hoc_db):
    per_scope = _by_key(_race(_record_signals, hoc_db.database))
    reader = GovernanceSignalReader(hoc_db)
    for i, ids in enumerate(per_scope):
        scope = f"scope-{i}"
        rows = list(GovernanceSignal.select().where(GovernanceSignal.scope == scope).execute(hoc_db))
        assert sorted(r.id for r in rows) == sorted(ids)
        assert len(reader.get_active_signals(scope, "BLCA_STATUS")) == 1
        superseders = [r.superseded_by for r in rows if r.superseded_by is not None]
        assert len(superseders) == PROCESSES - 1 and set(superseders) < set(ids)  # a chain: each once


# ------------------------------------------------------------------ stored alert configs

def _save_configs(coordinator, index):
    config = AlertConfig(policy_id="p", tenant_id=T, min_alert_interval_seconds=3600,
                         near_threshold_percentage=80 + index)
    return _in_transactions(coordinator, lambda tx, name: AlertConfigWriter(tx).save(T, name, config),
                            [f"cfg-{i}" for i in range(KEYS)])


def _emit_near(coordinator, index):
    def emit(tx, name):
        signal = ThresholdSignal(T, f"run-of-{name}", "p", "cost", 95, 100)  # max 10 alerts a run
        return AlertEmitter(tx).emit_stored(name, signal)["alert_sent"]
    return _in_transactions(coordinator, emit, [f"cfg-{i}" for i in range(KEYS)])


def test_processes_saving_one_config_name_at_once_store_one_config(hoc_db):
    assert _by_key(_race(_save_configs, hoc_db.database)) == [(None,) * PROCESSES] * KEYS
    assert StoredAlertConfig.select().count(hoc_db) == KEYS


def test_processes_alerting_through_one_stored_config_at_once_are_throttled_to_one_alert(hoc_db):
    _race(_save_configs, hoc_db.database, processes=1)
    for i, sent in enumerate(_by_key(_race(_emit_near, hoc_db.database))):
        assert sorted(sent) == [False] * (PROCESSES - 1) + [True], sent
        config = StoredAlertConfig.select().where(StoredAlertConfig.name == f"cfg-{i}").get(hoc_db)
        assert config.alerts_sent_count == 1
    signals = StoredThresholdSignal.select()
    assert signals.count(hoc_db) == KEYS * PROCESSES
    assert signals.where(StoredThresholdSignal.alert_sent).count(hoc_db) == KEYS


def _save_one_alert_a_run_configs(coordinator, index):
    config = AlertConfig(policy_id="p", tenant_id=T, min_alert_interval_seconds=0, max_alerts_per_run=1)
    return _in_transactions(coordinator, lambda tx, name: AlertConfigWriter(tx).save(T, name, config),
                            [f"own-{n}" for n in range(PROCESSES)])


def _emit_near_through_own_config(coordinator, index):
    def emit(tx, run_id):  # each process its own stored config, all of one policy and run
        signal = ThresholdSignal(T, run_id, "p", "cost", 95, 100)
        return AlertEmitter(tx).emit_stored(f"own-{index}", signal)["alert_sent"]
    return _in_transactions(coordinator, emit, [f"run-{i}" for i in range(KEYS)])


def test_processes_alerting_one_run_through_different_configs_of_its_policy_send_one_alert(hoc_db):
    _race(_save_one_alert_a_run_configs, hoc_db.database, processes=1)
    for sent in _by_key(_race(_emit_near_through_own_config, hoc_db.database)):
        assert sorted(sent) == [False] * (PROCESSES - 1) + [True], sent  # max_alerts_per_run=1
    sent_signals = StoredThresholdSignal.select().where(StoredThresholdSignal.alert_sent)
    assert sent_signals.count(hoc_db) == KEYS


def _wait_until_a_statement_waits_for_a_lock(db, seconds=10):
    """Return once another session of PostgreSQL database `db` waits for a lock (a bounded
    wait for a real server event)."""
    conn = other_connection(db)
    try:
        deadline = time.monotonic() + seconds
        while conn.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                           ).fetchone()[0] == 0:
            assert time.monotonic() < deadline, "no statement waited for a lock"
            time.sleep(0.01)
    finally:
        conn.close()


def test_a_purge_waiting_on_a_revival_does_not_delete_the_revived_alert(hoc_db):
    if dialect.of(hoc_db) != dialect.POSTGRESQL:
        pytest.skip("PostgreSQL runs the purge beside the revival; SQLite runs them one after the other")
    old = utcnow() - timedelta(days=2)
    coordinator = TransactionCoordinator(hoc_db)
    with coordinator.transaction() as tx:
        writer = AlertQueueWriter(tx)
        writer.insert_alert(T, {}, "test", now=old)
        (alert,) = writer.fetch_pending_alerts(old, 1, 60)
        writer.update_alert_failed(alert, old, "receiver down")
    revived, purged = threading.Event(), []

    def purge():  # its own thread: its own connection and transaction
        revived.wait(10)
        purged.append(delete_old_alerts(coordinator, old + timedelta(seconds=1), ["failed"], step=10))

    purger = threading.Thread(target=purge)
    purger.start()
    with coordinator.transaction() as tx:
        assert AlertQueueWriter(tx).retry_failed_alerts(1, utcnow()) == 1
        revived.set()
        _wait_until_a_statement_waits_for_a_lock(hoc_db)  # the purge's DELETE waits for this row
    purger.join(10)
    assert purged == [0]
    assert [a.status for a in AlertQueueItem.select().execute(hoc_db)] == ["pending"]


# ------------------------------------------------------------------ worker runs

def _upsert_runs(coordinator, index):
    return _in_transactions(coordinator, lambda tx, run_id: WorkerWriteService(tx).upsert_worker_run(
        T, run_id, {"status": "running", "total_tokens_used": index}).id,
        [f"wr-{i}" for i in range(KEYS)])


def test_processes_upserting_one_new_worker_run_at_once_create_it_once(hoc_db):
    assert _by_key(_race(_upsert_runs, hoc_db.database)) == \
        [(f"wr-{i}",) * PROCESSES for i in range(KEYS)]
    assert WorkerRun.select().count(hoc_db) == KEYS


def _complete_runs(coordinator, index):
    def complete(tx, run_id):
        try:
            WorkerWriteService(tx).upsert_worker_run(T, run_id, {"status": "completed", "artifacts": [index]})
        except WorkerRunImmutable:  # completed first by another process, with other artifacts
            return "refused"
        return index
    return _in_transactions(coordinator, complete, [f"wr-{i}" for i in range(KEYS)])


def test_processes_completing_one_worker_run_at_once_complete_it_once(hoc_db):
    _race(_upsert_runs, hoc_db.database, processes=1)
    for i, outcomes in enumerate(_by_key(_race(_complete_runs, hoc_db.database))):
        winner = next(o for o in outcomes if o != "refused")
        assert sorted(outcomes, key=str) == sorted([winner] + ["refused"] * (PROCESSES - 1), key=str)
        run = WorkerRunReader(hoc_db).get_worker_run(T, f"wr-{i}")
        assert (run.status, run.output_json) == ("completed", [winner]) and run.completed_at is not None


def test_row_locks_are_taken_on_postgresql_and_cost_sqlite_nothing(hoc_db):
    sql, _ = hoc_db.get_sql_context().sql(for_update(Run.select(), hoc_db)).query()
    assert sql.endswith("FOR UPDATE") == (dialect.of(hoc_db) == dialect.POSTGRESQL)
    assert sql.removesuffix(" FOR UPDATE") == hoc_db.get_sql_context().sql(Run.select()).query()[0]


# ------------------------------------------------------------------ the table of docs/concurrency.md

def test_the_concurrency_table_names_functions_that_exist():
    names = re.findall(r"^\| `([a-z_]+(?:\.[A-Za-z_]+)+)`", DOC.read_text(encoding="utf-8"), re.M)
    assert len(names) >= 10
    for dotted in names:
        module, *attributes = dotted.split(".")
        target = importlib.import_module(f"hoc_drivers.{module}")
        for attribute in attributes:
            target = getattr(target, attribute)  # AttributeError: the table names something gone
        assert callable(target), dotted
