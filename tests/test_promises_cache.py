"""The guard cache's promises (README "Guarantees": no stale guard reads after a write), each
test named after the promise it pins."""
import gc

import pytest

from hoc_drivers.db import open_database
from hoc_drivers.guard_cache import GuardCache, default_ttls
from hoc_drivers.testing import other_connection


def test_explicit_ttls_given_to_the_cache_win_over_the_defaults(monkeypatch, hoc_clock):
    monkeypatch.setenv("GUARD_STATUS_TTL", "60")
    cache = GuardCache(timer=hoc_clock, ttls={"status": 2})
    assert cache.ttls == {**default_ttls(), "status": 2}
    cache.set_status("t1", {"v": 1})
    cache.set_snapshot("t1", {"v": 2})          # no explicit TTL: the default still applies
    hoc_clock.advance(1.999)
    assert cache.get_status("t1") == {"v": 1}
    hoc_clock.advance(0.001)
    assert cache.get_status("t1") is None
    assert cache.get_snapshot("t1") == {"v": 2}


def test_a_value_read_before_one_entry_is_invalidated_is_not_stored_after_it(hoc_guard_cache):
    for endpoint in ("status", "snapshot", "incidents"):
        generation = hoc_guard_cache.generation("t1")
        hoc_guard_cache.invalidate(endpoint, "t1")  # a write committed while the value was read
        assert hoc_guard_cache.set(endpoint, "t1", {"stale": True}, generation=generation) is False
        assert hoc_guard_cache.get(endpoint, "t1") is None
    fresh = hoc_guard_cache.generation("t1")
    assert hoc_guard_cache.set("status", "t1", {"stale": False}, generation=fresh) is True
    assert hoc_guard_cache.get_status("t1") == {"stale": False}


def test_invalidating_one_tenant_does_not_refuse_another_tenants_fresh_value(hoc_guard_cache):
    generation = hoc_guard_cache.generation("t2")
    hoc_guard_cache.invalidate("status", "t1")
    hoc_guard_cache.invalidate_tenant("t1")
    assert hoc_guard_cache.set_status("t2", {"v": 2}, generation=generation) is True
    assert hoc_guard_cache.get_status("t2") == {"v": 2}


def test_a_snapshot_or_incident_page_read_before_a_write_is_not_stored_after_it(hoc_guard_cache):
    generation = hoc_guard_cache.generation("t1")
    hoc_guard_cache.invalidate_tenant("t1")
    assert hoc_guard_cache.set_snapshot("t1", {"stale": True}, generation=generation) is False
    assert hoc_guard_cache.set_incidents("t1", ["stale"], generation=generation) is False
    assert hoc_guard_cache.set_incidents("t1", ["stale"], 5, 5, generation=generation) is False
    assert hoc_guard_cache.get_snapshot("t1") is None
    assert hoc_guard_cache.get_incidents("t1") is None and hoc_guard_cache.get_incidents("t1", 5, 5) is None


def test_the_default_incident_page_is_the_first_ten(hoc_guard_cache):
    hoc_guard_cache.set_incidents("t1", ["default page"])
    assert hoc_guard_cache.get_incidents("t1", limit=10, offset=0) == ["default page"]
    hoc_guard_cache.set_incidents("t1", ["first ten"], limit=10, offset=0)
    assert hoc_guard_cache.get_incidents("t1") == ["first ten"]
    assert hoc_guard_cache.get_incidents("t1", limit=11) is None
    assert hoc_guard_cache.get_incidents("t1", offset=1) is None


def test_a_cache_serving_an_in_memory_database_refuses_another_by_name(hoc_guard_cache, tmp_path):
    memory = open_database(":memory:")
    other = open_database(str(tmp_path / "other.db"))
    try:
        hoc_guard_cache.serve(memory)
        with pytest.raises(ValueError, match=r"^this guard cache already serves an in-memory "
                                             r"database; use get_guard_cache\(db\) for .*other\.db$"):
            hoc_guard_cache.serve(other)
    finally:
        memory.close()
        other.close()


def test_every_invalidation_refuses_a_value_read_before_it(hoc_guard_cache):
    for invalidate in (lambda: hoc_guard_cache.invalidate_tenant("t1"),
                       lambda: hoc_guard_cache.invalidate("status", "t1")):
        for _ in range(3):  # not only the first: each one moves the tenant's generation on
            generation = hoc_guard_cache.generation("t1")
            invalidate()
            assert hoc_guard_cache.set_status("t1", {"stale": True}, generation=generation) is False
    assert hoc_guard_cache.get_status("t1") is None


@pytest.mark.parametrize("invalidate", ["invalidate_tenant", "invalidate"])
def test_a_value_read_before_an_invalidation_stays_refused_after_another_connection_commits(
        hoc_db, hoc_clock, invalidate):
    cache = GuardCache(timer=hoc_clock).serve(hoc_db)
    generation = cache.generation("t1")
    getattr(cache, invalidate)(*(("t1",) if invalidate == "invalidate_tenant" else ("status", "t1")))
    other = other_connection(hoc_db)
    other.execute("INSERT INTO events (id, topic, payload, created_at) "
                  "VALUES ('e', 't', '{}', '2026-01-01 00:00:00')")
    other.commit()
    other.close()
    hoc_clock.advance(0.1)
    assert cache.get_status("t1") is None  # looks at the file: another connection committed
    assert cache.set_status("t1", {"stale": True}, generation=generation) is False
    assert cache.get_status("t1") is None


def test_stats_count_an_entry_as_gone_exactly_at_its_expiry(hoc_guard_cache, hoc_clock):
    hoc_guard_cache.set("status", "t1", {"v": 1}, ttl=2)
    hoc_clock.advance(1.999)
    assert hoc_guard_cache.stats()["entries"] == 1
    hoc_clock.advance(0.001)
    assert hoc_guard_cache.stats()["entries"] == 0


def test_a_cache_whose_database_objects_are_all_gone_still_answers(tmp_path, hoc_clock):
    db = open_database(str(tmp_path / "gone.db"))
    cache = GuardCache(timer=hoc_clock).serve(db)
    cache.set_status("t1", {"v": 1})
    db.close()
    del db
    gc.collect()
    hoc_clock.advance(0.1)  # time to look at the file again: no database object is left to ask
    assert cache.get_status("t1") == {"v": 1}


# Any commit by another connection reaches a cache through SQLite's `PRAGMA data_version`. On
# PostgreSQL only the facts a coordinator transaction notes reach it (NOTIFY): this raw INSERT
# notes none. Its PostgreSQL counterpart, with a real fact: tests/test_notify.py.
@pytest.mark.sqlite_only
def test_a_value_read_before_another_connections_commit_is_not_stored_after_it(hoc_db, hoc_clock):
    cache = GuardCache(timer=hoc_clock).serve(hoc_db)
    generation = cache.generation("t1")
    for n in range(2):
        other = other_connection(hoc_db)
        other.execute("INSERT INTO events (id, topic, payload, created_at) "
                      f"VALUES ({hoc_db.param}, 't', '{{}}', '2026-01-01 00:00:00')", (f"e{n}",))
        other.commit()
        other.close()
        hoc_clock.advance(0.1)
        assert cache.get_status("t1") is None  # sees the commit
        assert cache.set_status("t1", {"stale": True}, generation=generation) is False
    cache.invalidate_tenant("t1")
    assert cache.set_status("t1", {"stale": True}, generation=generation) is False
    assert cache.get_status("t1") is None


def test_values_whose_fields_are_all_mutable_are_copied_in_and_out(hoc_guard_cache):
    value = {"tags": ["a"], "limits": {"max": 1}}
    hoc_guard_cache.set_status("t1", value)
    value["tags"].append("changed after set")
    out = hoc_guard_cache.get_status("t1")
    out["limits"]["max"] = 99
    assert hoc_guard_cache.get_status("t1") == {"tags": ["a"], "limits": {"max": 1}}


def test_an_extra_key_that_is_not_text_finds_what_was_stored_under_it(hoc_guard_cache):
    hoc_guard_cache.set("incidents", "t1", ["page five"], extra=5)
    assert hoc_guard_cache.get("incidents", "t1", 5) == ["page five"]
    assert hoc_guard_cache.get("incidents", "t1", "5") == ["page five"]


def test_a_zero_ttl_for_a_key_never_stored_stores_nothing_and_raises_nothing(hoc_guard_cache):
    assert hoc_guard_cache.set("status", "t1", {"v": 1}, ttl=0) is False
    assert hoc_guard_cache.get_status("t1") is None


def test_the_default_cache_holds_ten_thousand_entries_then_drops_the_oldest(hoc_clock):
    cache = GuardCache(timer=hoc_clock)
    for n in range(10_000):
        cache.set_status(f"t{n}", {})
    assert cache.get_status("t0") == {} and cache.stats()["entries"] == 10_000
    cache.set_status("one more", {})
    assert cache.get_status("t0") is None and cache.get_status("t1") == {}


def test_invalidating_an_entry_at_its_expiry_reports_it_was_not_cached(hoc_guard_cache, hoc_clock):
    hoc_guard_cache.set("status", "t1", {"v": 1}, ttl=2)
    hoc_clock.advance(2)
    assert hoc_guard_cache.invalidate("status", "t1") is False
    hoc_guard_cache.set("status", "t1", {"v": 1}, ttl=2)
    hoc_clock.advance(1.999)
    assert hoc_guard_cache.invalidate("status", "t1") is True
