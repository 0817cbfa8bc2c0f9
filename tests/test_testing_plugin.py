"""The pytest plugin works in a downstream project that only installed hoc-drivers."""
import os
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


BACKEND_TESTS = textwrap.dedent('''
    import pytest

    def test_plain():
        pass

    @pytest.mark.sqlite_only
    def test_about_sqlite():
        pass

    @pytest.mark.skip(reason="something else")
    def test_skipped():
        pass
''')


def test_the_summary_names_the_backend_and_counts_what_ran_and_why_tests_skipped(tmp_path):
    (tmp_path / "test_backend.py").write_text(BACKEND_TESTS)
    env = {**os.environ, "HOC_TEST_BACKEND": "postgresql"}  # no test here needs the server
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300, env=env)
    assert ("hoc-drivers test backend postgresql: 1 tests ran, 1 skipped as sqlite_only, "
            "1 skipped for other reasons") in result.stdout, result.stdout
    env["HOC_TEST_BACKEND"] = "sqlite"
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300, env=env)
    assert ("hoc-drivers test backend sqlite: 2 tests ran, 0 skipped as sqlite_only, "
            "1 skipped for other reasons") in result.stdout, result.stdout


def test_a_postgresql_run_whose_server_cannot_start_fails_loudly_instead_of_skipping(tmp_path):
    (tmp_path / "test_needs_db.py").write_text("def test_db(hoc_db):\n    pass\n")
    broken = tmp_path / "shadow" / "pgserver"  # a pgserver that cannot start, ahead on the path
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise RuntimeError('initdb: no space left on device')\n")
    env = {**os.environ, "HOC_TEST_BACKEND": "postgresql", "PYTHONPATH": str(broken.parent)}
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 3, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "no PostgreSQL server could be started" in output
    assert "no space left on device" in output
    assert " passed" not in output
