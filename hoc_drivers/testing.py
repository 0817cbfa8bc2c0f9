"""pytest plugin (entry point `pytest11`): fixtures for projects that embed hoc-drivers.

Fixtures: `hoc_db` (an initialised database in a temporary file), `hoc_memory_db`
(initialised `:memory:`), `hoc_coordinator` (a TransactionCoordinator over `hoc_db`),
`hoc_publisher` (its in-process publisher, with `.published` events), `hoc_clock` (a manual
clock: `.advance(seconds)`), `hoc_guard_cache` (a GuardCache on that clock) and
`hoc_no_stray_commits` (fails the test if any code tried to commit, or to write, outside the
coordinator — even if it swallowed the CommitForbidden). `assert_no_stray_commits(db)` is the
same check as a plain function; `run_at_once(target, *args)` races `target` in forked processes.
"""
import shutil
import sqlite3

import pytest


class ManualClock:
    """A monotonic clock that moves only when told: call it for the time, `.advance(s)` to move."""

    def __init__(self, start=1_000.0):
        self.now = start

    def __call__(self):
        return self.now

    def advance(self, seconds):
        """Move the clock forward by `seconds`."""
        self.now += seconds


def run_at_once(target, *args, processes=4, timeout=60):
    """Run `target(*args, barrier)` in `processes` forked processes; returns their exit codes.

    Each process should call `barrier.wait()` right before the work that must race, so they
    really run it at the same moment (concurrency tests against one database file).
    """
    import multiprocessing

    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(processes)
    children = [context.Process(target=target, args=(*args, barrier)) for _ in range(processes)]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout)
    return [child.exitcode for child in children]


def assert_no_stray_commits(db):
    """Fail when `db` refused any commit, transaction or write made outside the coordinator."""
    refusals = getattr(db, "refusals", [])
    assert not refusals, "commit/write outside the coordinator:\n" + "\n".join(refusals)


@pytest.fixture(scope="session")
def _hoc_schema_template(tmp_path_factory):
    """One initialised database file per session; each test gets a copy (fast: no DDL)."""
    from hoc_drivers.db import init_database

    path = tmp_path_factory.mktemp("hoc-template") / "template.db"
    db = init_database(str(path))
    db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return path


@pytest.fixture
def hoc_db(tmp_path, _hoc_schema_template):
    """An initialised hoc-drivers database in a temporary file."""
    from hoc_drivers.db import connect_database

    path = tmp_path / "hoc-test.db"
    shutil.copy2(_hoc_schema_template, path)
    db = connect_database(str(path))
    yield db
    db.close()


@pytest.fixture
def hoc_memory_db(_hoc_schema_template):
    """An initialised in-memory hoc-drivers database (single thread only)."""
    from hoc_drivers.db import connect_database

    db = connect_database(":memory:")
    template = sqlite3.connect(_hoc_schema_template)
    template.backup(db.connection())
    template.close()
    yield db
    db.close()


@pytest.fixture
def hoc_publisher():
    """An in-process event publisher that keeps what it published in `.published`."""
    from hoc_drivers.transaction_coordinator import EventPublisher

    return EventPublisher()


@pytest.fixture
def hoc_coordinator(hoc_db, hoc_publisher):
    """A TransactionCoordinator over `hoc_db`, publishing to `hoc_publisher`."""
    from hoc_drivers.transaction_coordinator import TransactionCoordinator

    return TransactionCoordinator(hoc_db, hoc_publisher)


@pytest.fixture
def hoc_clock():
    """A manual clock for TTL tests: `hoc_clock.advance(5)` makes five seconds pass."""
    return ManualClock()


@pytest.fixture
def hoc_guard_cache(hoc_clock):
    """A fresh GuardCache whose timer is `hoc_clock`."""
    from hoc_drivers.guard_cache import GuardCache

    return GuardCache(timer=hoc_clock)


@pytest.fixture
def hoc_no_stray_commits(hoc_db):
    """Use in a test to fail it if anything tried to commit or write behind the coordinator."""
    yield hoc_db
    assert_no_stray_commits(hoc_db)
