"""The start-up schema guard's cheap check, standard library only (no Peewee, no models).

A file written by `init` at this schema version holds exactly the CREATE statements `init`
sends, as SQLite stores them: `SCHEMA_DIGEST` is their digest, and `is_current` compares a
file's user_version and the digest of its own statements (`STATEMENTS_SQL`) with the constants.
Only a file that differs needs schema_parity's comparison, table by table, to name the
difference (or to find none: a migrated file's statements differ in their column order).
tests/test_gates_schema.py regenerates the digest from the models, so a schema change that
does not update it fails there; `python -c "from hoc_drivers.schema_parity import
expected_digest; print(expected_digest())"` prints the new value.
"""
import zlib

# The schema version `init` records in the file (PRAGMA user_version) and `migrate` brings a file
# to. 1: the schema before it was recorded (user_version 0 on a file holding tables); 2: the M26
# cost-table indexes and defaults, incidents.cost_impact and the tables added with them; 3: the
# tables listed in insertion order keyed by `seq` (an INTEGER PRIMARY KEY), their text id UNIQUE.
SCHEMA_VERSION = 3
SCHEMA_DIGEST = "20a8d7ba-18320"

# A file's own CREATE statements (SQLite's internal objects left out).
STATEMENTS_SQL = ("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL"
                  " AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")


def schema_digest(statements):
    """The digest of a file's CREATE statements (as `STATEMENTS_SQL` reads them), in any order:
    their CRC-32 and length. It tells a changed schema from the models'; it authenticates
    nothing (and zlib loads in a fraction of hashlib's time)."""
    text = "\n".join(sorted(statements)).encode("utf-8")
    return f"{zlib.crc32(text):08x}-{len(text)}"


def is_current(user_version, statements):
    """True when a file of this `user_version` holding these CREATE `statements` is what `init`
    writes at SCHEMA_VERSION."""
    return user_version == SCHEMA_VERSION and schema_digest(statements) == SCHEMA_DIGEST
