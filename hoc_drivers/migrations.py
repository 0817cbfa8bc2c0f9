"""Upgrades and backups of a database file.

`backup_database(db, dest)` copies the database with SQLite's online backup API
(`sqlite3.Connection.backup` from the database's own connection to a new file): one consistent
snapshot, taken as a reader while other processes keep writing, never a file copy that could
catch a write half-done. The copy is a new file (mode 0600); an existing `dest` is refused.

`migrate_database(path)` brings a file of an older schema version (`schema_parity.schema_version`)
to `SCHEMA_VERSION` in place, after an automatic backup next to it, with Peewee's
`playhouse.migrate.SqliteMigrator`, in one coordinator transaction: a missing column is added
(`add_column`); a column whose NULL-ness or DEFAULT differs from the model gets the model's
(`drop_not_null` / `add_not_null`, `drop_column_default` / `add_column_default`: SQLite cannot
change a column, so playhouse rebuilds the table: a new table, every row copied, the old one
dropped, the new one renamed, its indexes recreated); a table whose primary key changed (schema
3 keys the tables listed in insertion order by `seq`, an INTEGER PRIMARY KEY) is rebuilt the
same way as the model creates it, each row's old rowid becoming its `seq`, so the order is kept;
then missing tables, indexes and triggers are created as `init` creates them. (A changed column
type in a table that is not rebuilt is not migrated: playhouse's `alter_column_type` writes the
column name twice on SQLite; such a difference is reported.) The
migration's own connection has foreign-key enforcement off (dropping a rebuilt table must not
cascade), so `PRAGMA foreign_key_check` must find nothing, and schema parity no difference,
before the COMMIT. Any failure rolls everything back: the file is left as it was.
"""
import ast
import os
import re
import sqlite3
from datetime import datetime, timezone
from functools import lru_cache

from peewee import SchemaManager
from playhouse.migrate import SqliteMigrator

from . import dialect, models
from .db import open_database
from .schema_parity import (SCHEMA_VERSION, _expected_schema, _introspect, compare_schema, models_in_memory,
                            schema_version)
from .transaction_coordinator import TransactionCoordinator


class MigrationError(RuntimeError):
    """The file cannot be migrated (empty, newer than the package, or the upgrade left
    differences); nothing was changed."""


def backup_database(db, dest):
    """Copy the open database `db` to the new file `dest` (mode 0600) with SQLite's online
    backup API: a consistent copy while writers run. FileExistsError for an existing `dest`;
    MigrationError for a PostgreSQL database (use pg_dump)."""
    _require_sqlite(db, "backup copies SQLite files; back a PostgreSQL database up with pg_dump")
    os.close(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    target = sqlite3.connect(dest)
    try:
        db.connection().backup(target)
    except BaseException:
        target.close()
        os.remove(dest)
        raise
    target.close()
    return dest


def _require_sqlite(db, message):
    """MigrationError(`message`) unless `db` is a SQLite database."""
    if dialect.of(db) != dialect.SQLITE:
        raise MigrationError(message)


def _literal(default):
    """A DEFAULT clause's text as `add_column_default` takes it: numbers and quoted text as
    Python values (it writes them back as SQL literals), an expression in parentheses (SQLite
    reports it without them)."""
    try:
        return ast.literal_eval(default)
    except (ValueError, SyntaxError):
        return f"({default})"


def _column_operations(migrator, table, name, actual, expected):
    """The playhouse operations giving column `name` the model's NULL-ness and DEFAULT."""
    (_, actual_null, actual_default), (_, null, default) = actual, expected
    if actual_null != null:
        yield migrator.drop_not_null(table, name) if null else migrator.add_not_null(table, name)
    if actual_default != default:
        if actual_default is not None:
            yield migrator.drop_column_default(table, name)
        if default is not None:
            yield migrator.add_column_default(table, name, _literal(default))


def _rebuild(db, model, old_columns):
    """Rebuild `model`'s table as the model creates it (SQLite cannot change a primary key): a
    new table, every row copied with the columns both have (the old rowid as `seq`, so the
    insertion order is kept), the old table dropped, the new one renamed to its name. Its
    indexes and triggers went with the old table; `create_schema` recreates them."""
    table = model._meta.table_name
    scratch = f"{table}__rebuilt"
    create, _ = SchemaManager(model, db)._create_table(safe=False).query()
    db.execute_sql(create.replace(f'CREATE TABLE "{table}"', f'CREATE TABLE "{scratch}"', 1))
    copied = [name for name in model._meta.columns if name in old_columns]
    targets = ", ".join(f'"{name}"' for name in ["seq", *copied])
    sources = ", ".join(["rowid", *(f'"{name}"' for name in copied)])
    db.execute_sql(f'INSERT INTO "{scratch}" ({targets}) SELECT {sources} FROM "{table}" ORDER BY rowid')
    db.execute_sql(f'DROP TABLE "{table}"')
    db.execute_sql(f'ALTER TABLE "{scratch}" RENAME TO "{table}"')


_SCHEMA_OBJECTS_SQL = ("SELECT type, name, tbl_name, sql FROM sqlite_master "
                       "WHERE type IN ('index', 'trigger', 'view') AND sql IS NOT NULL")


@lru_cache(maxsize=1)
def _own_object_names():
    """The names of the indexes and triggers `init` creates (in a private in-memory database)."""
    with models_in_memory() as memory:
        return frozenset(name for _, name, _, _ in memory.execute_sql(_SCHEMA_OBJECTS_SQL))


def _refuse_foreign_objects(db, tables):
    """MigrationError naming the file's own indexes, triggers and views on `tables` (the ones
    to rebuild): a rebuild would drop the first two, and a view stops it."""
    own, found = _own_object_names(), []
    for kind, name, table, sql in db.execute_sql(_SCHEMA_OBJECTS_SQL):
        mentions = {t for t in tables if re.search(rf'\b{re.escape(t)}\b', sql, re.IGNORECASE)}
        if name not in own and (table in tables if kind != "view" else mentions):
            found.append(f"{kind} {name}")
    if found:
        raise MigrationError(f"migrating rebuilds the tables {', '.join(sorted(tables))}, which would "
                             f"lose what was added to them: {', '.join(found)}; drop those, migrate, "
                             "then create them again (nothing changed)")


def _upgrade(db):
    """Bring every existing table to the models: a table whose primary key changed (schema 3:
    `seq`) is rebuilt (unless the file added its own indexes, triggers or views to it), the
    others get the model's columns (playhouse); then create what is missing as `init` does."""
    migrator = SqliteMigrator(db)
    expected = _expected_schema(tuple(models.ALL_MODELS))
    present = set(db.get_tables())
    tables = {model._meta.table_name: (model, _introspect(db, model._meta.table_name))
              for model in models.ALL_MODELS if model._meta.table_name in present}
    _refuse_foreign_objects(db, {table for table, (_, (_, primary_key, _)) in tables.items()
                                 if primary_key != expected[table][1]})
    for table, (model, (actual, primary_key, _)) in tables.items():
        if primary_key != expected[table][1]:
            _rebuild(db, model, actual)
            continue
        for name, field in model._meta.columns.items():
            if name not in actual:
                migrator.add_column(table, name, field).run()
                continue
            for operation in _column_operations(migrator, table, name, actual[name],
                                                expected[table][0][name]):
                operation.run()
    models.create_schema(db)


def migrate_database(path, backup_path=None, now=None):
    """Upgrade the file at `path` to SCHEMA_VERSION in place, after an online backup to
    `backup_path` (default `<path>.v<N>-<UTC time>.bak`). Returns what was done: versions,
    the backup's path and the differences fixed (MigrationError when it cannot be done)."""
    db = open_database(path, create=False, foreign_keys=False)
    try:
        _require_sqlite(db, "migrate upgrades SQLite files; a PostgreSQL database of an older schema "
                            "is recreated with `hoc-drivers init` on a new database (keep the old one "
                            "with pg_dump)")
        version = schema_version(db)
        result = {"database": path, "from_version": version, "to_version": SCHEMA_VERSION,
                  "backup": None, "fixed": []}
        if version == SCHEMA_VERSION:
            return result
        if version == 0:
            raise MigrationError(f"database {path} has no tables to migrate (create them with "
                                 f"`hoc-drivers init`)")
        if version > SCHEMA_VERSION:
            raise MigrationError(f"database {path} has schema version {version}, newer than "
                                 f"this package's {SCHEMA_VERSION}")
        now = now or datetime.now(timezone.utc)
        result["backup"] = backup_database(db, backup_path or f"{path}.v{version}-{now:%Y%m%dT%H%M%SZ}.bak")
        with TransactionCoordinator(db).transaction():
            result["fixed"] = [str(issue) for issue in compare_schema(db)]
            _upgrade(db)
            left = [str(issue) for issue in compare_schema(db)]
            broken = db.execute_sql("PRAGMA foreign_key_check").fetchall()
            if left or broken:
                raise MigrationError(f"migrating {path} left differences, nothing changed: "
                                     + "; ".join(left + [f"foreign key violation in {row[0]}" for row in broken]))
            db.execute_sql(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return result
    finally:
        db.close()
