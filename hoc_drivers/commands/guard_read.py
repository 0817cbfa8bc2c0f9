"""CLI: the guard console's cached snapshot of a tenant (the `guard` group and its `status`: gates.py)."""
import click

from ..guard_read_driver import GuardReadDriver
from .common import emit, get_db, json_option, tenant_option


@click.command("snapshot")
@tenant_option
@json_option
def snapshot(tenant_id, as_json):
    """Today's runs, spend and incidents of the tenant (UTC day).

    Example: hoc-drivers guard snapshot --tenant acme
    """
    emit(GuardReadDriver(get_db()).get_snapshot(tenant_id), as_json)
