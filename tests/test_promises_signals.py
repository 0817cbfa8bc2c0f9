"""Governance signals: what the readers, the service and the module functions promise
(found by mutation testing; see tests/mutation/score.py)."""
from datetime import timedelta

import pytest

from hoc_drivers import governance_signal_driver as gsd
from hoc_drivers.db import CommitForbidden
from hoc_drivers.governance_signal_driver import (GovernanceSignal, GovernanceSignalReader, GovernanceSignalService,
                                                  GovernanceSignalWriter)
from hoc_drivers.testing import ManualClock
from tests.test_governance_signal_driver import T0


@pytest.fixture
def clock():
    return ManualClock(T0)


@pytest.fixture
def record(hoc_coordinator, clock):
    def record(scope, signal_type, decision, **kwargs):
        with hoc_coordinator.transaction() as tx:
            return GovernanceSignalWriter(tx, clock).record_signal(scope, signal_type, decision, "CI",
                                                                   **kwargs)
    return record


def test_every_reader_refuses_an_unknown_signal_type(hoc_db, clock):
    reader = GovernanceSignalReader(hoc_db, clock)
    for read in (reader.get_active_signals, reader.list_active_signals, reader.check_governance,
                 reader.is_blocked):
        with pytest.raises(ValueError, match="unknown signal type 'NOPE'"):
            read("S", "NOPE")


def test_active_signals_are_filtered_by_type_and_expiry_and_listed_newest_first(
        hoc_db, record, clock):
    ci = record("S", "CI_STATUS", "BLOCKED")
    clock.advance(timedelta(seconds=1))
    manual = record("S", "MANUAL_OVERRIDE", "WARN", expires_at=T0 + timedelta(seconds=10))
    clock.advance(timedelta(seconds=1))
    session = record("S", "SESSION_BLOCK", "CLEAN")
    reader = GovernanceSignalReader(hoc_db, clock)
    assert [s.id for s in reader.list_active_signals("S")] == [session.id, manual.id, ci.id]
    assert [s.id for s in reader.list_active_signals("S", "CI_STATUS")] == [ci.id]
    assert [s.id for s in reader.list_active_signals("S", offset=1, limit=1)] == [manual.id]
    assert [s.id for s in reader.list_active_signals("S", since=T0 + timedelta(seconds=1))] == \
        [session.id, manual.id]
    assert [s.id for s in reader.list_active_signals("S", until=T0 + timedelta(seconds=1))] == [ci.id]
    assert [s.id for s in reader.get_active_signals("S", "MANUAL_OVERRIDE")] == [manual.id]
    clock.advance(timedelta(seconds=8))           # the WARN signal has expired
    assert [s.id for s in reader.list_active_signals("S")] == [session.id, ci.id]
    assert [s.id for s in reader.get_active_signals("S")] == [ci.id, session.id]


def test_signals_recorded_at_one_instant_come_in_id_order(hoc_db, record, clock):
    recorded = [record("S", signal_type, "WARN")
                for signal_type in ("CI_STATUS", "MANUAL_OVERRIDE", "SESSION_BLOCK")]
    reader = GovernanceSignalReader(hoc_db, clock)
    expected = sorted(s.id for s in recorded)
    assert [s.id for s in reader.get_active_signals("S")] == expected
    assert [s.id for s in reader.check_governance("S").warning_signals] == expected


def test_check_result_lists_warning_signals_in_its_dict(record, hoc_db, clock):
    warn = record("S", "CI_STATUS", "WARN")
    data = GovernanceSignalReader(hoc_db, clock).check_governance("S").to_dict()
    assert data["is_blocked"] is False and data["blocking_signals"] == []
    assert [d["id"] for d in data["warning_signals"]] == [warn.id]


def test_a_bad_reason_is_named_by_its_type(record):
    with pytest.raises(ValueError, match="reason must be a string, got int"):
        record("S", "CI_STATUS", "WARN", reason=5)


def test_a_writer_kept_after_its_transaction_ended_refuses_to_write(hoc_coordinator, clock):
    with hoc_coordinator.transaction() as tx:
        pass
    with pytest.raises(CommitForbidden, match="already ended"):
        GovernanceSignalWriter(tx, clock).record_signal("S", "CI_STATUS", "WARN", "CI")


def test_the_service_and_module_functions_use_the_clock_and_arguments_given(hoc_db, hoc_coordinator,
                                                                           clock):
    with hoc_coordinator.transaction() as tx:
        service = GovernanceSignalService(tx, clock)
        signal = service.record_signal("S", "CI_STATUS", "BLOCKED", "CI",
                                       expires_at=T0 + timedelta(seconds=5))
        assert service.is_blocked("S")
        other = gsd.record_governance_signal(tx, "S", "SESSION_BLOCK", "WARN", "CI", reason="why",
                                             constraints={"max": 1}, clock=clock)
    assert (signal.recorded_at, other.recorded_at) == (T0, T0)
    assert (other.reason, other.constraints) == ("why", {"max": 1})
    assert gsd.is_governance_blocked(hoc_db, "S", "CI_STATUS", clock=clock)
    assert gsd.check_governance_status(hoc_db, "S", clock=clock).is_blocked  # not by the wall clock
    assert not gsd.is_governance_blocked(hoc_db, "S", "SESSION_BLOCK", clock=clock)
    result = gsd.check_governance_status(hoc_db, "S", "SESSION_BLOCK", clock=clock)
    assert [s.id for s in result.warning_signals] == [other.id] and not result.is_blocked
    clock.advance(timedelta(seconds=5))          # the block has expired by the clock given
    assert not gsd.is_governance_blocked(hoc_db, "S", clock=clock)
    assert not gsd.check_governance_status(hoc_db, "S", clock=clock).is_blocked


def test_a_scope_of_exactly_the_maximum_length_is_accepted(record, hoc_db, clock):
    signal = record("x" * 500, "CI_STATUS", "WARN")
    assert GovernanceSignalReader(hoc_db, clock).get_active_signals(signal.scope)[0].id == signal.id
    with pytest.raises(ValueError, match=r"scope is too long \(501 characters; at most 500\)"):
        record("x" * 501, "CI_STATUS", "WARN")


def test_bad_choices_and_naive_expiries_are_refused_with_the_whole_message(record):
    with pytest.raises(ValueError) as refused:
        record("S", "CI_STATUS", "MAYBE")
    assert str(refused.value) == f"unknown decision 'MAYBE' (expected one of: {', '.join(gsd.DECISIONS)})"
    with pytest.raises(ValueError) as refused:
        record("S", "CI_STATUS", "WARN", expires_at=T0.replace(tzinfo=None))
    assert str(refused.value) == "expires_at must be a timezone-aware datetime"


def test_active_signals_come_oldest_first_whatever_their_ids(hoc_db, hoc_coordinator, clock):
    with hoc_coordinator.transaction() as tx:
        for signal_id, signal_type, seconds in (("b-older", "CI_STATUS", 0), ("a-newer", "SESSION_BLOCK", 1)):
            GovernanceSignal.insert(id=signal_id, signal_type=signal_type, scope="S", decision="WARN",
                                    recorded_by="CI", recorded_at=T0 + timedelta(seconds=seconds)).execute(tx.db)
    reader = GovernanceSignalReader(hoc_db, clock)
    assert [s.id for s in reader.get_active_signals("S")] == ["b-older", "a-newer"]
    assert [s.id for s in reader.check_governance("S").warning_signals] == ["b-older", "a-newer"]
    assert [s.id for s in reader.list_active_signals("S")] == ["a-newer", "b-older"]
