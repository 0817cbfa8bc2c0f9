"""Shared model plumbing: the base model, UTC timestamps, exact decimals, JSON, ids."""
import uuid
from datetime import datetime, timezone
from decimal import Decimal

from peewee import DateTimeField, Model, TextField, Value
from playhouse.sqlite_ext import JSONField

__all__ = ["PLACEHOLDER", "BaseModel", "DecimalTextField", "JSONField", "PreparedQuery", "UtcDateTimeField",
           "in_column_order", "new_id", "utcnow"]

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
    """Every table's base; the database is bound by `hoc_drivers.models.bind`."""

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

    def _prepare(self):
        self._sql, template = self._build().sql()
        self._slots = [i for i, value in enumerate(template) if value is _SLOT]
        self._template = None if len(self._slots) == len(template) else template

    def execute(self, db, params):
        """Run the statement on `db` (through its guard) and return the cursor."""
        if self._sql is None:
            self._prepare()
        if self._template is not None:
            merged = list(self._template)
            for index, value in zip(self._slots, params, strict=True):
                merged[index] = value
            params = merged
        return db.execute_sql(self._sql, params)
