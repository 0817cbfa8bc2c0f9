"""Shared model plumbing: the base model, UTC timestamps, exact decimals, JSON, ids."""
import uuid
from datetime import datetime, timezone
from decimal import Decimal

from peewee import DateTimeField, Model, TextField, Value
from playhouse.sqlite_ext import JSONField

__all__ = ["PLACEHOLDER", "BaseModel", "DecimalTextField", "JSONField", "PreparedInsert", "PreparedQuery",
           "UtcDateTimeField", "new_id", "utcnow"]


def utcnow():
    """The current time as an aware UTC datetime."""
    return datetime.now(timezone.utc)


def new_id():
    """A new string id: uuid4 hex."""
    return uuid.uuid4().hex


def as_utc(value):
    """Normalise a datetime (naive means UTC) or ISO string to an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


class UtcDateTimeField(DateTimeField):
    """A timestamp stored as sortable UTC text and read back as an aware UTC datetime."""

    def db_value(self, value):
        """Aware (or naive-as-UTC) datetime -> 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC."""
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value.isoformat(" ", "microseconds")

    def python_value(self, value):
        """Stored text -> aware UTC datetime."""
        return as_utc(value)


class DecimalTextField(TextField):
    """A Decimal stored exactly, as text."""

    def db_value(self, value):
        """Decimal (or int / numeric string) -> canonical text."""
        return None if value is None else str(Decimal(str(value)))

    def python_value(self, value):
        """Stored text -> Decimal."""
        return None if value is None else Decimal(value)


class BaseModel(Model):
    """Every table's base. No model is bound to a database: every query runs on the database
    its caller names (`query.execute(db)`, `PreparedQuery.execute(db, ...)`)."""

    class Meta:
        legacy_table_names = False


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
    """A hot-path statement: Peewee builds its SQL once; later runs only bind new values.

    `build` returns a Peewee query using `PLACEHOLDER` for each value the caller supplies
    (other values, such as column defaults, are kept as built). `execute(db, params)` runs
    it with `params`, in placeholder order and already in database form (see `db_value`).
    """

    def __init__(self, build):
        self._build = build
        self._sql = None

    def _prepare(self, db):
        self._sql, template = self._build().bind(db).sql()  # in `db`'s SQL dialect
        self._slots = [i for i, value in enumerate(template) if value is _SLOT]
        self._template = None if len(self._slots) == len(template) else template

    def execute(self, db, params):
        """Run the statement on `db` (through its guard) and return the cursor."""
        if self._sql is None:
            self._prepare(db)
        if self._template is not None:
            merged = list(self._template)
            for index, value in zip(self._slots, params, strict=True):
                merged[index] = value
            params = merged
        return db.execute_sql(self._sql, params)


class PreparedInsert(PreparedQuery):
    """A hot-path INSERT of `names` (a row each), built once by Peewee.

    `execute(db, *rows)` takes each row as a dict by field name and converts every value for
    the database (`db_value`; JSON fields as JSON text), in the column order Peewee wrote, so
    callers never order or convert values themselves. A field with a default that a row leaves
    out gets its default per row (never one value frozen when the statement was built).
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
        defaulted = {name for name, f in fields.items() if f.default is not None}
        self.names = in_column_order(model, set(names) | defaulted)
        self._columns = [(name, _converter(fields[name]), fields[name].default)
                         for name in self.names]

        def build():
            row = {getattr(model, name): PLACEHOLDER for name in self.names}
            query = model.insert_many([row] * rows) if rows > 1 else model.insert(row)
            if conflict_target is not None:
                query = query.on_conflict(conflict_target=conflict_target, conflict_where=conflict_where,
                                          update=update, action=None if update else "NOTHING")
            elif ignore_conflicts:
                query = query.on_conflict_ignore()
            return query.returning(returning) if returning is not None else query

        super().__init__(build)

    def values(self, *rows):
        """The statement's parameters for `rows`: each row's values, converted, in column order."""
        params = []
        for row in rows:
            for name, convert, default in self._columns:
                value = row.get(name, _MISSING)
                if value is _MISSING:
                    value = default() if callable(default) else default
                params.append(convert(value))
        return params

    def execute(self, db, *rows):
        """Insert `rows` on `db` (through its guard) and return the cursor."""
        return super().execute(db, self.values(*rows))


_MISSING = object()


def _converter(field):
    """How a Python value becomes a bound parameter of `field` (JSON fields: JSON text)."""
    if isinstance(field, JSONField):
        dumps = field._json_dumps
        return lambda value: None if value is None else dumps(value)
    return field.db_value
