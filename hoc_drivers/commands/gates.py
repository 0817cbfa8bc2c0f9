"""CLI: the read-only gates deploy scripts call in a loop — `signals check` (exit 3 when
blocked), `killswitch status`, `guard status` — and the groups they belong to, whose other
commands (commands/signals.py, guard.py, guard_read.py) are imported only when used.

A gate loads no Peewee: it reads through hoc_drivers.gates (sqlite3, read-only) when the file
passes the start-up guard's cheap check. Any other file (missing, drifted, of an older schema,
`:memory:`), and every run with --debug (which logs the SQL), goes through `get_db` and the
drivers' readers, as every other command does: the same output, the same errors.
"""
import click

from .. import gates, settings
from ..cli import LazyGroup, configure_logging, debugging
from ..verdicts import ENTITY_TYPES, SIGNAL_TYPES, SWITCH_FIELDS, validate_scope
from .common import EXIT_BLOCKED, CliError, emit, get_db, json_option, tenant_option, text_option

SWITCH_COLUMNS = [key for key in SWITCH_FIELDS if key != "auto_triggered"]


def scope_option(command):
    """`--scope` (required): what a governance signal is about."""
    return click.option("--scope", required=True,
                        help="What the signal is about: a file path, PR, session id, tenant...")(command)


def upper(ctx, param, value):
    """Accept a type or decision in any case; the driver checks it against the known values."""
    return None if value is None else value.upper()


def type_option(required):
    """`--type` of a governance signal (any case); optional means every type."""
    return click.option("--type", "signal_type", required=required, callback=upper,
                        metavar="[" + "|".join(SIGNAL_TYPES) + "]",
                        help="Signal type (any case)." + ("" if required else " Default: every type."))


def validated(validate):
    """Run a driver validation, turning its ValueError into a one-line bad-input error."""
    try:
        validate()
    except ValueError as exc:
        raise CliError(str(exc)) from None


def switch_options(command):
    """--tenant, --entity-type and --entity-id, shared by every kill switch command."""
    command = text_option("--entity-id", required=True, help="Id of the tenant or API key.")(command)
    command = click.option("--entity-type", required=True, type=click.Choice(ENTITY_TYPES),
                           help="What the switch stops: a whole tenant or one API key.")(command)
    return tenant_option(command)


def read(fast, driver):
    """`fast(conn)` on a gate connection (hoc_drivers.gates.connect) to the command's database,
    else (no such connection, or --debug) `driver(db)` on `get_db()`."""
    ctx = click.get_current_context()
    debug = debugging(ctx)
    conn = None if debug else gates.connect(settings.get("database.path", ctx.find_root().meta.get("hoc.db_path")))
    if conn is None:
        configure_logging(debug)
        return driver(get_db())
    try:
        return fast(conn)
    finally:
        conn.close()


@click.group(cls=LazyGroup, lazy={"record": "hoc_drivers.commands.signals:record",
                                  "clear": "hoc_drivers.commands.signals:clear",
                                  "list": "hoc_drivers.commands.signals:list_signals"})
def signals():
    """Explicit governance signals (BLOCKED / WARN / CLEAN / PENDING) per scope."""


def _check_by_driver(scope, signal_type):
    def check(db):
        from ..governance_signal_driver import GovernanceSignalReader

        return GovernanceSignalReader(db).check_governance(scope, signal_type)
    return check


@signals.command("check")
@scope_option
@type_option(required=False)
@json_option
def check(scope, signal_type, as_json):
    """Is the scope blocked? Exit 0 when clear, 3 when blocked.

    Example: hoc-drivers signals check --scope PR-42 --json || echo "deploy gated"
    """
    validated(lambda: validate_scope(scope, signal_type))
    result = read(lambda conn: gates.check_signals(conn, scope, signal_type),
                  _check_by_driver(scope, signal_type))
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


@click.group(cls=LazyGroup, lazy={name: f"hoc_drivers.commands.guard:{attribute}" for name, attribute in (
    ("freeze", "freeze"), ("unfreeze", "unfreeze"), ("list", "list_switches"), ("history", "history"))})
def killswitch():
    """Freeze, unfreeze and inspect kill switches of tenants and API keys."""


def _switch_by_driver(tenant_id, entity_type, entity_id):
    def status(db):
        from ..guard_write_driver import GuardReader

        return GuardReader(db).killswitch_status(tenant_id, entity_type, entity_id)
    return status


@killswitch.command("status")
@switch_options
@json_option
def status(tenant_id, entity_type, entity_id, as_json):
    """Show whether a kill switch is frozen, by whom and why (never writes).

    Example: hoc-drivers killswitch status --tenant acme --entity-type tenant --entity-id acme --json
    """
    data = read(lambda conn: gates.killswitch_status(conn, tenant_id, entity_type, entity_id),
                _switch_by_driver(tenant_id, entity_type, entity_id))
    emit({key: data[key] for key in SWITCH_COLUMNS}, as_json)


@click.group(cls=LazyGroup, lazy={"snapshot": "hoc_drivers.commands.guard_read:snapshot"})
def guard():
    """Guard console reads (through the guard cache)."""


def _status_by_gate(tenant_id):
    def status(conn):
        for name in settings.SETTINGS:  # what the guard cache reads (an invalid value: exit 2)
            if name.startswith("guard_cache."):
                settings.get(name)
        return gates.tenant_status(conn, tenant_id)
    return status


def _status_by_driver(tenant_id):
    def status(db):
        from ..guard_read_driver import GuardReadDriver

        return GuardReadDriver(db).get_status(tenant_id)
    return status


@guard.command("status")
@tenant_option
@json_option
def guard_status(tenant_id, as_json):
    """Kill switch frozen?, frozen keys, open incidents, governance blocked?

    Example: hoc-drivers guard status --tenant acme --json
    """
    emit(read(_status_by_gate(tenant_id), _status_by_driver(tenant_id)), as_json)
