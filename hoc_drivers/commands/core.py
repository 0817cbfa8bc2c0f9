"""CLI: init, run complete, schema check, audit."""
import click

from .common import (EXIT_FAILED, CliError, emit, get_coordinator, get_db, json_option, non_empty, tenant_option,
                     text_option)


@click.command()
@json_option
def init(as_json):
    """Create the database file (mode 0600) and every missing table; safe to run again.

    The only command (with demo) that creates a database. Exit 1 if the file still differs from
    the models afterwards (a changed column: see `hoc-drivers schema check`).

    Example: hoc-drivers --db ./hoc.db init
    """
    from ..models import ALL_MODELS

    db = get_db(create=True)
    emit({"database": db.database, "tables": len(ALL_MODELS)}, as_json)


@click.group()
def run():
    """Run lifecycle commands."""


@run.command("complete")
@click.argument("run_id", callback=non_empty)
@tenant_option
@click.option("--status", "run_status", required=True,
              help="Final run status, e.g. succeeded, failed, halted.")
@text_option("--agent", "agent_id", help="Agent that ran it.")
@text_option("--error-code", help="Error code of a failed run.")
@click.option("--error-message", help="Error message of a failed run.")
@text_option("--trace-id", help="Trace to mark completed.")
@json_option
def complete(run_id, tenant_id, run_status, agent_id, error_code, error_message, trace_id, as_json):
    """Complete a run: incident (if failed), policy evaluation and trace, in one transaction.

    Example: hoc-drivers run complete run-42 --tenant acme --status failed --error-message "AGENT_CRASH"
    """
    from ..run_completion import RUN_STATUSES, RunCompletionTransaction, TransactionFailed

    if run_status not in RUN_STATUSES:
        raise CliError(f"unknown status {run_status!r} (expected one of: {', '.join(RUN_STATUSES)})")
    transaction = RunCompletionTransaction(get_coordinator())
    try:
        result = transaction.execute(tenant_id, run_id, run_status, agent_id=agent_id,
                                     error_code=error_code, error_message=error_message,
                                     trace_id=trace_id)
    except TransactionFailed as exc:
        raise CliError(f"{exc} (phase {exc.phase.value})", EXIT_FAILED) from None
    data = result.to_dict()
    if as_json:
        emit(data, True)
    else:
        emit({"run_id": run_id, "phase": data["phase"],
              "incident_id": data["incident"] and data["incident"]["result_id"],
              "policy_id": data["policy"]["result_id"],
              "trace": data["trace"] and ("completed" if data["trace"]["success"] else data["trace"]["error"]),
              "events": ", ".join(data["events_published"])}, False)


@click.group()
def schema():
    """Schema commands."""


@schema.command("check")
@click.option("--integrity", is_flag=True,
              help="Full PRAGMA integrity_check (also every index against its table; reads the "
                   "whole file) instead of the default quick_check.")
@json_option
def schema_check(integrity, as_json):
    """Check the file's integrity (PRAGMA quick_check) and compare the database with the models;
    exit 1 listing every difference and every corruption found (INTEGRITY).

    Example: hoc-drivers --db ./hoc.db schema check --integrity --json
    """
    from ..schema_parity import check_database

    issues = check_database(get_db(check_schema=False), full_integrity=integrity)
    errors = [i for i in issues if i.is_error]
    if as_json:
        emit({"ok": not errors, "issues": [i.to_dict() for i in issues]}, True)
    else:
        for issue in issues:
            click.echo(("error   " if issue.is_error else "warning ") + str(issue))
        corrupt = sum(i.kind == "INTEGRITY" for i in errors)
        warnings = f"{len(issues) - len(errors)} warning(s)"
        click.echo(f"schema OK, {warnings}" if not errors else
                   f"{len(errors) - corrupt} schema difference(s), {corrupt} integrity problem(s), {warnings}")
    if errors:
        click.get_current_context().exit(EXIT_FAILED)


@click.command()
@click.option("--source", type=click.Path(exists=True, file_okay=False),
              help="Package directory to audit (default: the installed hoc_drivers).")
@json_option
def audit(source, as_json):
    """Audit our own drivers from their source: access, commits, verdict; exit 1 on a violation.

    Example: hoc-drivers audit --json
    """
    from ..audit import audit_package

    rows = audit_package(source)
    violations = [r for r in rows if r.verdict != "OK"]
    if as_json:
        emit({"ok": not violations, "rows": [r.to_dict() for r in rows]}, True)
    else:
        emit([r.to_dict() for r in rows], False,
             ["script", "purpose", "access", "transaction", "verdict"])
        for row in violations:
            click.echo(f"VIOLATION {row.script}: " + "; ".join(row.problems), err=True)
        ok = len(rows) - len(violations)
        click.echo(f"\n{ok}/{len(rows)} modules pass the governance checks.")
    if violations:
        click.get_current_context().exit(EXIT_FAILED)
