"""Argument checks shared by the drivers: a clear ValueError naming the argument, before any
write. Standard library only, so the CLI can import it without loading a driver."""
import json

MAX_LIMIT = 10_000  # rows one list call returns at most (the CLI's --limit has the same bound)


def require_text(value, name):
    """`value` when it is a non-empty string, else ValueError naming `name`."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} is required (a non-empty string)")
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


def require_transaction(tx):
    """`tx` when it is an open coordinator transaction (what writers take first): TypeError
    for anything else, CommitForbidden (from `tx.require_open`) for one that has ended."""
    if not hasattr(tx, "note") or not hasattr(tx, "require_open"):
        raise TypeError(f"a writer takes the coordinator's transaction first "
                        f"(`with coordinator.transaction() as tx:`), got {type(tx).__name__}")
    tx.require_open()
    return tx


def require_tenant(tenant_id):
    """`tenant_id` when it is a non-empty string, else ValueError."""
    return require_text(tenant_id, "tenant_id")


def optional_text(value, name):
    """`value` when it is None or a non-empty string, else ValueError naming `name`."""
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ValueError(f"{name} must be a non-empty string or None, got {value!r}")
    return value


def require_string(value, name):
    """`value` when it is a non-empty string, else ValueError "<name> must be a non-empty
    string" (the wording of decision records and discovery-ledger signals)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value


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
