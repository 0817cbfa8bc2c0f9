"""CLI: the discovery ledger (emit and list signals)."""
import click

from ..models.ledger import LEDGER_STATUSES
from .common import (EXIT_FAILED, CliError, emit, get_coordinator, get_db, json_option, list_options,
                     parse_json_argument, render, text_option)

_LIST_COLUMNS = ["artifact", "field", "signal_type", "seen_count", "status", "confidence",
                 "last_seen_at"]


@click.group()
def ledger():
    """Discovery ledger: repeated signals about an artifact, aggregated into one row."""


@ledger.command("emit")
@text_option("--artifact", required=True, help="What the signal is about, e.g. a table name.")
@text_option("--signal-type", required=True, help="Kind of signal, e.g. high_operator_access.")
@text_option("--detected-by", required=True, help="Who or what noticed it.")
@text_option("--field", help="Field of the artifact (omit for the artifact as a whole).")
@click.option("--evidence", default="{}", show_default=True,
              help="Evidence as a JSON object (or @FILE).")
@click.option("--confidence", type=float, help="Confidence between 0 and 1.")
@click.option("--notes", help="Free-text notes (kept from the first emit).")
@json_option
def emit_command(artifact, signal_type, detected_by, field, evidence, confidence, notes, as_json):
    """Record a signal; the same artifact/field/signal type raises its seen count.

    Example: hoc-drivers ledger emit --artifact prediction_events --signal-type high_operator_access --detected-by ops --evidence '{"queries": 12}'
    """
    from ..ledger import emit_signal, get_signals, validate_signal

    evidence = parse_json_argument(evidence, "--evidence")
    try:
        validate_signal(artifact, signal_type, evidence, detected_by, field, confidence)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    with get_coordinator().transaction() as tx:
        signal_id = emit_signal(tx, artifact, signal_type, evidence, detected_by, field=field,
                                confidence=confidence, notes=notes)
        if signal_id is None:
            raise CliError("the signal could not be stored (see the log)", EXIT_FAILED)
        row = next((s for s in get_signals(tx.db, artifact=artifact, signal_type=signal_type,
                                           limit=None) if s["id"] == signal_id), {"id": signal_id})
        output = render(row, as_json, None if as_json else ["id", *_LIST_COLUMNS])
    click.echo(output)


@ledger.command("list")
@text_option("--artifact", help="Only signals about this artifact.")
@text_option("--signal-type", help="Only signals of this type.")
@click.option("--status", type=click.Choice(LEDGER_STATUSES),
              help="Only signals with this status.")
@list_options(100, "signals last seen")
def list_command(artifact, signal_type, status, window, as_json):
    """List signals, most recently seen first.

    Example: hoc-drivers ledger list --artifact prediction_events --json
    """
    from ..ledger import get_signals

    signals = get_signals(get_db(), artifact=artifact, signal_type=signal_type,
                          status=status, newest_first=True, **window)
    emit(signals, as_json, _LIST_COLUMNS)
