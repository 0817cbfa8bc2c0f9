"""Benchmarks on PostgreSQL: `hoc-drivers bench --backend postgresql` (the `pg` extra).

`run_pg_benchmarks` starts a PostgreSQL server with `pgserver` in a temporary folder (deleted
at the end), or given `url` uses that server (the scratch databases it creates there are
dropped at the end), and runs the workloads of `PG_WORKLOADS`: run completion, decision emit
and the alert claim with 4 processes, each beside raw psycopg (autocommit mode, the same
statements, values and BEGIN ... COMMIT) measured in the same run; then the throughput of run
completions with 1, 2, 4 and 8 writer processes, on PostgreSQL and, for contrast, on a SQLite
file (one writer at a time).
"""
import multiprocessing
import os
import queue
import shutil
import statistics
import tempfile
import time
from contextlib import contextmanager
from urllib.parse import urlsplit


from .bench import (
    Measurement,
    _claiming,
    _completing,
    _emitting_decisions,
    _p99_us,
    _raw_claims,
    _raw_completion,
    _raw_decisions,
    _seed_alert_queue,
    _seed_run_completion,
    bulk_insert,
    measure,
    pg_bulk_insert,
    raw_pg_connection,
    run_benchmarks,
    scratch_databases,
    workload,
)
from .db import connect_database, init_database
from .models.base import utcnow

PG_WORKLOADS = {}
WRITERS = (1, 2, 4, 8)
HISTORY = 10_000  # earlier completions in every table a run completion writes


class ScratchServer:
    """Scratch databases on the PostgreSQL server of `url` (whose database is left alone)."""

    def __init__(self, url):
        self.url = url
        self.created = []

    def url_of(self, name):
        """The URL of database `name` on this server."""
        return urlsplit(self.url)._replace(path=f"/{name}").geturl()

    def _admin(self, sql):
        with raw_pg_connection(self.url) as conn:
            conn.execute(sql)

    def database(self, name, template=None):
        """A new database `name` with the schema (or a copy of database `template`): its URL."""
        self._admin(f'DROP DATABASE IF EXISTS "{name}"')
        self._admin(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        self.created.append(name)
        if template is None:
            init_database(self.url_of(name)).close()
        return self.url_of(name)

    def drop_all(self):
        """Drop every database this object created."""
        for name in reversed(self.created):
            self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()


@contextmanager
def scratch_server(url=None):
    """A `ScratchServer` on the server of `url`, else on a server pgserver starts in a
    temporary folder (stopped and deleted at the end)."""
    if url is not None:
        server = ScratchServer(url)
        try:
            yield server
        finally:
            server.drop_all()
        return
    try:
        import pgserver
    except ImportError:
        raise RuntimeError("the PostgreSQL benchmarks need the pg extra (pip install 'hoc-drivers[pg]')") from None
    directory = tempfile.mkdtemp(prefix="hoc-bench-pg-")
    postgres = pgserver.get_server(directory, cleanup_mode="delete")
    try:
        yield ScratchServer(postgres.get_uri())
    finally:
        postgres.cleanup()
        shutil.rmtree(directory, ignore_errors=True)


def run_pg_benchmarks(names=None, quick=False, full=False, on_start=None, url=None):
    """Run the named PostgreSQL workloads (default all) on scratch databases of `scratch_server(url)`."""
    with scratch_server(url) as server:
        return run_benchmarks(names, quick, full, on_start, PG_WORKLOADS, server=server)


@contextmanager
def _raw_side(url, operation, *args):
    """`operation(connection, *args)` on a raw psycopg connection to `url`, closed at the end."""
    conn = raw_pg_connection(url)
    try:
        yield operation(conn, *args)
    finally:
        conn.close()


@contextmanager
def _library_side(url, operation, *args):
    """`operation(db, *args)` on the guarded database of `url`, closed at the end."""
    db = connect_database(url)
    try:
        yield operation(db, *args)
    finally:
        db.close()


# ---------------------------------------------------------------------------------------
# one process: run completion and decision emit beside raw psycopg


@workload("run_completion", PG_WORKLOADS)
def pg_run_completion(server, quick=False, full=False, count=None, history=HISTORY):
    """A failed run completed with its trace on PostgreSQL: RunCompletionTransaction (a guard
    cache serving the database) vs raw psycopg running the same statements with the same
    values; both databases start as copies of one holding 10k earlier completions per table
    (`count` and `history` override the sizes)."""
    count = count or (300 if quick else 2000)
    library_url = server.database("hoc_bench_completion")
    _seed_run_completion(library_url, history, count * 3, insert=pg_bulk_insert)
    raw_url = server.database("hoc_bench_completion_raw", template="hoc_bench_completion")
    with _completing(library_url) as library, _raw_side(raw_url, _raw_completion, "postgresql") as raw:
        return [measure_pg(f"run-completion transaction ({history:,} rows per table)", library,
                           "raw psycopg, same statements and values", raw, count)]


@workload("decision_emit", PG_WORKLOADS)
def pg_decision_emit(server, quick=False, full=False, count=None):
    """A routing decision appended in its own transaction on PostgreSQL: DecisionRecordService
    vs raw psycopg BEGIN + INSERT + COMMIT."""
    count = count or (300 if quick else 2000)
    library_url = server.database("hoc_bench_decisions")
    raw_url = server.database("hoc_bench_decisions_raw", template="hoc_bench_decisions")
    with _library_side(library_url, _emitting_decisions) as library, \
            _raw_side(raw_url, _raw_decisions, "postgresql") as raw:
        return [measure_pg("decision emit (own transaction)", library,
                           "raw psycopg BEGIN + INSERT + COMMIT", raw, count)]


def measure_pg(name, operation, baseline_name, baseline, count):
    """`bench.measure` of a PostgreSQL row: its name says so, the target is <= 2.0x."""
    return measure(f"PostgreSQL: {name}", operation, baseline_name, baseline, count, target="<= 2.0x")


# ---------------------------------------------------------------------------------------
# several processes at once: the alert claim, writers


@workload("alert_claim", PG_WORKLOADS)
def pg_alert_claim(server, quick=False, full=False, count=None):
    """4 sender processes claiming batches of 10 due alerts at once (FOR UPDATE SKIP LOCKED):
    `fetch_pending_alerts` in a coordinator transaction vs raw psycopg, same statements; each
    side's queue holds every alert its claims take; both sides lease every alert exactly once."""
    count, processes, rounds = count or (100 if quick else 300), 4, 3
    library_url = server.database("hoc_bench_alerts")
    _seed_alert_queue(library_url, processes * count * rounds * 10, insert=pg_bulk_insert)
    raw_url = server.database("hoc_bench_alerts_raw", template="hoc_bench_alerts")
    now = utcnow()
    result = measure_processes(
        f"PostgreSQL: alert claim (10 per claim), {processes} processes at once",
        lambda p: _library_side(library_url, _claiming, now),
        "raw psycopg, same statements, 4 processes", lambda p: _raw_side(raw_url, _raw_claims, now),
        processes, count, rounds, target="<= 2.0x")
    for url in (library_url, raw_url):
        with raw_pg_connection(url) as conn:
            (claimed, leases), = conn.execute("SELECT count(claim_token), count(DISTINCT claim_token)"
                                              " FROM costsim_alert_queue").fetchall()
        if (claimed, leases) != (processes * count * rounds * 10, processes * count * rounds):
            raise RuntimeError(f"claims overlapped or fell short: {claimed} alerts in {leases} leases")
    return [result]


@workload("writers", PG_WORKLOADS)
def pg_writers(server, quick=False, full=False, count=None, history=HISTORY):
    """Run completions per second with 1, 2, 4 and 8 writer processes, each on its own
    connection completing its own runs: on PostgreSQL (concurrent write transactions) and on a
    SQLite file (BEGIN IMMEDIATE: one writer at a time). Each row is N writers beside 1 writer
    of the same database: its name says the total throughput; throughput_ratio below 1 = grew.
    Both databases start with 10k earlier completions per table; PostgreSQL flushes its WAL at
    each COMMIT (synchronous_commit on), SQLite in WAL mode with synchronous NORMAL does not.
    (`count` and `history` override the sizes.)"""
    count, rounds = count or (100 if quick else 400), 2
    pending = count * sum(WRITERS) * rounds
    url = server.database("hoc_bench_writers")
    _seed_run_completion(url, history, pending, insert=pg_bulk_insert)
    rows = _writer_rows("PostgreSQL", url, count, rounds)
    with scratch_databases() as (path, _):
        _seed_run_completion(path, history, pending, insert=bulk_insert)
        rows += _writer_rows("SQLite", path, count, rounds)
    return rows


def _writer_rows(backend, target, count, rounds):
    """One Measurement per number of writers in WRITERS: run completions on database `target`
    (a URL or a file), each process completing `count` runs of its own; the rounds go through
    WRITERS in turn (a busy moment of the machine hits every size alike), the best kept."""
    first, phases = 0, {n: [] for n in WRITERS}
    for _ in range(rounds):
        for processes in WRITERS:
            phases[processes].append(_at_once(lambda p: _completing(target), processes, count, first))
            first += processes * count
    best = {n: max(done, key=lambda phase: phase.throughput) for n, done in phases.items()}
    one = best[WRITERS[0]]
    return [Measurement(f"{backend}: run completions, {n} writer process{'es' if n > 1 else ''}:"
                        f" {phase.throughput:,.0f}/s",
                        phase.ops_per_sec, phase.median_us, f"1 writer process: {one.throughput:,.0f}/s",
                        one.ops_per_sec, one.median_us, "grows with processes (< 1.0x throughput)",
                        phase.p99_us, one.p99_us, phase.throughput, one.throughput)
            for n, phase in best.items()]


class _Phase:
    """What `_at_once` measured: every call's duration (seconds) and the wall time."""

    def __init__(self, durations, wall):
        self.durations, self.wall = durations, wall
        self.ops_per_sec = len(durations) / sum(durations)
        self.median_us = statistics.median(durations) * 1e6
        self.p99_us = _p99_us(durations)
        self.throughput = len(durations) / wall


def _at_once(side, processes, count, first):
    """Run `count` calls in each of `processes` forked processes at once: process p enters
    context manager `side(p)` for `call(i)` and calls it for i = first + p * count, ... (all
    distinct); a barrier starts them together. A `_Phase` of every call over the wall time from
    the first start to the last end (the monotonic clock is the machine's)."""
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(processes), context.Queue()
    children = [context.Process(target=_timed_calls, args=(side, p, range(first + p * count, first + (p + 1) * count),
                                                           barrier, results))
                for p in range(processes)]
    for child in children:
        child.start()
    try:
        reports = [results.get(timeout=600) for _ in children]
    except queue.Empty:
        raise RuntimeError("a benchmark process did not report within 10 minutes") from None
    finally:
        for child in children:
            child.join(60)
    errors = [report for report in reports if isinstance(report, str)]
    if errors:
        raise RuntimeError(f"a benchmark process failed: {errors[0]}")
    durations = [d for report in reports for d in report[0]]
    return _Phase(durations, max(r[2] for r in reports) - min(r[1] for r in reports))


def _timed_calls(side, p, calls, barrier, results):
    """In a forked process: time each call of `calls` on `side(p)`; put (durations, start, end),
    or the error's text."""
    clock = time.perf_counter
    try:
        with side(p) as call:
            barrier.wait()
            durations, start = [], clock()
            for i in calls:
                t0 = clock()
                call(i)
                durations.append(clock() - t0)
            results.put((durations, start, clock()))
    except Exception as exc:  # reported to the parent, which raises it
        results.put(f"process {p} ({os.getpid()}): {exc!r}")


def measure_processes(name, operation, baseline_name, baseline, processes, count, rounds=3,
                      target=""):
    """`bench.measure` with `processes` processes per side: rounds alternate the sides, each
    running `count` calls per process at once (`_at_once`, `operation(p)` / `baseline(p)` the
    context managers of process p). Median latency and ops per second of the best round;
    p99 over all rounds; throughput (calls of every process over the wall time) of the median
    round by workload / baseline wall time, as `bench.measure` takes it."""
    phases = ([], [])
    for r in range(rounds):
        for side, make in enumerate((operation, baseline)):
            phases[side].append(_at_once(make, processes, count, r * processes * count))
    best, best_base = (min(side, key=lambda phase: phase.median_us) for side in phases)
    p99, base_p99 = (_p99_us([d for phase in side for d in phase.durations]) for side in phases)
    by_ratio = sorted(zip(*phases, strict=True), key=lambda pair: pair[0].wall / pair[1].wall)
    run, base = by_ratio[rounds // 2]  # the median round
    return Measurement(name, best.ops_per_sec, best.median_us, baseline_name, best_base.ops_per_sec,
                       best_base.median_us, target, p99, base_p99, len(run.durations) / run.wall,
                       len(base.durations) / base.wall)
