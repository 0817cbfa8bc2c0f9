"""Reliability: SIGKILL at random points, four writers on one file, nothing partial, nothing lost.

Marked `reliability` (deselect with `-m "not reliability"`); run by .ci/run with the rest.
"""
import multiprocessing
import os
import random
import signal
import sqlite3

import pytest

from hoc_drivers.db import init_database
from hoc_drivers.transaction_coordinator import RunCompletionTransaction, TransactionCoordinator

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
        transaction.execute(run_id, "tenant", "failed", error_message="AGENT_CRASH")
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
            transaction.execute(f"w{worker}-{i}", f"tenant-{worker}", "failed",
                                error_message="EXECUTION_TIMEOUT")
        except Exception as exc:  # collected and asserted empty by the parent
            errors.append(repr(exc))
    queue.put(errors)


def test_four_processes_times_500_run_completions(tmp_path):
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
