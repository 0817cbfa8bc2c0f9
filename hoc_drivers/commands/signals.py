"""CLI: governance signals — record, check (exit 3 when blocked), clear, list."""
import math
from datetime import timedelta

import click

from ..governance_signal_driver import (DECISIONS, SIGNAL_TYPES, GovernanceSignalReader, GovernanceSignalWriter,
                                        signal_to_dict, validate_scope, validate_signal)
from ..models.base import utcnow
from .common import (EXIT_BLOCKED, CliError, emit, get_coordinator, get_db, json_option, list_options,
                     parse_json_argument, render)

SIGNAL_COLUMNS = ["id", "signal_type", "decision", "recorded_by", "recorded_at", "expires_at", "reason"]


def _scope_option(command):
    return click.option("--scope", required=True,
                        help="What the signal is about: a file path, PR, session id, tenant...")(command)


def _upper(ctx, param, value):
    """Accept a type or decision in any case; the driver checks it against the known values."""
    return None if value is None else value.upper()


def _type_option(required):
    return click.option("--type", "signal_type", required=required, callback=_upper,
                        metavar="[" + "|".join(SIGNAL_TYPES) + "]",
                        help="Signal type (any case)." + ("" if required else " Default: every type."))


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


def _validated(validate):
    """Run a driver validation, turning its ValueError into a one-line bad-input error."""
    try:
        validate()
    except ValueError as exc:
        raise CliError(str(exc)) from None


@click.group()
def signals():
    """Explicit governance signals (BLOCKED / WARN / CLEAN / PENDING) per scope."""


@signals.command("record")
@_scope_option
@_type_option(required=True)
@click.option("--decision", required=True, callback=_upper, metavar="[" + "|".join(DECISIONS) + "]",
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
    _validated(lambda: validate_signal(scope, signal_type, decision, recorded_by, reason,
                                       constraints, expires_at))
    with get_coordinator().transaction() as tx:
        signal = GovernanceSignalWriter(tx).record_signal(
            scope, signal_type, decision, recorded_by, reason, constraints, expires_at)
        output = render(signal_to_dict(signal), as_json)
    click.echo(output)


@signals.command("check")
@_scope_option
@_type_option(required=False)
@json_option
def check(scope, signal_type, as_json):
    """Is the scope blocked? Exit 0 when clear, 3 when blocked.

    Example: hoc-drivers signals check --scope PR-42 --json || echo "deploy gated"
    """
    _validated(lambda: validate_scope(scope, signal_type))
    result = GovernanceSignalReader(get_db()).check_governance(scope, signal_type)
    data = result.to_dict()
    if as_json:
        emit(data, True)
    else:
        emit({"scope": scope, "is_blocked": result.is_blocked,
              "blocking": ", ".join(f"{s.signal_type} ({s.reason or s.recorded_by})"
                                    for s in result.blocking_signals),
              "warnings": ", ".join(f"{s.signal_type} ({s.reason or s.recorded_by})"
                                    for s in result.warning_signals)}, False)
    if result.is_blocked:
        click.get_current_context().exit(EXIT_BLOCKED)


@signals.command("clear")
@_scope_option
@_type_option(required=True)
@click.option("--by", "cleared_by", required=True, help="Who clears it.")
@click.option("--reason", help='Why (default "Cleared by <by>").')
@json_option
def clear(scope, signal_type, cleared_by, reason, as_json):
    """Clear a scope's signal of one type by recording CLEAN (other types stay as they are).

    Example: hoc-drivers signals clear --scope PR-42 --type CI_STATUS --by OPS
    """
    _validated(lambda: validate_signal(scope, signal_type, "CLEAN", cleared_by, reason))
    with get_coordinator().transaction() as tx:
        signal = GovernanceSignalWriter(tx).clear_signal(scope, signal_type, cleared_by, reason)
        output = render(signal_to_dict(signal), as_json)
    click.echo(output)


@signals.command("list")
@_scope_option
@_type_option(required=False)
@list_options(100, "signals recorded")
def list_signals(scope, signal_type, window, as_json):
    """List the scope's active (not superseded, not expired) signals, newest first.

    Example: hoc-drivers signals list --scope PR-42 --json
    """
    _validated(lambda: validate_scope(scope, signal_type))
    active = GovernanceSignalReader(get_db()).list_active_signals(scope, signal_type, **window)
    emit([signal_to_dict(s) for s in active], as_json, SIGNAL_COLUMNS)
