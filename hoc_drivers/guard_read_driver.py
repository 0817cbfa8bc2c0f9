"""Guard read driver: the guard console's status, today's snapshot and incident page, cached.

Each read goes through the guard cache; on a miss it is computed from the database and
stored, unless the tenant was invalidated while it was being computed (a value read before a
committed write is never cached after that write's invalidation). Only SELECTs.
"""
from datetime import datetime, time, timezone

from peewee import fn

from .governance_signal_driver import GovernanceSignalReader
from .guard_cache import INCIDENTS, SNAPSHOT, STATUS, get_guard_cache
from .models.base import utcnow
from .models.cost import CostRecord
from .models.guard import KillSwitchState
from .models.runs import Incident, Run

__all__ = ["GuardReadDriver"]

_INCIDENT_COLUMNS = ("id", "title", "severity", "status", "trigger_type", "category",
                     "source_type", "cost_delta_cents", "alert_sent", "started_at",
                     "acknowledged_at", "resolved_at", "created_at")


def _require_tenant(tenant_id):
    if not isinstance(tenant_id, str) or not tenant_id.strip():
        raise ValueError("tenant_id is required")
    return tenant_id


class GuardReadDriver:
    """Cached guard console reads for one database; `clock` gives aware UTC now ("today")."""

    ACCESS = "READ"

    def __init__(self, db, cache=None, clock=utcnow):
        self.db = db
        self.cache = cache or get_guard_cache()
        self.clock = clock

    def get_status(self, tenant_id):
        """Status of the tenant (see `compute_status`), from the cache when fresh."""
        return self._read_through(STATUS, tenant_id, "", self.compute_status)

    def get_snapshot(self, tenant_id):
        """Today's snapshot of the tenant (see `compute_snapshot`), from the cache when fresh."""
        return self._read_through(SNAPSHOT, tenant_id, "", self.compute_snapshot)

    def get_incidents(self, tenant_id, limit=10, offset=0):
        """One page of the tenant's incidents (see `compute_incident_page`), cached per page."""
        _check_page(limit, offset)
        return self._read_through(INCIDENTS, tenant_id, f"{limit}:{offset}",
                                  lambda tenant: self.compute_incident_page(tenant, limit, offset))

    def _read_through(self, endpoint, tenant_id, extra, compute):
        """The cached value, else `compute(tenant_id)`, stored unless the tenant was
        invalidated while it was computed."""
        _require_tenant(tenant_id)
        cached = self.cache.get(endpoint, tenant_id, extra)
        if cached is not None:
            return cached
        generation = self.cache.generation(tenant_id)
        value = compute(tenant_id)
        self.cache.set(endpoint, tenant_id, value, extra=extra, generation=generation)
        return value

    def compute_status(self, tenant_id):
        """From the database: is the tenant's kill switch frozen, how many of its keys are
        frozen, how many incidents are open, and is the tenant blocked by a governance signal.
        """
        _require_tenant(tenant_id)
        switch = (KillSwitchState.select()
                  .where((KillSwitchState.tenant_id == tenant_id)
                         & (KillSwitchState.entity_type == "tenant")
                         & (KillSwitchState.entity_id == tenant_id))
                  .first(self.db))
        frozen = bool(switch and switch.is_frozen)
        frozen_keys = (KillSwitchState.select()
                       .where((KillSwitchState.tenant_id == tenant_id)
                              & (KillSwitchState.entity_type == "key")
                              & KillSwitchState.is_frozen)
                       .count(self.db))
        open_incidents = (Incident.select()
                          .where((Incident.tenant_id == tenant_id) & (Incident.status == "open"))
                          .count(self.db))
        blocked = GovernanceSignalReader(self.db, self.clock).is_blocked(tenant_id)
        return {"tenant_id": tenant_id, "is_frozen": frozen,
                "frozen_at": switch.frozen_at if frozen else None,
                "frozen_by": switch.frozen_by if frozen else None,
                "freeze_reason": switch.freeze_reason if frozen else None,
                "frozen_keys": frozen_keys, "open_incidents": open_incidents,
                "governance_blocked": blocked,
                "last_incident_time": self._last_incident_time(tenant_id),
                "computed_at": self.clock()}

    def compute_snapshot(self, tenant_id):
        """From the database: the tenant's runs, spend and incidents since 00:00 UTC today."""
        _require_tenant(tenant_id)
        now = self.clock()
        start = datetime.combine(now.astimezone(timezone.utc).date(), time(), timezone.utc)
        runs = (Run.select()
                .where((Run.tenant_id == tenant_id) & (Run.created_at >= start))
                .count(self.db))
        spend = (CostRecord.select(fn.COALESCE(fn.SUM(CostRecord.cost_cents), 0))
                 .where((CostRecord.tenant_id == tenant_id) & (CostRecord.created_at >= start))
                 .scalar(self.db))
        incidents = (Incident.select()
                     .where((Incident.tenant_id == tenant_id) & (Incident.created_at >= start))
                     .count(self.db))
        return {"tenant_id": tenant_id, "date": start.date().isoformat(), "runs_today": runs,
                "spend_today_cents": spend, "incidents_today": incidents,
                "last_incident_time": self._last_incident_time(tenant_id), "computed_at": now}

    def compute_incident_page(self, tenant_id, limit=10, offset=0):
        """From the database: {items, total, limit, offset}, newest incidents first."""
        _require_tenant(tenant_id)
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

    def _last_incident_time(self, tenant_id):
        return (Incident.select(fn.MAX(Incident.created_at))
                .where(Incident.tenant_id == tenant_id).scalar(self.db))


def _check_page(limit, offset):
    for name, value, least in (("limit", limit, 1), ("offset", offset, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
