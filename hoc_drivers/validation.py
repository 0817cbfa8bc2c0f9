"""Argument checks shared by the drivers: a clear ValueError naming the argument, before any
write; and `redact`, which hides credentials in text shown to people (logs, error messages).
Standard library only, so the CLI can import it without loading a driver."""
import json
import math
import re

MAX_LIMIT = 10_000  # rows one list call returns at most (the CLI's --limit has the same bound)
# A JSON value a caller stores (constraints, evidence, details, decision inputs) nests at most
# MAX_JSON_DEPTH objects/arrays (the value itself is level 1) and encodes as compact JSON
# (no spaces, non-ASCII escaped) in at most MAX_JSON_BYTES bytes.
MAX_JSON_DEPTH = 32
MAX_JSON_BYTES = 64 * 1024


REQUIRED = "{name} is required (a non-empty string)"
NON_EMPTY = "{name} must be a non-empty string, got {value!r}"  # decision records, ledger signals


def require_text(value, name, message=REQUIRED):
    """`value` when it is a non-empty string without NUL, else ValueError: `message` with `name`
    and `value` filled in (REQUIRED, NON_EMPTY, or a wording of the caller's), or `refuse_nul`'s."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(message.format(name=name, value=value))
    if "\x00" in (value if value.__class__ is str else str.__str__(value)):  # a subclass's own `in` could hide it
        raise refuse_nul(name)
    return value


def refuse_nul(name):
    """The ValueError for text `name` holding a NUL character, which neither backend stores
    (PostgreSQL cannot)."""
    return ValueError(f"{name} must not contain a NUL character (\\x00)")


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


def json_encoder(**options):
    """A function giving the text `json.JSONEncoder(**options).encode` gives, without its cost per
    call: the json module's C encoder is made once, here (`encode` makes one at every call). It
    keeps no record of the containers it is in (check_circular off), so no state is left between
    calls; a cyclic value raises RecursionError, as a value nested about a thousand deep does."""
    encoder = json.JSONEncoder(**options, check_circular=False)
    make = json.encoder.c_make_encoder
    if make is None or encoder.indent is not None:  # no C accelerator: the plain method
        return encoder.encode
    escape = json.encoder.encode_basestring_ascii if encoder.ensure_ascii else json.encoder.encode_basestring
    chunks = make(None, encoder.default, escape, None, encoder.key_separator, encoder.item_separator,
                  encoder.sort_keys, encoder.skipkeys, encoder.allow_nan)
    return lambda value: "".join(chunks(value, 0))


_strict_json = json_encoder(allow_nan=False, separators=(",", ":"))  # NaN / Infinity are not JSON


def require_json_value(value, name):
    """`value` when it encodes as strict JSON within the limits (`strict_json_text`), else
    ValueError naming `name`."""
    strict_json_text(value, name)
    return value


def strict_json_text(value, name):
    """`value` as compact strict JSON text when it encodes within MAX_JSON_DEPTH levels and
    MAX_JSON_BYTES, holding no NUL character (`refuse_nul`), else ValueError naming `name`; too
    deep is the error whatever else is wrong.

    The encoder stops at once on a cyclic value (circular reference) or one nested about a
    thousand deep (RecursionError); the depth is then checked without recursion. Text shorter
    than two characters per level cannot nest deeper than MAX_JSON_DEPTH, so the depth walk is
    needed only for longer text."""
    try:
        text = _strict_json(value)
    except (TypeError, ValueError, RecursionError) as exc:
        _require_shallow(value, name)
        raise ValueError(f"{name} is not JSON-serialisable: {exc}") from None
    if len(text) > 2 * MAX_JSON_DEPTH:
        _require_shallow(value, name)
    if len(text) > MAX_JSON_BYTES:
        raise ValueError(f"{name} is too large ({len(text)} bytes of JSON; at most {MAX_JSON_BYTES})")
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        raise refuse_nul(name)
    return text


_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")  # JSON's escape of NUL (not an escaped backslash's u0000)


def _require_shallow(value, name):
    """ValueError unless `value` nests at most MAX_JSON_DEPTH objects/arrays (itself level 1);
    a walk without recursion, so a cyclic value is refused too."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"{name} is nested too deeply (more than {MAX_JSON_DEPTH} levels)")
        stack.extend((child, depth + 1) for child in children)


def require_json_object(value, name):
    """`value` when it is a dict that passes `require_json_value` (an empty one always does),
    else ValueError naming `name`."""
    json_object_text(value, name)
    return value


def json_object_text(value, name):
    """The compact strict JSON text of `value` ("{}" when empty) when it is a dict that passes
    `strict_json_text`, else ValueError naming `name`: the check and the stored text in one
    encoding."""
    if value.__class__ is not dict:
        require_dict(value, name)  # a dict subclass passes; anything else is the error
    return strict_json_text(value, name) if value else "{}"


def require_dict(value, name):
    """`value` when it is a dict, else ValueError naming `name`: the type check of a JSON object
    whose content is checked later (`json_object_text`)."""
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a JSON object (dict), got {type(value).__name__}")
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


_SECRETS = (  # (pattern, replacement): the credential part of each becomes ***
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#@\s\"]+@"), r"\1***@"),  # user:password@ in a URL
    (re.compile(r"(?i)\b(hooks\.slack\.com/)[^\s'\"]+"), r"\1***"),  # Slack webhook token path
    (re.compile(r"(?i)\b(discord(?:app)?\.com/api/webhooks/)[^\s'\"]+"), r"\1***"),
    (re.compile(r"(?i)([?&](?:access_token|api_?key|key|password|secret|sig|signature|token)=)"
                r"[^&#\s'\"]+"), r"\1***"),  # secret query parameters
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9-]+"), "xox*-***"),  # Slack API tokens
)


def redact(text):
    """`text` with credentials and tokens replaced by *** (what logs and error messages show):
    the user:password of a URL, the token path of Slack and Discord webhook URLs, secret query
    parameters (token=, key=, signature=...) and Slack API tokens. Everything else stays."""
    text = str(text)
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def require_non_negative(value, name, integer=False):
    """A finite number >= 0 (an int when `integer`); ValueError otherwise."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value) or value < 0:
        kind = "integer" if integer else "number"
        raise ValueError(f"{name} must be a non-negative {kind}, got {value!r}")
    return value
