"""The `hoc-drivers` command line: a thin click layer over the hoc_drivers Python API.

Command groups live in `hoc_drivers/commands/` and are imported only when used, so
`hoc-drivers --help` starts fast; a `LazyGroup` imports each subcommand only when it runs, so
the read-only gates deploy scripts call in a loop (`signals check`, `killswitch status`,
`guard status`: commands/gates.py) load no Peewee and start about as fast.
Errors are one line on stderr, naming options (never Python parameter names); a mistyped
command gets a suggestion. `--debug` (before or after the subcommand) shows tracebacks and logs
every SQL statement with its parameters. Both redact credentials and tokens
(`validation.redact`: URL user:password, Slack/Discord webhook paths, secret query parameters).
Exit codes: 0 ok, 1 check failed / violation / error, 2 bad input, 3 blocked.

The database: `--db PATH` (before or after the subcommand, on every command that opens one;
given on the command line it always wins), else $HOC_DRIVERS_DB, else ./hoc.db. Only `init` and
`demo` create it: any other command on a missing file is bad input (exit 2). Every command but
`schema check` first runs the start-up schema guard and refuses a database that does not match
the models (exit 1, one line naming the first difference).

Settings (hoc_drivers.settings): flag > environment > settings file > default. The file is
`--config FILE` (before the subcommand), else $HOC_DRIVERS_CONFIG, else ./hoc-drivers.toml if it
exists; it is checked before any command runs (an invalid value or unknown key: exit 2).
"""
import importlib
import re
import sys

import click

# name -> (module, attribute, one-line help shown by `hoc-drivers --help`)
COMMANDS = {
    "init": ("hoc_drivers.commands.core", "init", "Create the database and its tables (idempotent)."),
    "demo": ("hoc_drivers.commands.demo", "demo", "Run a realistic scenario through all 13 drivers."),
    "run": ("hoc_drivers.commands.core", "run", "Complete a run atomically (incident, policy, trace, events)."),
    "schema": ("hoc_drivers.commands.core", "schema", "Check the database schema against the models."),
    "audit": ("hoc_drivers.commands.core", "audit", "Audit our own drivers: access, commits, verdicts."),
    "signals": ("hoc_drivers.commands.gates", "signals", "Record, check, list and clear governance signals."),
    "killswitch": ("hoc_drivers.commands.gates", "killswitch", "Freeze, unfreeze and inspect kill switches."),
    "incidents": ("hoc_drivers.commands.guard", "incidents", "List, acknowledge and resolve incidents."),
    "anomaly": ("hoc_drivers.commands.costs", "anomaly", "Record a cost anomaly (creates an incident)."),
    "breach": ("hoc_drivers.commands.costs", "breach", "Record a limit breach."),
    "idempotency": ("hoc_drivers.commands.idempotency", "idempotency", "Look up run idempotency keys."),
    "decisions": ("hoc_drivers.commands.decisions", "decisions", "List and backfill decision records."),
    "care": ("hoc_drivers.commands.decisions", "care", "The CARE optimisation kill switch."),
    "ledger": ("hoc_drivers.commands.ledger", "ledger", "Emit and list discovery ledger signals."),
    "alerts": ("hoc_drivers.commands.alerts", "alerts", "The offline-first alert queue and its sender."),
    "notifications": ("hoc_drivers.commands.notifications", "notifications", "List and acknowledge UI notifications."),
    "guard": ("hoc_drivers.commands.gates", "guard", "Guard console status and snapshot (cached)."),
    "dag": ("hoc_drivers.commands.dag", "dag", "Check, plan and run PLang v2.0 policies."),
    "bench": ("hoc_drivers.commands.bench", "bench", "Benchmarks against raw sqlite3, as ratios."),
    "migrate": ("hoc_drivers.commands.maintenance", "migrate", "Upgrade an older database in place (after a backup)."),
    "backup": ("hoc_drivers.commands.maintenance", "backup", "Copy the database online, while writers run."),
    "settings": ("hoc_drivers.commands.settings", "settings", "Show every setting, its value and its source."),
}

# Leaf commands that never open a database: no `--db` of their own.
NO_DATABASE = {"audit", "bench", "dag check", "dag plan", "dag fmt", "dag test"}

DB_HELP = "SQLite file (overrides env HOC_DRIVERS_DB; default ./hoc.db)."


def _remember_db(ctx, param, value):
    """Keep a `--db` given on the command line (the environment is read only when none is)."""
    if value is not None and not value.strip():
        raise click.BadParameter("must not be empty (leave --db out for ./hoc.db)")
    if value is not None:
        ctx.find_root().meta["hoc.db_path"] = value
    return value


def _use_config(ctx, param, value):
    """Remember `--config FILE` (instead of $HOC_DRIVERS_CONFIG / ./hoc-drivers.toml); the
    settings are loaded only when a command runs, so `--help` stays fast."""
    ctx.meta["hoc.config"] = value
    return value


def _remember_leaf(ctx, param, value):
    """Keep the running command's context, so errors can name its options."""
    ctx.find_root().command.leaf_context = ctx
    return value


def _add_leaf_options(command, path):
    """Give every leaf command `--debug` and (unless in NO_DATABASE) `--db`, as on the root."""
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            _add_leaf_options(sub, f"{path} {name}")
    elif not any(p.name == "debug" for p in command.params):
        command.params.append(click.Option(
            ["--debug"], is_flag=True, expose_value=False, callback=_remember_leaf, is_eager=True,
            help="Show tracebacks on errors and log SQL (credentials redacted)."))
        if path not in NO_DATABASE:
            command.params.append(click.Option(
                ["--db", "db_path"], expose_value=False, callback=_remember_db, is_eager=True,
                metavar="PATH", help=DB_HELP))


def configure_logging(debug):
    """Library log records stay quiet on the terminal unless --debug (errors are reported once);
    with --debug every record is printed, credentials and tokens redacted.

    Called once a command that may log is to run: for each command group but a LazyGroup, which
    calls it when it loads a subcommand, so a gate defined in the group itself loads no logging
    (it calls it before it takes the drivers' path)."""
    import logging

    if debug:
        from hoc_drivers.validation import redact

        class RedactingFormatter(logging.Formatter):
            """Every formatted record (message, arguments, traceback) passed through `redact`."""

            def format(self, record):
                return redact(super().format(record))

        handler = logging.StreamHandler()
        handler.setFormatter(RedactingFormatter("%(levelname)s %(name)s: %(message)s"))
        logging.basicConfig(level=logging.DEBUG, handlers=[handler])
    else:
        logger = logging.getLogger("hoc_drivers")
        if not logger.handlers:
            logger.addHandler(logging.NullHandler())  # no "last resort" printing to stderr


def debugging(ctx):
    """True when the command line of `ctx` (a context of this CLI, or None) has --debug."""
    return ctx is not None and getattr(ctx.find_root().command, "debug", False)


class LazyGroup(click.Group):
    """A command group whose subcommands in `lazy` (name -> "module:attribute") are imported
    only when one runs or a help text lists them."""

    def __init__(self, *args, lazy=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy)

    def list_commands(self, ctx):
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx, name):
        if name not in self.commands and name in self.lazy:
            module, _, attribute = self.lazy[name].partition(":")
            configure_logging(debugging(ctx))
            command = getattr(importlib.import_module(module), attribute)
            _add_leaf_options(command, f"{self.name} {name}")
            self.add_command(command, name)
        return self.commands.get(name)


class HocGroup(click.Group):
    """Lazily imported subcommands, one-line errors and consistent exit codes."""

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attribute, _ = COMMANDS[name]
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, LazyGroup):
            configure_logging(getattr(self, "debug", False))  # only once a command really runs
        _add_leaf_options(command, name)
        return command

    def resolve_command(self, ctx, args):
        """As click's, but a mistyped command name suggests the closest ones (difflib)."""
        name = args[0] if args else None
        if name and not name.startswith("-") and name not in COMMANDS:
            import difflib

            close = difflib.get_close_matches(name, COMMANDS, n=3)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise click.UsageError(f"No such command {name!r}.{hint} (`hoc-drivers --help` lists them)", ctx)
        return super().resolve_command(ctx, args)

    def format_commands(self, ctx, formatter):
        with formatter.section("Commands"):
            formatter.write_dl([(name, text) for name, (_, _, text) in COMMANDS.items()])

    def main(self, args=None, prog_name=None, standalone_mode=True, **extra):
        args = list(sys.argv[1:] if args is None else args)
        debug = self.debug = "--debug" in args
        self.leaf_context = None
        try:
            code = super().main(args, prog_name or "hoc-drivers", standalone_mode=False, **extra)
            code = code if isinstance(code, int) else 0
        except click.exceptions.Exit as exc:
            code = exc.exit_code
        except click.exceptions.NoArgsIsHelpError as exc:  # a bare group: its help, as written
            click.echo(exc.ctx.get_help())
            code = 0
        except Exception as exc:
            if debug:
                import traceback

                from hoc_drivers.validation import redact
                sys.stderr.write(redact(traceback.format_exc()))
            code = _report(exc, self.leaf_context)
        finally:
            settings = sys.modules.get("hoc_drivers.settings")  # loaded only if a command ran
            if settings is not None:
                settings.use_file(None)  # a --config holds for this invocation only
        if standalone_mode:
            sys.exit(code)
        return code


def _option_names(message, ctx):
    """`message` with the command's Python parameter names (webhook_url) as its options (--webhook-url)."""
    for param in ctx.command.params if ctx else ():
        if isinstance(param, click.Option) and "_" in (param.name or ""):
            message = re.sub(rf"\b{param.name}\b", max(param.opts, key=len), message)
    return message


def _report(exc, ctx=None):
    """Print one line on stderr for a failed command (`ctx`: the command that ran); return its exit code."""
    from hoc_drivers.commands.common import EXIT_FAILED, EXIT_USAGE, echo_error

    if isinstance(exc, click.BadParameter) and isinstance(exc.param, click.Argument):
        exc.param_hint = repr(exc.param.human_readable_name)  # ACTION, not {on|off|status}
    if isinstance(exc, click.Abort):
        message, code = "aborted", EXIT_FAILED
    elif isinstance(exc, click.ClickException):
        message, code = exc.format_message(), exc.exit_code
    elif isinstance(exc, ValueError):
        message, code = str(exc), EXIT_USAGE
    else:
        message, code = f"{type(exc).__name__}: {exc}", EXIT_FAILED
    if isinstance(exc if isinstance(exc, ValueError) else exc.__context__, ValueError):
        message = _option_names(message, ctx)  # a check in the library, naming its parameter
    echo_error(re.sub(r"\s*\n\s*", " ", message))  # click's multi-line texts (choices) on one line
    return code


@click.group(cls=HocGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", "db_path", metavar="PATH", callback=_remember_db, expose_value=False,
              help=DB_HELP)
@click.option("--config", type=click.Path(exists=True, dir_okay=False), callback=_use_config,
              expose_value=False, is_eager=True,
              help="Settings file (TOML; overrides env HOC_DRIVERS_CONFIG; default ./hoc-drivers.toml "
                   "if present). Flags and environment variables win over it.")
@click.option("--debug", is_flag=True, expose_value=False,
              help="Show tracebacks on errors and log SQL (credentials redacted).")
@click.version_option("0.1.0", prog_name="hoc-drivers")
def cli():
    """Embedded governance data layer: 13 drivers over one SQLite file.

    Example: hoc-drivers --db ./hoc.db demo
    """
    from hoc_drivers import settings

    settings.use_file(click.get_current_context().meta.get("hoc.config"))
    settings.check_file()
    click.get_current_context().default_map = settings.option_defaults()


def main():
    """Console-script entry point."""
    cli.main()


if __name__ == "__main__":
    main()
