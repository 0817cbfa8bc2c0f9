"""CLI: decision records (list, backfill) and the CARE optimisation kill switch."""
import click

from ..decisions import DecisionType
from .common import CliError, emit, get_coordinator, json_option, tenant_option
from ..validation import MAX_LIMIT

_LIST_COLUMNS = ["decided_at", "decision_type", "decision_outcome", "run_id", "request_id",
                 "causal_role", "decision_reason"]


def _non_empty(**values):
    """Refuse empty or blank command-line values (exit 2, nothing written)."""
    for name, value in values.items():
        if value is not None and not value.strip():
            raise CliError(f"{name} must not be empty")


@click.group()
def decisions():
    """Decision records: what the system decided, why and when."""


@decisions.command("list")
@click.option("--run", "run_id", help="Only records of this run.")
@click.option("--request", "request_id", help="Only records of this request.")
@click.option("--type", "decision_type", type=click.Choice([t.value for t in DecisionType]),
              help="Only this decision type.")
@click.option("--limit", type=click.IntRange(1, MAX_LIMIT), default=100, show_default=True,
              help="At most this many records.")
@tenant_option
@json_option
def list_command(run_id, request_id, decision_type, limit, tenant_id, as_json):
    """List the tenant's decision records, oldest first.

    Example: hoc-drivers decisions list --tenant acme --run run-42 --json
    """
    from ..decisions import list_decisions

    _non_empty(tenant=tenant_id, run=run_id, request=request_id)
    records = list_decisions(get_coordinator(), tenant_id, run_id=run_id, request_id=request_id,
                             decision_type=decision_type, limit=limit)
    emit([r.to_dict() for r in records], as_json, _LIST_COLUMNS)


@decisions.command("backfill")
@click.argument("request_id")
@click.argument("run_id")
@tenant_option
@json_option
def backfill(request_id, run_id, tenant_id, as_json):
    """Bind a request's pre-run decisions to the run created for it; prints how many.

    Example: hoc-drivers decisions backfill req-7 run-42 --tenant acme
    """
    from ..decisions import backfill_run_id_for_request

    _non_empty(request_id=request_id, run_id=run_id, tenant=tenant_id)
    count = backfill_run_id_for_request(get_coordinator(), request_id, run_id, tenant_id)
    emit({"request_id": request_id, "run_id": run_id, "backfilled": count}, as_json)


@click.group()
def care():
    """CARE routing optimisation controls."""


@care.command("kill-switch")
@click.argument("action", type=click.Choice(["on", "off", "status"]))
@json_option
def kill_switch(action, as_json):
    """Turn the CARE optimisation kill switch on or off, or show it (persisted in the database).

    Example: hoc-drivers care kill-switch on --json
    """
    from ..decisions import (activate_care_kill_switch, deactivate_care_kill_switch,
                             is_care_kill_switch_active)

    coordinator = get_coordinator()
    if action == "on":
        activate_care_kill_switch(coordinator)
    elif action == "off":
        deactivate_care_kill_switch(coordinator)
    emit({"active": is_care_kill_switch_active(coordinator)}, as_json)
