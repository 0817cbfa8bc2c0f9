"""Shared model plumbing: the base model, UTC timestamps, exact decimals, JSON, ids."""
import json
import logging
import os
import time
import uuid
from datetime import datetime
from decimal import Decimal
from functools import partial
from itertools import chain, repeat
from operator import itemgetter

import peewee
from peewee import (SQL, BigIntegerField, BooleanField, DateTimeField, Field, FloatField, IntegerField, Model, Node,
                    NodeList, Value, fn)
from peewee import __exception_wrapper__ as peewee_exceptions  # sqlite3 errors -> Peewee's
from peewee import logger as peewee_log
from playhouse import sqlite_ext

from ..dialect import by_dialect
from ..validation import json_encoder, refuse_nul
from ..verdicts import as_utc, db_time, utcnow

__all__ = ["PLACEHOLDER", "BaseModel", "CharField", "DecimalTextField", "JSONField", "PreparedInsert", "PreparedQuery",
           "TextField", "UtcDateTimeField", "insertion_seq", "json_text", "timestamp_text", "unique_id", "new_id",
           "new_ordered_id", "utcnow"]


def new_id():
    """A new string id: uuid4 hex."""
    return uuid.uuid4().hex


def new_ordered_id():
    """A new string id that sorts by creation time: 32 hex digits in the UUIDv7 layout (48-bit
    Unix milliseconds, version 7, 74 random bits). Rows keyed by it go in at the end of their
    index instead of at a random page of it (for append-only tables such as the outbox)."""
    random = int.from_bytes(os.urandom(10), "big")
    value = ((time.time_ns() // 1_000_000) << 80 | 0x7 << 76 | (random >> 62 & 0xfff) << 64
             | 0b10 << 62 | random & (1 << 62) - 1)
    return f"{value:032x}"


def insertion_seq():
    """The primary key of a table listed in insertion order (`dialect.insertion_order`): `seq`,
    numbered as rows go in. On SQLite an INTEGER PRIMARY KEY is the rowid itself (no extra
    column, index or write); on PostgreSQL a BIGSERIAL. Peewee keys the model by its text id
    (`unique_id`); no writer sets `seq`."""
    return _Seq(constraints=[SQL("PRIMARY KEY")])


class _Seq(BigIntegerField):
    """The `seq` column: declared INTEGER on SQLite (so it is the rowid), BIGSERIAL on PostgreSQL."""

    field_type = "BIGAUTO"


def unique_id(default=None):
    """The text id of a table keyed by `insertion_seq`: the model's primary key for Peewee
    (`get_by_id`, foreign keys, equality), NOT NULL UNIQUE in the table (on SQLite the one
    automatic index a TEXT PRIMARY KEY has)."""
    return _UniqueId(primary_key=True, default=default)


class _Text:
    """A text field whose values may not contain NUL ("\\x00": PostgreSQL cannot store it, so
    neither backend does): a ValueError naming the field, before anything is sent."""

    def db_value(self, value):
        """Python value -> text (ValueError for text holding NUL)."""
        text = value if value is None else self.adapt(value)
        if text is not None and "\x00" in text:
            raise refuse_nul(self.name)
        return text


class CharField(_Text, peewee.CharField):
    """Peewee's CharField, refusing NUL (see `_Text`)."""


class _UniqueId(CharField):
    """See `unique_id`: declared UNIQUE where Peewee would declare PRIMARY KEY."""

    def ddl(self, ctx):
        """The column's definition with UNIQUE for PRIMARY KEY."""
        return NodeList([SQL("UNIQUE") if isinstance(node, SQL) and node.sql == "PRIMARY KEY" else node
                         for node in super().ddl(ctx).nodes])


class TextField(_Text, peewee.TextField):
    """Peewee's TextField, refusing NUL (see `_Text`)."""


class UtcDateTimeField(DateTimeField):
    """A timestamp stored as sortable UTC text and read back as an aware UTC datetime."""

    def db_value(self, value):
        """Aware (or naive-as-UTC) datetime -> 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC.

        The last datetime converted is remembered, so a transaction's one timestamp (`tx.now`),
        written in many columns and rows, is converted once."""
        return timestamp_text(value)

    def python_value(self, value):
        """Stored text -> aware UTC datetime."""
        return as_utc(value)


def timestamp_text(value):
    """A datetime (aware, or naive as UTC) or ISO text as a UtcDateTimeField stores it
    (`UtcDateTimeField.db_value`); the last datetime's text is remembered in `_last_timestamp`."""
    global _last_timestamp
    last = _last_timestamp
    if value is last[0]:
        return last[1]
    if value is None:
        return None
    text = db_time(datetime.fromisoformat(value) if isinstance(value, str) else value)
    if isinstance(value, datetime):
        _last_timestamp = (value, text)
    return text


_last_timestamp = (None, None)  # (datetime, its text): the last one UtcDateTimeField converted


class JSONField(sqlite_ext.JSONField):
    """JSON stored as text on both backends (SQLite's json() normalises it there)."""

    def db_value(self, value):
        """A Python value -> its JSON text (a query node passes as it is)."""
        if value is None or isinstance(value, Node):
            return value
        text = Value(self._json_dumps(value))
        return by_dialect(fn.json(text), text)


class DecimalTextField(peewee.TextField):
    """A Decimal stored exactly, as text."""

    def db_value(self, value):
        """Decimal (or int / numeric string) -> canonical text (a Decimal's own text is)."""
        if value.__class__ is Decimal:
            return str(value)
        return None if value is None else str(Decimal(str(value)))

    def python_value(self, value):
        """Stored text -> Decimal."""
        return None if value is None else Decimal(value)


class BaseModel(Model):
    """Every table's base. No model is bound to a database: every query runs on the database
    its caller names (`query.execute(db)`, `PreparedQuery.execute(db, ...)`)."""

    class Meta:
        legacy_table_names = False

    @classmethod
    def of_row(cls, values):
        """An instance holding `values` (field name -> value, a dict the caller gives up) as they
        are: the row a writer has just stored or a reader read, clean (no field dirty) as a row
        Peewee's own SELECT returns, made without Model.__init__'s keyword handling or a setter
        call per field."""
        item = cls.__new__(cls)
        item.__data__, item._dirty, item.__rel__ = values, set(), {}  # the attributes Model.__init__ sets
        return item


_is_text = partial(type.__instancecheck__, str)  # isinstance(value, str), as a C callable for filter()


class _Slot:
    """Marks where a prepared statement's caller-supplied value goes."""

    def __repr__(self):
        return "<slot>"


_SLOT = _Slot()
PLACEHOLDER = Value(_SLOT, converter=False)


def in_column_order(model, names):
    """`names` in the model's column order (the order Peewee writes INSERT columns in)."""
    return tuple(f.name for f in model._meta.sorted_fields if f.name in names)


class PreparedQuery:
    """A hot-path statement: Peewee builds its SQL once per dialect; later runs only bind new
    values.

    `build` returns a Peewee query (or any node, such as `dialect.skip_locked(query)`) using
    `PLACEHOLDER` for each value the caller supplies (other values, such as column defaults, are
    kept as built). `execute(db, params)` runs it with `params`, in placeholder order and
    already in database form (see `db_value`).
    """

    def __init__(self, build):
        self._build = build
        self._built = {}  # database class (its dialect) -> (sql, merge: see `_merger`, or None)
        self._updated = None  # an UPDATE's table: its text values are checked for NUL (`_Text`)

    def sql(self, db):
        """(SQL text, parameter template) of the statement in `db`'s dialect, built afresh."""
        return db.get_sql_context().parse(self._build())

    def _prepare(self, db):
        """Build the statement in `db`'s SQL dialect (once per dialect)."""
        query = self._build()
        sql, template = db.get_sql_context().parse(query)
        own_values = any(value is not _SLOT for value in template)
        built = self._built[db.__class__] = (sql, _merger(template) if own_values else None)
        if isinstance(query, peewee.Update):
            self._updated = query.model._meta.table_name
        return built

    def built(self, db):
        """(SQL text in `db`'s dialect, `merge` or None): what `execute` runs, built on first use
        per dialect. `merge(values)` gives the parameters when the statement holds values of its
        own (see `_merger`); with None the caller's values are the parameters."""
        return self._built.get(db.__class__) or self._prepare(db)

    def execute(self, db, params):
        """Run the statement on `db` (through its guard) and return the cursor; an UPDATE's text
        values are refused when they hold NUL (ValueError), as `_Text` refuses them."""
        if db.__class__ not in self._built:
            self._prepare(db)  # which tells whether it is an UPDATE
        if self._updated is not None and "\x00" in "".join(filter(_is_text, params)):  # in C, no loop
            raise refuse_nul(f"text written to {self._updated}")
        return self.execute_validated(db, params)

    def execute_validated(self, db, params):
        """`execute` with `params` whose text the caller has already refused NUL in (checked by
        `validation`, or the caller's own values), so it is not looked at again.

        On a guarded connection it goes straight to its `execute_built` (driver errors still
        become Peewee's exceptions); before the first connection, on a database of another
        kind, or while Peewee's logger logs the SQL (--debug), through `db.execute_sql`."""
        sql, merge = self._built.get(db.__class__) or self._prepare(db)
        if merge is not None:
            params = merge(params)
        try:
            execute_built = db._state.conn.execute_built
        except AttributeError:  # no connection yet (None), or not a guarded one
            return db.execute_sql(sql, params)
        if _peewee_log_answers.get(_DEBUG) is not False and peewee_log.isEnabledFor(_DEBUG):
            return db.execute_sql(sql, params)  # logs the SQL
        try:
            return execute_built(sql, params)
        except Exception:  # the driver's errors become Peewee's; CommitForbidden stays itself
            with peewee_exceptions:
                raise


def statement_runner(db):
    """`run(sql, params)`, returning the cursor, for a writer that runs several built statements
    (`PreparedQuery.built`) in one transaction on `db`: what `execute_validated` would choose
    for each, chosen once (the guarded connection's `execute_built`, or `db.execute_sql` before
    the first connection, on a database of another kind, or while Peewee's logger logs the SQL).
    The driver's errors come out as they are: the writer turns them into Peewee's once, around
    all its statements (`with peewee_exceptions: raise`)."""
    try:
        execute_built = db._state.conn.execute_built
    except AttributeError:  # no connection yet (None), or not a guarded one
        return db.execute_sql
    if _peewee_log_answers.get(_DEBUG) is not False and peewee_log.isEnabledFor(_DEBUG):
        return db.execute_sql  # logs the SQL
    return execute_built


_DEBUG = logging.DEBUG
# Peewee's logger's remembered answers to isEnabledFor (level -> bool; `logging.Logger._cache`,
# emptied in place whenever logging's levels change, and absent in a Python without it): a
# remembered False is what isEnabledFor would answer, read without calling it on every statement.
_peewee_log_answers = getattr(peewee_log, "_cache", {})


def _merger(template):
    """How a statement's parameters are made from the caller's values when its `template` also
    holds values of its own (a constant Peewee bound, such as the 1 of `count + 1`): a function
    of the values for its slots (ValueError for a wrong number of them) giving every parameter
    in order, picked in one C call from the values followed by the constants."""
    constants = tuple(value for value in template if value is not _SLOT)
    given = len(template) - len(constants)
    slot_numbers, constant_numbers = iter(range(given)), iter(range(given, len(template)))
    pick = _picker([next(slot_numbers if value is _SLOT else constant_numbers) for value in template])

    def merge(values):
        every = (*values, *constants)
        if len(every) != len(template):
            raise ValueError(f"the statement takes {given} values, got {len(every) - len(constants)}")
        return pick(every)
    return merge


class PreparedInsert(PreparedQuery):
    """A hot-path INSERT of `names` (a row each), built once by Peewee.

    `execute(db, *rows)` takes each row as a dict by field name and converts every value for
    the database (`db_value`; JSON fields as JSON text), in the statement's column order, so
    callers never order or convert values themselves. A field with a default that a row leaves
    out gets its default per row (never one value frozen when the statement was built).
    A hot-path writer may give a row as a tuple instead: the values of `names` in the order
    given, each already in database form (text, numbers, bools, None: a timestamp as
    `tx.now_text`, a Decimal or JSON as its text), so nothing is converted; text is still
    checked for NUL. The statement lists the columns `names` gives first, in that order, then
    the defaulted ones it leaves out (constants, then those made per row): a tuple row's
    parameters are the row followed by those defaults (the `names` attribute of the statement
    holds that whole order). A field named twice is refused (ValueError).
    `ignore_conflicts` makes it INSERT OR IGNORE; `conflict_target` adds ON CONFLICT (those
    columns, under `conflict_where`) DO NOTHING, or DO UPDATE SET `update` when given;
    `returning` is a field whose value comes back (None for a row that was ignored).
    """

    def __init__(self, model, names, rows=1, ignore_conflicts=False, conflict_target=None,
                 conflict_where=None, update=None, returning=None):
        fields = model._meta.fields
        missing = set(names) - set(fields)
        if missing:
            raise ValueError(f"{model.__name__} has no field {', '.join(sorted(missing))}")
        if len(set(names)) < len(names):
            raise ValueError(f"a field is named twice in {', '.join(names)}")
        defaulted = {name for name, f in fields.items() if f.default is not None}
        left_out = in_column_order(model, defaulted - set(names))
        self.names = (*names, *(name for name in left_out if not callable(fields[name].default)),
                      *(name for name in left_out if callable(fields[name].default)))
        self._columns = [(_native_type(fields[name]), _converter(fields[name]), fields[name].default)
                         for name in self.names]
        self._missing = [_MISSING if name in defaulted else None for name in self.names]  # a row's gap
        self._plans = {}  # the value types of a row -> what its values need (see `_plan`)
        self._tuple_plan = _TuplePlan(tuple(names), self._columns)

        def build():
            columns = [getattr(model, name) for name in self.names]
            query = model.insert_many([(PLACEHOLDER,) * len(columns)] * rows, fields=columns)
            if conflict_target is not None:
                query = query.on_conflict(conflict_target=conflict_target, conflict_where=conflict_where,
                                          update=update, action=None if update else "NOTHING")
            elif ignore_conflicts:
                query = query.on_conflict_ignore()
            return query.returning(returning) if returning is not None else query

        super().__init__(build)

    def values(self, *rows):
        """The statement's parameters for `rows`: each row's values, converted, in the
        statement's column order (`self.names`).

        What a row's values need (a default, a conversion, nothing) depends only on their types,
        so it is worked out once per combination of types (`_plan`), not per value."""
        params = []
        for row in rows:
            if row.__class__ is tuple:
                params += self._tuple_plan.bind(row)
                continue
            values = list(map(row.get, self.names, self._missing))
            types = tuple(map(type, values))
            fills, calls, texts = self._plans.get(types) or self._plan(types)
            for index, value in fills:
                values[index] = value
            for index, make in calls:
                values[index] = make(values[index])
            if texts is not None and "\x00" in "".join(texts(values)):
                raise refuse_nul(next(name for name, value in zip(self.names, values, strict=True)
                                      if isinstance(value, str) and "\x00" in value))
            params += values
        return params

    def _plan(self, types):
        """For a row whose values have `types`: (fills, calls, texts). `fills` are (index, value)
        pairs for the defaults that are constants (converted once); `calls` are (index, function)
        pairs giving the bound value of a value to convert (a native type's subclass binds as its
        plain value, a Decimal in a DecimalTextField as `str` of it, a datetime in a
        UtcDateTimeField as its remembered text) or of a default to make per row; `texts` picks
        the text values given for text columns (checked for NUL, as `_Text.db_value` checks the
        values it converts), None when there are none."""
        fills, calls = [], []
        texts = [index for index, (kind, (native, _, _)) in enumerate(zip(types, self._columns, strict=True))
                 if native is str and issubclass(kind, str)]
        for index, (kind, (native, convert, default)) in enumerate(zip(types, self._columns, strict=True)):
            if kind is datetime and getattr(convert, "__func__", None) is UtcDateTimeField.db_value:
                calls.append((index, timestamp_text))  # what db_value gives, without its call
            elif kind is _Missing and not callable(default):
                fills.append((index, _bound(default, native, convert)))
            elif kind is _Missing:
                calls.append((index, lambda _, make=default, native=native, convert=convert:
                              _bound(make(), native, convert)))
            elif kind is Decimal and getattr(convert, "__func__", None) is DecimalTextField.db_value:
                calls.append((index, str))  # what DecimalTextField.db_value gives, without its call
            elif kind is not native and kind is not type(None):
                calls.append((index, _PLAIN[native] if issubclass(kind, native) else convert))
        plan = (fills, calls, itemgetter(*texts) if texts else None)
        if len(self._plans) < _MAX_PLANS:
            self._plans[types] = plan
        return plan

    def execute(self, db, *rows):
        """Insert `rows` on `db` (through its guard) and return the cursor."""
        if len(rows) == 1 and rows[0].__class__ is tuple:  # a hot writer's one row
            return PreparedQuery.execute_validated(self, db, self._tuple_plan.bind(rows[0]))
        return PreparedQuery.execute_validated(self, db, self.values(*rows))  # values() checked their text

    def row_params(self, row):
        """The parameters of one tuple `row` whose text the writer has already refused NUL in (as
        `execute_validated` binds it; ValueError for a wrong length)."""
        return self._tuple_plan.bind(row, True)

    def execute_validated(self, db, *rows):
        """Insert tuple `rows` whose text the writer has already refused NUL in (every text value
        passed `validation.require_text` / `optional_text`, or is the writer's own): as `execute`,
        without looking at the text a second time. Returns the cursor."""
        plan = self._tuple_plan
        if len(rows) == 1:
            params = plan.bind(rows[0], True)
        elif plan.as_given and set(map(len, rows)) == {len(plan.given)}:  # rows bind as they are
            params = list(chain.from_iterable(rows))
        else:
            params = list(chain.from_iterable(map(plan.bind, rows, repeat(True))))
        return PreparedQuery.execute_validated(self, db, params)


class _TuplePlan:
    """How a tuple row (the values of the `given` names, in that order, already in database
    form) becomes the statement's parameters: the row, then the constant defaults (converted
    once), then the defaults made per row, as the statement lists its columns."""

    def __init__(self, given, columns):
        """`columns`: (native type, converter, default) of each column, in the statement's order."""
        self.given = given
        left_out = columns[len(given):]  # the defaults, constants first (see `PreparedInsert`)
        self.constants = tuple(_bound(default, native, convert) for native, convert, default in left_out
                               if not callable(default))
        self.makers = [lambda make=default, native=native, convert=convert: _bound(make(), native, convert)
                       for native, convert, default in left_out if callable(default)]
        self.as_given = not left_out  # the row is the parameters
        texts = [index for index, (native, _, _) in enumerate(columns[:len(given)]) if native is str]
        self.texts = _picker(texts) if texts else None

    def bind(self, row, text_checked=False):
        """The parameters of tuple `row` (ValueError for a wrong length, or for text holding NUL
        unless the caller has `text_checked` it)."""
        if len(row) != len(self.given):
            raise ValueError(f"a tuple row gives the {len(self.given)} values of {', '.join(self.given)}; "
                             f"got {len(row)}")
        if not text_checked and self.texts is not None and "\x00" in "".join(filter(None, self.texts(row))):
            raise refuse_nul(next(name for name, value in zip(self.given, row, strict=True)
                                  if isinstance(value, str) and "\x00" in value))
        if self.as_given:
            return row
        values = row + self.constants
        if self.makers:
            values += tuple(make() for make in self.makers)
        return values


def _picker(indexes):
    """A function giving the tuple of a sequence's items at `indexes` (one C call)."""
    if len(indexes) == 1:
        return lambda values, index=indexes[0]: (values[index],)
    return itemgetter(*indexes)


class _Missing:
    """The type of `_MISSING`, the value of a defaulted column a row leaves out."""


_MISSING = _Missing()
_MAX_PLANS = 64  # combinations of value types remembered per statement


def _bound(value, native, convert):
    """`value` as bound for a column: as it is when None or of the column's native type."""
    return value if value is None or isinstance(value, native) else convert(value)


class _Converted:
    """No value is an instance of this: the native type of fields that convert every value."""


# Field.adapt -> the type whose instances bind as they are (sqlite3 binds an int or str
# subclass, such as a str enum, as its int or text, which is what adapt would give).
_NATIVE_TYPES = {TextField.adapt: str, IntegerField.adapt: int, FloatField.adapt: float,
                 BooleanField.adapt: bool}


# A subclass of a native type (a str enum, a bool in an integer column) -> its plain value, what
# sqlite3 would bind it as, but without first looking for an adapter of the subclass.
_PLAIN = {str: str.__str__, int: int.__index__, float: float.__float__}


def _native_type(field):
    """The type whose instances `field` binds as they are (no conversion call)."""
    if type(field).db_value not in (Field.db_value, _Text.db_value):
        return _Converted
    return _NATIVE_TYPES.get(type(field).adapt, _Converted)


def _converter(field):
    """How a Python value other than None becomes a bound parameter of `field` (JSON fields: JSON
    text, `json.dumps`'s own when the field uses it)."""
    if isinstance(field, JSONField):
        return json_text if field._json_dumps is json.dumps else field._json_dumps
    return field.db_value


json_text = json_encoder()  # json.dumps with its defaults: what a JSONField stores (the outbox binds it too)
