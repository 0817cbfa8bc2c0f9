"""What every CLI command shares: the database, `--json`, output tables and one-line errors.

Exit codes: 0 ok, 1 check failed / violation / runtime error, 2 bad input, 3 blocked.
"""
import json
import sys
from datetime import datetime
from decimal import Decimal

import click

from ..validation import MAX_LIMIT

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BLOCKED = 0, 1, 2, 3


class CliError(click.ClickException):
    """A one-line error with an exit code (2 for bad input unless given)."""

    def __init__(self, message, exit_code=EXIT_USAGE):
        super().__init__(message)
        self.exit_code = exit_code


def json_option(command):
    """Add `--json` (machine-readable output) to a command."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(command)


def non_empty(ctx, param, value):
    """Click callback: refuse empty or blank text (exit 2, naming the option)."""
    if value is not None and not value.strip():
        raise click.BadParameter("must not be empty")
    return value


def text_option(*names, **kwargs):
    """A text option that refuses blank values: `text_option("--agent", help=...)`."""
    return click.option(*names, callback=non_empty, **kwargs)


def limit_option(default):
    """`--limit N`: rows to return, 1 to MAX_LIMIT."""
    return click.option("--limit", type=click.IntRange(1, MAX_LIMIT), default=default,
                        show_default=True, help=f"Rows to return (1-{MAX_LIMIT}).")


def tenant_option(command):
    """Add the mandatory `--tenant T` (blank refused)."""
    return text_option("--tenant", "tenant_id", required=True, help="Tenant id (required).")(command)


def get_db(ctx=None, create=True):
    """The database named by --db / $HOC_DRIVERS_DB / ./hoc.db, tables ensured.

    Call it only after every argument has been validated, so bad input writes nothing.
    """
    from ..db import DatabaseOpenError, connect_database, init_database
    from ..models import ALL_MODELS

    ctx = ctx or click.get_current_context()
    root = ctx.find_root()
    cached = root.meta.get("hoc.db")
    if cached is not None:
        return cached
    path = root.meta.get("hoc.db_path")
    try:
        db = connect_database(path)
        if create and not {m._meta.table_name for m in ALL_MODELS} <= set(db.get_tables()):
            db.close()
            db = init_database(path)
    except DatabaseOpenError as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    root.meta["hoc.db"] = db
    root.call_on_close(db.close)
    return db


def get_coordinator(ctx=None):
    """The transaction coordinator over the command's database."""
    from ..transaction_coordinator import TransactionCoordinator

    ctx = ctx or click.get_current_context()
    root = ctx.find_root()
    if "hoc.coordinator" not in root.meta:
        root.meta["hoc.coordinator"] = TransactionCoordinator(get_db(ctx))
    return root.meta["hoc.coordinator"]


def to_jsonable(value):
    """Datetimes as ISO text, Decimals as strings, enums as values; containers recursively."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "value") and not isinstance(value, (str, int, float, bool)):
        return value.value
    return value


def parse_json_argument(text, name):
    """Parse a JSON command-line value (or @PATH to a file), naming the option on error."""
    if text is None:
        return None
    if text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise CliError(f"{name}: cannot read {text[1:]}: {exc.strerror}") from None
    def refuse(constant):
        raise CliError(f"{name}: malformed JSON ({constant} is not a JSON number)")

    try:
        return json.loads(text, parse_constant=refuse)
    except json.JSONDecodeError as exc:
        raise CliError(f"{name}: malformed JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None


def _cell(value):
    value = to_jsonable(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return "" if value is None else str(value)


def format_table(rows, columns=None):
    """Rows (dicts) as an aligned text table with a header line."""
    rows = list(rows)
    if not rows:
        return "(no rows)"
    columns = columns or list(rows[0].keys())
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def emit(data, as_json, columns=None):
    """Print `data` as JSON (`--json`) or as a table (lists) / key-value lines (dicts)."""
    if as_json:
        click.echo(json.dumps(to_jsonable(data), indent=2, sort_keys=True))
    elif isinstance(data, dict):
        keys = columns or list(data)
        width = max((len(k) for k in keys), default=0)
        for key in keys:
            click.echo(f"{key.ljust(width)}  {_cell(data.get(key))}")
    elif isinstance(data, list):
        click.echo(format_table(data, columns))
    else:
        click.echo(_cell(data))


def fail(message, exit_code=EXIT_FAILED):
    """Stop the command with a one-line error and `exit_code`."""
    raise CliError(message, exit_code)


def echo_error(message):
    """Print one line to stderr; control characters (terminal escapes, line breaks) are escaped."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(message))
    sys.stderr.write(f"error: {text}\n")
