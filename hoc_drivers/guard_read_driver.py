"""Guard read driver: the guard console's status, today's snapshot and incident page, cached.

`GuardReadDriver(db)` reads through the database's guard cache (`get_guard_cache(db)`, or
the cache given, which then serves `db`); on a miss a value is computed from the database
and stored, unless the tenant was invalidated while it was being computed (a value read
before a committed write is never cached after that write's invalidation). A timed freeze
counts as frozen until its end time, compared with the injected `clock`; a cached status lives
no longer than the first end time of the tenant's freezes, so it is never served past it.
Only SELECTs.
"""
from datetime import datetime, time, timezone

from peewee import SQL, Select, fn

from .governance_signal_driver import GovernanceSignalReader
from .guard_cache import INCIDENTS, SNAPSHOT, STATUS, get_guard_cache
from .models.base import PLACEHOLDER, PreparedQuery, utcnow
from .models.cost import CostRecord
from .models.guard import KillSwitchState
from .models.runs import Incident, Run
from .validation import require_database, require_int, require_tenant
from .verdicts import guard_status

__all__ = ["GuardReadDriver"]

_INCIDENT_COLUMNS = ("id", "title", "severity", "status", "trigger_type", "category",
                     "source_type", "cost_delta_cents", "alert_sent", "started_at",
                     "acknowledged_at", "resolved_at", "created_at")


def _count(model, where):
    """A scalar subquery counting `model` rows (COUNT(*), so a covering index suffices)."""
    return model.select(fn.COUNT(SQL("*"))).where(where)


# Built by Peewee once; each miss only binds the tenant (and the start of today).
_TENANT_SWITCH = PreparedQuery(lambda: KillSwitchState.select(
    KillSwitchState.frozen_where(PLACEHOLDER), KillSwitchState.frozen_at, KillSwitchState.frozen_by,
    KillSwitchState.freeze_reason, KillSwitchState.frozen_until).where(
    (KillSwitchState.tenant_id == PLACEHOLDER) & (KillSwitchState.entity_type == "tenant")
    & (KillSwitchState.entity_id == PLACEHOLDER)).limit(1))
_LAST_INCIDENT = Incident.select(fn.MAX(Incident.created_at)).where(Incident.tenant_id == PLACEHOLDER)
_STATUS_COUNTS = PreparedQuery(lambda: Select(columns=[
    _count(KillSwitchState, (KillSwitchState.tenant_id == PLACEHOLDER)
           & (KillSwitchState.entity_type == "key") & KillSwitchState.frozen_where(PLACEHOLDER)),
    _count(Incident, (Incident.tenant_id == PLACEHOLDER) & (Incident.status == "open")),
    _LAST_INCIDENT,
    KillSwitchState.select(fn.MIN(KillSwitchState.frozen_until)).where(  # the first freeze to end
        (KillSwitchState.tenant_id == PLACEHOLDER) & KillSwitchState.frozen_where(PLACEHOLDER))]))
_SNAPSHOT_COUNTS = PreparedQuery(lambda: Select(columns=[
    _count(Run, (Run.tenant_id == PLACEHOLDER) & (Run.created_at >= PLACEHOLDER)),
    CostRecord.select(fn.COALESCE(fn.SUM(CostRecord.cost_cents), 0)).where(
        (CostRecord.tenant_id == PLACEHOLDER) & (CostRecord.created_at >= PLACEHOLDER)),
    _count(Incident, (Incident.tenant_id == PLACEHOLDER) & (Incident.created_at >= PLACEHOLDER)),
    _LAST_INCIDENT]))


class GuardReadDriver:
    """Cached guard console reads for one database; `clock` gives aware UTC now ("today")."""

    ACCESS = "READ"

    def __init__(self, db, cache=None, clock=utcnow):
        self.db = require_database(db)
        self.cache = get_guard_cache(db) if cache is None else cache.serve(db)
        self.clock = clock

    def get_status(self, tenant_id):
        """Status of the tenant (see `compute_status`), from the cache when fresh (never past
        the end time of one of its timed freezes)."""
        return self._read_through(STATUS, tenant_id, "", self._status_entry)

    def _status_entry(self, tenant_id):
        """(status, TTL capped at the status's `next_unfreeze_at`, or None for the default)."""
        status = self.compute_status(tenant_id)
        if status["next_unfreeze_at"] is None:
            return status, None
        left = (status["next_unfreeze_at"] - status["computed_at"]).total_seconds()
        return status, max(0.0, min(self.cache.ttls[STATUS], left))

    def get_snapshot(self, tenant_id):
        """Today's snapshot of the tenant (see `compute_snapshot`), from the cache when fresh."""
        return self._read_through(SNAPSHOT, tenant_id, "",
                                  lambda tenant: (self.compute_snapshot(tenant), None))

    def get_incidents(self, tenant_id, limit=10, offset=0):
        """One page of the tenant's incidents (see `compute_incident_page`), cached per page."""
        _check_page(limit, offset)
        return self._read_through(INCIDENTS, tenant_id, f"{limit}:{offset}",
                                  lambda tenant: (self.compute_incident_page(tenant, limit, offset),
                                                  None))

    def _read_through(self, endpoint, tenant_id, extra, compute):
        """The cached value, else the value of `compute(tenant_id)` -> (value, ttl or None for
        the endpoint's TTL), stored unless the tenant was invalidated while it was computed."""
        if type(tenant_id) is str:  # only a valid tenant's value is ever stored: check on a miss
            cached = self.cache.get(endpoint, tenant_id, extra)
            if cached is not None:
                return cached
        require_tenant(tenant_id)
        generation = self.cache.generation(tenant_id)
        value, ttl = compute(tenant_id)
        self.cache.set(endpoint, tenant_id, value, ttl=ttl, extra=extra, generation=generation)
        return value

    def compute_status(self, tenant_id):
        """From the database: is the tenant's kill switch frozen now (and until when), how many
        of its keys are frozen now, how many incidents are open, and is the tenant blocked by a
        governance signal; `next_unfreeze_at` is the first end time of its timed freezes.
        """
        require_tenant(tenant_id)
        now = self.clock()
        at = KillSwitchState.frozen_until.db_value(now)
        switch = _TENANT_SWITCH.execute(self.db, (at, tenant_id, tenant_id)).fetchone()
        counts = _STATUS_COUNTS.execute(self.db, (tenant_id, at, tenant_id, tenant_id, tenant_id, at)).fetchone()
        blocked = GovernanceSignalReader(self.db, self.clock).is_blocked(tenant_id)
        return guard_status(tenant_id, now, switch, counts, blocked)

    def compute_snapshot(self, tenant_id):
        """From the database: the tenant's runs, spend and incidents since 00:00 UTC today."""
        require_tenant(tenant_id)
        now = self.clock()
        start = datetime.combine(now.astimezone(timezone.utc).date(), time(), timezone.utc)
        since = Run.created_at.db_value(start)
        runs, spend, incidents, last_incident = _SNAPSHOT_COUNTS.execute(
            self.db, (tenant_id, since, tenant_id, since, tenant_id, since, tenant_id)).fetchone()
        return {"tenant_id": tenant_id, "date": start.date().isoformat(), "runs_today": runs,
                "spend_today_cents": spend, "incidents_today": incidents,
                "last_incident_time": Incident.created_at.python_value(last_incident),
                "computed_at": now}

    def compute_incident_page(self, tenant_id, limit=10, offset=0):
        """From the database: {items, total, limit, offset}, newest incidents first."""
        require_tenant(tenant_id)
        _check_page(limit, offset)
        where = Incident.tenant_id == tenant_id
        fields = [getattr(Incident, name) for name in _INCIDENT_COLUMNS]
        rows = (Incident.select(*fields).where(where)
                .order_by(Incident.created_at.desc(), Incident.id)
                .limit(limit).offset(offset).execute(self.db))
        items = [{name: getattr(row, name) for name in _INCIDENT_COLUMNS} for row in rows]
        total = Incident.select().where(where).count(self.db)
        return {"tenant_id": tenant_id, "items": items, "total": total, "limit": limit,
                "offset": offset}


def _check_page(limit, offset):
    for name, value, least in (("limit", limit, 1), ("offset", offset, 0)):
        require_int(value, name, least, message="{name} must be an integer >= {minimum}, got {value!r}")
