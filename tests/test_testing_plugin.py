"""The pytest plugin works in a downstream project that only installed hoc-drivers."""
import subprocess
import sys
import textwrap
import time

DOWNSTREAM_TESTS = textwrap.dedent('''
    import pytest
    from hoc_drivers.models.runs import Run
    from hoc_drivers.transaction_coordinator import RunCompletionTransaction

    @pytest.mark.parametrize("n", range(100))
    def test_run_completion(hoc_coordinator, hoc_publisher, hoc_no_stray_commits, n):
        RunCompletionTransaction(hoc_coordinator).execute("acme", f"run-{n}", "failed")
        assert hoc_publisher.published[0][0] == "run.completed"

    @pytest.mark.parametrize("n", range(50))
    def test_in_memory(hoc_memory_db, n):
        assert Run.select().count(hoc_memory_db) == 0

    @pytest.mark.parametrize("n", range(50))
    def test_cache_ttl(hoc_guard_cache, hoc_clock, n):
        hoc_guard_cache.set_status("acme", {"n": n})
        hoc_clock.advance(4.9)
        assert hoc_guard_cache.get_status("acme") == {"n": n}
        hoc_clock.advance(0.1)
        assert hoc_guard_cache.get_status("acme") is None
''')


def run_pytest(directory, *args):
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=directory, capture_output=True, text=True, timeout=300)


def test_fixtures_are_listed_in_a_fresh_project(tmp_path):
    result = run_pytest(tmp_path, "--fixtures")
    for name in ("hoc_db", "hoc_memory_db", "hoc_coordinator", "hoc_publisher", "hoc_clock",
                 "hoc_guard_cache", "hoc_no_stray_commits"):
        assert name in result.stdout


def test_a_200_test_downstream_module_runs_in_seconds(tmp_path):
    (tmp_path / "test_downstream.py").write_text(DOWNSTREAM_TESTS)
    started = time.perf_counter()
    result = run_pytest(tmp_path, "-q")
    elapsed = time.perf_counter() - started
    assert "200 passed" in result.stdout, result.stdout + result.stderr
    print(f"200 downstream tests in {elapsed:.1f} s")
    assert elapsed < 30
