"""Reliability: SIGKILL at random points, four writers on one file, nothing partial, nothing lost.

Marked `reliability` (deselect with `-m "not reliability"`); run by .ci/run with the rest.
"""
import json
import multiprocessing
import os
import random
import signal
import sqlite3
import subprocess
import sys

import peewee
import pytest

from hoc_drivers.db import init_database
from hoc_drivers.models.runs import Event, Incident, Run
from hoc_drivers.transaction_coordinator import (RunCompletionTransaction, TransactionCoordinator,
                                                 TransactionFailed)

pytestmark = pytest.mark.reliability

CRASH_TRIALS = 200
RUNS_PER_CHILD = 12


def _child_until_killed(path, trial, kill_at_statement, kill_in_publish, report_fd):
    """Complete runs, reporting each committed one, until SIGKILL at the chosen point."""
    db = init_database(path)
    coordinator = TransactionCoordinator(db)
    statements = 0

    def count_statement(sql):
        nonlocal statements
        statements += 1
        if statements == kill_at_statement:
            os.kill(os.getpid(), signal.SIGKILL)

    def die_while_publishing(topic, payload):
        if payload["run_id"] == kill_in_publish:
            os.kill(os.getpid(), signal.SIGKILL)

    db.connection().set_trace_callback(count_statement)
    coordinator.publisher.subscribe("run.completed", die_while_publishing)
    transaction = RunCompletionTransaction(coordinator)
    for i in range(RUNS_PER_CHILD):
        run_id = f"t{trial}-r{i}"
        transaction.execute("tenant", run_id, "failed", error_message="AGENT_CRASH")
        os.write(report_fd, f"{run_id}\n".encode())
    os._exit(0)


def _rows_by_run(conn, table, column):
    return {row[0]: row[1] for row in conn.execute(
        f"SELECT {column}, count(*) FROM {table} GROUP BY {column}")}


def test_sigkill_at_random_points_leaves_only_whole_transactions(tmp_path):
    path = str(tmp_path / "crash.db")
    init_database(path).close()
    rng = random.Random(20261126)
    context = multiprocessing.get_context("fork")
    reported = set()
    attempted = set()
    for trial in range(CRASH_TRIALS):
        read_fd, write_fd = os.pipe()
        kill_at = rng.randint(1, RUNS_PER_CHILD * 9)
        kill_in_publish = f"t{trial}-r{rng.randrange(RUNS_PER_CHILD)}" if trial % 4 == 0 else None
        child = context.Process(target=_child_until_killed,
                                args=(path, trial, kill_at, kill_in_publish, write_fd))
        child.start()
        os.close(write_fd)
        with os.fdopen(read_fd) as pipe:
            reported.update(pipe.read().split())
        child.join(timeout=30)
        assert child.exitcode in (-signal.SIGKILL, 0)
        attempted.update(f"t{trial}-r{i}" for i in range(RUNS_PER_CHILD))

    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    incidents = _rows_by_run(conn, "incidents", "source_run_id")
    policies = _rows_by_run(conn, "prevention_records", "run_id")
    events = _rows_by_run(conn, "events", "json_extract(payload, '$.run_id')")
    committed = set(incidents)
    assert reported <= committed, "a run reported as committed is missing"
    assert set(policies) == committed, "incident and policy row are not all-or-nothing"
    assert set(events) == committed, "an outbox event exists for an uncommitted transaction"
    assert all(incidents[r] == 1 and policies[r] == 1 and events[r] == 3 for r in committed)
    assert committed <= attempted
    assert len(committed) > CRASH_TRIALS  # the kills really landed at many different points
    assert len(committed) < len(attempted)


def _complete_many(path, worker, count, queue):
    db = init_database(path)
    transaction = RunCompletionTransaction(TransactionCoordinator(db))
    errors = []
    for i in range(count):
        try:
            transaction.execute(f"tenant-{worker}", f"w{worker}-{i}", "failed",
                                error_message="EXECUTION_TIMEOUT")
        except Exception as exc:  # collected and asserted empty by the parent
            errors.append(repr(exc))
    queue.put(errors)


def test_four_processes_times_500_run_completions(tmp_path):
    """Also the spine's "several processes write one file, no database is locked" check."""
    path = str(tmp_path / "busy.db")
    init_database(path).close()
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [context.Process(target=_complete_many, args=(path, w, 500, queue)) for w in range(4)]
    for process in workers:
        process.start()
    errors = [queue.get(timeout=120) for _ in workers]
    for process in workers:
        process.join(timeout=60)
    assert errors == [[]] * 4, "some transaction failed (e.g. 'database is locked')"
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM incidents").fetchone()[0] == 2000
    assert conn.execute("SELECT count(*) FROM prevention_records").fetchone()[0] == 2000
    assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 6000
    for worker in range(4):
        assert conn.execute("SELECT count(*) FROM incidents WHERE tenant_id = ?",
                            (f"tenant-{worker}",)).fetchone()[0] == 500


def test_receiver_failing_first_requests_then_recovering_gets_every_alert_once(hoc_coordinator):
    import threading
    from datetime import datetime, timezone
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from freezegun import freeze_time

    from hoc_drivers.alert_driver import AlertQueueReader
    from hoc_drivers.alert_emitter import AlertConfig, AlertEmitter, ThresholdSignal
    from hoc_drivers.alert_sender import AlertDelivery, AlertSender

    failures_left = [35]
    accepted = []
    lock = threading.Lock()

    class FlakyReceiver(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                failing = failures_left[0] > 0
                failures_left[0] -= failing
                if not failing:
                    accepted.append(body["signal_id"])
            self.send_response(503 if failing else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyReceiver)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    config = AlertConfig(policy_id="budget", tenant_id="acme", enabled_channels=["webhook"],
                         webhook_url=url, webhook_secret="s")
    sent_ids = []
    try:
        with freeze_time(datetime(2026, 5, 1, tzinfo=timezone.utc)) as clock:
            for i in range(50):
                signal = ThresholdSignal("acme", f"run-{i}", "budget", "cost", 120, 100,
                                         signal_type="breach")
                with hoc_coordinator.transaction() as tx:
                    assert AlertEmitter(tx).emit_breach(signal, config, "stop")
                sent_ids.append(signal.signal_id)
            sender = AlertSender(hoc_coordinator, AlertDelivery(timeout=5), batch_size=10)
            for _ in range(20):
                sender.drain()
                if AlertQueueReader(hoc_coordinator.db).fetch_queue_stats()["pending"] == 0:
                    break
                clock.tick(301)  # past the longest backoff
    finally:
        server.shutdown()
        server.server_close()
    assert failures_left[0] == 0  # the receiver really failed its first 35 requests
    assert sorted(accepted) == sorted(sent_ids)  # every alert exactly once
    stats = AlertQueueReader(hoc_coordinator.db).fetch_queue_stats()
    assert (stats["pending"], stats["sent"], stats["failed"]) == (0, 50, 0)


# Fail closed (issue 13): nothing is half-done, nothing lies.

def count(model, db):
    return model.select().count(db)

@pytest.mark.sqlite_only
def test_a_full_disk_reports_sqlites_own_error_and_leaves_nothing(hoc_db, hoc_coordinator):
    pages = hoc_db.execute_sql("PRAGMA page_count").fetchone()[0]
    hoc_db.execute_sql(f"PRAGMA max_page_count = {pages}")  # this connection: the disk is full
    with pytest.raises(peewee.OperationalError, match="database or disk is full"):
        with hoc_coordinator.transaction() as tx:
            Run.insert(id="r1", tenant_id="t1").execute(tx.db)
            tx.db.execute_sql("INSERT INTO events (id, topic, payload, created_at) VALUES "
                              "('e1', 't', json_object('x', ?), 'now')", ("x" * 200_000,))
    with pytest.raises(TransactionFailed, match="database or disk is full") as failure:
        RunCompletionTransaction(hoc_coordinator).execute("t1", "r" * 9000, "failed",
                                                          error_message="x" * 300_000)
    assert isinstance(failure.value.cause, peewee.OperationalError)
    assert (count(Run, hoc_db), count(Incident, hoc_db), count(Event, hoc_db)) == (0, 0, 0)
    with hoc_coordinator.transaction() as tx:  # the coordinator is usable again
        Run.insert(id="r2", tenant_id="t1").execute(tx.db)
    assert count(Run, hoc_db) == 1


CLEAN_EXIT = """
import sys
from hoc_drivers.db import connect_database
from hoc_drivers.run_completion import RunCompletionTransaction
from hoc_drivers.transaction_coordinator import TransactionCoordinator
transaction = RunCompletionTransaction(TransactionCoordinator(connect_database(sys.argv[1])))
for n in range(int(sys.argv[2])):
    transaction.execute("t1", f"run-{n}", "failed", error_message="AGENT_CRASH")
"""


def test_a_clean_exit_leaves_no_event_to_publish_again(hoc_db, hoc_coordinator, hoc_publisher):
    # the child imports hoc_drivers from where this process does (under mutation testing: the mutant)
    subprocess.run([sys.executable, "-c", CLEAN_EXIT, hoc_db.database, "5"], check=True, timeout=60,
                   env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert count(Event, hoc_db) == 15
    assert hoc_coordinator.flush_outbox() == 0
    assert list(hoc_publisher.published) == []


def test_a_republished_event_keeps_its_id_for_subscribers_to_deduplicate(hoc_db, hoc_publisher):
    seen = []
    hoc_publisher.subscribe("run.completed", lambda topic, payload, event_id: seen.append(event_id),
                            with_event_id=True)
    crashed = TransactionCoordinator(hoc_db, hoc_publisher)
    with crashed.transaction() as tx:
        event_id = tx.publish("run.completed", {"run_id": "r"}, "t1")
    assert seen == [event_id]  # published, not yet marked: as if the process died now
    assert TransactionCoordinator(hoc_db, hoc_publisher).flush_outbox() == 1
    assert seen == [event_id, event_id]
