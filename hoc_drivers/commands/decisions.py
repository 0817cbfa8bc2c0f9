"""CLI: decision records (list, backfill) and the CARE optimisation kill switch."""
import click

from ..decisions import DecisionType
from .common import (emit, get_coordinator, get_db, json_option, list_options, non_empty, render, tenant_option,
                     text_option)

_LIST_COLUMNS = ["decided_at", "decision_type", "decision_outcome", "run_id", "request_id",
                 "causal_role", "decision_reason"]


@click.group()
def decisions():
    """Decision records: what the system decided, why and when."""


@decisions.command("list")
@text_option("--run", "run_id", help="Only records of this run.")
@text_option("--request", "request_id", help="Only records of this request.")
@click.option("--type", "decision_type", type=click.Choice([t.value for t in DecisionType]),
              help="Only this decision type.")
@list_options(100, "records decided")
@tenant_option
def list_command(run_id, request_id, decision_type, window, tenant_id, as_json):
    """List the tenant's decision records, newest first.

    Example: hoc-drivers decisions list --tenant acme --run run-42 --json
    """
    from ..decisions import list_decisions

    records = list_decisions(get_db(), tenant_id, run_id=run_id, request_id=request_id,
                             decision_type=decision_type, newest_first=True, **window)
    emit([r.to_dict() for r in records], as_json, _LIST_COLUMNS)


@decisions.command("backfill")
@click.argument("request_id", callback=non_empty)
@click.argument("run_id", callback=non_empty)
@tenant_option
@json_option
def backfill(request_id, run_id, tenant_id, as_json):
    """Bind a request's pre-run decisions to the run created for it; prints how many.

    Example: hoc-drivers decisions backfill req-7 run-42 --tenant acme
    """
    from ..decisions import backfill_run_id_for_request

    with get_coordinator().transaction() as tx:
        count = backfill_run_id_for_request(tx, tenant_id, request_id, run_id)
        output = render({"request_id": request_id, "run_id": run_id, "backfilled": count}, as_json)
    click.echo(output)


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
    from ..decisions import activate_care_kill_switch, deactivate_care_kill_switch, is_care_kill_switch_active

    setters = {"on": activate_care_kill_switch, "off": deactivate_care_kill_switch}
    if action == "status":
        emit({"active": is_care_kill_switch_active(get_db())}, as_json)
        return
    with get_coordinator().transaction() as tx:
        setters[action](tx)
        output = render({"active": is_care_kill_switch_active(tx.db)}, as_json)
    click.echo(output)
