"""CLI: migrate (upgrade an older file in place, after a backup) and backup (an online copy).

Neither runs the start-up schema guard: migrate exists for the files it refuses, and a backup
copies whatever the file holds."""
import click

from .common import EXIT_FAILED, CliError, emit, get_db, json_option


def _backup_error(dest, exc):
    """The one-line error for a backup file that cannot be written (bad input, exit 2)."""
    return CliError(f"cannot write backup {dest}: {exc.strerror or exc}")


@click.command()
@click.option("--backup", "backup_path", type=click.Path(dir_okay=False), metavar="PATH",
              help="Where the automatic backup goes (a new file; default <db>.v<N>-<UTC time>.bak).")
@json_option
def migrate(backup_path, as_json):
    """Upgrade a database written by an older schema version in place, after an automatic online
    backup: missing columns added, changed defaults rebuilt (every row kept), missing tables and
    indexes created, all in one transaction; then the file records the new schema version. A
    current file is left alone. Exit 1 if the file cannot be migrated (nothing is changed).

    Example: hoc-drivers --db ./hoc.db migrate
    """
    from ..migrations import MigrationError, migrate_database

    path = get_db(check_schema=False).database
    try:
        result = migrate_database(path, backup_path)
    except MigrationError as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    except FileExistsError as exc:
        raise _backup_error(exc.filename, exc) from None
    if as_json:
        emit(result, True)
    else:
        for finding in result["fixed"]:
            click.echo(f"fixed   {finding}")
        click.echo(f"schema version {result['from_version']} -> {result['to_version']}"
                   + (f", backup {result['backup']}" if result["backup"] else " (already current)"))


@click.command()
@click.argument("dest", type=click.Path(dir_okay=False))
@json_option
def backup(dest, as_json):
    """Copy the database to DEST, a new file, with SQLite's online backup API: a consistent
    copy taken while other processes keep writing (not a file copy).

    Example: hoc-drivers --db ./hoc.db backup ./hoc-2026-11-29.db
    """
    from ..migrations import MigrationError, backup_database

    db = get_db(check_schema=False)
    try:
        backup_database(db, dest)
    except MigrationError as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    except OSError as exc:
        raise _backup_error(dest, exc) from None
    emit({"database": db.database, "backup": dest}, as_json)
