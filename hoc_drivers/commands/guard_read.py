"""CLI: the guard console's cached reads — status and today's snapshot of a tenant."""
import click

from ..guard_read_driver import GuardReadDriver
from .common import emit, get_db, json_option, tenant_option


@click.group()
def guard():
    """Guard console reads (through the guard cache)."""


@guard.command("status")
@tenant_option
@json_option
def status(tenant_id, as_json):
    """Kill switch frozen?, frozen keys, open incidents, governance blocked?

    Example: hoc-drivers guard status --tenant acme --json
    """
    emit(GuardReadDriver(get_db()).get_status(tenant_id), as_json)


@guard.command("snapshot")
@tenant_option
@json_option
def snapshot(tenant_id, as_json):
    """Today's runs, spend and incidents of the tenant (UTC day).

    Example: hoc-drivers guard snapshot --tenant acme
    """
    emit(GuardReadDriver(get_db()).get_snapshot(tenant_id), as_json)
