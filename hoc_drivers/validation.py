"""Argument checks shared by the drivers: a clear ValueError naming the argument, before any
write. Standard library only, so the CLI can import it without loading a driver."""
import json

MAX_LIMIT = 10_000  # rows one list call returns at most (the CLI's --limit has the same bound)


REQUIRED = "{name} is required (a non-empty string)"
NON_EMPTY = "{name} must be a non-empty string, got {value!r}"  # decision records, ledger signals


def require_text(value, name, message=REQUIRED):
    """`value` when it is a non-empty string, else ValueError: `message` with `name` and
    `value` filled in (REQUIRED, NON_EMPTY, or a wording of the caller's)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(message.format(name=name, value=value))
    return value


def require_limit(limit, allow_none=False):
    """`limit` when it is an integer from 1 to MAX_LIMIT (or None, with `allow_none`), else
    ValueError."""
    if limit is None and allow_none:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        also = " or None" if allow_none else ""
        raise ValueError(f"limit must be an integer from 1 to {MAX_LIMIT}{also}, got {limit!r}")
    return limit


def require_database(db):
    """`db` when it is a database (what readers take first), else TypeError."""
    if not hasattr(db, "execute_sql") or not hasattr(db, "current_unit"):
        raise TypeError(f"a reader takes the database first (from hoc_drivers.db.open_database), "
                        f"got {type(db).__name__}")
    return db


def require_transaction(tx, check_open=True):
    """`tx` when it is an open coordinator transaction (what writers take first): TypeError
    for anything else, CommitForbidden (from `tx.require_open`) for one that has ended.

    A writer class checks only the type in its constructor (`check_open=False`) and calls
    `self.tx.require_open()` at the start of each public write method, so a writer kept after
    its transaction ended still refuses; a module function checks once, on entry."""
    if not hasattr(tx, "note") or not hasattr(tx, "require_open"):
        raise TypeError(f"a writer takes the coordinator's transaction first "
                        f"(`with coordinator.transaction() as tx:`), got {type(tx).__name__}")
    if check_open:
        tx.require_open()
    return tx


def require_tenant(tenant_id):
    """`tenant_id` when it is a non-empty string, else ValueError."""
    return require_text(tenant_id, "tenant_id")


def optional_text(value, name):
    """`value` when it is None or a non-empty string, else ValueError naming `name`."""
    if value is None:
        return None
    return require_text(value, name, "{name} must be a non-empty string or None, got {value!r}")


_STRICT_JSON = json.JSONEncoder(allow_nan=False)  # NaN / Infinity are not JSON


def require_json_object(value, name):
    """`value` when it is a dict that encodes as strict JSON, else ValueError naming `name`."""
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a JSON object (dict), got {type(value).__name__}")
    try:
        _STRICT_JSON.encode(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} is not JSON-serialisable: {exc}") from None
    return value


def require_int(value, name, minimum=0, maximum=None, message=None):
    """`value` when it is an int (not a bool) from `minimum` to `maximum` (None: no upper
    bound), else ValueError naming `name`: "<name> must be a non-negative integer" (minimum 0),
    "a positive integer" (1) or "an integer >= <minimum>", or `message` (formatted with name,
    value, minimum and maximum)."""
    if (isinstance(value, bool) or not isinstance(value, int) or value < minimum
            or (maximum is not None and value > maximum)):
        if message is not None:
            raise ValueError(message.format(name=name, value=value, minimum=minimum, maximum=maximum))
        kind = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")
        most = "" if maximum is None else f" (at most {maximum})"
        raise ValueError(f"{name} must be {kind}{most}, got {value!r}")
    return value
