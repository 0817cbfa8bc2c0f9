"""What every CLI command shares: the database, the output formats, list options and one-line errors.

Output: a table (fitted to the terminal, timestamps to the second), `--json`, and on lists
`--csv` and `--nl` (one JSON object a line). In JSON, Decimals are numbers: integral ones
ints, others floats when the float reads back as the same decimal, else strings (exactness
before type). Lists are newest first, with `--since`/`--until`/`--offset`/`--limit`; commands
taking an id accept a unique prefix of it (exit 1 when none matches, 2 when several do).

Exit codes: 0 ok, 1 check failed / violation / runtime error, 2 bad input, 3 blocked.
A command that writes renders its output inside its transaction (`render`) and only prints
it after the COMMIT, so nothing that can fail runs once the change is committed.
"""
import functools
import json
import os
import re
import sys
from datetime import datetime, timedelta

import click

from ..validation import MAX_JSON_DEPTH, MAX_LIMIT, redact, require_json_value

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BLOCKED = 0, 1, 2, 3
# A JSON option's text (an @FILE too) is read up to this size; the parsed value must then fit
# validation.MAX_JSON_BYTES (compact), so this leaves room for indentation.
MAX_JSON_TEXT_BYTES = 1024 * 1024


class CliError(click.ClickException):
    """A one-line error with an exit code (2 for bad input unless given)."""

    def __init__(self, message, exit_code=EXIT_USAGE):
        super().__init__(message)
        self.exit_code = exit_code


_AGO = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def json_option(command):
    """Add `--json` (machine-readable output) to a command."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(command)


def output_options(command):
    """Add `--json`, `--csv` and `--nl` (one JSON object a line) to a list command; it gets
    `as_json` holding the format name (None: a table) for `emit` / `render`."""
    for flag, text in reversed((("json", "a JSON array"), ("csv", "CSV with a header line"),
                                ("nl", "one JSON object a line"))):
        command = click.option(f"--{flag}", "as_json", flag_value=flag, help=f"Print {text}.")(command)
    return command


def parse_when(ctx, param, value):
    """Click callback: an ISO 8601 time (naive = UTC) or an age like 30m, 2h, 7d -> aware UTC."""
    from ..models.base import as_utc, utcnow

    if value is None:
        return None
    match = _AGO.fullmatch(value.strip())
    if match:
        return utcnow() - timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        return as_utc(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither an ISO time (2026-01-31T09:00) nor an age "
                                 f"(30m, 2h, 7d)") from None


def list_options(default_limit, what="rows"):
    """`--since`, `--until`, `--offset`, `--limit` and the output formats of a list command; it
    gets `window` = {since, until, offset, limit} for the reader (see listing.page)."""
    def decorate(command):
        @click.option("--since", callback=parse_when,
                      help=f"Only {what} from this time: an ISO time (UTC) or an age (30m, 2h, 7d).")
        @click.option("--until", callback=parse_when,
                      help=f"Only {what} before this time: an ISO time (UTC) or an age.")
        @click.option("--offset", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True,
                      help="Skip this many rows (newest first) before listing.")
        @limit_option(default_limit)
        @output_options
        @functools.wraps(command)
        def listed(since, until, offset, limit, **kwargs):
            return command(window={"since": since, "until": until, "offset": offset, "limit": limit},
                           **kwargs)
        return listed
    return decorate


def full_id(query_id):
    """Run `query_id()` (a listing.expand_id call): the full id, or exit 2 on an ambiguous prefix.
    A prefix matching nothing gives None; the caller reports it (exit 1)."""
    from ..listing import AmbiguousId

    try:
        return query_id()
    except AmbiguousId as exc:
        raise CliError(str(exc)) from None


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


def tenant_scope_option(all_help):
    """`--tenant T` or `--all-tenants` (exactly one, else exit 2): the command gets `tenant_id`
    (None with --all-tenants) and `all_tenants`. Reads across tenants are asked for by name."""
    def decorate(command):
        @text_option("--tenant", "tenant_id", help="Tenant id.")
        @click.option("--all-tenants", is_flag=True, help=all_help)
        @functools.wraps(command)
        def scoped(tenant_id, all_tenants, **kwargs):
            if (tenant_id is None) == (not all_tenants):
                raise CliError("give --tenant T, or --all-tenants to look across tenants")
            return command(tenant_id=tenant_id, all_tenants=all_tenants, **kwargs)
        return scoped
    return decorate


def tenant_option(command):
    """Add the mandatory `--tenant T` (blank refused)."""
    return text_option("--tenant", "tenant_id", required=True, help="Tenant id (required).")(command)


def get_db(ctx=None, create=False, check_schema=True):
    """The database named by --db / $HOC_DRIVERS_DB / ./hoc.db, opened once per command.

    A missing file is bad input (exit 2, naming the path and `hoc-drivers init`) unless
    `create` (init and demo only): then it is created and its missing tables too. With
    `check_schema`, a database that does not match the models is refused (exit 1, naming the
    first difference; `hoc-drivers schema check` lists them all).
    Call it only after every argument has been validated, so bad input writes nothing.
    """
    from ..db import DatabaseMissing, DatabaseOpenError, connect_database, init_database
    from ..schema_parity import OlderSchema, SchemaParityError, run_startup_parity_check

    ctx = ctx or click.get_current_context()
    root = ctx.find_root()
    cached = root.meta.get("hoc.db")
    if cached is not None:
        return cached
    path = root.meta.get("hoc.db_path")
    try:
        db = init_database(path) if create else connect_database(path, create=False)
    except DatabaseMissing as exc:
        raise CliError(f"{exc} (create it with `hoc-drivers --db {exc.path} init`)") from None
    except (DatabaseOpenError, OlderSchema) as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    root.call_on_close(db.close)
    if check_schema:
        try:
            errors = run_startup_parity_check(db)["errors"]
        except SchemaParityError as exc:
            errors = exc.errors
        except OlderSchema as exc:
            raise CliError(str(exc), EXIT_FAILED) from None
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise CliError(f"database {db.database} does not match the models: {errors[0]}{more}; "
                           f"`hoc-drivers schema check` lists the differences", EXIT_FAILED)
    root.meta["hoc.db"] = db
    return db


def get_coordinator(ctx=None):
    """The transaction coordinator over the command's database."""
    from ..transaction_coordinator import TransactionCoordinator

    ctx = ctx or click.get_current_context()
    root = ctx.find_root()
    if "hoc.coordinator" not in root.meta:
        root.meta["hoc.coordinator"] = TransactionCoordinator(get_db(ctx))
    return root.meta["hoc.coordinator"]


def _is_decimal(value):
    """True for a Decimal. The decimal module is not imported here (it loads slowly, and the
    gates never meet one): no value is a Decimal before something has imported it."""
    module = sys.modules.get("decimal")
    return module is not None and isinstance(value, module.Decimal)


def _decimal(value):
    """A Decimal as JSON: an int when integral, a float when it reads back the same, else text."""
    if value == value.to_integral_value():
        return int(value)
    as_float = float(value)
    return as_float if type(value)(repr(as_float)) == value else str(value)


def to_jsonable(value):
    """Datetimes as ISO text, Decimals as numbers (`_decimal`), enums as values; containers
    recursively."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if _is_decimal(value):
        return _decimal(value) if value.is_finite() else str(value)
    if hasattr(value, "value") and not isinstance(value, (str, int, float, bool)):
        return value.value
    return value


def parse_json_argument(text, name):
    """Parse a JSON command-line value (or @PATH to a file), naming the option on error.

    Bad input (exit 2): malformed JSON, NaN / Infinity, more than MAX_JSON_TEXT_BYTES of text, or
    a value nested deeper than MAX_JSON_DEPTH levels or encoding to more than MAX_JSON_BYTES."""
    if text is None:
        return None
    if text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as handle:
                text = handle.read(MAX_JSON_TEXT_BYTES + 1)
        except OSError as exc:
            raise CliError(f"{name}: cannot read {text[1:]}: {exc.strerror}") from None
    if len(text.encode("utf-8", "surrogatepass")) > MAX_JSON_TEXT_BYTES:
        raise CliError(f"{name}: JSON text is too large (at most {MAX_JSON_TEXT_BYTES} bytes)")

    def refuse(constant):
        raise CliError(f"{name}: malformed JSON ({constant} is not a JSON number)")

    try:
        value = json.loads(text, parse_constant=refuse)
    except json.JSONDecodeError as exc:
        raise CliError(f"{name}: malformed JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise CliError(f"{name} is nested too deeply (more than {MAX_JSON_DEPTH} levels)") from None
    try:
        return require_json_value(value, name)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _cell(value):
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    value = to_jsonable(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return "" if value is None else str(value)


def _fit(widths, room):
    """Column widths narrowed (widest first, none below 8) until the row fits `room` columns."""
    widths = list(widths)
    while sum(widths) + 2 * (len(widths) - 1) > room and max(widths) > 8:
        widths[widths.index(max(widths))] -= 1
    return widths


def format_table(rows, columns=None):
    """Rows (dicts) as an aligned text table with a header line, fitted to the terminal width
    (when printing to a terminal, or $COLUMNS is set): long cells end in an ellipsis."""
    import shutil  # only for tables (not the gates' key-value output)

    rows = list(rows)
    if not rows:
        return "(no rows)"
    columns = columns or list(rows[0].keys())
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    room = shutil.get_terminal_size((0, 0)).columns if sys.stdout.isatty() or "COLUMNS" in os.environ else 0
    if room:
        widths = _fit(widths, room)
    cells = [[v if len(v) <= w else v[:w - 1] + "\u2026" for v, w in zip(r, widths, strict=True)]
             for r in [[c.upper() for c in columns], *cells]]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _csv(rows):
    """Rows (dicts) as CSV: a header of every key, cells as in the table but timestamps in full."""
    import csv
    import io

    columns = list(dict.fromkeys(key for row in rows for key in row))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(to_jsonable(row.get(c))) for c in columns])
    return out.getvalue().rstrip("\n")


def render(data, as_json, columns=None):
    """`data` as the text `emit` prints. `as_json` is True/"json" (JSON), "csv", "nl" (one JSON
    object a line) or False/"table" (a table for lists, key-value lines for dicts); `columns`
    picks the table's columns (the other formats carry every key)."""
    fmt = {True: "json", False: "table", None: "table"}.get(as_json, as_json)
    rows = data if isinstance(data, list) else [data]
    if fmt == "json":
        return json.dumps(to_jsonable(data), indent=2, sort_keys=True)
    if fmt == "nl":
        return "\n".join(json.dumps(to_jsonable(row), sort_keys=True) for row in rows)
    if fmt == "csv":
        return _csv(rows)
    if isinstance(data, dict):
        keys = columns or list(data)
        width = max((len(k) for k in keys), default=0)
        return "\n".join(f"{key.ljust(width)}  {_cell(data.get(key))}" for key in keys)
    if isinstance(data, list):
        return format_table(data, columns)
    return _cell(data)


def emit(data, as_json, columns=None):
    """Print `data` in the chosen format (see `render`)."""
    click.echo(render(data, as_json, columns))


def fail(message, exit_code=EXIT_FAILED):
    """Stop the command with a one-line error and `exit_code`."""
    raise CliError(message, exit_code)


def echo_error(message):
    """Print one line to stderr: credentials and tokens redacted (`validation.redact`), control
    characters (terminal escapes, line breaks) escaped."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in redact(message))
    sys.stderr.write(f"error: {text}\n")
