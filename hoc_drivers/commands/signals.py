"""CLI: governance signals — record, clear, list (the `signals` group and its `check`: gates.py)."""
import math
from datetime import timedelta

import click

from ..governance_signal_driver import (DECISIONS, GovernanceSignalReader, GovernanceSignalWriter, signal_to_dict,
                                        validate_scope, validate_signal)
from ..models.base import utcnow
from .common import CliError, emit, get_coordinator, get_db, json_option, list_options, parse_json_argument, render
from .gates import scope_option, type_option, upper, validated

SIGNAL_COLUMNS = ["id", "signal_type", "decision", "recorded_by", "recorded_at", "expires_at", "reason"]


def _expiry(expires_in):
    """The expiry time `expires_in` seconds from now (None for none); positive and finite."""
    if expires_in is None:
        return None
    if not (math.isfinite(expires_in) and expires_in > 0):
        raise CliError(f"--expires-in must be a positive number of seconds, got {expires_in:g}")
    try:
        return utcnow() + timedelta(seconds=expires_in)
    except OverflowError:
        raise CliError(f"--expires-in is too large ({expires_in:g} seconds)") from None


@click.command("record")
@scope_option
@type_option(required=True)
@click.option("--decision", required=True, callback=upper, metavar="[" + "|".join(DECISIONS) + "]",
              help="The verdict (any case).")
@click.option("--by", "recorded_by", required=True, help="Who records it: BLCA, CI, OPS, MANUAL...")
@click.option("--reason", help="Why.")
@click.option("--expires-in", type=float, metavar="SECONDS",
              help="Stop counting after this many seconds (positive).")
@click.option("--constraints", help="JSON object of constraints (or @FILE), e.g. '{\"blocked_files\": [\"a.py\"]}'.")
@json_option
def record(scope, signal_type, decision, recorded_by, reason, expires_in, constraints, as_json):
    """Record a signal; it supersedes the scope's active signal of the same type.

    Example: hoc-drivers signals record --scope PR-42 --type CI_STATUS --decision BLOCKED --by CI --reason "tests red"
    """
    expires_at = _expiry(expires_in)
    constraints = parse_json_argument(constraints, "--constraints")
    validated(lambda: validate_signal(scope, signal_type, decision, recorded_by, reason,
                                      constraints, expires_at))
    with get_coordinator().transaction() as tx:
        signal = GovernanceSignalWriter(tx).record_signal(
            scope, signal_type, decision, recorded_by, reason, constraints, expires_at)
        output = render(signal_to_dict(signal), as_json)
    click.echo(output)


@click.command("clear")
@scope_option
@type_option(required=True)
@click.option("--by", "cleared_by", required=True, help="Who clears it.")
@click.option("--reason", help='Why (default "Cleared by <by>").')
@json_option
def clear(scope, signal_type, cleared_by, reason, as_json):
    """Clear a scope's signal of one type by recording CLEAN (other types stay as they are).

    Example: hoc-drivers signals clear --scope PR-42 --type CI_STATUS --by OPS
    """
    validated(lambda: validate_signal(scope, signal_type, "CLEAN", cleared_by, reason))
    with get_coordinator().transaction() as tx:
        signal = GovernanceSignalWriter(tx).clear_signal(scope, signal_type, cleared_by, reason)
        output = render(signal_to_dict(signal), as_json)
    click.echo(output)


@click.command("list")
@scope_option
@type_option(required=False)
@list_options(100, "signals recorded")
def list_signals(scope, signal_type, window, as_json):
    """List the scope's active (not superseded, not expired) signals, newest first.

    Example: hoc-drivers signals list --scope PR-42 --json
    """
    validated(lambda: validate_scope(scope, signal_type))
    active = GovernanceSignalReader(get_db()).list_active_signals(scope, signal_type, **window)
    emit([signal_to_dict(s) for s in active], as_json, SIGNAL_COLUMNS)
