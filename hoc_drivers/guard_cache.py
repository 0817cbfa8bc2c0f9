"""Guard Cache: a bounded cachetools cache with exact per-entry TTLs, invalidated after commit.

Entries are the guard console's read models (status, today's snapshot, incident pages),
keyed `guard:<endpoint>:<tenant>[:<extra>]` as SPEC §3 names them. The key is held as the
tuple (endpoint, tenant, extra), so `invalidate_tenant("t1")` removes exactly tenant t1's
entries (never those of "t10"). Values are copied on the way in and on the way out (a dict of
immutable values with `dict.copy`, anything else by pickling): a caller mutating what it got
back never changes the cache.

A cache serves one database (`serve(db)`; `get_guard_cache(db)` keeps one per database file),
so two databases with the same tenant id never see each other's entries (the server edition's
`GuardCache.get_instance(db)` is the same per-database cache). Writers never call the cache:
they note `GuardStateChanged(tenant)` (or `GuardStateChanged(tenant, SNAPSHOT)`) on
their transaction, and a serving cache, subscribed to that fact for its database file, drops
the tenant's entries (or that one entry) after a COMMIT on any connection to the file in this
process; a rollback invalidates nothing. A reader that computes a value from the database
passes the tenant's `generation()` taken before it read to `set(..., generation=g)`: if the
tenant was invalidated meanwhile, the value may predate the write and is not stored.

On PostgreSQL another process's (or host's) commits reach the subscription too: the
coordinator sends their facts as notifications, delivered on COMMIT to every process's listener
(`pg_guard.FactListener`), which hands them to this cache a moment later; when the listener
lost its connection, it hands over `FactsMissed` and the cache drops every entry.

On SQLite another process's commits reach no subscription: for them a cache serving a database file asks
SQLite at most every `FRESHNESS_INTERVAL` (100 ms, on its timer) whether a connection other than
the one asking has committed since that connection last asked (`PRAGMA data_version`, on the
calling thread's connection of the served database), and if so drops every entry. A write
committed by another process is thus served from the cache for at most 100 ms; a hit between
two checks costs one more comparison.

Each entry carries its own expiry (SPEC's TTLs, or the `ttl` given to `set`), checked on every
read. The storage is a cachetools `FIFOCache`: it bounds the size and evicts the entry stored
first, which with TTLs of seconds is the one closest to expiring. A FIFO cache does not reorder
itself on a read (an LRU or TTL cache does), so a hit takes no lock: it is one dict lookup, a
clock read and a copy. Writes, invalidations and evictions take the lock.
"""
import pickle
import sys
import threading
import weakref
from collections import Counter
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from time import monotonic

from cachetools import FIFOCache

from .commit_guard import database_key, per_database_registry
from .facts import INCIDENTS, SNAPSHOT, STATUS, FactsMissed, GuardStateChanged
from .bus import subscribe
from . import settings
from .validation import require_database

ACCESS = "READ"

__all__ = ["GuardCache", "get_guard_cache", "default_ttls", "STATUS", "SNAPSHOT", "INCIDENTS"]


# Endpoint -> the setting of its TTL.
_TTL_SETTINGS = {STATUS: "guard_cache.status_ttl", SNAPSHOT: "guard_cache.snapshot_ttl",
                 INCIDENTS: "guard_cache.incidents_ttl"}

# Seconds between two `PRAGMA data_version` checks of a cache serving a database file.
FRESHNESS_INTERVAL = 0.1

# With the GIL, `counts[key] += 1` on a dict with str keys runs no Python code between its read
# and its write, so no other thread can interleave and a hit is counted without the lock. A
# free-threaded interpreter gives no such promise: there hits are counted under the lock.
_COUNT_HITS_WITHOUT_LOCK = getattr(sys, "_is_gil_enabled", lambda: True)()


def default_ttls():
    """TTL in seconds per endpoint: the `guard_cache.*_ttl` settings (GUARD_*_TTL variables,
    the settings file, SPEC §3's defaults)."""
    return {endpoint: settings.get(name) for endpoint, name in _TTL_SETTINGS.items()}


class _TenantIndexedCache(FIFOCache):
    """A cachetools FIFOCache (bounded size) that reports every key it evicts.

    Entries are (expires_at, data, flat); GuardCache checks `expires_at` against its timer on
    every read, so expiry is exact and costs one comparison instead of a TTL bookkeeping pass.
    """

    def __init__(self, maxsize, on_drop):
        super().__init__(maxsize)
        self._on_drop = on_drop

    def popitem(self):
        """Evict the entry stored first (as FIFOCache) and report its key."""
        key, value = super().popitem()
        self._on_drop(key)
        return key, value


# Values of these types cannot be changed in place, so a dict holding only them is copied
# safely (and ~50x faster than by pickling) with dict.copy().
_IMMUTABLE = frozenset({type(None), bool, int, float, complex, str, bytes, Decimal, date,
                        datetime, time, timedelta, timezone})


def _is_flat(data):
    """True for a dict whose values are all immutable (a shallow copy is a full copy)."""
    return type(data) is dict and all(type(v) in _IMMUTABLE for v in data.values())


class GuardCache:
    """Per-tenant TTL cache of guard read models; thread-safe, copy-in / copy-out.

    `timer` is the clock (seconds, default `time.monotonic`); inject one to test expiry
    exactly. An entry set at t with TTL n is served while timer() < t + n and is gone at
    t + n. `stats()` counts hits and misses per endpoint.
    """

    def __init__(self, maxsize=10_000, timer=monotonic, ttls=None, enabled=None):
        self.ttls = default_ttls() if ttls is None else {**default_ttls(), **ttls}
        if enabled is None:
            enabled = settings.get("guard_cache.enabled")
        self.enabled = enabled
        self.database = None
        self._hits = {}
        self._misses = {}
        self._lock = threading.Lock()
        self._tenant_keys = {}
        self._generations = {}
        self._epoch = 0  # bumped when another connection's commit drops every entry
        self._served = weakref.WeakSet()  # the database objects of the served file
        self._data_versions = weakref.WeakKeyDictionary()  # connection -> data_version seen
        self._next_check = float("inf")  # until a file is served: nothing to check
        self._timer = timer
        self._cache = _TenantIndexedCache(maxsize, self._forget_key)

    @classmethod
    def get_instance(cls, db):
        """The cache of database `db`, as `get_guard_cache(db)` returns it."""
        return get_guard_cache(db)

    def serve(self, db):
        """Make this the cache of database `db`: from now on it subscribes to `GuardStateChanged`
        there, so its writers' commits invalidate it.

        A cache serves one database; offering it a second one raises ValueError (its entries
        would be taken for the other database's). Returns the cache.
        """
        key = database_key(require_database(db))
        with _registry_lock:
            first = self.database is None
            if first:
                self.database = key
                subscribe(db, GuardStateChanged, self._on_guard_state_changed)
                subscribe(db, FactsMissed, self._drop_everything)
            elif self.database != key:
                raise ValueError(f"this guard cache already serves {_describe(self.database)}; "
                                 f"use get_guard_cache(db) for {_describe(key)}")
            if isinstance(key, str):  # a file: other processes may commit to it
                self._served.add(db)
        if first and isinstance(key, str):
            self._check_data_version(self._timer())  # this thread's connection's baseline
        return self

    def _check_data_version(self, now):
        """Drop every entry if another connection committed to the served file since this
        thread's connection last looked (a connection not seen before counts as changed: what
        it missed is unknown)."""
        with _registry_lock:  # serve() adds to the set under this lock
            db = next(iter(self._served), None)
        if db is None:  # every database object of the file is gone: nothing can read it
            return
        conn = db.connection()
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        with self._lock:
            self._next_check = now + FRESHNESS_INTERVAL
            if self._data_versions.get(conn) != version:
                self._data_versions[conn] = version
                self._epoch += 1
                self._drop_entries()

    def _drop_everything(self, fact=None):
        """Drop every entry (the fact listener may have missed facts: `FactsMissed`); no value
        read before is stored after (`generation`)."""
        with self._lock:
            self._epoch += 1
            self._drop_entries()

    def _on_guard_state_changed(self, fact):
        """After a commit on the served database: drop what the fact says changed."""
        if fact.endpoint is None:
            self.invalidate_tenant(fact.tenant_id)
        else:
            self.invalidate(fact.endpoint, fact.tenant_id)

    def _forget_key(self, key):
        """Remove `key` from its tenant's index (the cache already dropped it)."""
        keys = self._tenant_keys.get(key[1])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._tenant_keys[key[1]]

    def get(self, endpoint, tenant_id, extra=""):
        """A fresh copy of the cached value, or None on a miss (or when disabled)."""
        if not self.enabled:
            return None
        now = self._timer()
        if now >= self._next_check:
            self._check_data_version(now)
        key = (endpoint, tenant_id, extra if type(extra) is str else str(extra))
        try:
            entry = self._cache[key]  # FIFOCache reads do not reorder: no lock needed
        except KeyError:
            return self._miss(endpoint, key, None)
        if entry[0] <= now:  # expired exactly at (or after) its TTL
            return self._miss(endpoint, key, entry)
        if _COUNT_HITS_WITHOUT_LOCK:
            try:
                self._hits[endpoint] += 1
            except KeyError:  # this endpoint's first hit (setdefault is one indivisible call)
                self._hits.setdefault(endpoint, 0)
                self._hits[endpoint] += 1
        else:
            with self._lock:
                self._hits[endpoint] = self._hits.get(endpoint, 0) + 1
        return entry[1].copy() if entry[2] else pickle.loads(entry[1])

    def _miss(self, endpoint, key, expired):
        """Count a miss; drop the `expired` entry unless another thread replaced it."""
        with self._lock:
            if expired is not None and self._cache.get(key) is expired:
                del self._cache[key]
                self._forget_key(key)
            self._misses[endpoint] = self._misses.get(endpoint, 0) + 1
        return None

    def generation(self, tenant_id):
        """The tenant's invalidation count (drops of every entry included): take it before
        reading what you will `set`."""
        with self._lock:
            return self._epoch + self._generations.get(tenant_id, 0)

    def set(self, endpoint, tenant_id, data, ttl=None, extra="", generation=None):
        """Store a copy of `data` for `ttl` seconds (default: the endpoint's TTL).

        With `generation` (from `generation(tenant_id)` before the value was read), nothing is
        stored if the tenant was invalidated since. Returns True once stored, else False
        (also when the cache is disabled).
        """
        if not self.enabled:
            return False
        if ttl is None:
            ttl = self.ttls[endpoint]
        if ttl < 0:
            raise ValueError(f"ttl must not be negative, got {ttl}")
        key = (endpoint, tenant_id, str(extra))
        if _is_flat(data):
            value, flat = dict(data), True
        else:
            value, flat = pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL), False
        with self._lock:
            if generation is not None and generation != (
                    self._epoch + self._generations.get(tenant_id, 0)):
                return False
            if ttl == 0:  # a zero TTL stores nothing and drops what was there
                self._cache.pop(key, None)
                self._forget_key(key)
                return False
            self._cache[key] = (self._timer() + ttl, value, flat)  # a re-set moves to the back
            self._tenant_keys.setdefault(tenant_id, set()).add(key)
        return True

    def invalidate(self, endpoint, tenant_id, extra=""):
        """Remove one entry; True when it was cached."""
        key = (endpoint, tenant_id, str(extra))
        with self._lock:
            self._generations[tenant_id] = self._generations.get(tenant_id, 0) + 1
            entry = self._cache.pop(key, None)
            self._forget_key(key)
        return entry is not None and entry[0] > self._timer()

    def invalidate_tenant(self, tenant_id):
        """Remove every entry of `tenant_id` and no other; returns how many were cached."""
        with self._lock:
            self._generations[tenant_id] = self._generations.get(tenant_id, 0) + 1
            keys = self._tenant_keys.pop(tenant_id, None)
            if keys is None:
                return 0
            now, count = self._timer(), 0
            for key in keys:
                entry = self._cache.pop(key, None)
                count += entry is not None and entry[0] > now
        return count

    def clear(self):
        """Remove every entry and reset the counters."""
        with self._lock:
            self._drop_entries()
            self._hits.clear()
            self._misses.clear()

    def _drop_entries(self):
        """Remove every entry (the caller holds the lock)."""
        self._cache.clear()
        self._tenant_keys.clear()

    def get_status(self, tenant_id):
        """Cached guard status of the tenant, or None."""
        return self.get(STATUS, tenant_id)

    def set_status(self, tenant_id, data, generation=None):
        """Cache the tenant's guard status for the status TTL."""
        return self.set(STATUS, tenant_id, data, generation=generation)

    def get_snapshot(self, tenant_id):
        """Cached today's snapshot of the tenant, or None."""
        return self.get(SNAPSHOT, tenant_id)

    def set_snapshot(self, tenant_id, data, generation=None):
        """Cache the tenant's today's snapshot for the snapshot TTL."""
        return self.set(SNAPSHOT, tenant_id, data, generation=generation)

    def get_incidents(self, tenant_id, limit=10, offset=0):
        """Cached incident page (limit, offset) of the tenant, or None."""
        return self.get(INCIDENTS, tenant_id, f"{limit}:{offset}")

    def set_incidents(self, tenant_id, data, limit=10, offset=0, generation=None):
        """Cache the tenant's incident page (limit, offset) for the incidents TTL."""
        return self.set(INCIDENTS, tenant_id, data, extra=f"{limit}:{offset}",
                        generation=generation)

    @property
    def hits(self):
        """Hits per endpoint (a Counter, copied)."""
        with self._lock:
            return Counter(self._hits)

    @property
    def misses(self):
        """Misses per endpoint (a Counter, copied)."""
        with self._lock:
            return Counter(self._misses)

    def stats(self):
        """Hit and miss counts per endpoint, and the number of live entries."""
        with self._lock:
            now = self._timer()
            live = sum(1 for entry in self._cache.values() if entry[0] > now)
            return {"hits": dict(self._hits), "misses": dict(self._misses), "entries": live}


_default_caches = per_database_registry()  # database key -> the cache get_guard_cache(db) returns
_registry_lock = threading.Lock()


def _describe(key):
    return "an in-memory database" if isinstance(key, tuple) else key


def get_guard_cache(db):
    """The guard cache of database `db` (one per database file, created on first use)."""
    key = database_key(require_database(db))
    with _registry_lock:
        cache = _default_caches.get(key)
        if cache is None:
            cache = _default_caches[key] = GuardCache()
    return cache.serve(db)
