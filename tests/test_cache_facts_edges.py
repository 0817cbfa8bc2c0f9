"""The guard cache and the facts that reach it: a governance signal of a scope naming a
tenant drops that tenant's cached status, a `FactsMissed` drops everything (and no value read
before it is stored after, however many times it comes), `get_instance` is the database's cache."""
from hoc_drivers.facts import FactsMissed
from hoc_drivers.governance_signal_driver import GovernanceSignalWriter
from hoc_drivers.guard_cache import GuardCache, get_guard_cache
from hoc_drivers.testing import ManualClock


def test_a_signal_recorded_for_a_scope_drops_that_tenants_cached_status_only(hoc_db, hoc_coordinator):
    cache = GuardCache(timer=ManualClock()).serve(hoc_db)
    cache.set_status("acme", {"cached": True})
    cache.set_status("other", {"cached": True})
    with hoc_coordinator.transaction() as tx:
        GovernanceSignalWriter(tx).record_signal("acme", "CI_STATUS", "BLOCKED", "ci")
    assert cache.get_status("acme") is None
    assert cache.get_status("other") == {"cached": True}


def test_each_facts_missed_drops_every_entry_and_every_earlier_read(hoc_db, hoc_coordinator):
    cache = GuardCache(timer=ManualClock()).serve(hoc_db)
    for round_ in range(2):  # a second one too: a read taken between them is stale as well
        cache.set_status("acme", {"round": round_})
        cache.set_snapshot("other", {"round": round_})
        before = cache.generation("acme")
        with hoc_coordinator.transaction() as tx:
            tx.note(FactsMissed())
        assert cache.get_status("acme") is None and cache.get_snapshot("other") is None
        assert cache.set_status("acme", {"stale": True}, generation=before) is False
        assert cache.get_status("acme") is None


def test_get_instance_is_the_databases_own_cache(hoc_db):
    assert GuardCache.get_instance(hoc_db) is get_guard_cache(hoc_db)


def test_a_read_taken_before_a_tenant_change_and_a_facts_missed_is_never_stored(hoc_db, hoc_coordinator):
    cache = GuardCache(timer=ManualClock()).serve(hoc_db)
    before = cache.generation("acme")
    cache.invalidate_tenant("acme")
    with hoc_coordinator.transaction() as tx:
        tx.note(FactsMissed())
    assert cache.set_status("acme", {"stale": True}, generation=before) is False
