"""One contract for every driver: writers take the coordinator's transaction `tx` first,
readers take the database `db` first, and a tenant-scoped call takes the tenant id next,
positional and required. Services that run their own transactions take the coordinator."""
import importlib
import inspect

import pytest

from hoc_drivers.db import init_database
from hoc_drivers.transaction_coordinator import TransactionCoordinator

DRIVER_MODULES = ("alert_config", "alert_driver", "alert_emitter", "alert_sender", "cross_domain", "decisions",
                  "governance_signal_driver", "guard_cache", "guard_read_driver",
                  "guard_write_driver", "idempotency", "ledger", "run_completion", "schema_parity",
                  "transaction_coordinator", "worker_write_service_async")
# The seed's getters of writers (a `get_` name, but they take the transaction) come first.
WRITER_PREFIXES = ("get_guard_write_driver", "get_decision_service", "get_alert_emitter", "get_alert_driver",
                   "emit_", "record_", "create_incident", "claim_", "activate_", "deactivate_", "backfill_",
                   "mark_", "insert_", "upsert_", "complete_", "purge_", "retry_")
READER_PREFIXES = ("get_", "list_", "check_", "is_", "count_", "fetch_", "compare_", "table_")
# Factories of the coordinator itself take the database it coordinates; pure checks touch no
# database at all.
NOT_READERS_OR_WRITERS = {"get_transaction_coordinator", "create_transaction_coordinator",
                          "get_guard_cache", "get_execution_plan", "check_signal_access"}
TENANT = "tenant_id"


def _public(module):
    for name, value in vars(module).items():
        if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__:
            yield name, value


def _params(function):
    return list(inspect.signature(function).parameters.values())


def _contract_rows():
    """(where, expected first parameter, callable, is a method) for every reader and writer."""
    for module_name in DRIVER_MODULES:
        module = importlib.import_module(f"hoc_drivers.{module_name}")
        for name, value in _public(module):
            where = f"{module_name}.{name}"
            if inspect.isclass(value):
                access = value.__dict__.get("ACCESS")
                if access in ("READ", "WRITE"):
                    yield where, "db" if access == "READ" else "tx", value.__init__, True
                    for method_name, method in vars(value).items():
                        if inspect.isfunction(method) and not method_name.startswith("_"):
                            yield f"{where}.{method_name}", None, method, True
            elif inspect.isfunction(value) and name not in NOT_READERS_OR_WRITERS:
                if name.startswith(WRITER_PREFIXES):
                    yield where, "tx", value, False
                elif name.startswith(READER_PREFIXES):
                    yield where, "db", value, False


ROWS = list(_contract_rows())


def test_the_contract_covers_the_drivers():
    readers = {where for where, first, _, _ in ROWS if first == "db"}
    writers = {where for where, first, _, _ in ROWS if first == "tx"}
    assert len(readers) >= 10 and len(writers) >= 15, (readers, writers)
    assert "governance_signal_driver.GovernanceSignalReader" in readers
    assert "decisions.emit_policy_decision" in writers


@pytest.mark.parametrize("where, first, function, is_method", ROWS, ids=[row[0] for row in ROWS])
def test_first_parameter_and_tenant_position(where, first, function, is_method):
    params = _params(function)[1 if is_method else 0:]
    names = [p.name for p in params]
    if first is not None:
        assert names and names[0] == first, f"{where}{inspect.signature(function)}: {first} first"
        assert params[0].default is inspect.Parameter.empty, f"{where}: {first} is required"
    if TENANT in names:
        position = names.index(TENANT)
        expected = 0 if is_method and first is None else 1
        assert position == expected, f"{where}{inspect.signature(function)}: tenant_id comes next"
        tenant = params[position]
        assert tenant.default is inspect.Parameter.empty, f"{where}: tenant_id is required"
        assert tenant.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD, f"{where}: positional"
    for param in params[1:]:
        assert param.name not in ("db", "tx", "coordinator"), f"{where}: {param.name} must come first"


@pytest.mark.parametrize("where, function", [(w, f) for w, first, f, m in ROWS if first == "db" and m],
                         ids=[w for w, first, f, m in ROWS if first == "db" and m])
def test_a_reader_without_a_database_is_a_type_error(where, function):
    reader = importlib.import_module(f"hoc_drivers.{where.split('.')[0]}")
    cls = getattr(reader, where.split(".")[1])
    with pytest.raises(TypeError):
        cls()
    with pytest.raises(TypeError):
        cls(None)


@pytest.mark.parametrize("where, function", [(w, f) for w, first, f, m in ROWS if first == "tx" and m],
                         ids=[w for w, first, f, m in ROWS if first == "tx" and m])
def test_a_writer_given_a_database_or_coordinator_is_a_type_error(where, function, hoc_db):
    module = importlib.import_module(f"hoc_drivers.{where.split('.')[0]}")
    cls = getattr(module, where.split(".")[1])
    for wrong in (hoc_db, TransactionCoordinator(hoc_db), None):
        with pytest.raises(TypeError):
            cls(wrong)


def test_readers_read_the_database_they_are_given_not_the_last_opened(tmp_path):
    from hoc_drivers.governance_signal_driver import GovernanceSignalReader, record_governance_signal

    first = init_database(str(tmp_path / "a.db"))
    with TransactionCoordinator(first).transaction() as tx:
        record_governance_signal(tx, "acme", "BLCA_STATUS", "BLOCKED", "ci")
    second = init_database(str(tmp_path / "b.db"))  # opened last
    assert GovernanceSignalReader(first).is_blocked("acme")
    assert not GovernanceSignalReader(second).is_blocked("acme")


def test_factories_create_no_file(tmp_path, monkeypatch):
    from hoc_drivers.transaction_coordinator import get_transaction_coordinator

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HOC_DRIVERS_DB", raising=False)
    with pytest.raises(TypeError):
        get_transaction_coordinator()
    assert list(tmp_path.iterdir()) == []
