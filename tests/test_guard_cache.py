"""GuardCache (TTL edges, copies, exact tenant invalidation) and the guard read driver."""
import threading
from datetime import datetime, timedelta, timezone

import pytest
from freezegun import freeze_time

from hoc_drivers import guard_cache as guard_cache_module
from hoc_drivers import bus
from hoc_drivers.facts import GuardStateChanged
from hoc_drivers.governance_signal_driver import GovernanceSignalWriter
from hoc_drivers.guard_cache import SNAPSHOT, GuardCache, default_ttls, get_guard_cache
from hoc_drivers.guard_read_driver import GuardReadDriver
from hoc_drivers.guard_write_driver import GuardWriteDriver
from hoc_drivers.models.base import new_id
from hoc_drivers.models.cost import CostRecord
from hoc_drivers.models.runs import Incident, Run
from hoc_drivers.transaction_coordinator import RunCompletionTransaction
from hoc_drivers.testing import ManualClock


@pytest.fixture
def shared_cache(hoc_db):
    """A cache serving the test's database (so writers invalidate it), on a clock that never
    moves."""
    return GuardCache(timer=ManualClock()).serve(hoc_db)


@pytest.fixture
def reader(hoc_db, shared_cache):
    return GuardReadDriver(hoc_db, cache=shared_cache)


# ------------------------------------------------------------------ the cache itself


def test_each_endpoint_has_its_own_entries(hoc_guard_cache):
    cache = hoc_guard_cache
    cache.set_status("t1", {"kind": "status"})
    cache.set_snapshot("t1", {"kind": "snapshot"})
    cache.set_incidents("t1", {"page": 1}, limit=10, offset=0)
    cache.set_incidents("t1", {"page": 2}, limit=10, offset=10)
    assert cache.get_status("t1") == {"kind": "status"}
    assert cache.get_snapshot("t1") == {"kind": "snapshot"}
    assert cache.get_incidents("t1", 10, 0) == {"page": 1}
    assert cache.get_incidents("t1", 10, 10) == {"page": 2}
    assert cache.get_incidents("t1", 20, 0) is None
    assert cache.get("status", "t1") == {"kind": "status"}
    assert cache.get("incidents", "t1", "10:10") == {"page": 2}


@pytest.mark.parametrize("endpoint, ttl", [("status", 5), ("snapshot", 10), ("incidents", 5)])
def test_expiry_is_exactly_at_the_ttl(hoc_guard_cache, hoc_clock, endpoint, ttl):
    hoc_guard_cache.set(endpoint, "t1", {"v": 1})
    hoc_clock.advance(ttl - 0.001)
    assert hoc_guard_cache.get(endpoint, "t1") == {"v": 1}
    hoc_clock.advance(0.001)
    assert hoc_guard_cache.get(endpoint, "t1") is None


def test_an_explicit_ttl_wins_and_zero_stores_nothing(hoc_guard_cache, hoc_clock):
    assert hoc_guard_cache.set("status", "t1", {"v": 1}, ttl=2)
    hoc_clock.advance(1.999)
    assert hoc_guard_cache.get_status("t1") == {"v": 1}
    hoc_clock.advance(0.001)
    assert hoc_guard_cache.get_status("t1") is None
    hoc_guard_cache.set_status("t1", {"v": 1})
    assert hoc_guard_cache.set("status", "t1", {"v": 2}, ttl=0) is False
    assert hoc_guard_cache.get_status("t1") is None
    with pytest.raises(ValueError, match="ttl must not be negative"):
        hoc_guard_cache.set("status", "t1", {}, ttl=-1)


def test_ttls_come_from_the_environment(monkeypatch, hoc_clock):
    monkeypatch.setenv("GUARD_STATUS_TTL", "2")
    monkeypatch.setenv("GUARD_SNAPSHOT_TTL", "0.5")
    assert default_ttls() == {"status": 2.0, "snapshot": 0.5, "incidents": 5}
    cache = GuardCache(timer=hoc_clock)
    cache.set_status("t1", {"v": 1})
    hoc_clock.advance(2)
    assert cache.get_status("t1") is None
    monkeypatch.setenv("GUARD_INCIDENTS_TTL", "soon")
    with pytest.raises(ValueError, match="GUARD_INCIDENTS_TTL must be a number of seconds"):
        GuardCache()
    monkeypatch.setenv("GUARD_INCIDENTS_TTL", "-1")
    with pytest.raises(ValueError, match="must not be negative"):
        GuardCache()


def test_values_are_copied_in_and_out(hoc_guard_cache):
    data = {"items": [{"id": "a"}], "at": datetime(2026, 1, 1, tzinfo=timezone.utc)}
    hoc_guard_cache.set_status("t1", data)
    data["items"].append({"id": "changed before read"})
    first = hoc_guard_cache.get_status("t1")
    first["items"][0]["id"] = "changed after read"
    assert hoc_guard_cache.get_status("t1") == {"items": [{"id": "a"}],
                                                "at": datetime(2026, 1, 1, tzinfo=timezone.utc)}


def test_flat_values_are_copied_too(hoc_guard_cache):
    data = {"is_frozen": False, "open_incidents": 3}
    hoc_guard_cache.set_status("t1", data)
    data["is_frozen"] = True
    first = hoc_guard_cache.get_status("t1")
    first["open_incidents"] = 99
    assert hoc_guard_cache.get_status("t1") == {"is_frozen": False, "open_incidents": 3}
    assert hoc_guard_cache.get_status("t1") is not hoc_guard_cache.get_status("t1")


def test_invalidate_tenant_removes_exactly_that_tenants_entries(hoc_guard_cache):
    cache = hoc_guard_cache
    for tenant in ("t1", "t10", "t1-x", "abc"):
        cache.set_status(tenant, {"tenant": tenant})
        cache.set_snapshot(tenant, {"tenant": tenant})
    cache.set_incidents("t1", {"page": 0}, 10, 0)
    cache.set_incidents("abc", {"page": 0}, 10, 0)   # its key contains ":10:" — not tenant "10"
    assert cache.invalidate_tenant("t1") == 3
    assert cache.get_status("t1") is None and cache.get_incidents("t1", 10, 0) is None
    for tenant in ("t10", "t1-x", "abc"):
        assert cache.get_status(tenant) == {"tenant": tenant}
        assert cache.get_snapshot(tenant) == {"tenant": tenant}
    assert cache.invalidate_tenant("10") == 0
    assert cache.get_incidents("abc", 10, 0) == {"page": 0}
    assert cache.invalidate_tenant("t1") == 0


def test_invalidate_tenant_does_not_count_expired_entries(hoc_guard_cache, hoc_clock):
    hoc_guard_cache.set_status("t1", {})
    hoc_guard_cache.set_snapshot("t1", {})
    hoc_clock.advance(5)
    assert hoc_guard_cache.invalidate_tenant("t1") == 1


def test_invalidate_one_entry(hoc_guard_cache):
    hoc_guard_cache.set_status("t1", {"v": 1})
    hoc_guard_cache.set_snapshot("t1", {"v": 2})
    assert hoc_guard_cache.invalidate("status", "t1") is True
    assert hoc_guard_cache.invalidate("status", "t1") is False
    assert hoc_guard_cache.get_snapshot("t1") == {"v": 2}


def test_hits_and_misses_are_counted_per_endpoint(hoc_guard_cache):
    cache = hoc_guard_cache
    cache.get_status("t1")
    cache.set_status("t1", {})
    cache.get_status("t1")
    cache.get_status("t1")
    cache.get_incidents("t1")
    stats = cache.stats()
    assert stats["hits"] == {"status": 2}
    assert stats["misses"] == {"status": 1, "incidents": 1}
    assert stats["entries"] == 1


def test_a_value_read_before_an_invalidation_is_not_stored_after_it(hoc_guard_cache):
    generation = hoc_guard_cache.generation("t1")
    hoc_guard_cache.invalidate_tenant("t1")      # a write committed while the value was read
    assert hoc_guard_cache.set_status("t1", {"stale": True}, generation=generation) is False
    assert hoc_guard_cache.get_status("t1") is None
    fresh = hoc_guard_cache.generation("t1")
    assert hoc_guard_cache.set_status("t1", {"stale": False}, generation=fresh) is True
    hoc_guard_cache.set_status("t2", {}, generation=hoc_guard_cache.generation("t2"))
    assert hoc_guard_cache.get_status("t2") == {}


def test_disabled_cache_misses_and_stores_nothing(monkeypatch):
    monkeypatch.setenv("GUARD_CACHE_ENABLED", "false")
    cache = GuardCache()
    assert cache.set_status("t1", {"v": 1}) is False
    assert cache.get_status("t1") is None
    assert cache.stats()["misses"] == {}


def test_the_entry_stored_first_is_evicted_and_forgotten(hoc_clock):
    cache = GuardCache(maxsize=2, timer=hoc_clock)
    cache.set_status("a", {})
    cache.set_status("b", {})
    cache.get_status("a")          # a read does not reorder (that is what keeps hits lock-free)
    cache.set_status("c", {})
    assert cache.get_status("a") is None
    assert cache.get_status("b") == {} and cache.get_status("c") == {}
    assert cache.invalidate_tenant("a") == 0 and "a" not in cache._tenant_keys


def test_storing_again_moves_an_entry_to_the_back(hoc_clock):
    cache = GuardCache(maxsize=2, timer=hoc_clock)
    cache.set_status("a", {"v": 1})
    cache.set_status("b", {})
    cache.set_status("a", {"v": 2})  # refreshed: now the newest
    cache.set_status("c", {})
    assert cache.get_status("b") is None
    assert cache.get_status("a") == {"v": 2} and cache.get_status("c") == {}


def test_hits_counted_from_many_threads_are_exact(hoc_guard_cache):
    hoc_guard_cache.set_status("t1", {"v": 1})
    calls = 20_000

    def read():
        for _ in range(calls):
            assert hoc_guard_cache.get_status("t1") == {"v": 1}

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert hoc_guard_cache.stats()["hits"] == {"status": 8 * calls}
    assert hoc_guard_cache.hits["status"] == 8 * calls


def test_concurrent_use_from_threads(hoc_clock):
    cache = GuardCache(maxsize=64, timer=hoc_clock)
    errors = []

    def work(worker):
        try:
            for i in range(2000):
                tenant = f"t{(worker + i) % 8}"
                cache.set_incidents(tenant, {"i": i}, 10, i % 20)
                value = cache.get_incidents(tenant, 10, i % 20)
                assert value is None or set(value) == {"i"}
                if i % 97 == 0:
                    cache.invalidate_tenant(tenant)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert cache.stats()["entries"] <= 64
    for tenant in (f"t{n}" for n in range(8)):
        cache.invalidate_tenant(tenant)
    assert cache.stats()["entries"] == 0 and cache._tenant_keys == {}


def test_get_guard_cache_is_one_object_per_database(hoc_db):
    assert get_guard_cache(hoc_db) is get_guard_cache(hoc_db)
    with pytest.raises(TypeError):  # no database given: there is no process-wide cache
        get_guard_cache(None)


# ------------------------------------------------------------------ invalidation after commit


def test_invalidation_runs_after_commit_only(hoc_coordinator, shared_cache):
    shared_cache.set_status("t1", {"v": 1})
    shared_cache.set_snapshot("t2", {"v": 1})
    shared_cache.set_status("t2", {"v": 1})
    with hoc_coordinator.transaction() as tx:
        tx.note(GuardStateChanged("t1"))
        tx.note(GuardStateChanged("t2", SNAPSHOT))
        assert shared_cache.get_status("t1") == {"v": 1}   # never before the commit
    assert shared_cache.get_status("t1") is None
    assert shared_cache.get_snapshot("t2") is None and shared_cache.get_status("t2") == {"v": 1}


def test_a_rolled_back_transaction_invalidates_nothing(hoc_coordinator, shared_cache):
    shared_cache.set_status("t1", {"v": 1})
    with pytest.raises(RuntimeError):
        with hoc_coordinator.transaction() as tx:
            tx.note(GuardStateChanged("t1"))
            raise RuntimeError("boom")
    with hoc_coordinator.transaction() as tx:
        with pytest.raises(RuntimeError):
            with tx.savepoint():
                tx.note(GuardStateChanged("t1"))
                raise RuntimeError("inner boom")
    assert shared_cache.get_status("t1") == {"v": 1}


# ------------------------------------------------------------------ the guard read driver


def _freeze(coordinator, tenant, by="ops"):
    with coordinator.transaction() as tx:
        writer = GuardWriteDriver(tx)
        state, _ = writer.get_or_create_killswitch_state(tenant, "tenant", tenant)
        writer.freeze_killswitch(state, by, "runaway spend")


def test_status_is_computed_on_a_miss_and_served_from_the_cache(reader, shared_cache,
                                                                 hoc_coordinator):
    RunCompletionTransaction(hoc_coordinator).execute("t1", "run-1", "failed",
                                                      error_message="AGENT_CRASH")
    status = reader.get_status("t1")
    assert status["open_incidents"] == 1
    assert status["is_frozen"] is False and status["governance_blocked"] is False
    assert status["last_incident_time"] is not None
    assert reader.get_status("t1") == status
    assert shared_cache.stats()["hits"] == {"status": 1}
    assert shared_cache.stats()["misses"] == {"status": 1}


def test_freezing_the_kill_switch_shows_at_once_inside_the_ttl(reader, shared_cache,
                                                               hoc_coordinator):
    assert reader.get_status("acme")["is_frozen"] is False
    reader.get_snapshot("acme")
    _freeze(hoc_coordinator, "acme")
    status = reader.get_status("acme")          # the clock has not moved: well inside the TTL
    assert status["is_frozen"] is True
    assert status["frozen_by"] == "ops" and status["freeze_reason"] == "runaway spend"
    assert shared_cache.stats()["misses"] == {"status": 2, "snapshot": 1}


def test_a_rolled_back_freeze_invalidates_nothing(reader, shared_cache, hoc_coordinator):
    reader.get_status("acme")
    with pytest.raises(RuntimeError):
        with hoc_coordinator.transaction() as tx:
            writer = GuardWriteDriver(tx)
            state, _ = writer.get_or_create_killswitch_state("acme", "tenant", "acme")
            writer.freeze_killswitch(state, "ops", "oops")
            raise RuntimeError("abandon the freeze")
    status = reader.get_status("acme")
    assert status["is_frozen"] is False
    assert shared_cache.stats()["hits"] == {"status": 1}   # the entry survived


def test_another_tenants_write_leaves_my_entries(reader, shared_cache, hoc_coordinator):
    reader.get_status("tenant-b")
    reader.get_snapshot("tenant-b")
    _freeze(hoc_coordinator, "tenant-a")
    reader.get_status("tenant-b")
    reader.get_snapshot("tenant-b")
    assert shared_cache.stats()["hits"] == {"status": 1, "snapshot": 1}
    assert reader.get_status("tenant-a")["is_frozen"] is True


def test_incident_creation_and_resolution_invalidate_after_commit(reader, hoc_coordinator):
    assert reader.get_status("t1")["open_incidents"] == 0
    RunCompletionTransaction(hoc_coordinator).execute("t1", "run-1", "failed")
    assert reader.get_status("t1")["open_incidents"] == 1
    assert reader.get_incidents("t1")["total"] == 1
    with hoc_coordinator.transaction() as tx:
        incident = Incident.select().where(Incident.tenant_id == "t1").get(tx.db)
        GuardWriteDriver(tx).resolve_incident(incident)
    assert reader.get_status("t1")["open_incidents"] == 0
    assert reader.get_incidents("t1")["items"][0]["status"] == "resolved"


def test_governance_block_shows_in_status(reader, hoc_coordinator, shared_cache):
    with hoc_coordinator.transaction() as tx:
        GovernanceSignalWriter(tx).record_signal("acme", "MANUAL_OVERRIDE", "BLOCKED", "OPS",
                                                 reason="audit hold")
    assert reader.get_status("acme")["governance_blocked"] is True
    assert reader.get_status("other")["governance_blocked"] is False


def test_a_new_run_or_cost_refreshes_only_the_snapshot_after_commit(reader, shared_cache,
                                                                     hoc_coordinator):
    from hoc_drivers.idempotency import IdempotencyWriter, claim_or_get
    from hoc_drivers.worker_write_service_async import WorkerWriteService

    reader.get_status("t1")
    before = reader.get_snapshot("t1")
    assert (before["runs_today"], before["spend_today_cents"]) == (0, 0)
    with pytest.raises(RuntimeError):
        with hoc_coordinator.transaction() as tx:
            IdempotencyWriter(tx).claim_or_get("t1", "key-0")
            raise RuntimeError("rolled back")
    assert reader.get_snapshot("t1") == before  # still the cached value
    with hoc_coordinator.transaction() as tx:
        IdempotencyWriter(tx).claim_or_get("t1", "key-1")
        claim_or_get(tx, "t1", "key-2")  # the module function, same rule
        WorkerWriteService(tx).insert_cost_record("t1", "run-1", "gpt-x", 10, 20, 250)
        assert reader.get_snapshot("t1") == before  # never before the commit
    after = reader.get_snapshot("t1")
    assert (after["runs_today"], after["spend_today_cents"]) == (2, 250)
    reader.get_status("t1")
    assert shared_cache.stats()["hits"] == {"status": 1, "snapshot": 2}


def test_a_write_committed_during_a_miss_is_not_cached_stale(hoc_db, shared_cache,
                                                              hoc_coordinator):
    class FreezeDuringRead(GuardReadDriver):
        """Reads the status, then a freeze commits before the value reaches the cache."""

        def compute_status(self, tenant_id):
            status = super().compute_status(tenant_id)
            _freeze(hoc_coordinator, tenant_id)
            return status

    assert FreezeDuringRead(hoc_db, shared_cache).get_status("acme")["is_frozen"] is False
    assert GuardReadDriver(hoc_db, shared_cache).get_status("acme")["is_frozen"] is True


def _add(coordinator, table, **fields):
    with coordinator.transaction() as tx:
        table.insert(id=new_id(), **fields).execute(tx.db)


def test_snapshot_counts_the_utc_day_only(hoc_db, hoc_coordinator, shared_cache):
    midnight = datetime(2026, 3, 2, tzinfo=timezone.utc)
    before, after = midnight - timedelta(microseconds=1), midnight
    for at in (before, after, after + timedelta(hours=5)):
        _add(hoc_coordinator, Run, tenant_id="t1", created_at=at, updated_at=at)
        _add(hoc_coordinator, CostRecord, tenant_id="t1", model="m",
             input_tokens=1, output_tokens=1, cost_cents=12.5, created_at=at)
    _add(hoc_coordinator, Run, tenant_id="t2", created_at=after, updated_at=after)
    for at in (before, after):
        _add(hoc_coordinator, Incident, tenant_id="t1", title="x", severity="low",
             trigger_type="manual", created_at=at, started_at=at, updated_at=at)
    with freeze_time("2026-03-02 23:59:59"):
        snapshot = GuardReadDriver(hoc_db, shared_cache).compute_snapshot("t1")
    assert snapshot["date"] == "2026-03-02"
    assert snapshot["runs_today"] == 2
    assert snapshot["spend_today_cents"] == 25.0
    assert snapshot["incidents_today"] == 1
    assert snapshot["last_incident_time"] == after


def test_incident_pages_are_newest_first_and_cached_per_page(reader, hoc_coordinator,
                                                             shared_cache):
    base = datetime(2026, 3, 2, tzinfo=timezone.utc)
    for i in range(5):
        at = base + timedelta(minutes=i)
        _add(hoc_coordinator, Incident, tenant_id="t1", title=f"incident {i}", severity="low",
             trigger_type="manual", created_at=at, started_at=at, updated_at=at)
    _add(hoc_coordinator, Incident, tenant_id="t2", title="other tenant", severity="low",
         trigger_type="manual")
    first = reader.get_incidents("t1", limit=2, offset=0)
    second = reader.get_incidents("t1", limit=2, offset=2)
    assert [i["title"] for i in first["items"]] == ["incident 4", "incident 3"]
    assert [i["title"] for i in second["items"]] == ["incident 2", "incident 1"]
    assert first["total"] == second["total"] == 5
    reader.get_incidents("t1", limit=2, offset=0)
    assert shared_cache.stats()["hits"] == {"incidents": 1}
    with pytest.raises(ValueError, match="limit must be an integer >= 1"):
        reader.get_incidents("t1", limit=0)
    with pytest.raises(ValueError, match="tenant_id is required"):
        reader.get_status("  ")


def test_recording_a_signal_refreshes_the_tenants_guard_status_after_commit(hoc_db, hoc_coordinator):
    from hoc_drivers.governance_signal_driver import GovernanceSignalWriter
    from hoc_drivers.guard_read_driver import GuardReadDriver

    reader = GuardReadDriver(hoc_db)  # the database's own cache, get_guard_cache(hoc_db)
    assert reader.get_status("acme")["governance_blocked"] is False
    with hoc_coordinator.transaction() as tx:
        GovernanceSignalWriter(tx).record_signal("acme", "MANUAL_OVERRIDE", "BLOCKED", "OPS")
    assert reader.get_status("acme")["governance_blocked"] is True  # inside the 5 s TTL


# ------------------------------------------------------------------ one cache per database


def _frozen_tenant_db(path, frozen):
    from hoc_drivers.db import init_database
    from hoc_drivers.transaction_coordinator import TransactionCoordinator

    db = init_database(str(path))
    if frozen:
        with TransactionCoordinator(db).transaction() as tx:
            writer = GuardWriteDriver(tx)
            state, _ = writer.get_or_create_killswitch_state("acme", "tenant", "acme")
            writer.freeze_killswitch(state, "ops", "test")
    return db


def test_two_databases_with_one_tenant_id_never_share_entries(tmp_path):
    frozen_db = _frozen_tenant_db(tmp_path / "a.db", frozen=True)
    thawed_db = _frozen_tenant_db(tmp_path / "b.db", frozen=False)
    try:
        for _ in range(2):  # a miss, then a hit, on each database
            assert GuardReadDriver(frozen_db).get_status("acme")["is_frozen"] is True
            assert GuardReadDriver(thawed_db).get_status("acme")["is_frozen"] is False
        assert get_guard_cache(frozen_db) is not get_guard_cache(thawed_db)
        assert get_guard_cache(frozen_db).stats()["hits"] == {"status": 1}
    finally:
        frozen_db.close()
        thawed_db.close()


def test_a_cache_serves_one_database_only(tmp_path, hoc_guard_cache):
    first = _frozen_tenant_db(tmp_path / "a.db", frozen=False)
    second = _frozen_tenant_db(tmp_path / "b.db", frozen=False)
    try:
        GuardReadDriver(first, hoc_guard_cache)
        GuardReadDriver(first, hoc_guard_cache)  # the same database again is fine
        with pytest.raises(ValueError, match=r"already serves .*a\.db; use get_guard_cache\(db\)"):
            GuardReadDriver(second, hoc_guard_cache)
    finally:
        first.close()
        second.close()


def test_a_commit_on_another_connection_to_the_file_invalidates(tmp_path):
    from hoc_drivers.db import connect_database
    from hoc_drivers.transaction_coordinator import TransactionCoordinator

    reading = _frozen_tenant_db(tmp_path / "a.db", frozen=False)
    writing = connect_database(str(tmp_path / "." / "a.db"))  # another object, another spelling
    try:
        reader = GuardReadDriver(reading)
        assert reader.get_status("acme")["is_frozen"] is False
        assert get_guard_cache(writing) is reader.cache
        with TransactionCoordinator(writing).transaction() as tx:
            writer = GuardWriteDriver(tx)
            state, _ = writer.get_or_create_killswitch_state("acme", "tenant", "acme")
            writer.freeze_killswitch(state, "ops", "test")
        assert reader.get_status("acme")["is_frozen"] is True  # inside the 5 s TTL
    finally:
        reading.close()
        writing.close()


def test_a_commit_by_another_process_is_seen_within_100_ms(tmp_path):
    """The other process's commit reaches no subscription here: `PRAGMA data_version`, checked
    every 100 ms of the cache's timer, shows it."""
    import os
    import subprocess
    import sys

    reading = _frozen_tenant_db(tmp_path / "a.db", frozen=False)
    clock = ManualClock()
    try:
        reader = GuardReadDriver(reading, cache=GuardCache(timer=clock))
        assert reader.get_status("acme")["is_frozen"] is False
        subprocess.run([sys.executable, "-c", "import cli; cli.main()", "--db", reading.database,
                        "killswitch", "freeze", "--tenant", "acme", "--entity-type", "tenant",
                        "--entity-id", "acme", "--by", "ops"],
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       check=True, capture_output=True, timeout=120)
        clock.advance(0.099)
        assert reader.get_status("acme")["is_frozen"] is False  # a hit: no check yet
        clock.advance(0.001)
        status = reader.get_status("acme")
        assert (status["is_frozen"], status["frozen_by"]) == (True, "ops")
        assert reader.cache.stats()["misses"] == {"status": 2}
    finally:
        reading.close()


def test_in_memory_databases_each_have_their_own_cache_and_are_forgotten():
    import gc

    from hoc_drivers.db import database_key, open_database

    first, second = open_database(":memory:"), open_database(":memory:")
    assert get_guard_cache(first) is not get_guard_cache(second)
    key = database_key(first)
    assert key in guard_cache_module._default_caches and key in bus._subscriptions
    first.close()
    del first
    gc.collect()
    assert (key not in guard_cache_module._default_caches
            and key not in bus._subscriptions)
    assert database_key(open_database(":memory:")) != key
    second.close()


# ------------------------------------------------------------------ timed freezes (issue 15)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def _freeze_until(coordinator, tenant, entity_type, entity_id, until):
    with coordinator.transaction() as tx:
        writer = GuardWriteDriver(tx, clock=lambda: T0)
        state, _ = writer.get_or_create_killswitch_state(tenant, entity_type, entity_id)
        writer.freeze_killswitch(state, "ops", "cost spike", until=until)


@pytest.fixture
def timer():
    return ManualClock(start=0.0)


@pytest.fixture
def timed_reader(hoc_db, timer):
    """A read driver whose wall clock (T0 + timer seconds) moves with its cache's timer."""
    return GuardReadDriver(hoc_db, GuardCache(timer=timer).serve(hoc_db),
                           clock=lambda: T0 + timedelta(seconds=timer()))


def test_status_honours_the_end_of_timed_freezes(hoc_db, hoc_coordinator, timed_reader, timer):
    _freeze_until(hoc_coordinator, "acme", "tenant", "acme", T0 + timedelta(hours=1))
    _freeze_until(hoc_coordinator, "acme", "key", "k1", T0 + timedelta(minutes=30))
    _freeze_until(hoc_coordinator, "acme", "key", "k2", None)
    status = timed_reader.compute_status("acme")
    assert (status["is_frozen"], status["frozen_until"], status["frozen_keys"],
            status["next_unfreeze_at"]) == (True, T0 + timedelta(hours=1), 2, T0 + timedelta(minutes=30))
    timer.advance(1800)
    status = timed_reader.compute_status("acme")
    assert (status["is_frozen"], status["frozen_keys"], status["next_unfreeze_at"]) == (
        True, 1, T0 + timedelta(hours=1))
    timer.advance(1800)
    status = timed_reader.compute_status("acme")
    assert (status["is_frozen"], status["frozen_by"], status["frozen_until"], status["frozen_keys"],
            status["next_unfreeze_at"]) == (False, None, None, 1, None)


def test_a_cached_frozen_status_is_never_served_past_the_end_time(hoc_coordinator, timed_reader,
                                                                  timer):
    assert timed_reader.cache.ttls["status"] == 5
    _freeze_until(hoc_coordinator, "acme", "tenant", "acme", T0 + timedelta(seconds=2))
    assert timed_reader.get_status("acme")["is_frozen"] is True      # a miss, cached
    timer.advance(1.999)
    assert timed_reader.get_status("acme")["is_frozen"] is True      # a hit before the end
    timer.advance(0.001)
    assert timed_reader.get_status("acme")["is_frozen"] is False     # the entry ended with it
    assert timed_reader.cache.stats()["hits"] == {"status": 1}
    assert timed_reader.cache.stats()["misses"] == {"status": 2}


def test_a_key_freeze_ending_caps_the_status_entry_too(hoc_coordinator, timed_reader, timer):
    _freeze_until(hoc_coordinator, "acme", "key", "k1", T0 + timedelta(seconds=1))
    assert timed_reader.get_status("acme")["frozen_keys"] == 1
    timer.advance(1)
    assert timed_reader.get_status("acme")["frozen_keys"] == 0
    timer.advance(4.9)  # no timed freeze left: the status TTL (5 s) applies again
    assert timed_reader.get_status("acme")["frozen_keys"] == 0
    assert timed_reader.cache.stats()["hits"] == {"status": 1}
