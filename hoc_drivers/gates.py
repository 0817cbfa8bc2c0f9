"""The read path of the CLI's deploy gates: the standard sqlite3 module, read-only, no Peewee.

`signals check`, `killswitch status` and `guard status` are what deploy scripts call in a loop,
so they start as fast as `hoc-drivers --help`: `connect(path)` opens the file read-only
(`mode=ro`) and gives a connection only when the start-up guard's cheap check passes
(`schema_digest.is_current`), and the three reads below run the very SELECTs the Peewee readers
run (tests/test_gates.py compares the statements both execute, values included) and hand the
rows to the same functions (hoc_drivers.verdicts). Any other file (missing, not a plain file,
drifted, of an older schema) gets None, and the CLI takes the drivers' path, which names the
problem as every command does. Only SELECTs.
"""
import json
import os
import sqlite3
from pathlib import Path
from types import SimpleNamespace

from .schema_digest import STATEMENTS_SQL, is_current
from .verdicts import (any_blocked, as_utc, db_time, governance_verdict, guard_status, never_frozen,
                       switch_status, utcnow)

ACCESS = "READ"

BUSY_TIMEOUT_MS = 30_000  # how long a statement waits for a writer's lock (db.py's too)

SIGNAL_FIELDS = ("id", "seq", "signal_type", "scope", "decision", "reason", "constraints", "recorded_by",
                 "recorded_at", "expires_at", "superseded_by", "superseded_at")
KILLSWITCH_FIELDS = ("id", "seq", "tenant_id", "entity_type", "entity_id", "is_frozen", "frozen_at", "frozen_by",
                     "freeze_reason", "frozen_until", "auto_triggered", "trigger_type", "unfrozen_at",
                     "unfrozen_by", "unfreeze_reason", "created_at", "updated_at")


def _select(fields):
    return "SELECT " + ", ".join(f'"t1"."{name}"' for name in fields)


# The statements, as Peewee writes them for the readers' queries.
_ACTIVE = '("t1"."scope" = ?) AND ("t1"."superseded_at" IS NULL)'
_UNEXPIRED = '(("t1"."expires_at" IS NULL) OR ("t1"."expires_at" > ?))'
_SIGNALS = f'{_select(SIGNAL_FIELDS)} FROM "governance_signals" AS "t1" WHERE '
_OLDEST_FIRST = ' ORDER BY "t1"."recorded_at", "t1"."id"'
SIGNALS_SQL = f"{_SIGNALS}(({_ACTIVE}) AND {_UNEXPIRED}){_OLDEST_FIRST}"
SIGNALS_OF_TYPE_SQL = f'{_SIGNALS}((({_ACTIVE}) AND ("t1"."signal_type" = ?)) AND {_UNEXPIRED}){_OLDEST_FIRST}'
ACTIVE_DECISIONS_SQL = f'SELECT "t1"."decision" FROM "governance_signals" AS "t1" WHERE (({_ACTIVE}) AND {_UNEXPIRED})'
_FROZEN = '("t1"."is_frozen" AND (("t1"."frozen_until" IS NULL) OR ("t1"."frozen_until" > ?)))'
_SWITCH_KEY = '((("t1"."tenant_id" = ?) AND ("t1"."entity_type" = ?)) AND ("t1"."entity_id" = ?))'
KILLSWITCH_SQL = f'{_select(KILLSWITCH_FIELDS)} FROM "killswitch_state" AS "t1" WHERE {_SWITCH_KEY} LIMIT ?'
TENANT_SWITCH_SQL = (f'SELECT {_FROZEN}, "t1"."frozen_at", "t1"."frozen_by", "t1"."freeze_reason", '
                     f'"t1"."frozen_until" FROM "killswitch_state" AS "t1" WHERE {_SWITCH_KEY} LIMIT ?')
STATUS_COUNTS_SQL = (
    'SELECT (SELECT COUNT(*) FROM "killswitch_state" AS "t1" WHERE ((("t1"."tenant_id" = ?) AND '
    f'("t1"."entity_type" = ?)) AND {_FROZEN})), (SELECT COUNT(*) FROM "incidents" AS "t2" WHERE '
    '(("t2"."tenant_id" = ?) AND ("t2"."status" = ?))), (SELECT MAX("t2"."created_at") FROM '
    '"incidents" AS "t2" WHERE ("t2"."tenant_id" = ?)), (SELECT MIN("t1"."frozen_until") FROM '
    f'"killswitch_state" AS "t1" WHERE (("t1"."tenant_id" = ?) AND {_FROZEN}))')


def _json(text):
    """A JSON column as Peewee's JSONField reads it (text that is not JSON stays text)."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


# How a column's stored value becomes its Python value (the models' fields' python_value).
_CONVERT = {**dict.fromkeys(("recorded_at", "expires_at", "superseded_at", "frozen_at", "frozen_until",
                             "unfrozen_at", "created_at", "updated_at"), as_utc),
            "is_frozen": lambda value: None if value is None else bool(value),
            "auto_triggered": lambda value: None if value is None else bool(value),
            "constraints": _json}


def _row(fields, values):
    """A row as an object with the model's field names as attributes, values as Peewee reads them."""
    return SimpleNamespace(**{name: _CONVERT[name](value) if name in _CONVERT else value
                              for name, value in zip(fields, values, strict=True)})


def connect(path):
    """A read-only connection to the database file at `path` when it is a readable and writable
    file whose schema is the current one (user_version and CREATE statements: the start-up
    guard's cheap check), else None: the drivers' path then opens it and says what is wrong."""
    if path == ":memory:" or path.startswith("file:") or not os.path.isfile(path) \
            or not os.access(path, os.R_OK | os.W_OK):
        return None
    try:
        conn = sqlite3.connect(Path(path).absolute().as_uri() + "?mode=ro", uri=True,
                               timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    except sqlite3.Error:
        return None
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if is_current(version, [sql for (sql,) in conn.execute(STATEMENTS_SQL)]):
            return conn
    except sqlite3.Error:
        pass
    conn.close()
    return None


def check_signals(conn, scope, signal_type=None, clock=utcnow):
    """`GovernanceSignalReader.check_governance(scope, signal_type)`: the scope's verdict from its
    active, unexpired signals (a `verdicts.GovernanceCheckResult`)."""
    now = clock()
    if signal_type is None:
        cursor = conn.execute(SIGNALS_SQL, (scope, db_time(now)))
    else:
        cursor = conn.execute(SIGNALS_OF_TYPE_SQL, (scope, signal_type, db_time(now)))
    return governance_verdict(scope, [_row(SIGNAL_FIELDS, values) for values in cursor], now)


def killswitch_status(conn, tenant_id, entity_type, entity_id, clock=utcnow):
    """`GuardReader.killswitch_status(...)`: the switch as a dict of verdicts.SWITCH_FIELDS."""
    values = conn.execute(KILLSWITCH_SQL, (tenant_id, entity_type, entity_id, 1)).fetchone()
    state = never_frozen(tenant_id, entity_type, entity_id) if values is None else _row(KILLSWITCH_FIELDS, values)
    return switch_status(state, clock())


def tenant_status(conn, tenant_id, clock=utcnow):
    """`GuardReadDriver.compute_status(tenant_id)`: the guard console's status of the tenant."""
    now = clock()
    at = db_time(now)
    switch = conn.execute(TENANT_SWITCH_SQL, (at, tenant_id, "tenant", tenant_id, 1)).fetchone()
    counts = conn.execute(STATUS_COUNTS_SQL, (tenant_id, "key", at, tenant_id, "open", tenant_id,
                                              tenant_id, at)).fetchone()
    blocked = any_blocked(decision for (decision,) in conn.execute(
        ACTIVE_DECISIONS_SQL, (tenant_id, db_time(clock()))))
    return guard_status(tenant_id, now, switch, counts, blocked)
