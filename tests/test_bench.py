"""The benchmark harness: what `measure` reports, and the guard cache workload end to end; on
PostgreSQL (HOC_TEST_BACKEND=postgresql) the PostgreSQL workloads at a tiny size."""
import pytest

from hoc_drivers import settings
from hoc_drivers.bench import WORKLOADS, measure


def test_every_workload_is_documented():
    assert WORKLOADS and all(fn.__doc__ for fn in WORKLOADS.values())


def test_measure_times_blocks_or_single_calls_and_keeps_the_sides_apart():
    for per_call in (True, False):
        result = measure("long sum", lambda i: sum(range(20_000)), "short sum",
                         lambda i: sum(range(20)), 200, target="t", per_call=per_call)
        assert result.ratio > 10
        assert result.median_us > result.baseline_median_us > 0
        assert result.to_dict()["target"] == "t"


def test_guard_cache_workload_shows_a_hit_far_cheaper_than_a_miss():
    hit, miss, bound = WORKLOADS["guard_cache"](quick=True)
    assert hit.name == "GuardCache.get_status (hit)" and hit.baseline.startswith("plain dict")
    assert miss.ratio > 20 and bound.ratio > 20
    assert hit.median_us < 100 and miss.median_us > hit.median_us


def test_the_commit_guard_workload_runs_beside_plain_sqlite3():
    (row,) = WORKLOADS["commit_guard"](quick=True)
    assert row.baseline == "plain sqlite3 connection" and row.ratio > 0


def test_the_cli_startup_gates_succeed_on_a_fresh_file(tmp_path):
    from click.testing import CliRunner

    from hoc_drivers.bench import CLI_GATES
    from hoc_drivers.cli import cli
    from hoc_drivers.db import init_database

    path = str(tmp_path / "hoc.db")
    init_database(path).close()
    assert [gate[:2] for gate in CLI_GATES] == [("signals", "check"), ("killswitch", "status"),
                                                 ("guard", "status")]
    for gate in CLI_GATES:
        result = CliRunner().invoke(cli, ["--db", path, *gate], standalone_mode=False)
        assert result.exit_code == 0 and result.return_value == 0, (gate, result.output)


def test_throughput_is_the_median_rounds_so_one_stall_does_not_decide_it_but_a_stall_every_round_does():
    def work(i):
        return sum(range(20_000))  # a few hundred µs

    def stalled_once(i):  # one call costs as much as a whole side's five rounds
        return sum(range(40_000_000 if i == 3 else 20_000))

    def stalled_every_round(i):
        return sum(range(8_000_000 if i % 100 == 3 else 20_000))

    once = measure("stalled once", stalled_once, "same work", work, 100, rounds=5)
    every_round = measure("stalled every round", stalled_every_round, "same work", work, 100, rounds=5)
    assert once.throughput_ratio < 1.5  # the round with the stall is not the median round
    assert every_round.throughput_ratio > 2  # a stall each round is in the median round too


def test_measure_reports_throughput_and_p99_beside_the_median():
    result = measure("long sum", lambda i: sum(range(20_000)), "short sum", lambda i: sum(range(20)), 200)
    assert result.throughput_ratio > 10 and result.p99_us >= result.median_us
    assert result.baseline_p99_us >= result.baseline_median_us > 0
    assert {"throughput_ratio", "p99_us", "baseline_p99_us"} <= set(result.to_dict())


def test_run_completion_raw_baseline_writes_what_the_library_writes(tmp_path):
    from hoc_drivers.bench import _completing, _raw_completion, _seed_run_completion, raw_connection
    from hoc_drivers.db import init_database

    paths = [str(tmp_path / "library.db"), str(tmp_path / "raw.db")]
    for path in paths:
        init_database(path).close()
        _seed_run_completion(path, 3, 2)
    with _completing(paths[0]) as library:
        library(0)
    conn = raw_connection(paths[1])
    _raw_completion(conn)(0)
    conn.close()

    def written(path):
        conn = raw_connection(path)
        try:
            return {table: [tuple(len(v) if isinstance(v, str) else v for v in row)
                            for row in conn.execute(f"SELECT * FROM {table} ORDER BY rowid")]
                    for table in ("incidents", "prevention_records", "events", "runs", "aos_traces")}
        finally:
            conn.close()
    library_rows, raw_rows = written(paths[0]), written(paths[1])
    assert library_rows == raw_rows  # same rows, same lengths of every text (ids, JSON, times)
    assert len(library_rows["events"]) == 3 + 3
    for path in paths:  # the run the transaction updates was seeded
        conn = raw_connection(path)
        assert conn.execute("SELECT incident_count FROM runs WHERE id = 'r0'").fetchone() == (1,)
        conn.close()


@pytest.mark.parametrize("library, raw, table, made_per_call", [
    ("_emitting_decisions", "_raw_decisions", "decision_records", ("decision_id", "decided_at")),
    ("_enqueuing_alerts", "_raw_alerts", "costsim_alert_queue", ("id", "next_attempt_at", "created_at")),
])
def test_a_single_write_raw_baseline_writes_what_the_library_writes(tmp_path, library, raw, table,
                                                                    made_per_call):
    """Same values, JSON texts byte for byte; ids and times (made per call) of the same length."""
    from hoc_drivers import bench
    from hoc_drivers.db import connect_database, init_database

    paths = [str(tmp_path / "library.db"), str(tmp_path / "raw.db")]
    for path in paths:
        init_database(path).close()
    db = connect_database(paths[0])
    getattr(bench, library)(db)(0)
    db.close()
    conn = bench.raw_connection(paths[1])
    getattr(bench, raw)(conn)(0)
    conn.close()

    def written(path):
        conn = bench.raw_connection(path)
        try:
            cursor = conn.execute(f"SELECT * FROM {table}")
            names = [column[0] for column in cursor.description]
            return [tuple(len(value) if name in made_per_call else value
                          for name, value in zip(names, row, strict=True)) for row in cursor]
        finally:
            conn.close()
    library_rows, raw_rows = written(paths[0]), written(paths[1])
    assert library_rows == raw_rows and len(library_rows) == 1


def test_the_run_completion_workload_keeps_its_guard_cache_subscribed(tmp_path):
    """A cache no one holds is collected and unsubscribes: its invalidation would go unpaid."""
    import gc

    from hoc_drivers.bench import _completing
    from hoc_drivers.bus import handlers_of
    from hoc_drivers.db import init_database
    from hoc_drivers.facts import GuardStateChanged

    db = init_database(str(tmp_path / "library.db"))
    with _completing(db.database):
        gc.collect()
        assert len(handlers_of(db, GuardStateChanged)) == 1
    db.close()


@pytest.fixture
def pg_server(request):
    """Scratch databases on the test session's PostgreSQL server (left to the server's removal
    at the end of the session: DROP DATABASE waits for a checkpoint); skipped on SQLite."""
    if settings.get("testing.backend") != "postgresql":
        pytest.skip("about the PostgreSQL benchmarks (run with HOC_TEST_BACKEND=postgresql)")
    from hoc_drivers.bench_pg import ScratchServer

    return ScratchServer(request.getfixturevalue("hoc_db").database)


def test_the_postgresql_workloads_print_their_rows_beside_raw_psycopg(pg_server):
    from hoc_drivers.bench_pg import PG_WORKLOADS, WRITERS
    from hoc_drivers.commands.bench import COLUMNS
    from hoc_drivers.commands.common import render

    assert list(PG_WORKLOADS) == ["run_completion", "decision_emit", "alert_claim", "writers"]
    rows = [*PG_WORKLOADS["run_completion"](pg_server, count=3, history=10),
            *PG_WORKLOADS["decision_emit"](pg_server, count=3),
            *PG_WORKLOADS["alert_claim"](pg_server, count=3),  # checks each alert leased once
            *PG_WORKLOADS["writers"](pg_server, count=3, history=10)]
    assert [row.baseline for row in rows[:3]] == [
        "raw psycopg, same statements and values", "raw psycopg BEGIN + INSERT + COMMIT",
        "raw psycopg, same statements, 4 processes"]
    assert all(row.ratio > 0 and row.throughput_ratio > 0 and row.target == "<= 2.0x" for row in rows[:3])
    writers = rows[3:]
    assert [row.name.split(",")[1].split(":")[0] for row in writers] == [
        f" {n} writer process{'es' if n > 1 else ''}" for n in WRITERS] * 2
    assert [row.name.split(":")[0] for row in writers] == ["PostgreSQL"] * 4 + ["SQLite"] * 4
    table = render([row.to_dict() for row in rows], False, COLUMNS)
    assert all(row.name in table for row in rows) and "PostgreSQL: alert claim" in table


def test_the_raw_psycopg_completion_writes_what_the_library_writes(pg_server):
    from datetime import datetime

    from hoc_drivers.bench import (
        _completing,
        _raw_completion,
        _seed_run_completion,
        pg_bulk_insert,
        raw_pg_connection,
    )

    library_url = pg_server.database("hoc_bench_test_library")
    _seed_run_completion(library_url, 3, 2, insert=pg_bulk_insert)
    raw_url = pg_server.database("hoc_bench_test_raw", template="hoc_bench_test_library")
    with _completing(library_url) as library:
        library(0)
    with raw_pg_connection(raw_url) as conn:
        _raw_completion(conn, "postgresql")(0)

    def shape(value):  # ids and texts by length, times by type: they differ by the moment
        return len(value) if isinstance(value, str) else "time" if isinstance(value, datetime) else value

    def written(url):
        with raw_pg_connection(url) as conn:
            return {table: sorted((tuple(shape(v) for v in row)
                                   for row in conn.execute(f"SELECT * FROM {table}")), key=repr)
                    for table in ("incidents", "prevention_records", "events", "runs", "aos_traces")}
    library_rows, raw_rows = written(library_url), written(raw_url)
    assert library_rows == raw_rows  # same rows, same lengths of every text (ids, JSON, times)
    assert len(library_rows["events"]) == 3 + 3
    with raw_pg_connection(raw_url) as conn:  # the run the transaction updates was seeded
        assert conn.execute("SELECT incident_count FROM runs WHERE id = 'r0'").fetchone() == (1,)
