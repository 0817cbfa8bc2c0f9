"""The names a caller of the server edition imports, each from its seed module, each a thin name
over the embedded class that takes the database or transaction the one contract gives it."""
import pytest

from hoc_drivers.alert_emitter import AlertConfig, AlertEmitter, ThresholdSignal, get_alert_emitter
from hoc_drivers.decisions import DecisionRecord, DecisionRecordService, get_decision_service, list_decisions
from hoc_drivers.governance_signal_driver import GovernanceSignalReader, GovernanceSignalService
from hoc_drivers.guard_cache import GuardCache, get_guard_cache
from hoc_drivers.ledger import DiscoverySignal, emit_signal, get_signals
from hoc_drivers.models.alerts import Notification
from hoc_drivers.transaction_coordinator import TransactionCoordinator


def test_governance_signal_service_records_and_reads_on_the_transaction(hoc_db, hoc_coordinator):
    with hoc_coordinator.transaction() as tx:
        service = GovernanceSignalService(tx)
        service.record_signal("acme", "BLCA_STATUS", "BLOCKED", "ci", reason="layer violation")
        assert service.is_blocked("acme")  # its reads see its own uncommitted write
        assert [s.decision for s in service.get_active_signals("acme")] == ["BLOCKED"]
        service.clear_signal("acme", "BLCA_STATUS", "ops")
        assert not service.check_governance("acme").is_blocked
    assert [s.reason for s in GovernanceSignalReader(hoc_db).get_active_signals("acme")] == ["Cleared by ops"]
    for wrong in (hoc_db, hoc_coordinator, None):
        with pytest.raises(TypeError):
            GovernanceSignalService(wrong)


def test_get_decision_service_appends_in_the_transaction(hoc_db, hoc_coordinator):
    record = DecisionRecord(decision_type="routing", decision_source="system", decision_trigger="explicit",
                            decision_outcome="selected", tenant_id="acme", run_id="run-1")
    with hoc_coordinator.transaction() as tx:
        service = get_decision_service(tx)
        assert isinstance(service, DecisionRecordService) and service.emit(record)
    assert [r.decision_id for r in list_decisions(hoc_db, "acme")] == [record.decision_id]
    with pytest.raises(TypeError):
        get_decision_service(hoc_db)


def test_discovery_signal_is_checked_and_emitted(hoc_db, hoc_coordinator):
    signal = DiscoverySignal(artifact="prediction_events", signal_type="high_operator_access",
                             evidence={"queries": 12}, detected_by="ops", confidence=1)
    assert signal.confidence == 1.0 and isinstance(signal.confidence, float)
    with hoc_coordinator.transaction() as tx:
        signal_id = emit_signal(tx, **signal.to_dict())
    [row] = get_signals(hoc_db)
    assert row["id"] == signal_id and row["evidence"] == {"queries": 12} and row["confidence"] == 1.0
    with pytest.raises(ValueError, match="confidence must be between 0 and 1"):
        DiscoverySignal("prediction_events", "high_operator_access", {}, "ops", confidence=1.5)


def test_get_alert_emitter_writes_in_the_transaction(hoc_db, hoc_coordinator):
    config = AlertConfig(policy_id="POL-1", tenant_id="acme")
    signal = ThresholdSignal(tenant_id="acme", run_id="run-1", policy_id="POL-1", metric="tokens",
                             current_value=9000, threshold_value=10000)
    with hoc_coordinator.transaction() as tx:
        emitter = get_alert_emitter(tx)
        assert isinstance(emitter, AlertEmitter) and emitter.emit(signal, config)["alert_sent"]
    assert [n.notification_type for n in Notification.select().execute(hoc_db)] == ["near_threshold"]
    with pytest.raises(TypeError):
        get_alert_emitter(hoc_db)


def test_guard_cache_get_instance_is_the_cache_of_that_database(hoc_db, hoc_memory_db):
    cache = GuardCache.get_instance(hoc_db)
    assert cache is get_guard_cache(hoc_db) is GuardCache.get_instance(hoc_db)
    assert GuardCache.get_instance(hoc_memory_db) is not cache
    cache.set_status("acme", {"frozen": False})
    with TransactionCoordinator(hoc_db).transaction() as tx:  # a committed guard write invalidates it
        GovernanceSignalService(tx).record_signal("acme", "BLCA_STATUS", "BLOCKED", "ci")
    assert cache.get_status("acme") is None
    with pytest.raises(TypeError):
        GuardCache.get_instance(None)


@pytest.mark.parametrize("module, name", [
    ("governance_signal_driver", "GovernanceSignalService"), ("decisions", "get_decision_service"),
    ("ledger", "DiscoverySignal"), ("alert_driver", "get_alert_driver"),
    ("alert_emitter", "get_alert_emitter"), ("guard_cache", "GuardCache.get_instance"),
])
def test_every_server_name_imports_from_its_seed_module(module, name):
    import importlib

    value = importlib.import_module(f"hoc_drivers.{module}")
    for part in name.split("."):
        value = getattr(value, part)
    assert callable(value)
