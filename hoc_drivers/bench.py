"""Benchmarks: each workload beside a baseline measured in the same run, reported as a ratio.

A workload is a function registered with `@workload(name)`; it takes `quick` and `full`
flags and returns a list of `Measurement`s. The usual baseline is raw `sqlite3` running
the same SQL on a database file with the same schema and pragmas.
`hoc-drivers bench [--quick] [--full] [--json]` runs them all. The PostgreSQL workloads live in
`bench_pg`; their raw psycopg baselines are here with the others (every raw BEGIN ... COMMIT of
the benchmarks is in this module).
"""
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone

from .validation import json_encoder
from .verdicts import SIGNAL_TYPES

WORKLOADS = {}


@dataclass
class Measurement:
    """One workload figure beside its baseline: ratio = workload cost / baseline cost.

    `ratio` compares median latencies; `throughput_ratio` compares calls over wall time
    (checkpoint stalls included, which a median hides) in the median round (see `measure`);
    `p99_us` is the 99th percentile latency of all calls."""

    name: str
    ops_per_sec: float
    median_us: float
    baseline: str
    baseline_ops_per_sec: float
    baseline_median_us: float
    target: str = ""
    p99_us: float = 0.0
    baseline_p99_us: float = 0.0
    throughput: float = 0.0
    baseline_throughput: float = 0.0

    @property
    def ratio(self):
        """Workload median latency over baseline median latency."""
        return self.median_us / self.baseline_median_us if self.baseline_median_us else float("inf")

    @property
    def throughput_ratio(self):
        """Baseline throughput over workload throughput (wall time per call, stalls included)."""
        return self.baseline_throughput / self.throughput if self.throughput else float("inf")

    def to_dict(self):
        """JSON-ready dict."""
        return {"name": self.name, "ops_per_sec": round(self.ops_per_sec, 1),
                "median_us": round(self.median_us, 2), "baseline": self.baseline,
                "baseline_ops_per_sec": round(self.baseline_ops_per_sec, 1),
                "baseline_median_us": round(self.baseline_median_us, 2),
                "ratio": round(self.ratio, 3), "throughput_ratio": round(self.throughput_ratio, 3),
                "p99_us": round(self.p99_us, 2), "baseline_p99_us": round(self.baseline_p99_us, 2),
                "target": self.target}


def workload(name, registry=WORKLOADS):
    """Register a benchmark workload function under `name` (in `registry`: the SQLite ones by
    default; `bench_pg` has its own)."""
    def register(fn):
        registry[name] = fn
        return fn
    return register


def measure(name, operation, baseline_name, baseline, count, target="", rounds=3, block=50,
            per_call=True):
    """Time `operation(i)` and `baseline(i)` in alternating blocks of `block` calls.

    Alternating makes both sides see the same machine (a noisy neighbour slows both), while
    blocks keep each side's caches warm. Every call is timed on its own, or with
    `per_call=False` (for sub-microsecond work, where reading the clock would cost more than
    the call) each block is timed whole and counts as `block` calls of its mean. Each side
    reports ops per second over its own time and its median latency (the best of `rounds`),
    its p99 latency over every call of every round, and its throughput: calls over the wall
    time of its blocks (checkpoint stalls included) in the median round, the round whose
    workload / baseline wall-time ratio is the median of the rounds' (the higher of the middle
    two for an even number), so that one hiccup of the machine in one side's blocks does not
    decide the figure either way.
    """
    clock = time.perf_counter
    best = best_base = None
    every, every_base, walls = [], [], []
    for r in range(rounds):
        run, base, wall = [], [], [0.0, 0.0]
        for start in range(r * count, (r + 1) * count, block):
            calls = range(start, min(start + block, (r + 1) * count))
            for side, (fn, durations) in enumerate(((operation, run), (baseline, base))):
                t0 = clock()
                if per_call:
                    for i in calls:
                        t1 = clock()
                        fn(i)
                        durations.append(clock() - t1)
                else:
                    for i in calls:
                        fn(i)
                    durations.extend([(clock() - t0) / len(calls)] * len(calls))
                wall[side] += clock() - t0
        this, this_base = _summary(run), _summary(base)
        best = this if best is None or this[1] < best[1] else best
        best_base = this_base if best_base is None or this_base[1] < best_base[1] else best_base
        every += run
        every_base += base
        walls.append((len(run), *wall))
    done, wall, base_wall = sorted(walls, key=lambda w: w[1] / w[2])[len(walls) // 2]  # the median round
    return Measurement(name, best[0], best[1], baseline_name, best_base[0], best_base[1], target,
                       _p99_us(every), _p99_us(every_base), done / wall, done / base_wall)


def _summary(durations):
    """(operations per second, median microseconds) of per-call durations in seconds."""
    return len(durations) / sum(durations), statistics.median(durations) * 1e6


def _p99_us(durations):
    """The 99th percentile of per-call durations in seconds, in microseconds."""
    return statistics.quantiles(durations, n=100)[98] * 1e6 if len(durations) > 1 else durations[0] * 1e6


@contextmanager
def scratch_databases():
    """Two fresh database files with our schema: (path for the library, path for raw sqlite3)."""
    from .db import init_database

    directory = tempfile.mkdtemp(prefix="hoc-bench-")
    try:
        paths = os.path.join(directory, "library.db"), os.path.join(directory, "raw.db")
        for path in paths:
            init_database(path).close()
        yield paths
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def raw_connection(path):
    """A raw sqlite3 connection with the same pragmas as the library's."""
    from .db import PRAGMAS

    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for key, value in PRAGMAS:
        conn.execute(f"PRAGMA {key}={value}")
    return conn


# How a raw baseline opens its write transaction, by dialect (psycopg in autocommit mode).
RAW_BEGIN = {"sqlite": "BEGIN IMMEDIATE", "postgresql": "BEGIN"}


def raw_statement(sql, dialect="sqlite"):
    """A raw statement of this module (sqlite3's `?` marks, INSERT OR IGNORE) as `dialect`'s
    DB-API driver runs it (psycopg: `%s` marks, ON CONFLICT DO NOTHING)."""
    if dialect == "sqlite":
        return sql
    if sql.startswith("INSERT OR IGNORE "):
        sql = "INSERT " + sql.removeprefix("INSERT OR IGNORE ")
        sql = sql.replace(" RETURNING ", " ON CONFLICT DO NOTHING RETURNING ")
    return sql.replace("?", "%s")


def bulk_insert(path, *statements):
    """Seed `path` fast: each (sql, rows) by executemany, all in one raw sqlite3 transaction."""
    conn = raw_connection(path)
    try:
        conn.execute("PRAGMA cache_size = -262144")  # this seeding connection only
        conn.execute("BEGIN IMMEDIATE")
        for sql, rows in statements:
            conn.executemany(sql, rows)
        conn.execute("COMMIT")
    finally:
        conn.close()


def raw_pg_connection(url):
    """A plain psycopg connection in autocommit mode (the baselines send BEGIN and COMMIT)."""
    import psycopg

    return psycopg.connect(url, autocommit=True)


def pg_bulk_insert(url, *statements):
    """`bulk_insert` for PostgreSQL (a URL): each (sqlite3 statement, rows) by executemany in one
    transaction, then ANALYZE."""
    with raw_pg_connection(url) as conn:
        with conn.transaction():
            for sql, rows in statements:
                conn.cursor().executemany(raw_statement(sql, "postgresql"), list(rows))
        conn.execute("ANALYZE")


# ---------------------------------------------------------------------------------------
# run-completion transaction


@workload("run_completion")
def bench_run_completion(quick=False, full=False):
    """A failed run completed with its trace: RunCompletionTransaction vs raw sqlite3 running
    the same statements with the same values (and vs APSW, when it is installed).

    Every table the transaction writes holds 10k earlier completions' rows (the names say so),
    the runs and traces it updates exist, and a guard cache serves the library's file (so its
    after-commit invalidation is paid). With `full`, the same transaction on files holding 1M
    rows in every table it writes, beside the 10k-row figure (ratio = growth).
    """
    count, rounds, rows = (600 if quick else 1200), 5, 10_000
    calls = count * rounds  # each side's, per comparison
    with scratch_databases() as (library_path, raw_path):
        apsw_path = os.path.join(os.path.dirname(raw_path), "apsw.db")
        shutil.copyfile(raw_path, apsw_path)
        for path, pending in ((library_path, calls * 2), (raw_path, calls), (apsw_path, calls)):
            _seed_run_completion(path, rows, pending)
        with _completing(library_path) as library:  # one guard cache serves the file, as in use
            conn = raw_connection(raw_path)
            results = [measure(f"run-completion transaction ({rows // 1000}k rows per table)", library,
                               "raw sqlite3, same statements and values", _raw_completion(conn), count,
                               target="<= 1.25x median, <= 1.15x throughput", rounds=rounds)]
            conn.close()
        apsw_conn = _apsw_connection(apsw_path)
        if apsw_conn is not None:
            with _completing(library_path, calls) as again:
                results.append(measure(f"run-completion transaction ({rows // 1000}k rows per table)",
                                       again, "APSW, same statements and values",
                                       _raw_completion(apsw_conn), count, target="report", rounds=rounds))
            apsw_conn.close()
        if full:
            results.append(_run_completion_growth(library_path, count, rounds))
        return results


def _run_completion_growth(small_path, count, rounds):
    """Run completion with 1M rows in every table it writes vs the 10k-row file (whose first
    runs the other measurements completed: this one completes the next ones)."""
    from .db import init_database

    big_path = os.path.join(os.path.dirname(small_path), "big.db")
    init_database(big_path).close()
    calls = count * rounds
    _seed_run_completion(big_path, 1_000_000, calls)
    _seed_run_completion(small_path, 0, calls, start=calls * 2)
    with _completing(small_path, start=calls * 2) as small, _completing(big_path) as big:
        return measure("run-completion transaction at 1M rows per table", big,
                       "run-completion transaction at 10k rows per table", small, count,
                       target="<= 1.2x throughput", rounds=rounds)


@contextmanager
def _completing(path, start=0):
    """`operation(i)`: RunCompletionTransaction completing run r{start + i} of `path`'s file,
    whose database a guard cache serves."""
    from .db import connect_database
    from .guard_cache import GuardCache
    from .run_completion import RunCompletionTransaction
    from .transaction_coordinator import TransactionCoordinator

    db = connect_database(path)
    cache = GuardCache().serve(db)  # held until the end: a cache no one holds is collected
    transaction = RunCompletionTransaction(TransactionCoordinator(db))
    try:
        yield lambda i: transaction.execute("bench", f"r{start + i}", "failed", error_message="AGENT_CRASH",
                                            trace_id=f"t{start + i}")
    finally:
        db.close()
        del cache


def _apsw_connection(path):
    """An APSW connection to `path` with the library's pragmas, or None without APSW."""
    try:
        import apsw
    except ImportError:
        return None
    from .db import PRAGMAS

    conn = apsw.Connection(path)
    for key, value in PRAGMAS:
        conn.execute(f"PRAGMA {key}={value}")
    return conn


def _completion_values(run_id, trace_id, now, ids):
    """What one completion binds (the library's values: same texts, JSON, id lengths):
    (incident row, policy row, event rows) for incident, policy and event ids `ids`."""
    incident_id, policy_id, *event_ids = ids
    incident = (incident_id, "bench", f"Agent Crash: Run {run_id[:8]}...", "critical", "open",
                "run_failure", now, 0, "0", run_id, "run", "EXECUTION_FAILURE",
                f"Run {run_id} failed with error: AGENT_CRASH", "AGENT_CRASH", "AGENT_CRASH",
                "single_run", None, 1, "HUMAN", "ACTIVE", False, None, False, now, now)
    policy = (policy_id, "bench", f"policy_eval_{run_id[:8]}", "policies_checked:0", run_id, run_id,
              run_id, "not_applicable", 0.0, 0, False, None, now)
    payloads = (("run.completed", {"run_id": run_id, "status": "failed", "incident_id": incident_id,
                                   "policy_id": policy_id, "trace_id": trace_id}),
                ("incident.created", {"run_id": run_id, "incident_id": incident_id, "outcome": "failed"}),
                ("policy.evaluated", {"run_id": run_id, "policy_id": policy_id, "outcome": "failed"}))
    events = [(event_id, "bench", topic, _RAW_JSON(payload), now)
              for event_id, (topic, payload) in zip(event_ids, payloads[:len(event_ids)], strict=True)]
    return incident, policy, events


# What a completion runs after its two INSERTs (raw sqlite3 text: see `raw_statement`).
RAW_COMPLETION_SQL = (
    "UPDATE events SET published_at = ? WHERE id IN (?, ?, ?)",
    "UPDATE runs SET incident_count = incident_count + 1 WHERE id = ? AND tenant_id = ?",
    "UPDATE aos_traces SET status = ?, completed_at = ?, incident_id = COALESCE(?, incident_id)"
    " WHERE trace_id = ? AND tenant_id = ?",
    "INSERT INTO events (id, tenant_id, topic, payload, created_at) VALUES "
    "(?, ?, ?, ?, ?), (?, ?, ?, ?, ?), (?, ?, ?, ?, ?)")


def _raw_completion(conn, dialect="sqlite"):
    """`operation(i)`: completing run r{i} with the library's statements on a raw connection
    (sqlite3 or psycopg in autocommit mode, or APSW), marking the previous completion's events
    published."""
    from .models.base import new_ordered_id

    begin = RAW_BEGIN[dialect]
    policy_sql, incident_sql, mark_sql, count_sql, trace_sql, events_sql = (
        raw_statement(sql, dialect) for sql in (RAW_POLICY_SQL, RAW_INCIDENT_SQL, *RAW_COMPLETION_SQL))
    unmarked = []

    def complete(i):
        run_id, trace_id, now = f"r{i}", f"t{i}", _now_text()
        conn.execute(begin)
        if unmarked:
            conn.execute(mark_sql, [now, *unmarked])
            unmarked.clear()
        incident, policy, events = _completion_values(run_id, trace_id, now, [new_ordered_id() for _ in range(5)])
        policy_id = conn.execute(policy_sql, policy).fetchone()[0]
        incident_id = conn.execute(incident_sql, incident).fetchone()[0]
        conn.execute(count_sql, (run_id, "bench"))
        conn.execute(trace_sql, ("failed", now, incident_id, trace_id, "bench"))
        conn.execute(events_sql, [v for e in events for v in e])
        conn.execute("COMMIT")
        unmarked.extend(e[0] for e in events)
        return policy_id
    return complete


def _seed_run_completion(path, rows, pending, start=0, insert=bulk_insert):
    """`rows` earlier completions in every table a completion writes (incidents, policy
    evaluations, runs, traces, events: one row each, time-ordered ids as the library makes
    them), and `pending` running runs r{start}... with their traces t{start}..., to complete
    (`insert`: `bulk_insert`, or another with its signature for another database)."""
    import itertools

    from .models.base import new_ordered_id

    day = "2026-01-01 00:00:00.000000"
    done = [(f"old{n:07d}", f"told{n:07d}") for n in range(rows)]
    todo = [(f"r{n}", f"t{n}") for n in range(start, start + pending)]

    def earlier(part):  # part 0: incident, 1: policy evaluation, 2: its (first) event
        for run_id, trace_id in done:
            values = _completion_values(run_id, trace_id, day, [new_ordered_id() for _ in range(3)])[part]
            yield (*values[0], day) if part == 2 else values

    insert(path, (RAW_INCIDENT_SQL.replace(" RETURNING id", ""), earlier(0)),
                (RAW_POLICY_SQL.replace(" RETURNING id", ""), earlier(1)),
                ("INSERT INTO events (id, tenant_id, topic, payload, created_at, published_at)"
                 " VALUES (?, ?, ?, ?, ?, ?)", earlier(2)),
                ("INSERT INTO runs (id, tenant_id, status, incident_count, created_at, updated_at)"
                 " VALUES (?, 'bench', ?, ?, ?, ?)", itertools.chain(
                     ((run_id, "failed", 1, day, day) for run_id, _ in done),
                     ((run_id, "running", 0, day, day) for run_id, _ in todo))),
                ("INSERT INTO aos_traces (trace_id, tenant_id, run_id, status, created_at)"
                 " VALUES (?, 'bench', ?, ?, ?)", itertools.chain(
                     ((trace_id, run_id, "failed", day) for run_id, trace_id in done),
                     ((trace_id, run_id, "running", day) for run_id, trace_id in todo))))


RAW_INCIDENT_SQL = (
    "INSERT OR IGNORE INTO incidents (id, tenant_id, title, severity, status, trigger_type, "
    "started_at, calls_affected, cost_delta_cents, source_run_id, source_type, category, "
    "description, error_code, error_message, impact_scope, affected_agent_id, affected_count, "
    "cause_type, lifecycle_state, is_synthetic, synthetic_scenario_id, alert_sent, created_at, "
    "updated_at) VALUES (" + ", ".join("?" * 25) + ") RETURNING id")
RAW_POLICY_SQL = (
    "INSERT OR IGNORE INTO prevention_records (id, tenant_id, policy_id, pattern_id, "
    "original_incident_id, blocked_incident_id, run_id, outcome, signature_match_confidence, "
    "calls_evaluated, is_synthetic, synthetic_scenario_id, created_at) VALUES ("
    + ", ".join("?" * 13) + ") RETURNING id")


def _now_text():
    """The current UTC time as the library stores it, computed as plain code would (no field),
    by the quickest formula (the one the library uses: `replace(tzinfo=None)` costs more)."""
    return datetime.now(timezone.utc).isoformat(" ", "microseconds")[:-6]


# Raw baselines encode the JSON they store with the library's own encoder (`json_encoder`: the
# standard library's C encoder, made once), so they write its bytes at its cost.
_RAW_JSON = json_encoder()  # json.dumps's own text (the library's JSONField, the outbox)


# ---------------------------------------------------------------------------------------
# the commit guard's own cost


@workload("commit_guard")
def bench_commit_guard(quick=False, full=False):
    """One INSERT inside an open transaction: a guarded connection (authorizer + the check of
    cached statements) vs a plain sqlite3 connection, both in memory (the guard's cost alone)."""
    from .commit_guard import GuardedConnection

    count = 5000 if quick else 50000
    guarded = sqlite3.connect(":memory:", isolation_level=None, factory=GuardedConnection).guard()
    plain = sqlite3.connect(":memory:", isolation_level=None)
    guarded.issuing = True  # as the coordinator opens its transaction
    guarded.execute("BEGIN")
    guarded.issuing, guarded.unit = False, "bench"
    plain.execute("BEGIN")
    for conn in (guarded, plain):
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b TEXT)")
    sql, row = "INSERT INTO t (a, b) VALUES (?, ?)", ("tenant", "value")
    try:
        return [measure("INSERT through the commit guard", lambda i: guarded.execute(sql, row),
                        "plain sqlite3 connection", lambda i: plain.execute(sql, row), count,
                        per_call=False)]
    finally:
        guarded.unit = None
        guarded.close()
        plain.close()


# ---------------------------------------------------------------------------------------
# cross-domain: a cost anomaly becomes an incident


@workload("cost_anomaly_incident")
def bench_cost_anomaly_incident(quick=False, full=False):
    """One transaction per cost anomaly -> incident: cross_domain vs raw sqlite3, same INSERT
    and values; a guard cache serves the library's file (its invalidation is paid)."""
    from .cross_domain import create_incident_from_cost_anomaly
    from .db import init_database
    from .guard_cache import GuardCache
    from .models.base import new_id
    from .transaction_coordinator import TransactionCoordinator

    count, rounds = (600 if quick else 1200), 5
    with scratch_databases() as (library_path, raw_path):
        db = init_database(library_path)
        cache = GuardCache().serve(db)  # held until the end: a cache no one holds is collected
        coordinator = TransactionCoordinator(db)

        def library(i):
            with coordinator.transaction() as tx:
                create_incident_from_cost_anomaly(tx, "bench", f"an{i}", "BUDGET_EXCEEDED",
                                                  "HIGH", 15000 + i, 10000)

        conn = raw_connection(raw_path)

        def raw(i):
            now, overage = _now_text(), 5000 + i
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(RAW_ANOMALY_INCIDENT_SQL, (
                new_id(), "bench", f"Cost anomaly: BUDGET_EXCEEDED (+${overage / 100:.2f})",
                "high", "open", "budget_breach", str(overage), now, 0, str(overage),
                f"{overage / 100:.2f}", "cost_anomaly", f"an{i}", "COST_ANOMALY",
                f"Detected BUDGET_EXCEEDED anomaly. Current: ${(15000 + i) / 100:.2f}, "
                "Expected: $100.00.", "tenant", None, 1, "SYSTEM", "ACTIVE", "Analytics", 0, 0,
                now, now)).fetchone()
            conn.execute("COMMIT")

        try:
            return [measure("cost anomaly -> incident", library, "raw sqlite3, same INSERT and values",
                            raw, count, target="<= 1.3x", rounds=rounds)]
        finally:
            conn.close()
            db.close()
            del cache


RAW_ANOMALY_INCIDENT_SQL = (
    "INSERT INTO incidents (id, tenant_id, title, severity, status, trigger_type, trigger_value, "
    "started_at, calls_affected, cost_delta_cents, cost_impact, source_type, anomaly_id, category, "
    "description, impact_scope, affected_agent_id, affected_count, cause_type, lifecycle_state, "
    "domain, is_synthetic, alert_sent, created_at, updated_at) VALUES ("
    + ", ".join("?" * 25) + ") ON CONFLICT (tenant_id, anomaly_id) DO NOTHING RETURNING id")


# ---------------------------------------------------------------------------------------
# CLI start-up


# The read-only gates deploy scripts call in a loop; each exits 0 on a fresh initialised file.
CLI_GATES = (("signals", "check", "--scope", "PR-1"),
             ("killswitch", "status", "--tenant", "t", "--entity-type", "tenant", "--entity-id", "t"),
             ("guard", "status", "--tenant", "t"))


@workload("cli_startup")
def bench_cli_startup(quick=False, full=False):
    """`hoc-drivers --help` and the gates deploy scripts call in a loop (`signals check`,
    `killswitch status`, `guard status`, on an initialised file), each as a whole process vs
    `python -c pass` on the same interpreter.

    Both sides run from cached bytecode, as an installed package does (pip compiles it once):
    with PYTHONDONTWRITEBYTECODE set, as in some checkouts, every run would compile each of our
    modules from source again. So both run as `python -E -X pycache_prefix=DIR` (-E: no PYTHON*
    variable), caching bytecode in a scratch folder (nothing is written in the checkout),
    filled by one untimed run of each command."""
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(sys.executable), "hoc-drivers")
    entry = [script] if os.path.exists(script) else ["-m", "cli"]

    with scratch_databases() as (path, _):
        python = [sys.executable, "-E", "-X", f"pycache_prefix={os.path.dirname(path)}/bytecode"]

        def run(argv):
            subprocess.run(python + argv, stdout=subprocess.DEVNULL, check=True)  # caches bytecode
            return lambda i: subprocess.run(python + argv, stdout=subprocess.DEVNULL, check=True)

        baseline = run(["-c", "pass"])
        return [measure(f"CLI start-up (hoc-drivers {' '.join(argv[:2])})",
                        run(entry + (list(argv) if argv == ("--help",) else ["--db", path, *argv])),
                        "python -c pass", baseline, 8 if quick else 20, target="<= 3.0x", rounds=2,
                        block=1)  # one process each in turn: a busy neighbour slows both sides alike
                for argv in [("--help",), *CLI_GATES]]


# ---------------------------------------------------------------------------------------
# decision records


@workload("decision_emit")
def bench_decision_emit(quick=False, full=False):
    """A routing decision appended in its own transaction: DecisionRecordService vs raw sqlite3."""
    from .db import connect_database

    count, rounds = (600 if quick else 1200), 5
    with scratch_databases() as (library_path, raw_path):
        db = connect_database(library_path)
        conn = raw_connection(raw_path)
        try:
            return [measure("decision emit (own transaction)", _emitting_decisions(db),
                            "raw sqlite3 BEGIN IMMEDIATE + INSERT + COMMIT", _raw_decisions(conn),
                            count, target="<= 1.3x", rounds=rounds)]
        finally:
            conn.close()
            db.close()


_DECISION_INPUTS = {"eligible_agents": ["agent-a", "agent-b"], "agents_count": 2}


def _emitting_decisions(db):
    """`operation(i)`: DecisionRecordService appending run r{i}'s routing decision to `db`, in
    a coordinator transaction of its own."""
    from .decisions import DecisionRecord, DecisionRecordService
    from .transaction_coordinator import TransactionCoordinator

    coordinator = TransactionCoordinator(db)

    def emit(i):
        record = DecisionRecord(decision_type="routing", decision_source="system",
                                decision_trigger="explicit", decision_outcome="selected",
                                decision_inputs=_DECISION_INPUTS, decision_reason="Selected agent-a",
                                run_id=f"r{i}", tenant_id="bench", causal_role="pre_run")
        with coordinator.transaction() as tx:
            if not DecisionRecordService(tx).emit(record):
                raise RuntimeError("decision emit failed")
    return emit


def _raw_decisions(conn, dialect="sqlite"):
    """`operation(i)`: the decision `_emitting_decisions` appends, by its INSERT on a raw
    connection in autocommit mode (sqlite3 or psycopg), in a transaction of its own."""
    from .models.base import new_id

    begin, sql = RAW_BEGIN[dialect], raw_statement(RAW_DECISION_SQL, dialect)
    compact = json_encoder(separators=(",", ":"))  # the library's compact JSON

    def emit(i):
        conn.execute(begin)
        conn.execute(sql, (new_id(), "routing", "system", "explicit",
                           compact(_DECISION_INPUTS), "selected", "Selected agent-a", f"r{i}", None, "bench",
                           None, "pre_run", _now_text(), "{}", None))  # the library's text of no details
        conn.execute("COMMIT")
    return emit


RAW_DECISION_SQL = (
    "INSERT INTO decision_records (decision_id, decision_type, decision_source, "
    "decision_trigger, decision_inputs, decision_outcome, decision_reason, run_id, workflow_id, "
    "tenant_id, request_id, causal_role, decided_at, details, idempotency_key) VALUES ("
    + ", ".join("?" * 15) + ") ON CONFLICT (idempotency_key) DO NOTHING")


# ---------------------------------------------------------------------------------------
# PLang v2.0 and the DAG executor


@workload("plang_dag")
def bench_plang_dag(quick=False, full=False):
    """1,000 generated policies: parse+check+plan (target < 1 s) and executing the plan (< 20 ms).

    Baselines: lark building a plain parse tree of the same text; the same plan in a thread
    pool of two (the trace is identical; the ratio says whether the pool pays).
    """
    from lark import Lark

    from .dag_executor import DAGExecutor
    from .policy import build_plan, compile_source
    from .policy.generator import generate_policies, sample_context
    from .policy.grammar import GRAMMAR

    source, context = generate_policies(1000), sample_context()
    tree_parser = Lark(GRAMMAR, parser="lalr", lexer="basic")
    module = compile_source(source)
    plan = build_plan(module)
    sequential, pooled = DAGExecutor(), DAGExecutor(max_workers=2)
    if sequential.execute(module, context, plan) != pooled.execute(module, context, plan):
        raise RuntimeError("thread pool and sequential traces differ")
    return [
        measure("PLang parse+check+plan, 1,000 policies",
                lambda i: build_plan(compile_source(source)),
                "lark parse tree only, same text", lambda i: tree_parser.parse(source),
                1 if quick else 3, target="< 1 s", rounds=2 if quick else 3),
        measure("PLang execute plan, 1,000 policies",
                lambda i: sequential.execute(module, context, plan),
                "same plan, thread pool of 2", lambda i: pooled.execute(module, context, plan),
                10 if quick else 40, target="< 20 ms"),
    ]


@workload("plang_tooling")
def bench_plang_tooling(quick=False, full=False):
    """`dag check`, `dag fmt` and `dag test` (one case) of the 1,000 generated policies, each
    beside parse+plan of the same file (targets: check <= 1.5x, fmt <= 2x, test <= 2x)."""
    import json

    from .dag_executor import DAGExecutor
    from .policy import build_plan, compile_file
    from .policy.checker import check_file
    from .policy.formatter import format_source
    from .policy.generator import generate_policies, sample_context
    from .policy.policy_tests import run_test_files

    source, directory = generate_policies(1000), tempfile.mkdtemp(prefix="hoc-bench-plang-")
    try:
        path, tests = (os.path.join(directory, name) for name in ("gen.plang", "gen_test.json"))
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(source)
        trace = DAGExecutor().execute(compile_file(path), sample_context())
        case = {"name": "sample", "context": sample_context(), "action": trace.final_action.value,
                "decided_by": trace.decided_by}
        with open(tests, "w", encoding="utf-8") as handle:
            json.dump({"cases": [case]}, handle)
        if check_file(path).errors or not run_test_files([tests])[0][0].passed:
            raise RuntimeError("the generated policies do not check or test clean")
        count, rounds = (1, 2) if quick else (3, 3)
        return [measure(name, operation, "parse+plan, same file",
                        lambda i: build_plan(compile_file(path)), count, target=target,
                        rounds=rounds)
                for name, operation, target in (
                    ("dag check, 1,000 policies", lambda i: check_file(path), "<= 1.5x"),
                    ("dag fmt, 1,000 policies", lambda i: format_source(source, path), "<= 2x"),
                    ("dag test, 1,000 policies, one case", lambda i: run_test_files([tests]),
                     "<= 2x"))]
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@workload("plang_regex")
def bench_plang_regex(quick=False, full=False):
    """PLang `matches()` (RE2) on 1,000-character inputs: the worst pattern found (nested
    counted repetitions, which RE2 runs as a large automaton) and the pattern that made the
    old backtracking engine hang (`(a|aa)+$`), each beside the trivial pattern `x`.

    The inputs differ call by call (random a/b), so no search reuses another's DFA states.
    """
    import random

    from .policy.functions import safe_matches

    chooser = random.Random(13)
    inputs = ["".join(chooser.choice("ab") for _ in range(999)) + "!" for _ in range(64)]

    def searching(pattern):
        return lambda i: safe_matches(inputs[i % len(inputs)], pattern)

    trivial = searching("x")
    return [
        measure("matches(), worst pattern (?:.{0,99}.{0,99}){0,9}x, 1,000 chars",
                searching("(?:.{0,99}.{0,99}){0,9}x"), "trivial pattern x, same inputs", trivial,
                5 if quick else 20, target="<= 20x", rounds=1 if quick else 3, block=5),
        measure("matches(), (a|aa)+$ (hung the backtracking engine), 1,000 chars",
                searching("(a|aa)+$"), "trivial pattern x, same inputs", trivial,
                100 if quick else 1000, target="<= 20x"),
    ]


# ---------------------------------------------------------------------------------------
# governance signals and idempotency keys: lookups that must not grow with the table


@workload("lookup_growth")
def bench_lookup_growth(quick=False, full=False):
    """`is_blocked` and the idempotency check on a big table vs a 10k-row one (ratio = growth).

    The big tables have 1M rows with `full`, else 100k (the measurement names say which);
    both files are seeded the same way and looked up through the drivers' readers.
    """
    from .db import connect_database
    from .governance_signal_driver import GovernanceSignalReader
    from .idempotency import IdempotencyReader

    small, big = 10_000, (1_000_000 if full else 100_000)
    label = "1M" if full else "100k"
    count = 500 if quick else 2000
    with scratch_databases() as (small_path, big_path):
        for path, rows in ((small_path, small), (big_path, big)):
            _seed_lookup_tables(path, rows)
        small_db, big_db = connect_database(small_path), connect_database(big_path)
        try:
            return [measure(f"{name} at {label} rows", lookup(make_reader(big_db), big),
                            f"{name} at 10k rows", lookup(make_reader(small_db), small), count,
                            target="<= 1.5x", rounds=5)
                    for name, make_reader, lookup in (
                        ("is_blocked", GovernanceSignalReader, _is_blocked_lookup),
                        ("idempotency check", IdempotencyReader, _idempotency_lookup))]
        finally:
            small_db.close()
            big_db.close()


def _is_blocked_lookup(reader, rows):
    """is_blocked on scopes spread over the whole table (10 signal rows per scope)."""
    scopes = rows // 10
    return lambda i: reader.is_blocked(f"scope-{(i * 7919) % scopes:07d}")


def _idempotency_lookup(reader, rows):
    """check_idempotency on keys spread over the whole table."""
    def lookup(i):
        n = (i * 7919) % rows
        return reader.check_idempotency(f"tenant-{n % 100:03d}", f"key-{n:07d}")
    return lookup


def _seed_lookup_tables(path, rows):
    """`rows` governance signals (10 per scope: 5 types, each superseded once) and `rows` runs.

    Ids and names are zero-padded counters, so rows go in in index order (like a freshly
    built file); the lookups then visit scopes and keys spread over the whole table.
    """
    old, new, later = "2026-01-01 00:00:00.000000", "2026-01-02 00:00:00.000000", "2026-01-03 00:00:00.000000"

    def signals():
        for scope in range(rows // 10):
            for t, signal_type in enumerate(SIGNAL_TYPES):
                row = (scope * 5 + t) * 2
                decision = "BLOCKED" if (scope + t) % 7 == 0 else ("WARN" if t % 2 else "CLEAN")
                expires = later if scope % 3 == 0 else None  # a third have expired by now
                yield (f"g{row:09d}", signal_type, f"scope-{scope:07d}", "BLOCKED", old, None,
                       f"g{row + 1:09d}", new)
                yield (f"g{row + 1:09d}", signal_type, f"scope-{scope:07d}", decision, new, expires,
                       None, None)

    bulk_insert(path, (
        "INSERT INTO governance_signals (id, signal_type, scope, decision, recorded_by,"
        " recorded_at, expires_at, superseded_by, superseded_at)"
        " VALUES (?, ?, ?, ?, 'BENCH', ?, ?, ?, ?)", signals()), (
        "INSERT INTO runs (id, tenant_id, agent_id, idempotency_key, status,"
        " incident_count, created_at, updated_at)"
        " VALUES (?, ?, 'agent', ?, 'succeeded', 0, ?, ?)",
        ((f"r{n:09d}", f"tenant-{n % 100:03d}", f"key-{n:07d}", new, new) for n in range(rows))))


# ---------------------------------------------------------------------------------------
# guard cache: a hit beside a dict lookup and beside the miss; the alert queue's claim at size


# The status statements GuardReadDriver runs on a miss, as raw sqlite3 runs them.
_RAW_STATUS_SQL = (
    ("SELECT is_frozen, frozen_at, frozen_by, freeze_reason FROM killswitch_state"
     " WHERE tenant_id = ? AND entity_type = 'tenant' AND entity_id = ? LIMIT 1", 2),
    ("SELECT (SELECT COUNT(*) FROM killswitch_state WHERE tenant_id = ? AND entity_type = 'key'"
     " AND is_frozen), (SELECT COUNT(*) FROM incidents WHERE tenant_id = ? AND status = 'open'),"
     " (SELECT MAX(created_at) FROM incidents WHERE tenant_id = ?)", 3),
    ("SELECT decision FROM governance_signals WHERE scope = ? AND superseded_at IS NULL"
     " AND (expires_at IS NULL OR expires_at > '2026-01-01T00:00:00+00:00')", 1),
)


@workload("guard_cache")
def bench_guard_cache(quick=False, full=False):
    """Guard status from the cache vs a plain dict lookup + copy, and a miss vs a hit.

    The database holds a busy tenant (50k incidents, 5k open, 50k runs, a frozen kill
    switch, 100 key switches) among other tenants' rows; a miss computes the status from
    it through `GuardReadDriver` and stores it, a hit is `GuardCache.get_status`. The third
    line is the bound on the miss/hit ratio: raw sqlite3 running the miss's statements (the
    least a miss can cost) against a plain dict lookup + copy (the least a hit can cost).
    """
    from .db import connect_database
    from .guard_cache import GuardCache
    from .guard_read_driver import GuardReadDriver

    count = 20_000 if quick else 100_000
    misses = 300 if quick else 1000
    with scratch_databases() as (path, _):
        _seed_guard_tables(path)
        db, raw = connect_database(path), raw_connection(path)
        try:
            cache = GuardCache()
            reader = GuardReadDriver(db, cache)
            status = reader.get_status("acme")
            plain = {"acme": status}

            def miss(i):
                cache.invalidate_tenant("acme")
                reader.get_status("acme")

            def raw_status(i):
                for sql, tenants in _RAW_STATUS_SQL:
                    raw.execute(sql, ("acme",) * tenants).fetchall()

            return [
                measure("GuardCache.get_status (hit)", lambda i: cache.get_status("acme"),
                        "plain dict lookup + dict.copy()", lambda i: plain["acme"].copy(),
                        count, target="<= 5x", per_call=False),
                measure("GuardReadDriver.get_status, miss (from the database)", miss,
                        "GuardReadDriver.get_status, hit", lambda i: reader.get_status("acme"),
                        misses, target=">= 10000x", per_call=False),
                measure("raw sqlite3 running the miss's statements (least a miss costs)",
                        raw_status, "plain dict lookup + dict.copy() (least a hit costs)",
                        lambda i: plain["acme"].copy(), misses, target="bound on the above",
                        per_call=False),
            ]
        finally:
            raw.close()
            db.close()


def _seed_guard_tables(path):
    """A busy tenant "acme" and ten quieter ones: incidents, runs, kill switches."""
    day = "2026-01-01 00:00:00.000000"
    bulk_insert(path, (
        "INSERT INTO incidents (id, tenant_id, title, severity, status, trigger_type,"
        " started_at, calls_affected, cost_delta_cents, source_type, affected_count,"
        " cause_type, lifecycle_state, is_synthetic, alert_sent, created_at, updated_at)"
        " VALUES (?, ?, 'bench', 'medium', ?, 'manual', ?, 0, '0', 'bench', 1, 'HUMAN',"
        " 'ACTIVE', 0, 0, ?, ?)",
        ((f"i{n:08d}", "acme" if n % 2 else f"tenant-{n % 20}",
          "open" if n % 20 == 1 else "resolved", day, day, day) for n in range(100_000))), (
        "INSERT INTO runs (id, tenant_id, status, incident_count, created_at, updated_at)"
        " VALUES (?, ?, 'succeeded', 0, ?, ?)",
        ((f"r{n:08d}", "acme" if n % 2 else f"tenant-{n % 20}", day, day)
         for n in range(100_000))), (
        "INSERT INTO killswitch_state (id, tenant_id, entity_type, entity_id, is_frozen,"
        " frozen_at, frozen_by, auto_triggered, created_at, updated_at)"
        " VALUES (?, 'acme', ?, ?, ?, ?, 'ops', 0, ?, ?)",
        [("k-tenant", "tenant", "acme", 1, day, day, day)]
        + [(f"k{n:03d}", "key", f"key-{n:03d}", n % 10 == 0, day, day, day) for n in range(100)]))


@workload("alert_fetch_pending")
def bench_alert_fetch_pending(quick=False, full=False):
    """Claiming a batch of 10 due alerts with 10k queued vs a big queue (ratio = growth).

    The big queue has 1M pending alerts with `full`, else 100k (the measurement name says
    which). Each claim is the sender's: one coordinator transaction around
    `fetch_pending_alerts`, which leases the 10 oldest due alerts.
    """
    from .db import connect_database
    from .models.base import utcnow

    small, big = 10_000, (1_000_000 if full else 100_000)
    label = "1M" if full else "100k"
    count = 100 if quick else 300
    with scratch_databases() as (small_path, big_path):
        for path, rows in ((small_path, small), (big_path, big)):
            _seed_alert_queue(path, rows)
        small_db, big_db = connect_database(small_path), connect_database(big_path)
        now = utcnow()
        try:
            return [measure(f"fetch_pending (claim 10) at {label} queued", _claiming(big_db, now),
                            "fetch_pending (claim 10) at 10k queued", _claiming(small_db, now),
                            count, target="<= 1.5x")]
        finally:
            small_db.close()
            big_db.close()


def _claiming(db, now):
    """`operation(i)`: the sender's claim of `db`'s 10 oldest alerts due at `now`: one
    coordinator transaction around `fetch_pending_alerts`."""
    from .alert_driver import AlertDriver
    from .transaction_coordinator import TransactionCoordinator

    coordinator = TransactionCoordinator(db)

    def claim(i):
        with coordinator.transaction() as tx:
            AlertDriver(tx).fetch_pending_alerts(now, batch_size=10)
    return claim


# The statements of `AlertDriver.fetch_pending_alerts` on PostgreSQL, as raw psycopg runs them
# ({columns}: every column of the queue, which the claim reads).
RAW_CLAIM_SQL = (
    "SELECT {columns} FROM costsim_alert_queue WHERE status = %s AND next_attempt_at <= %s"
    " AND attempts < max_attempts ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED",
    "UPDATE costsim_alert_queue SET next_attempt_at = %s, claim_token = %s"
    " WHERE id IN (SELECT value FROM jsonb_array_elements_text(CAST(%s AS jsonb)))")


def _raw_claims(conn, now):
    """`operation(i)`: the claim `_claiming` makes, by its statements on raw psycopg."""
    import json
    from datetime import timedelta

    from .alert_driver import DEFAULT_LEASE_SECONDS
    from .models.alerts import AlertQueueItem
    from .models.base import UtcDateTimeField, new_id

    to_text = UtcDateTimeField().db_value
    due_at, lease_until = to_text(now), to_text(now + timedelta(seconds=DEFAULT_LEASE_SECONDS))
    columns = [field.column_name for field in AlertQueueItem._meta.sorted_fields]
    select, lease = RAW_CLAIM_SQL[0].format(columns=", ".join(columns)), RAW_CLAIM_SQL[1]
    id_at = columns.index("id")

    def claim(i):
        conn.execute("BEGIN")
        due = conn.execute(select, ("pending", due_at, 10)).fetchall()
        if due:
            conn.execute(lease, (lease_until, new_id(), json.dumps([row[id_at] for row in due])))
        conn.execute("COMMIT")
    return claim


def _seed_alert_queue(path, rows, insert=bulk_insert):
    """`rows` pending webhook alerts, due one second apart from 30 days ago (index order)
    (`insert`: as in `_seed_run_completion`)."""
    from datetime import timedelta

    from .models.base import UtcDateTimeField, utcnow

    start, to_text = utcnow() - timedelta(days=30), UtcDateTimeField().db_value
    insert(path, (
        "INSERT INTO costsim_alert_queue (id, payload, alert_type, channel, destination,"
        " status, attempts, max_attempts, next_attempt_at, created_at)"
        " VALUES (?, '{\"n\":1}', 'bench', 'webhook', '{\"url\":\"http://127.0.0.1:9/\"}',"
        " 'pending', 0, 10, ?, ?)",
        ((f"a{n:09d}", at, at) for n, at in
         ((n, to_text(start + timedelta(seconds=n))) for n in range(rows)))))


# ---------------------------------------------------------------------------------------
# alert enqueue; schema parity at start-up


@workload("alert_enqueue")
def bench_alert_enqueue(quick=False, full=False):
    """Queue one webhook alert in its own transaction: AlertQueueWriter vs raw sqlite3."""
    from .db import connect_database

    count, rounds = (600 if quick else 1200), 5
    with scratch_databases() as (library_path, raw_path):
        db = connect_database(library_path)
        conn = raw_connection(raw_path)
        try:
            return [measure("alert enqueue (own transaction)", _enqueuing_alerts(db),
                            "raw sqlite3 BEGIN IMMEDIATE + INSERT + COMMIT", _raw_alerts(conn), count,
                            target="<= 1.3x", rounds=rounds)]
        finally:
            conn.close()
            db.close()


_ALERT_PAYLOAD = {"event_type": "threshold_breach", "tenant_id": "bench"}
_ALERT_DESTINATION = {"url": "http://127.0.0.1:9/"}


def _enqueuing_alerts(db):
    """`operation(i)`: AlertQueueWriter queueing one webhook alert to `db`, in a coordinator
    transaction of its own."""
    from .alert_driver import AlertQueueWriter
    from .transaction_coordinator import TransactionCoordinator

    coordinator = TransactionCoordinator(db)

    def enqueue(i):
        with coordinator.transaction() as tx:
            AlertQueueWriter(tx).insert_alert("bench", _ALERT_PAYLOAD, "threshold", channel="webhook",
                                              destination=_ALERT_DESTINATION)
    return enqueue


def _raw_alerts(conn):
    """`operation(i)`: the alert `_enqueuing_alerts` queues, by its INSERT on a raw sqlite3
    connection in autocommit mode, in a transaction of its own."""
    from .models.base import new_id

    canonical = json_encoder(sort_keys=True, separators=(",", ":"))  # the library's canonical JSON

    def enqueue(i):
        now = _now_text()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT INTO costsim_alert_queue (id, tenant_id, payload, alert_type,"
            " circuit_breaker_name, incident_id, channel, destination, status, attempts,"
            " max_attempts, next_attempt_at, created_at) VALUES (?, ?, ?, ?, NULL, NULL, ?, ?,"
            " 'pending', 0, 10, ?, ?)",
            (new_id(), "bench", canonical(_ALERT_PAYLOAD), "threshold", "webhook",
             canonical(_ALERT_DESTINATION), now, now))
        conn.execute("COMMIT")
    return enqueue


@workload("schema_parity")
def bench_schema_parity(quick=False, full=False):
    """Start-up parity check of every table vs raw sqlite3 reading the same PRAGMAs."""
    from .db import connect_database
    from .models import ALL_MODELS
    from .schema_parity import run_startup_parity_check

    count = 20 if quick else 100
    tables = [m._meta.table_name for m in ALL_MODELS]
    with scratch_databases() as (library_path, raw_path):
        db = connect_database(library_path)
        conn = raw_connection(raw_path)

        def raw(i):
            for table in tables:
                conn.execute(f'PRAGMA table_info("{table}")').fetchall()
                for index in conn.execute(f'PRAGMA index_list("{table}")').fetchall():
                    conn.execute(f'PRAGMA index_info("{index[1]}")').fetchall()

        try:
            run_startup_parity_check(db)  # the expected schema is built once per process
            return [measure(f"schema parity at start-up ({len(tables)} tables)",
                            lambda i: run_startup_parity_check(db),
                            "raw sqlite3 PRAGMA table_info/index_list/index_info", raw, count,
                            target="report")]
        finally:
            conn.close()
            db.close()


def run_benchmarks(names=None, quick=False, full=False, on_start=None, workloads=WORKLOADS,
                   **context):
    """Run the named workloads of `workloads` (default all), each given `context` as keyword
    arguments; `on_start(name)` is called before each."""
    results = []
    for name, fn in workloads.items():
        if names and name not in names:
            continue
        if on_start:
            on_start(name)
        results.extend(fn(quick=quick, full=full, **context))
    return results
