"""governance_signal_driver: supersede chains, blocking and warning, expiry edges, validation."""
from datetime import datetime, timedelta, timezone

import pytest
from freezegun import freeze_time
from peewee import IntegrityError

from hoc_drivers import governance_signal_driver as gsd
from hoc_drivers.db import CommitForbidden
from hoc_drivers.governance_signal_driver import (GovernanceSignal, GovernanceSignalReader,
                                                  GovernanceSignalWriter)
from hoc_drivers.testing import ManualClock

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


@pytest.fixture
def clock():
    """The drivers' clock: aware UTC, T0 until the test advances it (by a timedelta)."""
    return ManualClock(T0)


@pytest.fixture
def record(hoc_coordinator, clock):
    """record(scope, type, decision, by="CI", **kw): one committed signal per call."""
    def record(scope, signal_type, decision, recorded_by="CI", **kwargs):
        with hoc_coordinator.transaction() as tx:
            return GovernanceSignalWriter(tx, clock).record_signal(
                scope, signal_type, decision, recorded_by, **kwargs)
    return record


@pytest.fixture
def reader(hoc_db, clock):
    return GovernanceSignalReader(hoc_db, clock)


def rows(db):
    return list(GovernanceSignal.select().order_by(GovernanceSignal.recorded_at, GovernanceSignal.id)
                .execute(db))


def stored(db, signal_id):
    return GovernanceSignal.select().where(GovernanceSignal.id == signal_id).get(db)


def test_record_stores_every_field_with_aware_utc_times(hoc_db, record, clock):
    signal = record("PR-42", "CI_STATUS", "BLOCKED", "CI", reason="tests red",
                    constraints={"blocked_files": ["a.py"]}, expires_at=T0 + timedelta(hours=1))
    stored_signal = stored(hoc_db, signal.id)
    assert (stored_signal.signal_type, stored_signal.scope, stored_signal.decision, stored_signal.reason,
            stored_signal.recorded_by) == (
        "CI_STATUS", "PR-42", "BLOCKED", "tests red", "CI")
    assert stored_signal.constraints == {"blocked_files": ["a.py"]}
    assert stored_signal.recorded_at == T0 and stored_signal.recorded_at.tzinfo == timezone.utc
    assert stored_signal.expires_at == T0 + timedelta(hours=1)
    assert stored_signal.superseded_at is None and stored_signal.superseded_by is None
    assert isinstance(signal.id, str) and len(signal.id) == 32


def test_supersede_chain_links_each_signal_to_the_next(hoc_db, record, clock):
    first = record("PR-42", "CI_STATUS", "BLOCKED")
    clock.advance(timedelta(seconds=10))
    second = record("PR-42", "CI_STATUS", "BLOCKED")  # same decision: still supersedes
    clock.advance(timedelta(seconds=10))
    third = record("PR-42", "CI_STATUS", "CLEAN")
    by_id = {s.id: s for s in rows(hoc_db)}
    assert by_id[first.id].superseded_by == second.id
    assert by_id[first.id].superseded_at == second.recorded_at == T0 + timedelta(seconds=10)
    assert by_id[second.id].superseded_by == third.id
    assert by_id[second.id].superseded_at == third.recorded_at
    assert by_id[third.id].superseded_at is None and by_id[third.id].superseded_by is None


def test_supersede_touches_only_the_same_scope_and_type(hoc_db, record, reader):
    other_type = record("PR-42", "SESSION_BLOCK", "BLOCKED")
    other_scope = record("PR-43", "CI_STATUS", "BLOCKED")
    other_case = record("pr-42", "CI_STATUS", "BLOCKED")
    record("PR-42", "CI_STATUS", "WARN")
    record("PR-42", "CI_STATUS", "CLEAN")
    active = {s.id for s in rows(hoc_db) if s.superseded_at is None}
    assert {other_type.id, other_scope.id, other_case.id} <= active
    assert [s.decision for s in reader.get_active_signals("PR-42", "CI_STATUS")] == ["CLEAN"]


def test_supersede_reaches_expired_but_unsuperseded_signals(hoc_db, record, clock):
    old = record("PR-42", "CI_STATUS", "BLOCKED", expires_at=T0 + timedelta(seconds=5))
    clock.advance(timedelta(seconds=60))
    new = record("PR-42", "CI_STATUS", "WARN")
    assert stored(hoc_db, old.id).superseded_by == new.id


def test_one_active_signal_per_scope_and_type_is_a_database_guarantee(record, hoc_coordinator):
    signal = record("PR-42", "CI_STATUS", "BLOCKED")
    duplicate = dict(signal.__data__, id="another")
    with pytest.raises(IntegrityError):
        with hoc_coordinator.transaction() as tx:
            GovernanceSignal.insert(duplicate).execute(tx.db)


def test_any_blocked_type_blocks_and_warn_never_blocks(record, reader):
    record("INCIDENTS_LIST", "CI_STATUS", "WARN")
    record("INCIDENTS_LIST", "DEPLOYMENT_GATE", "WARN")
    assert not reader.is_blocked("INCIDENTS_LIST")
    result = reader.check_governance("INCIDENTS_LIST")
    assert not result.is_blocked
    assert sorted(s.signal_type for s in result.warning_signals) == ["CI_STATUS", "DEPLOYMENT_GATE"]
    assert result.blocking_signals == []

    record("INCIDENTS_LIST", "SESSION_BLOCK", "BLOCKED")
    result = reader.check_governance("INCIDENTS_LIST")
    assert result.is_blocked and reader.is_blocked("INCIDENTS_LIST")
    assert [s.signal_type for s in result.blocking_signals] == ["SESSION_BLOCK"]
    assert len(result.warning_signals) == 2
    assert reader.is_blocked("INCIDENTS_LIST", "SESSION_BLOCK")
    assert not reader.is_blocked("INCIDENTS_LIST", "CI_STATUS")


def test_clean_and_pending_are_neither_blocking_nor_warning(record, reader):
    record("S", "CI_STATUS", "CLEAN")
    record("S", "BLCA_STATUS", "PENDING")
    result = reader.check_governance("S")
    assert (result.is_blocked, result.blocking_signals, result.warning_signals) == (False, [], [])
    assert sorted(s.decision for s in reader.get_active_signals("S")) == ["CLEAN", "PENDING"]


def test_blocked_expires_exactly_at_its_expiry(hoc_db, record, reader, clock):
    signal = record("S", "SESSION_BLOCK", "BLOCKED", expires_at=T0 + timedelta(seconds=60))
    clock.advance(timedelta(seconds=60, microseconds=-1))
    assert reader.is_blocked("S") and reader.is_blocked("S", "SESSION_BLOCK")
    assert [s.id for s in reader.get_active_signals("S")] == [signal.id]
    clock.advance(timedelta(microseconds=1))  # now == expires_at: expired
    assert not reader.is_blocked("S") and not reader.is_blocked("S", "SESSION_BLOCK")
    assert not reader.check_governance("S").is_blocked
    assert reader.get_active_signals("S") == []
    with_expired = reader.check_governance("S", include_expired=True)
    assert with_expired.is_blocked and [s.id for s in with_expired.blocking_signals] == [signal.id]
    assert stored(hoc_db, signal.id).superseded_at is None  # not superseded, just expired


def test_clear_records_clean_with_the_default_reason(record, reader, hoc_coordinator, clock):
    record("S", "CI_STATUS", "BLOCKED")
    record("S", "SESSION_BLOCK", "BLOCKED")
    with hoc_coordinator.transaction() as tx:
        cleared = GovernanceSignalWriter(tx, clock).clear_signal("S", "CI_STATUS", "OPS")
    assert (cleared.decision, cleared.reason, cleared.recorded_by) == ("CLEAN", "Cleared by OPS", "OPS")
    assert cleared.constraints is None and cleared.expires_at is None
    assert not reader.is_blocked("S", "CI_STATUS")
    assert reader.is_blocked("S")  # clearing one type leaves the other
    with hoc_coordinator.transaction() as tx:
        GovernanceSignalWriter(tx, clock).clear_signal("S", "SESSION_BLOCK", "OPS", reason="false alarm")
    assert not reader.is_blocked("S")
    assert reader.get_active_signals("S", "SESSION_BLOCK")[0].reason == "false alarm"


def test_check_result_is_ordered_and_serialisable(record, reader, clock):
    first = record("S", "SESSION_BLOCK", "BLOCKED")
    clock.advance(timedelta(seconds=1))
    second = record("S", "CI_STATUS", "BLOCKED")
    result = reader.check_governance("S")
    assert [s.id for s in result.blocking_signals] == [first.id, second.id]
    data = result.to_dict()
    assert data["scope"] == "S" and data["is_blocked"] is True and data["last_checked"] == clock.now
    assert [d["id"] for d in data["blocking_signals"]] == [first.id, second.id]
    assert set(data["blocking_signals"][0]) == {
        "id", "signal_type", "scope", "decision", "reason", "constraints", "recorded_by",
        "recorded_at", "expires_at", "superseded_by", "superseded_at"}


def test_module_functions_read_from_the_database_they_are_given(hoc_db, hoc_coordinator, clock):
    with hoc_coordinator.transaction() as tx:
        signal = gsd.record_governance_signal(tx, "tenant:acme", "MANUAL_OVERRIDE", "BLOCKED", "MANUAL",
                                              reason="audit", clock=clock)
        assert gsd.is_governance_blocked(tx.db, "tenant:acme", clock=clock)  # sees its own write
    assert gsd.is_governance_blocked(hoc_db, "tenant:acme", clock=clock)
    assert gsd.is_governance_blocked(hoc_db, "tenant:acme", "MANUAL_OVERRIDE", clock=clock)
    for reader_call in (gsd.is_governance_blocked, gsd.check_governance_status):
        with pytest.raises(TypeError):  # no database given: there is no default one
            reader_call(None, "tenant:acme", clock=clock)
    status = gsd.check_governance_status(hoc_db, "tenant:acme", clock=clock)
    assert status.is_blocked and status.blocking_signals[0].id == signal.id
    assert not gsd.is_governance_blocked(hoc_db, "tenant:other", clock=clock)


def test_the_default_clock_follows_freezegun(hoc_coordinator, hoc_db):
    with freeze_time("2026-05-05 10:00:00"):
        with hoc_coordinator.transaction() as tx:
            signal = gsd.record_governance_signal(tx, "S", "CI_STATUS", "BLOCKED", "CI",
                                                  expires_at=datetime(2026, 5, 5, 10, 1, tzinfo=timezone.utc))
        assert signal.recorded_at == datetime(2026, 5, 5, 10, 0, tzinfo=timezone.utc)
        assert gsd.is_governance_blocked(hoc_db, "S")
    with freeze_time("2026-05-05 10:01:00"):
        assert not gsd.is_governance_blocked(hoc_db, "S")


@pytest.mark.parametrize("kwargs, message", [
    ({"decision": "DENIED"}, "unknown decision 'DENIED'"),
    ({"decision": "blocked"}, "unknown decision 'blocked'"),
    ({"signal_type": "LIFECYCLE_STATUS"}, "unknown signal type 'LIFECYCLE_STATUS'"),
    ({"scope": ""}, "scope is required"),
    ({"scope": "x" * 501}, "scope is too long"),
    ({"recorded_by": " "}, "recorded_by is required"),
    ({"reason": 5}, "reason must be a string"),
    ({"constraints": ["a.py"]}, "constraints must be a JSON object"),
    ({"constraints": {"at": object()}}, "not JSON-serialisable"),
    ({"constraints": {"ratio": float("nan")}}, "not JSON-serialisable"),
    ({"constraints": {"ratio": float("inf")}}, "not JSON-serialisable"),
    ({"expires_at": datetime(2026, 3, 1, 13, 0)}, "timezone-aware"),
    ({"expires_at": T0}, "is not after now"),
])
def test_bad_input_is_rejected_and_nothing_is_written(hoc_db, record, kwargs, message):
    record("S", "CI_STATUS", "BLOCKED")
    before = [s.__data__ for s in rows(hoc_db)]
    args = {"signal_type": "CI_STATUS", "scope": "S", "decision": "CLEAN", "recorded_by": "CI", **kwargs}
    with pytest.raises(ValueError, match=message):
        record(args.pop("scope"), args.pop("signal_type"), args.pop("decision"), args.pop("recorded_by"), **args)
    assert [s.__data__ for s in rows(hoc_db)] == before


def test_reads_reject_unknown_signal_types_and_empty_scopes(reader):
    with pytest.raises(ValueError, match="unknown signal type"):
        reader.is_blocked("S", "NOPE")
    with pytest.raises(ValueError, match="unknown signal type"):
        reader.check_governance("S", "NOPE")
    with pytest.raises(ValueError, match="scope is required"):
        reader.get_active_signals("")


def test_every_write_is_refused_outside_a_coordinator_transaction(hoc_db, hoc_coordinator, record,
                                                                   clock):
    record("S", "CI_STATUS", "BLOCKED")
    before = [s.__data__ for s in rows(hoc_db)]
    with hoc_coordinator.transaction() as ended:
        writer = GovernanceSignalWriter(ended, clock)
    with pytest.raises(CommitForbidden, match="transaction has already ended"):
        writer.record_signal("S", "CI_STATUS", "CLEAN", "CI")
    with pytest.raises(CommitForbidden):
        writer.clear_signal("S", "CI_STATUS", "OPS")
    with pytest.raises(CommitForbidden):
        gsd.record_governance_signal(ended, "S", "CI_STATUS", "WARN", "CI", clock=clock)
    with pytest.raises(TypeError, match="transaction first"):  # a database is not a transaction
        GovernanceSignalWriter(hoc_db, clock)
    with pytest.raises(TypeError):
        gsd.record_governance_signal(hoc_db, "S", "CI_STATUS", "WARN", "CI", clock=clock)
    assert [s.__data__ for s in rows(hoc_db)] == before


def test_a_failed_transaction_keeps_the_old_signal_active(hoc_db, record, reader, hoc_coordinator,
                                                           clock):
    blocked = record("S", "CI_STATUS", "BLOCKED")
    with pytest.raises(RuntimeError):
        with hoc_coordinator.transaction() as tx:
            GovernanceSignalWriter(tx, clock).clear_signal("S", "CI_STATUS", "OPS")
            raise RuntimeError("caller failed after the write")
    assert reader.is_blocked("S")
    assert [s.id for s in rows(hoc_db)] == [blocked.id] and rows(hoc_db)[0].superseded_at is None


def _plan(db, sql, params):
    """SQLite's plan for `sql`; prepared-statement slots are bound to a sample value."""
    params = [p if isinstance(p, (str, int)) else "sample" for p in params]
    return " / ".join(row[3] for row in db.execute_sql("EXPLAIN QUERY PLAN " + sql, params))


@pytest.mark.sqlite_only
def test_lookups_use_the_active_signals_index_never_a_scan(hoc_db, record):
    record("S", "CI_STATUS", "BLOCKED")
    active = GovernanceSignal.select().where(gsd._active_where("S", None, T0)).order_by(
        GovernanceSignal.recorded_at, GovernanceSignal.id)
    for query in (gsd._ACTIVE_DECISIONS._build(), gsd._ACTIVE_DECISION_OF_TYPE._build(), active):
        plan = _plan(hoc_db, *query.sql())
        assert "USING INDEX governance_signals_active" in plan and "SCAN" not in plan, plan
