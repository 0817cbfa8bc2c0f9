"""guard_write_driver: kill switches and incident transitions, tenant-scoped, no commit (SPEC §2)."""
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from freezegun import freeze_time
from peewee import IntegrityError

from hoc_drivers.testing import refuse_writes
from hoc_drivers.db import CommitForbidden
from hoc_drivers.guard_write_driver import (GuardReader, GuardWriteDriver, InvalidTransition,
                                            get_guard_write_driver)
from hoc_drivers.models.guard import KillSwitchState
from hoc_drivers.models.runs import Incident, IncidentEvent

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def guard_cache(hoc_db, hoc_guard_cache):
    """A fresh cache serving the test's database (so its commits invalidate it)."""
    return hoc_guard_cache.serve(hoc_db)


@pytest.fixture
def write(hoc_coordinator):
    """write(fn) runs fn(driver) in one coordinator transaction and returns its result."""
    def run(fn):
        with hoc_coordinator.transaction() as tx:
            return fn(GuardWriteDriver(tx))
    return run


def frozen_switch(write, tenant="t1", entity_type="tenant", entity_id="t1", by="admin",
                  reason="Test freeze"):
    def freeze(driver):
        state, _ = driver.get_or_create_killswitch_state(tenant, entity_type, entity_id)
        return driver.freeze_killswitch(state, by, reason)
    return write(freeze)


def open_incident(hoc_coordinator, tenant="t1", incident_id="inc-1", started_at=None):
    with hoc_coordinator.transaction() as tx:
        Incident.insert(id=incident_id, tenant_id=tenant, title="Spend spike", severity="high",
                        trigger_type="budget", started_at=started_at or datetime.now(timezone.utc)
                        ).execute(tx.db)
    return GuardReader(hoc_coordinator.db).get_incident(tenant, incident_id)


def stored(db, model, row_id):
    return model.select().where(model.id == row_id).get(db)


# ---------------------------------------------------------------------------------------
# kill switches


def test_get_or_create_creates_once_per_tenant(hoc_db, write, hoc_no_stray_commits):
    state, created = write(lambda d: d.get_or_create_killswitch_state("t1", "key", "key-1"))
    again, created_again = write(lambda d: d.get_or_create_killswitch_state("t1", "key", "key-1"))
    other, created_other = write(lambda d: d.get_or_create_killswitch_state("t2", "key", "key-1"))
    assert (created, created_again, created_other) == (True, False, True)
    assert again.id == state.id != other.id
    assert (state.is_frozen, state.tenant_id, other.tenant_id) == (False, "t1", "t2")
    assert KillSwitchState.select().count(hoc_db) == 2


def test_freeze_records_who_when_why(write):
    with freeze_time(T0):
        state = frozen_switch(write)
    assert state.is_frozen is True
    assert (state.frozen_by, state.freeze_reason, state.trigger_type) == ("admin", "Test freeze", "manual")
    assert state.frozen_at == T0 and state.auto_triggered is False
    assert (state.unfrozen_at, state.unfrozen_by) == (None, None)


def test_auto_freeze_with_trigger(write):
    def freeze(driver):
        state, _ = driver.get_or_create_killswitch_state("t1", "key", "k1")
        return driver.freeze_killswitch(state, "system", "budget hit", auto=True, trigger="budget")
    state = write(freeze)
    assert (state.auto_triggered, state.trigger_type) == (True, "budget")


def test_freezing_a_frozen_switch_is_refused_and_keeps_who_froze_it(hoc_db, write):
    first = frozen_switch(write, by="alice", reason="first")
    with pytest.raises(InvalidTransition, match=r"Tenant 't1' is already frozen \(by alice .*: first\)"):
        write(lambda d: d.freeze_killswitch(first, "mallory", "overwrite"))
    row = stored(hoc_db, KillSwitchState, first.id)
    assert (row.frozen_by, row.freeze_reason, row.frozen_at) == ("alice", "first", first.frozen_at)


def test_a_stale_state_object_cannot_refreeze(hoc_db, write):
    stale, _ = write(lambda d: d.get_or_create_killswitch_state("t1", "tenant", "t1"))
    write(lambda d: d.freeze_killswitch(stale, "alice", "first"))
    assert stale.is_frozen is False  # the caller's copy is out of date
    with pytest.raises(InvalidTransition, match="already frozen"):
        write(lambda d: d.freeze_killswitch(stale, "bob", "second"))
    assert stored(hoc_db, KillSwitchState, stale.id).frozen_by == "alice"


def test_unfreeze_keeps_the_freeze_as_history_and_refreeze_clears_the_unfreeze(write):
    state = frozen_switch(write, entity_type="key", entity_id="key-9")
    with freeze_time(T0):
        state = write(lambda d: d.unfreeze_killswitch(state, "admin"))
    assert state.is_frozen is False
    assert (state.unfrozen_by, state.unfrozen_at) == ("admin", T0)
    assert (state.frozen_by, state.freeze_reason) == ("admin", "Test freeze")
    state = write(lambda d: d.freeze_killswitch(state, "ops", "again"))
    assert (state.is_frozen, state.frozen_by, state.unfrozen_at, state.unfrozen_by) == (
        True, "ops", None, None)


def test_unfreezing_an_unfrozen_switch_is_refused(hoc_db, write):
    state, _ = write(lambda d: d.get_or_create_killswitch_state("t1", "key", "key-1"))
    with pytest.raises(InvalidTransition, match="Key 'key-1' is not frozen"):
        write(lambda d: d.unfreeze_killswitch(state, "admin"))
    assert stored(hoc_db, KillSwitchState, state.id).unfrozen_at is None


def test_a_switch_of_another_tenant_cannot_be_touched(hoc_db, write):
    theirs = frozen_switch(write, tenant="t2", entity_id="t2")
    forged = KillSwitchState(id=theirs.id, tenant_id="t1", entity_type="tenant", entity_id="t2")
    with pytest.raises(InvalidTransition, match="no kill switch in tenant 't1'"):
        write(lambda d: d.unfreeze_killswitch(forged, "intruder"))
    assert stored(hoc_db, KillSwitchState, theirs.id).is_frozen is True
    reader = GuardReader(hoc_db)
    assert reader.get_killswitch_state("t1", "tenant", "t2") is None
    assert reader.killswitch_status("t1", "tenant", "t2")["is_frozen"] is False
    assert reader.killswitch_status("t2", "tenant", "t2")["is_frozen"] is True


@pytest.mark.parametrize("args, message", [
    (("t1", "user", "u1"), "unknown entity type 'user'"),
    (("t1", "tenant", ""), "entity_id is required"),
    ((None, "tenant", "t1"), "tenant_id is required"),
    (("t1", "tenant", "t2"), "entity_id 't2' is not tenant_id 't1'"),
])
def test_bad_switch_arguments_write_nothing(hoc_db, write, args, message):
    with pytest.raises(ValueError, match=message):
        write(lambda d: d.get_or_create_killswitch_state(*args))
    assert KillSwitchState.select().count(hoc_db) == 0


def test_freeze_needs_an_actor(hoc_db, write):
    state, _ = write(lambda d: d.get_or_create_killswitch_state("t1", "tenant", "t1"))
    with pytest.raises(ValueError, match="by is required"):
        write(lambda d: d.freeze_killswitch(state, "", "why"))
    assert stored(hoc_db, KillSwitchState, state.id).is_frozen is False


# ---------------------------------------------------------------------------------------
# incidents


def test_acknowledge_then_resolve(hoc_coordinator, write):
    with freeze_time(T0):
        incident = open_incident(hoc_coordinator)
    with freeze_time(T0 + timedelta(seconds=30)):
        acked = write(lambda d: d.acknowledge_incident(incident))
    assert (acked.status, acked.lifecycle_state) == ("acknowledged", "ACKED")
    assert acked.acknowledged_at == acked.updated_at == T0 + timedelta(seconds=30)
    with freeze_time(T0 + timedelta(seconds=90, milliseconds=700)):
        resolved = write(lambda d: d.resolve_incident(acked, by="oncall"))
    assert (resolved.status, resolved.lifecycle_state, resolved.resolved_by) == (
        "resolved", "RESOLVED", "oncall")
    assert resolved.ended_at == resolved.resolved_at == T0 + timedelta(seconds=90, milliseconds=700)
    assert resolved.duration_seconds == 90
    assert resolved.acknowledged_at == T0 + timedelta(seconds=30)


def test_resolve_an_open_incident_directly(hoc_coordinator, write):
    incident = open_incident(hoc_coordinator, started_at=datetime.now(timezone.utc) - timedelta(hours=1))
    resolved = write(lambda d: d.resolve_incident(incident))
    assert resolved.status == "resolved" and resolved.resolved_by is None
    assert 3599 <= resolved.duration_seconds <= 3601


@pytest.mark.parametrize("first, second, message", [
    ("resolve_incident", "resolve_incident", "cannot resolve incident 'inc-1': it is resolved"),
    ("resolve_incident", "acknowledge_incident", "cannot acknowledge incident 'inc-1': it is resolved"),
    ("acknowledge_incident", "acknowledge_incident",
     "cannot acknowledge incident 'inc-1': it is acknowledged"),
])
def test_invalid_incident_transitions_are_refused(hoc_db, hoc_coordinator, write, first, second,
                                                  message):
    incident = open_incident(hoc_coordinator)
    done = write(lambda d: getattr(d, first)(incident))
    with pytest.raises(InvalidTransition, match=message):
        write(lambda d: getattr(d, second)(incident))
    row = stored(hoc_db, Incident, "inc-1")
    assert (row.status, row.updated_at) == (done.status, done.updated_at)


def test_an_incident_of_another_tenant_cannot_be_moved(hoc_db, hoc_coordinator, write):
    theirs = open_incident(hoc_coordinator, tenant="t2")
    forged = Incident(id=theirs.id, tenant_id="t1", started_at=theirs.started_at)
    with pytest.raises(InvalidTransition, match="incident 'inc-1' not found for tenant 't1'"):
        write(lambda d: d.resolve_incident(forged))
    assert stored(hoc_db, Incident, "inc-1").status == "open"


def test_reader_is_tenant_scoped(hoc_coordinator, write):
    with freeze_time(T0):
        open_incident(hoc_coordinator, "t1", "a")
    with freeze_time(T0 + timedelta(minutes=1)):
        open_incident(hoc_coordinator, "t1", "b")
    open_incident(hoc_coordinator, "t2", "c")
    write(lambda d: d.acknowledge_incident(GuardReader(d.tx.db).get_incident("t1", "a")))
    reader = GuardReader(hoc_coordinator.db)
    assert [i.id for i in reader.list_incidents("t1")] == ["b", "a"]  # newest first
    assert [i.id for i in reader.list_incidents("t1", status="acknowledged")] == ["a"]
    assert [i.id for i in reader.list_incidents("t1", limit=1, offset=1)] == ["a"]
    assert [i.id for i in reader.list_incidents("t2")] == ["c"]
    assert reader.get_incident("t1", "c") is None and reader.get_incident("t2", "c").id == "c"
    with pytest.raises(ValueError, match="unknown incident status 'OPEN'"):
        reader.list_incidents("t1", status="OPEN")
    with pytest.raises(ValueError, match="tenant_id is required"):
        reader.list_incidents("")


@pytest.mark.parametrize("limit", ["10", True, 0, -1, 10_001, 2**70, 1.5, None])
def test_list_incidents_refuses_a_bad_limit(hoc_coordinator, limit):
    open_incident(hoc_coordinator, "t1", "a")
    reader = GuardReader(hoc_coordinator.db)
    with pytest.raises(ValueError, match="limit must be an integer from 1 to 10000"):
        reader.list_incidents("t1", limit=limit)
    assert [i.id for i in reader.list_incidents("t1", limit=10_000)] == ["a"]


@pytest.mark.parametrize("offset", ["1", True, -1, 2**70, 0.5, None])
def test_list_incidents_refuses_a_bad_offset(hoc_coordinator, offset):
    open_incident(hoc_coordinator, "t1", "a")
    reader = GuardReader(hoc_coordinator.db)
    with pytest.raises(ValueError, match="offset must be a non-negative integer"):
        reader.list_incidents("t1", offset=offset)
    assert reader.list_incidents("t1", offset=1) == []


# ---------------------------------------------------------------------------------------
# demo incidents


def test_demo_incident_with_timeline(hoc_db, write):
    with freeze_time(T0):
        incident, events = write(lambda d: d.create_demo_incident(
            "t1", "inc_verify_1a2b3c4d", "Safety Test: Guardrail Blocked Malicious Input",
            "policy_violation", "prompt_injection_block", "block",
            [("TRIGGERED", "Prompt injection pattern detected: 'ignore all previous'"),
             ("RESOLVED", "Onboarding verification test - guardrail working correctly")],
            severity="HIGH", call_id="call_verify_0123456789ab"))
    assert (incident.id, incident.tenant_id, incident.status, incident.severity) == (
        "inc_verify_1a2b3c4d", "t1", "resolved", "high")
    assert (incident.policy_id, incident.auto_action, incident.call_id, incident.calls_affected) == (
        "prompt_injection_block", "block", "call_verify_0123456789ab", 1)
    assert incident.started_at == incident.resolved_at == incident.ended_at == T0
    assert (incident.lifecycle_state, incident.duration_seconds) == ("RESOLVED", 0)
    assert [(e.event_type, e.tenant_id, e.incident_id) for e in events] == [
        ("TRIGGERED", "t1", "inc_verify_1a2b3c4d"), ("RESOLVED", "t1", "inc_verify_1a2b3c4d")]
    assert GuardReader(hoc_db).list_incident_events("t2", incident.id) == []


def test_demo_incident_without_call(write):
    incident, events = write(lambda d: d.create_demo_incident(
        "t1", "inc_ks_demo_1", "Kill Switch Demo", "killswitch_demo", "killswitch", "freeze",
        [("TRIGGERED", "demo"), ("ACTION", "would stop traffic")], calls_affected=0,
        cost_delta_cents=Decimal("12.5")))
    assert (incident.calls_affected, incident.call_id, incident.cost_delta_cents) == (0, None, Decimal("12.5"))
    assert [e.event_type for e in events] == ["TRIGGERED", "ACTION"]


@pytest.mark.parametrize("kwargs, message", [
    ({"severity": "urgent"}, "unknown severity 'urgent'"),
    ({"events": [("TRIGGERED",)]}, "each event must be"),
    ({"events": [("TRIGGERED", "")]}, "each event must be"),
    ({"title": ""}, "title is required"),
])
def test_bad_demo_incident_writes_nothing(hoc_db, write, kwargs, message):
    arguments = {"incident_id": "inc-d", "tenant_id": "t1", "title": "Demo",
                 "trigger_type": "killswitch_demo", "policy_id": "killswitch",
                 "auto_action": "freeze", "events": [("TRIGGERED", "x")], **kwargs}
    with pytest.raises(ValueError, match=message):
        write(lambda d: d.create_demo_incident(**arguments))
    assert Incident.select().count(hoc_db) == IncidentEvent.select().count(hoc_db) == 0


def test_failed_demo_incident_undoes_only_itself(hoc_db, hoc_coordinator):
    with hoc_coordinator.transaction() as tx:
        refuse_writes(tx, "incident_events", "no", when="NEW.event_type = 'BAD'")
    with hoc_coordinator.transaction() as tx:
        driver = GuardWriteDriver(tx)
        driver.create_demo_incident("t1", "kept", "Demo", "killswitch_demo", "ks", "freeze",
                                    [("TRIGGERED", "x")])
        with pytest.raises(IntegrityError):
            driver.create_demo_incident("t1", "undone", "Demo", "killswitch_demo", "ks", "freeze",
                                        [("TRIGGERED", "x"), ("BAD", "y")])
        with pytest.raises(IntegrityError):  # a duplicate id is refused, never overwritten
            driver.create_demo_incident("t1", "kept", "Other", "killswitch_demo", "ks", "freeze", [])
    assert [i.id for i in Incident.select().execute(hoc_db)] == ["kept"]
    assert IncidentEvent.select().count(hoc_db) == 1
    assert stored(hoc_db, Incident, "kept").title == "Demo"


# ---------------------------------------------------------------------------------------
# the commit authority and post-commit invalidation


MUTATIONS = {
    "get_or_create_killswitch_state": lambda d, r: d.get_or_create_killswitch_state("t1", "key", "new"),
    "freeze_killswitch": lambda d, r: d.freeze_killswitch(r["unfrozen"], "admin", "why"),
    "unfreeze_killswitch": lambda d, r: d.unfreeze_killswitch(r["frozen"], "admin"),
    "acknowledge_incident": lambda d, r: d.acknowledge_incident(r["incident"]),
    "resolve_incident": lambda d, r: d.resolve_incident(r["incident"]),
    "create_demo_incident": lambda d, r: d.create_demo_incident(
        "t1", "demo", "Demo", "killswitch_demo", "ks", "freeze", [("TRIGGERED", "x")]),
}


@pytest.fixture
def rows(hoc_coordinator, write):
    def prepare(driver):
        unfrozen, _ = driver.get_or_create_killswitch_state("t1", "key", "cold")
        frozen, _ = driver.get_or_create_killswitch_state("t1", "key", "hot")
        return unfrozen, driver.freeze_killswitch(frozen, "admin", "setup")
    unfrozen, frozen = write(prepare)
    return {"unfrozen": unfrozen, "frozen": frozen, "incident": open_incident(hoc_coordinator)}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_every_write_is_refused_outside_a_coordinator_transaction(hoc_db, hoc_coordinator, rows,
                                                                   name):
    before = (KillSwitchState.select().count(hoc_db), Incident.select().count(hoc_db),
              [(s.id, s.is_frozen) for s in KillSwitchState.select().execute(hoc_db)],
              [(i.id, i.status) for i in Incident.select().execute(hoc_db)])
    with hoc_coordinator.transaction() as closed:
        pass
    with pytest.raises(CommitForbidden):
        MUTATIONS[name](GuardWriteDriver(closed), rows)
    after = (KillSwitchState.select().count(hoc_db), Incident.select().count(hoc_db),
             [(s.id, s.is_frozen) for s in KillSwitchState.select().execute(hoc_db)],
             [(i.id, i.status) for i in Incident.select().execute(hoc_db)])
    assert after == before


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_every_write_invalidates_the_tenant_cache_after_commit_only(hoc_coordinator, rows,
                                                                     guard_cache, name):
    for tenant in ("t1", "t2"):
        guard_cache.set_status(tenant, {"cached": True})
    with pytest.raises(RuntimeError):
        with hoc_coordinator.transaction() as tx:
            MUTATIONS[name](GuardWriteDriver(tx), rows)
            raise RuntimeError("rolled back")
    assert guard_cache.get_status("t1") == {"cached": True}
    with hoc_coordinator.transaction() as tx:
        MUTATIONS[name](get_guard_write_driver(tx), rows)
        assert guard_cache.get_status("t1") == {"cached": True}  # not before COMMIT
    assert guard_cache.get_status("t1") is None
    assert guard_cache.get_status("t2") == {"cached": True}


def test_refused_transition_registers_no_invalidation(hoc_coordinator, rows):
    with hoc_coordinator.transaction() as tx:
        with pytest.raises(InvalidTransition):
            GuardWriteDriver(tx).freeze_killswitch(rows["frozen"], "x", "y")
        assert tx.facts == [] and tx.callbacks == []


# ---------------------------------------------------------------------------------------
# kill switch history and timed freezes (issue 15)


class WallClock:
    """An aware UTC clock that moves only when told."""

    def __init__(self, start=T0):
        self.now = start

    def __call__(self):
        return self.now

    def advance(self, **delta):
        self.now += timedelta(**delta)


@pytest.fixture
def clock():
    return WallClock()


@pytest.fixture
def timed(hoc_coordinator, clock):
    """timed(fn) runs fn(driver) in one transaction, the driver on the test's clock."""
    def run(fn):
        with hoc_coordinator.transaction() as tx:
            return fn(GuardWriteDriver(tx, clock=clock))
    return run


def _freeze_for(driver, until, tenant="t1", entity_type="tenant", entity_id="t1", by="ops"):
    state, _ = driver.get_or_create_killswitch_state(tenant, entity_type, entity_id)
    return driver.freeze_killswitch(state, by, "cost spike", until=until)


def test_every_freeze_and_unfreeze_is_kept_with_who_why_and_when(hoc_db, timed, clock):
    state = timed(lambda d: _freeze_for(d, None))
    clock.advance(minutes=5)
    state = timed(lambda d: d.unfreeze_killswitch(state, "oncall", "false alarm"))
    assert (state.unfrozen_by, state.unfreeze_reason, state.unfrozen_at) == (
        "oncall", "false alarm", T0 + timedelta(minutes=5))
    clock.advance(minutes=5)
    timed(lambda d: d.freeze_killswitch(state, "bob", "again", until=T0 + timedelta(hours=1)))
    reader = GuardReader(hoc_db, clock=clock)
    events = [(e.action, e.actor, e.reason, e.created_at, e.until)
              for e in reader.killswitch_history("t1", "tenant", "t1")]
    assert events == [  # newest first
        ("freeze", "bob", "again", T0 + timedelta(minutes=10), T0 + timedelta(hours=1)),
        ("unfreeze", "oncall", "false alarm", T0 + timedelta(minutes=5), None),
        ("freeze", "ops", "cost spike", T0, None)]
    assert reader.killswitch_history("t2", "tenant", "t1") == []  # tenant-scoped
    assert len(reader.killswitch_history("t1", "tenant", "t1", limit=1)) == 1
    assert reader.killswitch_status("t1", "tenant", "t1")["unfreeze_reason"] is None  # new freeze


def test_a_refused_transition_records_no_history(hoc_db, timed):
    state = timed(lambda d: _freeze_for(d, None))
    with pytest.raises(InvalidTransition):
        timed(lambda d: d.freeze_killswitch(state, "mallory", "overwrite"))
    assert len(GuardReader(hoc_db).killswitch_history("t1", "tenant", "t1")) == 1


def test_a_timed_freeze_ends_by_itself(hoc_db, timed, clock):
    until = T0 + timedelta(hours=2)
    state = timed(lambda d: _freeze_for(d, until))
    reader = GuardReader(hoc_db, clock=clock)
    status = reader.killswitch_status("t1", "tenant", "t1")
    assert (status["is_frozen"], status["frozen_until"]) == (True, until)
    clock.advance(hours=2, microseconds=-1)
    assert reader.is_frozen("t1", "tenant", "t1") is True
    with pytest.raises(InvalidTransition, match="already frozen .* until 2026-03-01T14:00:00"):
        timed(lambda d: d.freeze_killswitch(state, "bob", "again"))
    clock.advance(microseconds=1)  # the end time itself: no longer frozen, no process ran
    assert reader.is_frozen("t1", "tenant", "t1") is False
    assert reader.killswitch_status("t1", "tenant", "t1")["is_frozen"] is False
    assert reader.list_killswitches("t1", frozen_only=True) == []
    with pytest.raises(InvalidTransition, match=r"not frozen \(its freeze ended at 2026-03-01T14:00"):
        timed(lambda d: d.unfreeze_killswitch(state, "oncall"))
    refrozen = timed(lambda d: d.freeze_killswitch(state, "bob", "again"))  # allowed once ended
    assert (refrozen.is_frozen, refrozen.frozen_by, refrozen.frozen_until) == (True, "bob", None)
    assert reader.is_frozen("t1", "tenant", "t1") is True


@pytest.mark.parametrize("until, message", [
    (T0, "until must be in the future"),
    (T0 - timedelta(seconds=1), "until must be in the future"),
    ("2030-01-01", "until must be a datetime"),
])
def test_a_freeze_until_now_or_earlier_is_refused(hoc_db, timed, until, message):
    state = timed(lambda d: d.get_or_create_killswitch_state("t1", "tenant", "t1")[0])
    with pytest.raises(ValueError, match=message):
        timed(lambda d: d.freeze_killswitch(state, "ops", "why", until=until))
    assert stored(hoc_db, KillSwitchState, state.id).is_frozen is False
    assert GuardReader(hoc_db).killswitch_history("t1", "tenant", "t1") == []


def test_a_naive_until_is_utc(hoc_db, timed):
    state = timed(lambda d: _freeze_for(d, datetime(2026, 3, 1, 13, 0)))
    assert state.frozen_until == T0 + timedelta(hours=1)


def test_list_switches_of_a_tenant_or_every_frozen_one(hoc_db, timed, clock):
    timed(lambda d: _freeze_for(d, T0 + timedelta(hours=1)))
    timed(lambda d: d.get_or_create_killswitch_state("t1", "key", "k-idle"))
    clock.advance(seconds=1)
    timed(lambda d: _freeze_for(d, None, "t2", "key", "k-2"))
    reader = GuardReader(hoc_db, clock=clock)

    def keys(rows):
        return [(r["tenant_id"], r["entity_id"], r["is_frozen"]) for r in rows]

    assert sorted(keys(reader.list_killswitches("t1"))) == [("t1", "k-idle", False), ("t1", "t1", True)]
    assert keys(reader.list_killswitches("t1", frozen_only=True)) == [("t1", "t1", True)]
    assert keys(reader.list_frozen_killswitches()) == [("t2", "k-2", True), ("t1", "t1", True)]
    clock.advance(hours=1)
    assert keys(reader.list_frozen_killswitches()) == [("t2", "k-2", True)]
    with pytest.raises(ValueError):
        reader.list_killswitches("")
