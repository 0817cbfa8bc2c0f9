"""The benchmark harness: what `measure` reports, and the guard cache workload end to end."""
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
