"""Discovery ledger: one upsert per emit, aggregation by key, defaults, validation, never blocking."""
import logging
import math
from datetime import datetime, timezone

import pytest
from freezegun import freeze_time

from hoc_drivers import ledger
from hoc_drivers.db import connect_database
from hoc_drivers.models.ledger import DiscoveryLedgerEntry
from hoc_drivers.models.runs import Run
from hoc_drivers.transaction_coordinator import TransactionCoordinator
from hoc_drivers.testing import run_at_once

ART, SIG = "prediction_events", "high_operator_access"


def emit_in(tx, evidence=None, **kwargs):
    kwargs.setdefault("detected_by", "ops")
    return ledger.emit_signal(tx, kwargs.pop("artifact", ART), kwargs.pop("signal_type", SIG),
                              {"n": 1} if evidence is None else evidence, **kwargs)


def emit(coordinator, evidence=None, **kwargs):
    with coordinator.transaction() as tx:
        return emit_in(tx, evidence, **kwargs)


def only_signal(coordinator):
    signals = ledger.get_signals(coordinator.db, limit=None)
    assert len(signals) == 1
    return signals[0]


def test_first_emit_creates_an_observed_row_with_environment_defaults(hoc_coordinator,
                                                                      monkeypatch):
    monkeypatch.delenv("AOS_PHASE", raising=False)
    monkeypatch.delenv("AOS_ENVIRONMENT", raising=False)
    with freeze_time("2026-03-01 10:00:00"):
        signal_id = emit(hoc_coordinator, {"queries": 12}, confidence=0.75, notes="spotted")
    assert only_signal(hoc_coordinator) == {
        "id": signal_id, "artifact": ART, "field": None, "signal_type": SIG,
        "evidence": {"queries": 12}, "confidence": 0.75, "detected_by": "ops", "phase": "C",
        "environment": "local", "seen_count": 1, "status": "observed", "notes": "spotted",
        "first_seen_at": datetime(2026, 3, 1, 10, tzinfo=timezone.utc),
        "last_seen_at": datetime(2026, 3, 1, 10, tzinfo=timezone.utc)}


def test_phase_and_environment_come_from_the_environment_unless_given(hoc_coordinator,
                                                                      monkeypatch):
    monkeypatch.setenv("AOS_PHASE", "D")
    monkeypatch.setenv("AOS_ENVIRONMENT", "staging")
    emit(hoc_coordinator, artifact="a1")
    emit(hoc_coordinator, artifact="a2", phase="B", environment="")
    phases = {s["artifact"]: (s["phase"], s["environment"])
              for s in ledger.get_signals(hoc_coordinator.db)}
    assert phases == {"a1": ("D", "staging"), "a2": ("B", "")}


def test_repeated_key_aggregates_and_keeps_first_values(hoc_coordinator):
    with freeze_time("2026-03-01 10:00:00"):
        first = emit(hoc_coordinator, {"a": 1, "keep": "old", "nested": {"x": 1}},
                     confidence=0.4, notes="first", phase="B", environment="prod")
    with freeze_time("2026-03-02 11:00:00"):
        second = emit(hoc_coordinator, {"a": 3, "b": 2, "nested": {"y": 2}},
                      detected_by="ci", notes="second", phase="D", environment="local")
    with freeze_time("2026-03-03 12:00:00"):
        third = emit(hoc_coordinator, {}, confidence=0.9)
    assert first == second == third
    signal = only_signal(hoc_coordinator)
    assert signal["seen_count"] == 3
    assert signal["evidence"] == {"a": 3, "keep": "old", "b": 2, "nested": {"x": 1, "y": 2}}
    assert signal["confidence"] == 0.9
    assert (signal["detected_by"], signal["notes"], signal["phase"], signal["environment"],
            signal["status"]) == ("ops", "first", "B", "prod", "observed")
    assert signal["first_seen_at"] == datetime(2026, 3, 1, 10, tzinfo=timezone.utc)
    assert signal["last_seen_at"] == datetime(2026, 3, 3, 12, tzinfo=timezone.utc)


def test_confidence_is_kept_when_the_new_one_is_none(hoc_coordinator):
    emit(hoc_coordinator, confidence=0.0)
    emit(hoc_coordinator)
    assert only_signal(hoc_coordinator)["confidence"] == 0.0


def test_a_status_set_by_a_human_survives_new_emits(hoc_coordinator):
    emit(hoc_coordinator)
    with hoc_coordinator.transaction() as tx:
        DiscoveryLedgerEntry.update(status="ignored").execute(tx.db)
    emit(hoc_coordinator)
    signal = only_signal(hoc_coordinator)
    assert (signal["status"], signal["seen_count"]) == ("ignored", 2)


def test_null_field_keys_aggregate_apart_from_named_fields(hoc_coordinator):
    for _ in range(3):
        emit(hoc_coordinator)
    emit(hoc_coordinator, field="score")
    emit(hoc_coordinator, field="score")
    emit(hoc_coordinator, field="other")
    counts = {s["field"]: s["seen_count"] for s in ledger.get_signals(hoc_coordinator.db)}
    assert counts == {None: 3, "score": 2, "other": 1}


def test_a_thousand_emits_of_one_key_leave_one_row(hoc_coordinator):
    for i in range(1000):
        emit(hoc_coordinator, {"last": i})
    signal = only_signal(hoc_coordinator)
    assert (signal["seen_count"], signal["evidence"]) == (1000, {"last": 999})


@pytest.mark.sqlite_only  # SQLite's trace callback; PostgreSQL adds a savepoint
def test_emit_is_one_upsert_statement(hoc_db, hoc_coordinator):
    statements = []
    hoc_db.connection().set_trace_callback(statements.append)
    try:
        emit(hoc_coordinator)
        own = list(statements)
        with hoc_coordinator.transaction() as tx:
            statements.clear()
            emit_in(tx, field="f")
            joined = list(statements)
    finally:
        hoc_db.connection().set_trace_callback(None)
    verbs = [s.split()[0] for s in own]
    assert verbs == ["BEGIN", "INSERT", "COMMIT"]
    assert [s.split()[0] for s in joined] == ["INSERT"]  # one statement: no savepoint needed
    for upsert in (own[1], joined[0]):
        assert upsert.startswith('INSERT INTO "discovery_ledger"') and "ON CONFLICT" in upsert


def test_emit_in_a_rolled_back_transaction_is_gone(hoc_coordinator):
    emit(hoc_coordinator)
    with pytest.raises(RuntimeError):
        with hoc_coordinator.transaction():
            emit(hoc_coordinator)
            emit(hoc_coordinator, artifact="other")
            raise RuntimeError
    assert [(s["artifact"], s["seen_count"]) for s in ledger.get_signals(hoc_coordinator.db)] == [
        (ART, 1)]


def test_storage_failure_returns_none_and_leaves_the_caller_transaction_usable(hoc_coordinator,
                                                                              caplog):
    with hoc_coordinator.transaction() as tx:
        Run.insert(id="run-1", tenant_id="t").execute(tx.db)
        tx.db.execute_sql("DROP TABLE discovery_ledger")
        with caplog.at_level(logging.WARNING, logger="hoc_drivers.ledger"):
            assert emit_in(tx) is None
        assert "discovery signal" in caplog.text
        assert ledger.get_signals(tx.db) == []
        Run.insert(id="run-2", tenant_id="t").execute(tx.db)
    assert Run.select().count(hoc_coordinator.db) == 2


@pytest.mark.parametrize("kwargs, message", [
    (dict(evidence=["not", "an", "object"]), "evidence must be a JSON object"),
    (dict(evidence={"when": object()}), "evidence is not JSON-serialisable"),
    (dict(evidence={"x": math.nan}), "evidence is not JSON-serialisable"),
    (dict(confidence=1.01), "confidence must be between 0 and 1"),
    (dict(confidence=-0.1), "confidence must be between 0 and 1"),
    (dict(confidence=math.nan), "confidence must be between 0 and 1"),
    (dict(confidence="0.5"), "confidence must be a number"),
    (dict(confidence=True), "confidence must be a number"),
    (dict(artifact=""), "artifact must be a non-empty string"),
    (dict(signal_type=None), "signal_type must be a non-empty string"),
    (dict(detected_by=""), "detected_by must be a non-empty string"),
    (dict(field=3), "field must be a non-empty string"),
    (dict(field=""), "field must be a non-empty string"),
])
def test_invalid_input_is_a_value_error_and_writes_nothing(hoc_coordinator, kwargs, message):
    kwargs = dict(kwargs)  # the parameter itself is shared by every run of this test
    evidence = kwargs.pop("evidence", {"n": 1})
    with pytest.raises(ValueError, match=message):
        emit(hoc_coordinator, evidence, **kwargs)
    assert ledger.get_signals(hoc_coordinator.db) == []


@pytest.mark.parametrize("confidence", [0, 1, 0.5])
def test_confidence_bounds_are_inclusive(hoc_coordinator, confidence):
    assert emit(hoc_coordinator, confidence=confidence)
    assert only_signal(hoc_coordinator)["confidence"] == confidence


def test_get_signals_orders_by_seen_count_then_last_seen_and_filters(hoc_coordinator):
    with freeze_time("2026-03-01"):
        emit(hoc_coordinator, artifact="once-old")
        emit(hoc_coordinator, artifact="twice", signal_type="dominant_field")
    with freeze_time("2026-03-02"):
        emit(hoc_coordinator, artifact="twice", signal_type="dominant_field")
        emit(hoc_coordinator, artifact="once-new")
    with hoc_coordinator.transaction() as tx:
        DiscoveryLedgerEntry.update(status="promoted").where(
            DiscoveryLedgerEntry.artifact == "once-new").execute(tx.db)
    order = [s["artifact"] for s in ledger.get_signals(hoc_coordinator.db)]
    assert order == ["twice", "once-new", "once-old"]
    assert [s["artifact"] for s in ledger.get_signals(hoc_coordinator.db, limit=2)] == order[:2]
    assert [s["artifact"] for s in ledger.get_signals(hoc_coordinator.db, artifact="once-old")] == [
        "once-old"]
    assert [s["artifact"] for s in ledger.get_signals(
        hoc_coordinator.db, signal_type="dominant_field")] == ["twice"]
    assert [s["artifact"] for s in ledger.get_signals(hoc_coordinator.db, status="promoted")] == [
        "once-new"]


@pytest.mark.parametrize("limit", ["10", True, 0, -1, 10_001, 2**70, 1.5])
def test_get_signals_refuses_a_bad_limit(hoc_coordinator, limit):
    emit(hoc_coordinator, artifact="a")
    with pytest.raises(ValueError, match="limit must be an integer from 1 to 10000 or None"):
        ledger.get_signals(hoc_coordinator.db, limit=limit)
    assert len(ledger.get_signals(hoc_coordinator.db, limit=10_000)) == 1
    assert len(ledger.get_signals(hoc_coordinator.db, limit=None)) == 1


def _emit_many_in_child(path, barrier):
    coordinator = TransactionCoordinator(connect_database(path))
    barrier.wait()
    for i in range(25):
        assert emit(coordinator, {"i": i}) is not None
    coordinator.db.close()


def test_four_processes_emitting_one_key_leave_one_row(hoc_db, hoc_coordinator):
    assert run_at_once(_emit_many_in_child, hoc_db.database) == [0, 0, 0, 0]
    assert only_signal(hoc_coordinator)["seen_count"] == 100
