"""CLI: the guard console's cached reads — status and today's snapshot of a tenant."""
import click

from .common import CliError, emit, get_db, json_option, tenant_option


@click.group()
def guard():
    """Guard console reads (through the guard cache)."""


def _reader():
    from ..guard_read_driver import GuardReadDriver

    return GuardReadDriver(get_db())


def _check_tenant(tenant_id):
    if not tenant_id.strip():
        raise CliError("--tenant must not be empty")


@guard.command("status")
@tenant_option
@json_option
def status(tenant_id, as_json):
    """Kill switch frozen?, frozen keys, open incidents, governance blocked?

    Example: hoc-drivers guard status --tenant acme --json
    """
    _check_tenant(tenant_id)
    emit(_reader().get_status(tenant_id), as_json)


@guard.command("snapshot")
@tenant_option
@json_option
def snapshot(tenant_id, as_json):
    """Today's runs, spend and incidents of the tenant (UTC day).

    Example: hoc-drivers guard snapshot --tenant acme
    """
    _check_tenant(tenant_id)
    emit(_reader().get_snapshot(tenant_id), as_json)
