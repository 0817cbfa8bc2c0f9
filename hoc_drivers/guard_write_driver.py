"""Guard Write Driver: kill switch and incident writes, inside the caller's transaction.

`GuardWriteDriver(tx)` writes inside the coordinator transaction it is given and never
commits; each mutation notes `GuardStateChanged(tenant)` on the transaction, so the guard
cache drops the tenant's entries after COMMIT. State transitions are checked with conditional
UPDATEs, so a frozen switch is never re-frozen over the record of who froze it, and a
resolved incident is never re-resolved. A switch or incident passed back in is scoped by its
own tenant_id. Every freeze and unfreeze is also kept as a `KillSwitchEvent` (who, why, when,
until when). A timed freeze (`until`) ends by itself: readers and the transition checks compare
its end time with now (the injected `clock`), so no process has to run at that time.
`GuardReader(db)` gives the tenant-scoped reads the guard console and the CLI need. Every call
naming a tenant takes it first.
"""
from datetime import datetime
from decimal import Decimal


from .facts import GuardStateChanged
from .dialect import insertion_order
from .listing import expand_id, page
from .models.base import as_utc, new_id, utcnow
from .models.guard import KillSwitchEvent, KillSwitchState
from .models.runs import Incident, IncidentEvent
from .validation import (require_database, require_tenant, require_text,
                         require_transaction)
from .verdicts import ENTITY_TYPES, never_frozen, switch_status

ACCESS = "READ+WRITE"

INCIDENT_SEVERITIES = ("critical", "high", "medium", "low")
INCIDENT_STATUSES = ("open", "acknowledged", "resolved")


class InvalidTransition(Exception):
    """A kill switch or incident is not in a state that allows the requested change."""


def _require_entity_type(entity_type):
    if entity_type not in ENTITY_TYPES:
        raise ValueError(f"unknown entity type {entity_type!r} "
                         f"(expected one of: {', '.join(ENTITY_TYPES)})")
    return entity_type


def validate_switch(tenant_id, entity_type, entity_id):
    """Raise ValueError naming the problem unless the tenant may own this kill switch.

    A "tenant" switch stops the tenant itself, so its entity id must be the tenant id.
    """
    require_tenant(tenant_id)
    _require_entity_type(entity_type)
    require_text(entity_id, "entity_id")
    if entity_type == "tenant" and entity_id != tenant_id:
        raise ValueError(f"a tenant kill switch stops its own tenant: entity_id {entity_id!r} "
                         f"is not tenant_id {tenant_id!r}")


def _describe_switch(state):
    return f"{state.entity_type.title()} {state.entity_id!r}"


def _require_until(until, now):
    """`until` as an aware UTC datetime after `now` (naive means UTC), else ValueError."""
    if not isinstance(until, datetime):
        raise ValueError(f"until must be a datetime, got {until!r}")
    until = as_utc(until)
    if until <= now:
        raise ValueError(f"until must be in the future, got {until.isoformat()} "
                         f"(now is {now.isoformat()})")
    return until


def _switch_missing(state):
    return f"{_describe_switch(state)} has no kill switch in tenant {state.tenant_id!r}"


class GuardReader:
    """Tenant-scoped reads of kill switches and incidents; only SELECTs."""

    ACCESS = "READ"

    def __init__(self, db, clock=utcnow):
        self.db = require_database(db)
        self.clock = clock

    def get_killswitch_state(self, tenant_id, entity_type, entity_id):
        """The tenant's kill switch state of (entity_type, entity_id), or None."""
        require_tenant(tenant_id)
        return (KillSwitchState.select()
                .where((KillSwitchState.tenant_id == tenant_id)
                       & (KillSwitchState.entity_type == _require_entity_type(entity_type))
                       & (KillSwitchState.entity_id == entity_id))
                .first(self.db))

    def killswitch_status(self, tenant_id, entity_type, entity_id):
        """The switch's state as a dict (see `switch_status`); `is_frozen` is False once a timed
        freeze has ended, and for an entity never frozen."""
        state = self.get_killswitch_state(tenant_id, entity_type, entity_id)
        if state is None:
            state = never_frozen(tenant_id, entity_type, entity_id)
        return switch_status(state, self.clock())

    def is_frozen(self, tenant_id, entity_type, entity_id):
        """True when the tenant's switch of (entity_type, entity_id) is frozen now."""
        state = self.get_killswitch_state(tenant_id, entity_type, entity_id)
        return state is not None and state.is_frozen_at(self.clock())

    def list_killswitches(self, tenant_id, frozen_only=False, limit=100, offset=0, since=None, until=None):
        """The tenant's switches as status dicts, last changed first (only those frozen now
        with `frozen_only`; window on the last change: listing.page)."""
        require_tenant(tenant_id)
        return self._list_switches(KillSwitchState.tenant_id == tenant_id, frozen_only, limit,
                                   offset, since, until)

    def list_frozen_killswitches(self, limit=100, offset=0, since=None, until=None):
        """Every tenant's switches frozen now, last changed first: a read across tenants,
        for operators only."""
        return self._list_switches(True, True, limit, offset, since, until)

    def _list_switches(self, where, frozen_only, limit, offset, since, until):
        now = self.clock()
        if frozen_only:
            where = where & KillSwitchState.frozen_where(now)
        query = page(KillSwitchState.select().where(where), KillSwitchState.updated_at, since, until,
                     offset, limit)
        return [switch_status(state, now) for state in query.execute(self.db)]

    def killswitch_history(self, tenant_id, entity_type, entity_id, limit=100, since=None, until=None,
                           offset=0):
        """The freezes and unfreezes of the tenant's switch, newest first (window: listing.page)."""
        require_tenant(tenant_id)
        return list(page(KillSwitchEvent.select()
                         .where((KillSwitchEvent.tenant_id == tenant_id)
                                & (KillSwitchEvent.entity_type == _require_entity_type(entity_type))
                                & (KillSwitchEvent.entity_id == entity_id)),
                         KillSwitchEvent.created_at, since, until, offset, limit).execute(self.db))

    def get_incident(self, tenant_id, incident_id):
        """The tenant's incident with that id or unique id prefix, or None (another tenant's is
        never returned); listing.AmbiguousId when the prefix names several."""
        require_tenant(tenant_id)
        scope = Incident.select().where(Incident.tenant_id == tenant_id)
        full = expand_id(self.db, scope, Incident.id, require_text(incident_id, "incident_id"))
        return scope.where(Incident.id == full).first(self.db) if full else None

    def list_incidents(self, tenant_id, status=None, limit=100, offset=0, since=None, until=None):
        """The tenant's incidents, newest first (by creation), optionally of one status (window:
        listing.page)."""
        require_tenant(tenant_id)
        query = Incident.select().where(Incident.tenant_id == tenant_id)
        if status is not None:
            if status not in INCIDENT_STATUSES:
                raise ValueError(f"unknown incident status {status!r} "
                                 f"(expected one of: {', '.join(INCIDENT_STATUSES)})")
            query = query.where(Incident.status == status)
        return list(page(query, Incident.created_at, since, until, offset, limit).execute(self.db))

    def list_incident_events(self, tenant_id, incident_id):
        """The timeline of the tenant's incident, in the order it was written."""
        require_tenant(tenant_id)
        return list(IncidentEvent.select()
                    .where((IncidentEvent.tenant_id == tenant_id)
                           & (IncidentEvent.incident == incident_id))
                    .order_by(IncidentEvent.created_at, insertion_order())
                    .execute(self.db))


class GuardWriteDriver:
    """Kill switch and incident writes inside the caller's coordinator transaction;
    `clock` gives aware UTC now (the time written, and the time a timed freeze is compared with)."""

    ACCESS = "WRITE"

    def __init__(self, tx, clock=utcnow):
        self.tx = require_transaction(tx, check_open=False)
        self.clock = clock

    def _changed(self, tenant_id):
        """Note that the tenant's guard state changed (its cache is dropped after COMMIT)."""
        self.tx.note(GuardStateChanged(tenant_id))

    def _reload(self, model, key):
        return model.select().where(key).first(self.tx.db)

    def get_or_create_killswitch_state(self, tenant_id, entity_type, entity_id):
        """The tenant's kill switch of (entity_type, entity_id), created unfrozen if missing.

        Returns (state, created). Entity type is "tenant" (entity id = tenant id) or "key".
        """
        self.tx.require_open()
        validate_switch(tenant_id, entity_type, entity_id)
        now = self.clock()
        inserted = (KillSwitchState
                    .insert(id=new_id(), tenant_id=tenant_id, entity_type=entity_type,
                            entity_id=entity_id, created_at=now, updated_at=now)
                    .on_conflict(conflict_target=(KillSwitchState.tenant_id,
                                                  KillSwitchState.entity_type,
                                                  KillSwitchState.entity_id),
                                 action="NOTHING")
                    .returning(KillSwitchState.id).tuples().execute(self.tx.db))
        created = bool(list(inserted))
        if created:
            self._changed(tenant_id)
        state = self._reload(KillSwitchState,
                             (KillSwitchState.tenant_id == tenant_id)
                             & (KillSwitchState.entity_type == entity_type)
                             & (KillSwitchState.entity_id == entity_id))
        return state, created

    def _transition(self, row, allowed, changes, missing, refused):
        """Apply `changes` to `row` (within its tenant) when `allowed` holds; returns the new row.

        Otherwise nothing is written and InvalidTransition says why: `missing` when the row
        does not exist, `refused(current_row)` when it is in another state.
        """
        model = type(row)
        key = (model.id == row.id) & (model.tenant_id == row.tenant_id)
        updated = model.update(changes).where(key & allowed).execute(self.tx.db)
        current = self._reload(model, key)
        if not updated:
            raise InvalidTransition(missing if current is None else refused(current))
        self._changed(row.tenant_id)
        return current

    def _record(self, state, action, by, reason, now, until=None):
        """Keep one freeze or unfreeze of `state` in its switch's history."""
        KillSwitchEvent.insert(
            id=new_id(), switch_id=state.id, tenant_id=state.tenant_id,
            entity_type=state.entity_type, entity_id=state.entity_id, action=action, actor=by,
            reason=reason, until=until, trigger_type=state.trigger_type,
            created_at=now).execute(self.tx.db)

    def freeze_killswitch(self, state, by, reason, auto=False, trigger=None, until=None):
        """Freeze a switch not frozen now; freezing a frozen one raises InvalidTransition.

        Records who froze it, when, why and by which trigger ("manual" unless given), in the
        state and in its history; clears the last unfreeze. With `until` (an aware datetime
        after now) the freeze ends by itself then. Returns the updated state.
        """
        self.tx.require_open()
        require_text(by, "by")
        now = self.clock()
        if until is not None:
            until = _require_until(until, now)
        current = self._transition(
            state, ~KillSwitchState.frozen_where(now),
            {KillSwitchState.is_frozen: True, KillSwitchState.frozen_at: now,
             KillSwitchState.frozen_by: by, KillSwitchState.freeze_reason: reason,
             KillSwitchState.frozen_until: until,
             KillSwitchState.auto_triggered: bool(auto),
             KillSwitchState.trigger_type: trigger or "manual",
             KillSwitchState.unfrozen_at: None, KillSwitchState.unfrozen_by: None,
             KillSwitchState.unfreeze_reason: None, KillSwitchState.updated_at: now},
            _switch_missing(state),
            lambda current: (f"{_describe_switch(state)} is already frozen (by {current.frozen_by} "
                             f"at {current.frozen_at.isoformat()}"
                             + (f" until {current.frozen_until.isoformat()}"
                                if current.frozen_until else "")
                             + f": {current.freeze_reason or 'no reason'})"))
        self._record(current, "freeze", by, reason, now, until)
        return current

    def unfreeze_killswitch(self, state, by, reason=None):
        """Unfreeze a switch frozen now; unfreezing one that is not (or whose timed freeze has
        ended) raises InvalidTransition.

        Records who unfroze it, when and why, in the state and in its history; the freeze
        fields stay. Returns the updated state.
        """
        self.tx.require_open()
        require_text(by, "by")
        now = self.clock()
        current = self._transition(
            state, KillSwitchState.frozen_where(now),
            {KillSwitchState.is_frozen: False, KillSwitchState.unfrozen_at: now,
             KillSwitchState.unfrozen_by: by, KillSwitchState.unfreeze_reason: reason,
             KillSwitchState.updated_at: now},
            _switch_missing(state),
            lambda current: f"{_describe_switch(state)} is not frozen" + (
                f" (its freeze ended at {current.frozen_until.isoformat()})"
                if current.is_frozen else ""))
        self._record(current, "unfreeze", by, reason, now)
        return current

    def _move_incident(self, incident, allowed_from, action, changes):
        """Apply `changes` if the incident's status is in `allowed_from`; else InvalidTransition."""
        return self._transition(
            incident, Incident.status.in_(allowed_from), changes,
            f"incident {incident.id!r} not found for tenant {incident.tenant_id!r}",
            lambda current: f"cannot {action} incident {incident.id!r}: it is {current.status}")

    def acknowledge_incident(self, incident):
        """open -> acknowledged (with acknowledged_at); any other status raises InvalidTransition."""
        self.tx.require_open()
        now = self.clock()
        return self._move_incident(incident, ("open",), "acknowledge", {
            Incident.status: "acknowledged", Incident.acknowledged_at: now,
            Incident.lifecycle_state: "ACKED", Incident.updated_at: now})

    def resolve_incident(self, incident, by=None):
        """open or acknowledged -> resolved; resolving a resolved incident raises InvalidTransition.

        Sets ended_at and resolved_at to now, duration_seconds from started_at, resolved_by
        (when given) and lifecycle_state RESOLVED.
        """
        self.tx.require_open()
        now = self.clock()
        changes = {Incident.status: "resolved", Incident.ended_at: now,
                   Incident.resolved_at: now, Incident.lifecycle_state: "RESOLVED",
                   Incident.updated_at: now}
        if incident.started_at is not None:
            changes[Incident.duration_seconds] = int((now - incident.started_at).total_seconds())
        if by is not None:
            changes[Incident.resolved_by] = require_text(by, "by")
        return self._move_incident(incident, ("open", "acknowledged"), "resolve", changes)

    def create_demo_incident(self, tenant_id, incident_id, title, trigger_type, policy_id,
                             auto_action, events, severity="high", calls_affected=0,
                             cost_delta_cents=Decimal("0"), call_id=None):
        """A resolved demo incident and its timeline events (in the given order).

        `events` is a list of (event_type, description). With a `call_id` the incident counts
        one affected call. Returns (incident, [IncidentEvent]).
        """
        self.tx.require_open()
        require_tenant(tenant_id)
        for value, name in ((incident_id, "incident_id"), (title, "title"),
                            (trigger_type, "trigger_type")):
            require_text(value, name)
        severity = str(severity).lower()
        if severity not in INCIDENT_SEVERITIES:
            raise ValueError(f"unknown severity {severity!r} "
                             f"(expected one of: {', '.join(INCIDENT_SEVERITIES)})")
        events = list(events)
        for event in events:
            if (not isinstance(event, (tuple, list)) or len(event) != 2
                    or not all(isinstance(part, str) and part for part in event)):
                raise ValueError(f"each event must be (event_type, description), got {event!r}")
        now = self.clock()
        with self.tx.savepoint():
            Incident.insert(
                id=incident_id, tenant_id=tenant_id, title=title, severity=severity,
                status="resolved", trigger_type=trigger_type, policy_id=policy_id,
                auto_action=auto_action, call_id=call_id,
                calls_affected=1 if call_id else calls_affected,
                cost_delta_cents=cost_delta_cents, started_at=now, ended_at=now,
                duration_seconds=0, resolved_at=now, lifecycle_state="RESOLVED",
                created_at=now, updated_at=now).execute(self.tx.db)
            if events:
                IncidentEvent.insert_many([
                    {"id": new_id(), "incident": incident_id, "tenant_id": tenant_id,
                     "event_type": event_type, "description": description, "created_at": now}
                    for event_type, description in events]).execute(self.tx.db)
        self._changed(tenant_id)
        incident = self._reload(Incident, (Incident.id == incident_id)
                                & (Incident.tenant_id == tenant_id))
        return incident, GuardReader(self.tx.db).list_incident_events(tenant_id, incident_id)


def get_guard_write_driver(tx):
    """A GuardWriteDriver over the coordinator transaction `tx`."""
    return GuardWriteDriver(tx)
