"""The few places where SQLite and PostgreSQL need different SQL, in one module.

A guarded database names its dialect (`db.dialect`: "sqlite" or "postgresql") and adds it to
Peewee's SQL context, so a `by_dialect(sqlite=..., postgresql=...)` node inside a query renders
the variant of the database the query is built for (`PreparedQuery` builds once per dialect).
A database that names none (a plain Peewee database) gets the SQLite variant.
"""
import re
from contextlib import nullcontext

from peewee import SQL, Cast, ColumnBase, NodeList, Select, Value, fn

SQLITE = "sqlite"
POSTGRESQL = "postgresql"

# How the coordinator opens a transaction: SQLite takes the write lock at once (one writer at a
# time, no deadlock between two readers upgrading); PostgreSQL opens a read-write transaction
# (the session default is read only: see `pg_guard`).
_BEGIN = {SQLITE: "BEGIN IMMEDIATE", POSTGRESQL: "BEGIN READ WRITE"}


def of(db):
    """The dialect of database `db`."""
    return getattr(db, "dialect", None) or SQLITE


def begin_statement(db):
    """The statement that opens a coordinator transaction on `db`."""
    return _BEGIN[of(db)]


# The channel on which PostgreSQL carries committed facts to every process (`facts.to_payloads`).
FACTS_CHANNEL = "hoc_drivers_facts"
_NOTIFY_FACTS = {SQLITE: None, POSTGRESQL: f"SELECT pg_notify('{FACTS_CHANNEL}', p) FROM unnest(%s::text[]) AS p"}


def notify_facts_sql(db):
    """The statement a coordinator transaction on `db` runs before COMMIT to tell the other
    processes its facts (one parameter: the list of payloads), or None (SQLite: they learn of
    commits by `PRAGMA data_version`)."""
    return _NOTIFY_FACTS[of(db)]


class by_dialect(ColumnBase):  # noqa: N801 (reads as a function call inside a query)
    """A piece of SQL with one variant per dialect (each a Peewee node)."""

    def __init__(self, sqlite, postgresql):
        self.variants = {SQLITE: sqlite, POSTGRESQL: postgresql}

    def __sql__(self, ctx):
        return ctx.sql(self.variants[ctx.state.dialect or SQLITE])


def skip_locked(query):
    """SELECT `query` with each row it returns locked for this transaction, skipping rows
    another transaction holds (PostgreSQL's FOR UPDATE SKIP LOCKED: concurrent claimers take
    different rows). On SQLite the query as it is: BEGIN IMMEDIATE already made the
    transaction the only writer."""
    return NodeList([query, by_dialect(SQL(""), SQL("FOR UPDATE SKIP LOCKED"))])


def for_update(query, db):
    """Peewee SELECT `query`, to run on `db`, locking the rows it returns until the transaction
    ends (PostgreSQL's FOR UPDATE: a concurrent transaction locking or writing those rows
    waits, and then reads them as this one committed them). On SQLite `query` as it is: BEGIN IMMEDIATE already made
    the transaction the only writer."""
    return query.for_update() if of(db) == POSTGRESQL else query


# Transaction-scoped advisory lock on the pair (hashtext(name), hashtext(tenant)).
_TENANT_LOCK_SQL = {SQLITE: None, POSTGRESQL: "SELECT pg_advisory_xact_lock(hashtext(%s), hashtext(%s))"}


def tenant_lock(tx, name, tenant):
    """Make the coordinator transactions that take lock `name` for `tenant` (or a scope, which
    plays the tenant's role) run one after the other: `tx` waits here until the one holding it
    ends (PostgreSQL: a transaction-scoped advisory lock, released at COMMIT or ROLLBACK; other
    names and tenants are not held up). On SQLite nothing: BEGIN IMMEDIATE already made `tx`
    the only writer."""
    sql = _TENANT_LOCK_SQL[of(tx.db)]
    if sql is not None:
        tx.db.execute_sql(sql, (name, tenant))


def json_member_text(column, key):
    """The text of member `key` of the JSON object in `column` (an array as its JSON text)."""
    return by_dialect(fn.json_extract(column, f"$.{key}").coerce(False),
                      NodeList([_as_jsonb(column), SQL("->>"), Value(key, converter=False)]))


def contains_text(text, part):
    """True where `part` occurs in `text` (SQLite's instr, PostgreSQL's strpos)."""
    return by_dialect(fn.instr(text, part), fn.strpos(text, part)) > 0


def _as_jsonb(node):
    return Cast(node, "jsonb")


# Functions the schema needs on PostgreSQL (SQLite has them built in), created before the tables.
SCHEMA_FUNCTIONS = {SQLITE: [], POSTGRESQL: [
    # RFC 7396 JSON merge patch, as SQLite's json_patch
    "CREATE OR REPLACE FUNCTION hoc_json_merge_patch(target jsonb, patch jsonb) RETURNS jsonb "
    "LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN "
    "IF jsonb_typeof(patch) IS DISTINCT FROM 'object' THEN RETURN patch; END IF; "
    "RETURN (SELECT coalesce(jsonb_object_agg(key, value), '{}'::jsonb) FROM ("
    "SELECT coalesce(t.key, p.key) AS key, CASE WHEN p.key IS NULL THEN t.value "
    "WHEN jsonb_typeof(p.value) = 'null' THEN NULL "
    "ELSE hoc_json_merge_patch(t.value, p.value) END AS value "
    "FROM jsonb_each(CASE WHEN jsonb_typeof(target) = 'object' THEN target ELSE '{}' END) t "
    "FULL JOIN jsonb_each(patch) p ON t.key = p.key) merged WHERE value IS NOT NULL); END $$"]}


def json_merge_patch(target, patch):
    """`target` JSON text with `patch` merged in (RFC 7396: new keys win, objects merge
    recursively, a null deletes its key): SQLite's json_patch, PostgreSQL's hoc_json_merge_patch
    (`SCHEMA_FUNCTIONS`)."""
    return by_dialect(fn.json_patch(target, patch),
                      Cast(fn.hoc_json_merge_patch(_as_jsonb(target), _as_jsonb(patch)), "text"))


def id_list(parameter):
    """A subquery of the ids in `parameter`, one JSON array text (`column IN id_list(...)`)."""
    return Select([by_dialect(fn.json_each(parameter),
                              fn.jsonb_array_elements_text(_as_jsonb(parameter)))], [SQL("value")])


def insertion_order(descending=False):
    """A tie-break by insertion order: the `seq` column of the tables listed in that order
    (`models.base.insertion_seq`: the rowid itself on SQLite, a BIGSERIAL on PostgreSQL; never
    rowid or ctid, which VACUUM and UPDATE can change)."""
    return SQL("seq DESC" if descending else "seq")


def now_default():
    """A column DEFAULT of the current UTC time in `UtcDateTimeField`'s stored form."""
    return by_dialect(SQL("DEFAULT (strftime('%Y-%m-%d %H:%M:%f000', 'now'))"),
                      SQL("DEFAULT (now() AT TIME ZONE 'UTC')"))


def literal_default(value):
    """A column DEFAULT of constant `value` (booleans as SQLite's 0/1 or PostgreSQL's false/true)."""
    if isinstance(value, bool):
        return by_dialect(SQL(f"DEFAULT {int(value)}"), SQL(f"DEFAULT {str(value).lower()}"))
    return SQL(f"DEFAULT {value}")


def refusing_trigger(name, table, event, message, when=None):
    """DDL of a trigger refusing `event` (INSERT, UPDATE, ...) on rows of `table` for which
    `when` holds (SQL over NEW / OLD: one text for both dialects, or a dict by dialect; None:
    every row), failing the statement with `message` (an IntegrityError on both): a dict of
    statement lists by dialect."""
    whens = when if isinstance(when, dict) else {SQLITE: when, POSTGRESQL: when}
    return {
        SQLITE: [f"CREATE TRIGGER IF NOT EXISTS {name} BEFORE {event} ON {table} "
                 + (f"WHEN {whens[SQLITE]} " if when else "")
                 + f"BEGIN SELECT RAISE(ABORT, '{message}'); END"],
        POSTGRESQL: [
            f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"RAISE EXCEPTION '{message}' USING ERRCODE = 'integrity_constraint_violation'; END $$",
            f"CREATE OR REPLACE TRIGGER {name} BEFORE {event} ON {table} FOR EACH ROW "
            + (f"WHEN ({whens[POSTGRESQL]}) " if when else "") + f"EXECUTE FUNCTION {name}()"],
    }


def immutable_columns_trigger(name, table, statuses, columns, message):
    """DDL (statement lists by dialect) of a trigger refusing UPDATEs that change `columns` of
    a row whose status is in `statuses`, with `message`."""
    quoted = ", ".join(f"'{s}'" for s in statuses)

    def when(differs):
        return f"OLD.status IN ({quoted}) AND (" + " OR ".join(
            f"NEW.{c} {differs} OLD.{c}" for c in columns) + ")"

    return refusing_trigger(name, table, "UPDATE", message,
                            {SQLITE: when("IS NOT"), POSTGRESQL: when("IS DISTINCT FROM")})


_SCHEMA_VERSION_SQL = {
    SQLITE: "PRAGMA user_version",
    POSTGRESQL: "SELECT coalesce(substring(obj_description('public'::regnamespace, 'pg_namespace')"
                " from '^hoc_drivers schema ([0-9]+)$')::int, 0)"}
_TABLE_COUNT_SQL = {
    SQLITE: "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
    POSTGRESQL: "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()"}


def schema_version_sql(db):
    """The query of the schema version recorded in `db` (0 when none is)."""
    return _SCHEMA_VERSION_SQL[of(db)]


def set_schema_version_sql(db, version):
    """The statement recording schema `version` in `db` (SQLite: user_version; PostgreSQL: the
    comment on schema public)."""
    if of(db) == POSTGRESQL:
        return f"COMMENT ON SCHEMA public IS 'hoc_drivers schema {int(version)}'"
    return f"PRAGMA user_version = {int(version)}"


def table_count_sql(db):
    """The query counting the tables of `db` (its own, not the engine's catalog)."""
    return _TABLE_COUNT_SQL[of(db)]


_CATALOG_SQL = {
    SQLITE: "SELECT type, name, sql FROM sqlite_master ORDER BY name",
    POSTGRESQL: (
        "SELECT 'table', c.relname::text, NULL FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = current_schema() AND c.relkind = 'r'"
        " UNION ALL SELECT 'index', indexname::text, indexdef FROM pg_indexes"
        " WHERE schemaname = current_schema()"
        " UNION ALL SELECT 'trigger', t.tgname::text, pg_get_triggerdef(t.oid) FROM pg_trigger t"
        " JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = current_schema() AND NOT t.tgisinternal"
        " UNION ALL SELECT 'column', c.relname || '.' || a.attname, format_type(a.atttypid, a.atttypmod)"
        " || ' ' || a.attnotnull || ' ' || coalesce(pg_get_expr(d.adbin, d.adrelid), '') FROM pg_attribute a"
        " JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
        " WHERE n.nspname = current_schema() AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped"
        " ORDER BY 1, 2")}


def catalog_sql(db):
    """The query listing `db`'s schema objects: (type, name, definition) rows by name."""
    return _CATALOG_SQL[of(db)]


def failed_statement_aborts_transaction(db):
    """True when a failing statement aborts `db`'s whole transaction (PostgreSQL) instead of
    being undone alone with the transaction kept open (SQLite's statement journal)."""
    return of(db) == POSTGRESQL


def statement_savepoint(db):
    """For a read whose failure the caller survives: the statement savepoint of the coordinator
    transaction open on `db` in this thread (`Transaction.statement_savepoint`), else nothing."""
    tx = db.current_unit() if hasattr(db, "current_unit") else None
    return nullcontext() if tx is None else tx.statement_savepoint()


_TRIGGERS_SQL = {
    SQLITE: "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?",
    POSTGRESQL: ("SELECT t.tgname::text, pg_get_triggerdef(t.oid) FROM pg_trigger t"
                 " JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
                 " WHERE n.nspname = current_schema() AND c.relname = %s AND NOT t.tgisinternal")}


def triggers_sql(db):
    """The query of (name, definition) of each trigger on one table (its name the parameter)."""
    return _TRIGGERS_SQL[of(db)]


# The names PostgreSQL's catalog (information_schema.columns.data_type) gives the column types
# Peewee declares (others are their own name); a serial is an integer with a sequence default.
_PG_CATALOG_TYPES = {"VARCHAR": "CHARACTER VARYING", "TIMESTAMP": "TIMESTAMP WITHOUT TIME ZONE",
                     "BIGSERIAL": "BIGINT", "SERIAL": "INTEGER"}
_PG_CAST = re.compile(r"::[a-z][a-z ]*(?:\[\])?")  # pg_get_expr's casts: 'UTC'::text


def pg_catalog_type(declared):
    """Declared column type `declared` (Peewee's DDL: VARCHAR(255)) as PostgreSQL's catalog
    reports it (its information_schema name in upper case, no length). SQLite's catalog reports
    the declaration itself."""
    base = declared.split("(")[0].strip().upper()
    return _PG_CATALOG_TYPES.get(base, base)


def catalog_default(db, text):
    """A column default's text (a DEFAULT clause without its keyword, or the catalog's
    expression) in one spelling for comparing: on PostgreSQL lower case without casts or outer
    parentheses, and None for a serial's `nextval(...)` (the type says it); SQLite's as it is."""
    if text is None or of(db) != POSTGRESQL:
        return text
    text = " ".join(_PG_CAST.sub("", text.lower()).split())
    while text.startswith("(") and text.endswith(")"):
        text = text[1:-1].strip()
    return None if text.startswith("nextval(") else text
