"""CLI: kill switches (freeze / unfreeze / list / history; the `killswitch` group and its
`status`: gates.py) and incidents (list / show / ack / resolve)."""
import re
from datetime import timedelta

import click
from playhouse.shortcuts import model_to_dict

from ..guard_write_driver import INCIDENT_STATUSES, GuardReader, GuardWriteDriver, InvalidTransition, validate_switch
from ..models.base import utcnow
from ..verdicts import switch_status
from .common import (EXIT_FAILED, CliError, emit, full_id, get_coordinator, get_db, json_option, list_options,
                     non_empty, render, tenant_option, tenant_scope_option, text_option)
from .gates import SWITCH_COLUMNS, switch_options

LIST_COLUMNS = ["tenant_id", "entity_type", "entity_id", "is_frozen", "frozen_by", "frozen_at",
                "frozen_until", "freeze_reason"]
HISTORY_COLUMNS = ["created_at", "action", "actor", "reason", "until", "trigger_type"]
_DURATION_PART = re.compile(r"(\d+)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Duration(click.ParamType):
    """A positive duration such as 90s, 30m, 2h, 1d or 1h30m, as a timedelta."""

    name = "duration"

    def convert(self, value, param, ctx):
        """Parse `value` ("2h", "1h30m") or fail naming the option (exit 2)."""
        if isinstance(value, timedelta):
            return value
        text = value.strip().lower()
        parts = _DURATION_PART.findall(text)
        seconds = sum(int(number) * _UNIT_SECONDS[unit] for number, unit in parts)
        if not parts or "".join(n + u for n, u in parts) != text or seconds <= 0:
            self.fail(f"{value!r} is not a positive duration such as 90s, 30m, 2h, 1d or 1h30m",
                      param, ctx)
        return timedelta(seconds=seconds)
INCIDENT_COLUMNS = ["id", "status", "severity", "title", "trigger_type", "created_at"]


def _switch_dict(state):
    return {key: value for key, value in switch_status(state, utcnow()).items()
            if key in SWITCH_COLUMNS}


@click.command("freeze")
@switch_options
@text_option("--by", "actor", required=True, help="Who freezes it.")
@click.option("--reason", default="Manual freeze", show_default=True, help="Why.")
@click.option("--for", "duration", type=Duration(),
              help="End the freeze by itself after this long (90s, 30m, 2h, 1d, 1h30m).")
@json_option
def freeze(tenant_id, entity_type, entity_id, actor, reason, duration, as_json):
    """Freeze a kill switch (stop the traffic), for good or `--for` a while; exit 1 if it is
    already frozen. A timed freeze shows its end (frozen_until) and ends by itself then.

    Example: hoc-drivers killswitch freeze --tenant acme --entity-type tenant --entity-id acme --by ops --reason "cost spike" --for 2h
    """
    try:
        validate_switch(tenant_id, entity_type, entity_id)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    try:
        now = utcnow()  # one now: a timed freeze ends exactly `duration` after it starts
        with get_coordinator().transaction() as tx:
            driver = GuardWriteDriver(tx, clock=lambda: now)
            state, _ = driver.get_or_create_killswitch_state(tenant_id, entity_type, entity_id)
            until = None if duration is None else now + duration
            output = render(_switch_dict(driver.freeze_killswitch(state, actor, reason, until=until)),
                            as_json)
    except InvalidTransition as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    click.echo(output)


@click.command("unfreeze")
@switch_options
@text_option("--by", "actor", required=True, help="Who unfreezes it.")
@click.option("--reason", help="Why (kept in the switch's history).")
@json_option
def unfreeze(tenant_id, entity_type, entity_id, actor, reason, as_json):
    """Unfreeze a frozen kill switch (resume the traffic); exit 1 if it is not frozen.

    Example: hoc-drivers killswitch unfreeze --tenant acme --entity-type tenant --entity-id acme --by ops
    """
    state = GuardReader(get_db()).get_killswitch_state(tenant_id, entity_type, entity_id)
    if state is None:
        raise CliError(f"{entity_type.title()} {entity_id!r} is not frozen", EXIT_FAILED)
    try:
        with get_coordinator().transaction() as tx:
            output = render(_switch_dict(GuardWriteDriver(tx).unfreeze_killswitch(state, actor, reason)),
                            as_json)
    except InvalidTransition as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    click.echo(output)


@click.command("list")
@tenant_scope_option("Every tenant's switches frozen now, instead of one tenant's (a read across tenants).")
@click.option("--frozen", "frozen_only", is_flag=True, help="Only switches frozen now.")
@list_options(100, "switches last changed")
def list_switches(tenant_id, frozen_only, all_tenants, window, as_json):
    """List a tenant's kill switches (or, with --all-tenants, every frozen one), last changed
    first; a timed freeze shows its end (frozen_until).

    Example: hoc-drivers killswitch list --tenant acme --frozen
    """
    reader = GuardReader(get_db())
    if all_tenants:
        rows = reader.list_frozen_killswitches(**window)
    else:
        rows = reader.list_killswitches(tenant_id, frozen_only, **window)
    emit(rows, as_json, LIST_COLUMNS)


@click.command("history")
@switch_options
@list_options(100, "changes made")
def history(tenant_id, entity_type, entity_id, window, as_json):
    """Show every freeze and unfreeze of a kill switch, newest first: who, why, when, until when.

    Example: hoc-drivers killswitch history --tenant acme --entity-type tenant --entity-id acme
    """
    events = GuardReader(get_db()).killswitch_history(tenant_id, entity_type, entity_id, **window)
    emit([model_to_dict(event) for event in events], as_json, HISTORY_COLUMNS)


@click.group()
def incidents():
    """List, acknowledge and resolve a tenant's incidents."""


def _incident_dict(incident):
    return model_to_dict(incident, recurse=False)


@incidents.command("list")
@tenant_option
@click.option("--status", "status_filter", type=click.Choice(INCIDENT_STATUSES),
              help="Only incidents with this status.")
@list_options(100, "incidents created")
def list_incidents(tenant_id, status_filter, window, as_json):
    """List the tenant's incidents, newest first.

    Example: hoc-drivers incidents list --tenant acme --status open --json
    """
    rows = GuardReader(get_db()).list_incidents(tenant_id, status_filter, **window)
    emit([_incident_dict(i) for i in rows], as_json, INCIDENT_COLUMNS)


def _incident(tenant_id, incident_id):
    """The tenant's incident with that id or unique id prefix: exit 1 when none, 2 when the
    prefix is ambiguous."""
    incident = full_id(lambda: GuardReader(get_db()).get_incident(tenant_id, incident_id))
    if incident is None:
        raise CliError(f"incident {incident_id!r} not found for tenant {tenant_id!r}", EXIT_FAILED)
    return incident


@incidents.command("show")
@click.argument("incident_id", callback=non_empty)
@tenant_option
@json_option
def show_incident(incident_id, tenant_id, as_json):
    """Show one incident (a unique id prefix will do) with its timeline.

    Example: hoc-drivers incidents show 3f2a --tenant acme
    """
    reader = GuardReader(get_db())
    incident = _incident(tenant_id, incident_id)
    events = [model_to_dict(e, recurse=False) for e in reader.list_incident_events(tenant_id, incident.id)]
    emit({**_incident_dict(incident), "events": events}, as_json)


def _move_incident(incident_id, tenant_id, move, as_json, columns):
    """Load the tenant's incident, apply `move(driver, incident)` in one transaction and print
    the moved incident (rendered before the COMMIT)."""
    incident = _incident(tenant_id, incident_id)
    try:
        with get_coordinator().transaction() as tx:
            moved = move(GuardWriteDriver(tx), incident)
            output = render(_incident_dict(moved), as_json, None if as_json else INCIDENT_COLUMNS + columns)
    except InvalidTransition as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    click.echo(output)


@incidents.command("ack")
@click.argument("incident_id", callback=non_empty)
@tenant_option
@json_option
def ack(incident_id, tenant_id, as_json):
    """Acknowledge an open incident; exit 1 if it is not open.

    Example: hoc-drivers incidents ack 3f2a9c... --tenant acme
    """
    _move_incident(incident_id, tenant_id, lambda driver, found: driver.acknowledge_incident(found),
                   as_json, ["acknowledged_at"])


@incidents.command("resolve")
@click.argument("incident_id", callback=non_empty)
@tenant_option
@text_option("--by", "actor", help="Who resolved it.")
@json_option
def resolve(incident_id, tenant_id, actor, as_json):
    """Resolve an open or acknowledged incident; exit 1 if it is already resolved.

    Example: hoc-drivers incidents resolve 3f2a9c... --tenant acme --by oncall
    """
    _move_incident(incident_id, tenant_id, lambda driver, found: driver.resolve_incident(found, by=actor),
                   as_json, ["resolved_at", "duration_seconds", "resolved_by"])
