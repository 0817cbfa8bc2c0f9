"""Startup Schema Parity Guard: the database must match the models.

The expected schema is what Peewee itself creates for the models (built in a private
in-memory database); both sides are read with Peewee's own introspection
(`get_tables`, `get_columns`, `get_primary_keys`, `get_indexes`) and compared, column
defaults (the text of each DEFAULT clause) included. Triggers, which
Peewee does not model, are declared on the model (`TRIGGERS`: name -> CREATE statement) and
compared with `sqlite_master`. On PostgreSQL the expected columns come from the models'
declarations spelled as its catalog spells them (`dialect.pg_catalog_type` / `catalog_default`:
`character varying`, casts left out), compared with the catalog (Peewee's introspection of
information_schema), and triggers by name (the catalog rewrites their text).

The start-up guard (`run_startup_parity_check`) is cheap when nothing drifted: it first compares
the file's user_version and the digest of its CREATE statements (one query on `sqlite_master`)
with those of the statements `init` sends (`schema_digest`, which needs no Peewee: the CLI's
gates run the same check), and only when they differ introspects table by table to name the
differences; before that it refuses a file of an older schema version (`OlderSchema`: run
`hoc-drivers migrate`). `integrity_issues`
runs SQLite's own `quick_check` / `integrity_check` and reports corruption.
"""
import re
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache

from peewee import DatabaseError, SqliteDatabase

from .dialect import SQLITE, catalog_default, pg_catalog_type, schema_version_sql, table_count_sql, triggers_sql
from .dialect import of as dialect_of
from .models import ALL_MODELS, create_schema
from .schema_digest import SCHEMA_VERSION, STATEMENTS_SQL, is_current, schema_digest
from .validation import require_database

ACCESS = "READ"

M26_COST_TABLES = ("feature_tags", "cost_records", "cost_anomalies", "cost_budgets",
                   "cost_daily_aggregates")


class OlderSchema(RuntimeError):
    """The file was written by an older schema version; `hoc-drivers migrate` upgrades it."""

    def __init__(self, path, version):
        self.version = version
        super().__init__(f"database {path} has an older schema (version {version}); "
                         f"run `hoc-drivers migrate`")


def schema_version(db):
    """The file's schema version: its user_version, else 1 for a file with tables written before
    versions were recorded, else 0 (no tables yet)."""
    (version,) = db.execute_sql(schema_version_sql(db)).fetchone()
    if version:
        return version
    (tables,) = db.execute_sql(table_count_sql(db)).fetchone()
    return 1 if tables else 0


def check_schema_version(db):
    """Raise OlderSchema for a file of an older schema version (an empty file passes)."""
    version = schema_version(db)
    if 0 < version < SCHEMA_VERSION:
        raise OlderSchema(db.database, version)


class SchemaParityError(RuntimeError):
    """The database does not match the models; `errors` lists every difference."""

    def __init__(self, errors):
        self.errors = list(errors)
        super().__init__("schema parity failed:\n" + "\n".join(f"  {e}" for e in self.errors))


@dataclass(frozen=True)
class ParityIssue:
    """One difference between the models and the database."""

    # TABLE_MISSING, COLUMN_MISSING, COLUMN_TYPE, COLUMN_NULL, PRIMARY_KEY, INDEX, TRIGGER,
    # COLUMN_EXTRA and COLUMN_DEFAULT (warnings; errors in the cost tables), INTEGRITY (table
    # "database": the file is corrupt)
    kind: str
    table: str
    detail: str
    is_error: bool = True

    def __str__(self):
        return f"{self.kind} {self.table}: {self.detail}"

    def to_dict(self):
        """JSON-ready dict."""
        return {"kind": self.kind, "table": self.table, "detail": self.detail,
                "severity": "error" if self.is_error else "warning"}


def _predicate(sql):
    """The WHERE clause of a partial index, lower-cased without quotes ("" for a full index)."""
    parts = re.split(r"\bwhere\b", sql or "", maxsplit=1, flags=re.IGNORECASE)
    if len(parts) < 2:
        return ""
    return " ".join(re.sub(r'["`\[\]]', "", parts[1]).lower().split()).strip("() ")


def _introspect(db, table):
    """(columns {name: (type, null, default)}, primary key list,
    indexes {(columns, unique, where): name}); a default is its DEFAULT clause's text or None."""
    columns = {c.name: (c.data_type.upper(), c.null, c.default) for c in db.get_columns(table)}
    indexes = {(tuple(i.columns), i.unique, _predicate(i.sql)): i.name
               for i in db.get_indexes(table)}
    return columns, db.get_primary_keys(table), indexes


def _normal_sql(sql):
    """A CREATE statement lower-cased, single-spaced and without IF NOT EXISTS (as SQLite stores it)."""
    return " ".join(re.sub(r"\bif\s+not\s+exists\b", "", sql.lower()).split())


def _trigger_issues(db, model):
    """TRIGGER errors: each trigger the model declares must exist, with the model's statement."""
    table = model._meta.table_name
    actual = dict(db.execute_sql(triggers_sql(db), (table,)).fetchall())
    same_text = dialect_of(db) == SQLITE  # PostgreSQL's triggers are checked by name
    issues = []
    for name, statements in getattr(model, "TRIGGERS", {}).items():
        (sql,) = statements[SQLITE]
        if name not in actual:
            issues.append(ParityIssue("TRIGGER", table, f"trigger {name} is missing"))
        elif same_text and _normal_sql(actual[name]) != _normal_sql(sql):
            issues.append(ParityIssue("TRIGGER", table, f"trigger {name} differs from the model's"))
    return issues


def _declared_columns(db, model):
    """{column: (type, null, default)} of `model` as PostgreSQL database `db`'s catalog spells
    them (from the model's declarations: `dialect.pg_catalog_type`, `dialect.catalog_default`)."""
    ctx = db.get_sql_context()
    columns = {}
    for field in model._meta.sorted_fields:
        clauses = [db.get_sql_context().sql(node).query()[0] for node in field.constraints or ()]
        default = next((text[len("DEFAULT "):] for text in clauses if text.upper().startswith("DEFAULT ")), None)
        columns[field.column_name] = (pg_catalog_type(field.ddl_datatype(ctx).sql),
                                      field.null and not field.primary_key, catalog_default(db, default))
    return columns


@contextmanager
def models_in_memory(models=tuple(ALL_MODELS)):
    """A private in-memory SQLite database holding what `create_schema` makes of `models`."""
    memory = SqliteDatabase(":memory:")
    try:
        create_schema(memory, models, safe=False)
        yield memory
    finally:
        memory.close()


@lru_cache(maxsize=None)
def _expected_schema(models):
    """The schema Peewee creates for `models`, introspected from a private in-memory database."""
    with models_in_memory(models) as memory:
        return {m._meta.table_name: _introspect(memory, m._meta.table_name) for m in models}


def expected_digest(models=tuple(ALL_MODELS)):
    """The `schema_digest` of the file `create_schema` makes of `models` (of all of them: what
    schema_digest.SCHEMA_DIGEST must hold), made in a private in-memory database."""
    with models_in_memory(models) as memory:
        return schema_digest(sql for (sql,) in memory.execute_sql(STATEMENTS_SQL))


def compare_schema(db, models=None):
    """Every difference between `models` (default: all) and the database `db`, errors and
    warnings (TypeError when `db` is not a database)."""
    require_database(db)
    if models is None:
        models = ALL_MODELS
    expected = _expected_schema(tuple(models))
    present = set(db.get_tables())
    issues = []
    for model in models:
        if model._meta.table_name in present:
            issues.extend(_trigger_issues(db, model))
    for model in models:
        table = model._meta.table_name
        columns, primary_key, indexes = expected[table]
        if table not in present:
            issues.append(ParityIssue("TABLE_MISSING", table, "table does not exist"))
            continue
        if dialect_of(db) != SQLITE:  # the model's columns as this catalog spells them
            columns = _declared_columns(db, model)
        actual_columns, actual_pk, actual_indexes = _introspect(db, table)
        for name, (data_type, null, default) in columns.items():
            if name not in actual_columns:
                issues.append(ParityIssue("COLUMN_MISSING", table, f"column {name} is missing"))
                continue
            actual_type, actual_null, actual_default = actual_columns[name]
            actual_default = catalog_default(db, actual_default)
            if actual_type != data_type:
                issues.append(ParityIssue("COLUMN_TYPE", table,
                                          f"column {name} is {actual_type}, expected {data_type}"))
            if actual_null != null:
                want = "NULL" if null else "NOT NULL"
                issues.append(ParityIssue("COLUMN_NULL", table, f"column {name} should be {want}"))
            if actual_default != default:
                issues.append(ParityIssue("COLUMN_DEFAULT", table, f"column {name} has default "
                                          f"{actual_default}, expected {default}", is_error=False))
        if actual_pk != primary_key:
            issues.append(ParityIssue("PRIMARY_KEY", table,
                                      f"primary key is {actual_pk}, expected {primary_key}"))
        for key, name in indexes.items():
            if key not in actual_indexes:
                unique = "unique " if key[1] else ""
                where = f" where {key[2]}" if key[2] else ""
                issues.append(ParityIssue("INDEX", table, f"{unique}index {name} on "
                                          f"({', '.join(key[0])}){where} is missing"))
        for name in actual_columns.keys() - columns.keys():
            issues.append(ParityIssue("COLUMN_EXTRA", table, f"column {name} is not in the model",
                                      is_error=False))
    return issues


def check_schema_parity(db, models=None, hard_fail=True):
    """Return (ok, errors); with `hard_fail`, raise SchemaParityError listing every error."""
    errors = [i for i in compare_schema(db, models) if i.is_error]
    if errors and hard_fail:
        raise SchemaParityError(errors)
    return not errors, errors


def _strict_in_cost_tables(issues):
    """`issues`, each one on an M26 cost table made an error (those tables must match exactly)."""
    return [replace(i, is_error=True) if i.table in M26_COST_TABLES else i for i in issues]


def check_m26_cost_tables(db):
    """The five M26 cost tables must match exactly (an extra column or a different default
    too: every difference is an error); raises SchemaParityError."""
    cost_models = [m for m in ALL_MODELS if m._meta.table_name in M26_COST_TABLES]
    declared = {m._meta.table_name for m in cost_models}
    undeclared = [ParityIssue("TABLE_MISSING", t, "no model declares this table")
                  for t in M26_COST_TABLES if t not in declared]
    errors = undeclared + _strict_in_cost_tables(compare_schema(db, cost_models))
    if errors:
        raise SchemaParityError(errors)
    return True


def run_startup_parity_check(db):
    """An older schema version is refused (OlderSchema); then cost tables hard-fail
    (SchemaParityError); every other difference is reported.

    A database holding exactly the statements `init` creates passes after two queries (its
    user_version, its CREATE statements: `schema_digest.is_current`); only one that differs is
    compared table by table (a migrated file: columns added by ALTER TABLE sit last, so its
    statements differ)."""
    (version,) = db.execute_sql(schema_version_sql(db)).fetchone()
    if dialect_of(db) == SQLITE and is_current(version, [sql for (sql,) in db.execute_sql(STATEMENTS_SQL)]):
        return {"ok": True, "errors": [], "warnings": []}
    check_schema_version(db)
    check_m26_cost_tables(db)
    issues = compare_schema(db)
    return {"ok": not any(i.is_error for i in issues),
            "errors": [i for i in issues if i.is_error],
            "warnings": [i for i in issues if not i.is_error]}


_READ_ERRORS = (DatabaseError, sqlite3.DatabaseError)  # peewee wraps execute, not fetch


def integrity_issues(db, full=False):
    """SQLite's verdict on the file: `PRAGMA quick_check` (structure and constraints), or with
    `full` `PRAGMA integrity_check` (also every index against its table; slower). One INTEGRITY
    error per problem reported (SQLite stops at 100), plus one naming the error when the check
    itself cannot read on; [] for a sound file."""
    pragma = "integrity_check" if full else "quick_check"
    issues = []
    try:
        for (message,) in db.execute_sql(f"PRAGMA {pragma}"):
            if message != "ok":
                issues.append(ParityIssue("INTEGRITY", "database", message))
    except _READ_ERRORS as exc:
        issues.append(ParityIssue("INTEGRITY", "database", f"{pragma} stopped: {exc}"))
    return issues


def check_database(db, full_integrity=False):
    """What `hoc-drivers schema check` reports: `integrity_issues`, then `compare_schema` (every
    difference in an M26 cost table an error, as the start-up guard has it). When
    the file is too damaged to read its schema, the INTEGRITY findings say so (the read error
    propagates only for a file that passed its integrity check)."""
    issues = integrity_issues(db, full_integrity)
    try:
        return issues + _strict_in_cost_tables(compare_schema(db))
    except _READ_ERRORS:
        if not issues:
            raise
        return issues
