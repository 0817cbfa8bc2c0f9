"""CLI: the UI notifications threshold alerts write — list a tenant's, acknowledge one."""
import click
from playhouse.shortcuts import model_to_dict

from ..alert_emitter import NotificationReader, NotificationWriter
from .common import (EXIT_FAILED, CliError, emit, full_id, get_coordinator, get_db, json_option, list_options, non_empty,
                     render, tenant_option)

COLUMNS = ["id", "notification_type", "title", "run_id", "policy_id", "percentage", "action_taken",
           "created_at", "read_at"]


@click.group()
def notifications():
    """UI notifications raised by threshold alerts (near and breach)."""


@notifications.command("list")
@tenant_option
@click.option("--unread", is_flag=True, help="Only notifications not yet acknowledged.")
@list_options(50, "notifications created")
def list_notifications(tenant_id, unread, window, as_json):
    """List the tenant's notifications, newest first.

    Example: hoc-drivers notifications list --tenant acme --unread
    """
    rows = NotificationReader(get_db()).list(tenant_id, unread=unread, **window)
    emit([model_to_dict(row) for row in rows], as_json, COLUMNS)


@notifications.command("ack")
@click.argument("notification_id", callback=non_empty)
@tenant_option
@json_option
def ack(notification_id, tenant_id, as_json):
    """Mark a notification read (acknowledging it again keeps the first time); exit 1 if the
    tenant has no such notification.

    Example: hoc-drivers notifications ack 3f2a9c... --tenant acme
    """
    reader = NotificationReader(get_db())
    notification_id = full_id(lambda: reader.full_id(tenant_id, notification_id)) or notification_id
    with get_coordinator().transaction() as tx:  # the output is built before COMMIT
        row = NotificationWriter(tx).ack(tenant_id, notification_id)
        text = row and render(model_to_dict(row), as_json)
    if row is None:
        raise CliError(f"notification {notification_id!r} not found for tenant {tenant_id!r}", EXIT_FAILED)
    click.echo(text)
