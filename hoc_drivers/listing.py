"""What every list reader shares: newest first, a time window, an offset, a limit, and short
id prefixes."""
from peewee import fn

from .dialect import insertion_order
from .models.base import as_utc
from .validation import require_int, require_limit

MAX_OFFSET = 2**63 - 1


class AmbiguousId(ValueError):
    """An id prefix that names more than one row."""


def page(query, field, since=None, until=None, offset=0, limit=100, newest_first=True, allow_all=False):
    """`query` ordered by the datetime `field` (then insertion order), newest first (oldest
    first with `newest_first=False`), only rows with `since <= field < until`, skipping `offset`
    rows, at most `limit` (1 to MAX_LIMIT, or None for all with `allow_all`)."""
    require_limit(limit, allow_none=allow_all)
    require_int(offset, "offset", 0, MAX_OFFSET)
    if since is not None:
        query = query.where(field >= as_utc(since))
    if until is not None:
        query = query.where(field < as_utc(until))
    order = (field.desc(), insertion_order(descending=True)) if newest_first else (field, insertion_order())
    return query.order_by(*order).limit(limit).offset(offset)


def expand_id(db, query, id_field, prefix):
    """The one id in `query` that starts with `prefix` (a full id is its own prefix); None
    when there is none; AmbiguousId when several match (naming two of them)."""
    matches = [row[0] for row in query.select(id_field)
               .where(fn.substr(id_field, 1, len(prefix)) == prefix)
               .order_by(id_field).limit(3).tuples().execute(db)]
    if prefix in matches or len(matches) == 1:
        return prefix if prefix in matches else matches[0]
    if matches:
        more = " and more" if len(matches) > 2 else ""
        raise AmbiguousId(f"id prefix {prefix!r} is ambiguous: it matches {matches[0]}, "
                          f"{matches[1]}{more}; give more characters")
    return None
