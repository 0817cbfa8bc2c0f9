"""CLI: idempotency keys — check a key, claim a key for a new run (tenant required)."""
import click

from .common import (EXIT_FAILED, CliError, emit, get_coordinator, get_db, json_option, render,
                     tenant_option, text_option)
from ..idempotency import (IdempotencyConflict, IdempotencyReader, IdempotencyWriter,
                           should_return_cached, validate_lookup)

_agent_option = text_option("--agent", "agent_id", help="Only the run of this agent.")


def _validate(tenant_id, key, agent_id):
    """A bad key: a one-line error before the database is opened."""
    try:
        validate_lookup(tenant_id, key, agent_id)
    except ValueError as exc:
        raise CliError(str(exc)) from None


@click.group()
def idempotency():
    """Run idempotency keys: one run per (tenant, key) until the key expires."""


@idempotency.command("check")
@click.argument("key")
@tenant_option
@_agent_option
@json_option
def check(key, tenant_id, agent_id, as_json):
    """Look a key up: exists, run_id, status, is_expired (and should_return_cached).

    Example: hoc-drivers idempotency check order-7 --tenant acme --json
    """
    _validate(tenant_id, key, agent_id)
    result = IdempotencyReader(get_db()).check_idempotency(tenant_id, key, agent_id)
    emit({**result.to_dict(), "should_return_cached": should_return_cached(result)}, as_json)


@idempotency.command("claim")
@click.argument("key")
@tenant_option
@_agent_option
@text_option("--fingerprint", "request_fingerprint",
             help="Fingerprint of the request (e.g. a hash of its body); a different one is a conflict.")
@json_option
def claim(key, tenant_id, agent_id, request_fingerprint, as_json):
    """Claim a key for a new queued run, or get the run already holding it; exit 1 on a conflict.

    Example: hoc-drivers idempotency claim order-7 --tenant acme --agent billing --fingerprint sha256:ab12
    """
    _validate(tenant_id, key, agent_id)
    try:
        with get_coordinator().transaction() as tx:
            result = IdempotencyWriter(tx).claim_or_get(tenant_id, key, agent_id, request_fingerprint)
            output = render(result.to_dict(), as_json)
    except IdempotencyConflict as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    click.echo(output)
