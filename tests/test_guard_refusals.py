"""What the commit guard says when it refuses, and the raw-connection doors it keeps shut.

A refusal must tell the developer what was refused (the statement, whitespace folded, cut at
40 characters), why (transaction control belongs to the coordinator; a write needs an open
coordinator transaction) and who asked (module.function (file:line) of the first frame outside
the database plumbing).
"""
import sqlite3

import peewee
import pytest

from hoc_drivers.db import CommitForbidden
from hoc_drivers.models.base import PLACEHOLDER, PreparedQuery
from hoc_drivers.models.decisions import DecisionSetting

CONTROL_WHY = "refused: only the transaction coordinator may control transactions; called from "
WRITE_WHY = ("refused: no coordinator transaction is open (use TransactionCoordinator.transaction()); "
             "called from ")
LONG_INSERT = ("INSERT   INTO decision_settings\n  (key, value, updated_at)\n"
               "  VALUES (?, ?, '2026-01-01T00:00:00.000000+00:00')")
# LONG_INSERT with its whitespace folded to single spaces, cut at 40 characters
LONG_INSERT_SHOWN = "INSERT INTO decision_settings (key, valu"


def refusal(call, *args):
    with pytest.raises(CommitForbidden) as refused:
        call(*args)
    return str(refused.value)


@pytest.mark.sqlite_only
def test_a_raw_write_outside_a_transaction_names_the_statement_and_the_caller(hoc_db):
    message = refusal(hoc_db.connection().execute, LONG_INSERT, ("k", "1"))
    assert message.startswith(f"write {LONG_INSERT_SHOWN!r} {WRITE_WHY}")
    assert message.endswith(")") and f"called from {__name__}.refusal ({__file__}:" in message
    again = refusal(hoc_db.connection().execute, LONG_INSERT, ("k", "1"))  # the remembered text
    assert again.startswith(f"write {LONG_INSERT_SHOWN!r} {WRITE_WHY}")
    assert DecisionSetting.select().count(hoc_db) == 0


@pytest.mark.sqlite_only
def test_raw_transaction_control_names_the_statement_and_says_who_may_send_it(hoc_db):
    for _ in range(2):  # first through the authorizer, then as a statement it already classified
        message = refusal(hoc_db.connection().execute,
                          "BEGIN   IMMEDIATE\n  TRANSACTION /* opened by a maintenance script */")
        assert message.startswith(f"raw SQL 'BEGIN IMMEDIATE TRANSACTION /* opened by' {CONTROL_WHY}")
    assert not hoc_db.connection().in_transaction


def test_the_database_methods_say_transaction_control_belongs_to_the_coordinator(hoc_db):
    for name in ("commit", "rollback"):
        message = refusal(getattr(hoc_db, name))
        assert message.startswith(f"{name}() {CONTROL_WHY}"), message
    for name in ("commit", "rollback"):  # the raw connection's own methods
        message = refusal(getattr(hoc_db.connection(), name))
        assert message.startswith(f"{name}() {CONTROL_WHY}"), message


@pytest.mark.sqlite_only
def test_sending_transaction_control_on_the_raw_connection_is_refused_as_control(hoc_db):
    message = refusal(hoc_db.connection().issue, "BEGIN  IMMEDIATE")
    assert message.startswith(f"raw SQL 'BEGIN IMMEDIATE' {CONTROL_WHY}")
    assert not hoc_db.connection().in_transaction


def test_code_without_a_module_name_is_still_named_as_the_caller(hoc_db):
    code = compile("db.commit()", "<generated>", "exec")
    with pytest.raises(CommitForbidden) as refused:
        exec(code, {"db": hoc_db})  # globals without __name__, as generated code may have
    assert str(refused.value).endswith("called from ?.<module> (<generated>:1)")


@pytest.mark.sqlite_only
def test_executemany_on_the_raw_connection_or_cursor_needs_a_coordinator_transaction(
        hoc_db, hoc_coordinator):
    rows = [("a", "1"), ("b", "2")]
    conn = hoc_db.connection()
    for executemany in (conn.executemany, conn.cursor().executemany):
        message = refusal(executemany, LONG_INSERT, rows)
        assert message.startswith(f"write {LONG_INSERT_SHOWN!r} {WRITE_WHY}")
    assert DecisionSetting.select().count(hoc_db) == 0
    with hoc_coordinator.transaction():
        conn.executemany(LONG_INSERT, rows)
        conn.cursor().executemany(LONG_INSERT.replace("?, ?", "? || 'x', ?"), rows)
    assert sorted(s.key for s in DecisionSetting.select().execute(hoc_db)) == ["a", "ax", "b", "bx"]


@pytest.mark.sqlite_only
def test_a_read_only_blob_stays_read_only_and_a_writable_one_is_refused_by_name(hoc_db, hoc_coordinator):
    with hoc_coordinator.transaction():
        hoc_db.connection().execute(LONG_INSERT, ("k", '"abc"'))
    rowid = hoc_db.connection().execute("SELECT rowid FROM decision_settings").fetchone()[0]
    message = refusal(hoc_db.connection().blobopen, "decision_settings", "key", rowid)
    assert message.startswith(f"blobopen() {WRITE_WHY}")
    with hoc_db.connection().blobopen("decision_settings", "key", rowid, readonly=True) as blob:
        with pytest.raises(sqlite3.OperationalError):
            blob.write(b"z")
    assert hoc_db.connection().execute("SELECT key FROM decision_settings").fetchone() == ("k",)


INSERT_SETTING = PreparedQuery(lambda: DecisionSetting.insert(
    {DecisionSetting.key: peewee.Value("prepared"), DecisionSetting.value: peewee.Value("1"),
     DecisionSetting.updated_at: peewee.Value("2026-01-01T00:00:00.000000+00:00")}))


@pytest.mark.sqlite_only
def test_a_prepared_write_after_sqlite_rolled_the_transaction_back_is_refused_not_autocommitted(
        hoc_db, hoc_coordinator):
    with pytest.raises(CommitForbidden) as refused:
        with hoc_coordinator.transaction() as tx:
            conn = tx.db.connection()
            conn.execute(LONG_INSERT, ("k", "1"))
            with pytest.raises(sqlite3.IntegrityError):
                conn.execute(LONG_INSERT.replace("INSERT", "INSERT OR ROLLBACK"), ("k", "1"))
            INSERT_SETTING.execute(tx.db, ())
    shown = INSERT_SETTING.sql(hoc_db)[0][:40]
    assert str(refused.value).startswith(
        f"write {shown!r} after SQLite rolled the transaction back (ON CONFLICT ROLLBACK, "
        f"RAISE(ROLLBACK), a full disk, ...); it {WRITE_WHY}")
    assert DecisionSetting.select().count(hoc_db) == 0


@pytest.mark.sqlite_only
def test_the_coordinator_does_not_report_a_commit_of_work_sqlite_already_threw_away(hoc_db, hoc_coordinator):
    with pytest.raises(sqlite3.OperationalError) as failed:
        with hoc_coordinator.transaction() as tx:
            conn = tx.db.connection()
            conn.execute(LONG_INSERT, ("k", "1"))
            with pytest.raises(sqlite3.IntegrityError):
                conn.execute(LONG_INSERT.replace("INSERT", "INSERT OR ROLLBACK"), ("k", "1"))
    assert str(failed.value) == (
        "cannot commit: SQLite already rolled this transaction back (ON CONFLICT ROLLBACK, "
        "RAISE(ROLLBACK), a full disk, ...); nothing of it was committed")
    assert DecisionSetting.select().count(hoc_db) == 0


@pytest.mark.sqlite_only
def test_a_prepared_statement_with_the_text_of_transaction_control_is_refused_inside_a_transaction(
        hoc_db, hoc_coordinator):
    with hoc_coordinator.transaction() as tx:
        with tx.savepoint():
            pass  # the coordinator sent SAVEPOINT / RELEASE "hoc_savepoint_1"
        conn = tx.db.connection()
        conn.execute(LONG_INSERT, ("k", "1"))
        message = refusal(conn.execute_built, 'SAVEPOINT "hoc_savepoint_1"', ())
        assert message.startswith(f"""raw SQL 'SAVEPOINT "hoc_savepoint_1"' {CONTROL_WHY}""")
    assert DecisionSetting.select().count(hoc_db) == 1


@pytest.mark.sqlite_only
def test_the_coordinators_commit_text_replayed_from_the_statement_cache_is_refused(hoc_db, hoc_coordinator):
    """The coordinator's COMMIT is cached after its first use; its text (tag included) sent again
    through the raw connection inside a transaction is refused, and the coordinator's own COMMIT
    still commits."""
    conn = hoc_db.connection()
    with hoc_coordinator.transaction():
        pass  # BEGIN and COMMIT sent: both now in the connection's statement cache
    with hoc_coordinator.transaction():
        conn.execute(LONG_INSERT, ("k", "1"))
        message = refusal(conn.execute, conn._commit_sql)
        assert message.startswith("raw SQL 'COMMIT /* hoc-drivers coordinator") and CONTROL_WHY in message
        assert conn.in_transaction
    assert DecisionSetting.select().count(hoc_db) == 1


@pytest.mark.sqlite_only
def test_a_refusal_a_bare_cursor_got_does_not_turn_a_later_failure_into_a_refusal(hoc_db, hoc_coordinator):
    conn = hoc_db.connection()
    with pytest.raises(sqlite3.DatabaseError, match="not authorized"):
        sqlite3.Cursor(conn).execute(LONG_INSERT, ("k", "1"))  # refused by the authorizer, not translated
    with hoc_coordinator.transaction() as tx:
        INSERT_SETTING.execute(tx.db, ())
        with pytest.raises(peewee.IntegrityError):  # the duplicate key it is, not a stale refusal
            INSERT_SETTING.execute(tx.db, ())
        with pytest.raises(sqlite3.IntegrityError):  # through the raw connection's guarded cursor too
            conn.execute("INSERT INTO decision_settings (key, value, updated_at) VALUES ('prepared', '2', 'now')")
    assert DecisionSetting.select().count(hoc_db) == 1


def test_forgetting_a_database_empties_every_registry_and_ignores_unknown_keys():
    from hoc_drivers.commit_guard import forget_database, per_database_registry

    first, second = per_database_registry(), per_database_registry()
    first["db-a"], first["db-b"], second["db-a"] = 1, 2, 3
    forget_database("db-a")
    forget_database("db-never-seen")
    assert first == {"db-b": 2} and second == {}


@pytest.mark.sqlite_only
def test_the_guard_holds_after_a_connection_forgets_the_statements_it_classified(hoc_db, hoc_coordinator):
    conn = hoc_db.connection()
    with hoc_coordinator.transaction():  # more distinct writes than a connection remembers
        for n in range(4100):
            conn.execute(f"UPDATE decision_settings SET value = value WHERE key = 'k{n}'")
    message = refusal(conn.execute, LONG_INSERT, ("k", "1"))
    assert message.startswith(f"write {LONG_INSERT_SHOWN!r} {WRITE_WHY}")
    assert DecisionSetting.select().count(hoc_db) == 0


READ_SETTING = PreparedQuery(lambda: DecisionSetting.select(DecisionSetting.value)
                             .where(DecisionSetting.key == PLACEHOLDER))


def test_a_prepared_read_binds_its_values_inside_and_outside_a_transaction(hoc_db, hoc_coordinator):
    with hoc_coordinator.transaction() as tx:
        INSERT_SETTING.execute(tx.db, ())
        assert READ_SETTING.execute(tx.db, ("prepared",)).fetchall() == [("1",)]
    assert READ_SETTING.execute(hoc_db, ("prepared",)).fetchall() == [("1",)]
    assert READ_SETTING.execute(hoc_db, ("other",)).fetchall() == []


def test_queries_render_in_the_databases_own_dialect(hoc_db):
    from hoc_drivers import dialect

    node = dialect.by_dialect(peewee.SQL("'on sqlite'"), peewee.SQL("'on postgresql'"))
    expected = "on sqlite" if dialect.of(hoc_db) == dialect.SQLITE else "on postgresql"
    assert hoc_db.execute_sql(hoc_db.get_sql_context().sql(peewee.Select(columns=[node])).query()[0]
                              ).fetchone() == (expected,)


def test_a_database_not_yet_connected_has_no_coordinator_transaction(tmp_path):
    from hoc_drivers.db import init_database

    db = init_database(str(tmp_path / "x.db"))
    db.close()
    assert db.current_unit() is None and not db.in_transaction()


@pytest.mark.sqlite_only
def test_each_in_memory_database_is_its_own_and_one_file_is_one_database_however_named(tmp_path, monkeypatch):
    import gc

    from hoc_drivers.commit_guard import GuardedSqliteDatabase, database_key, per_database_registry

    memories = [GuardedSqliteDatabase(name) for name in
                (":memory:", ":memory:", "file::memory:?cache=shared", "file:x?mode=memory&cache=shared")]
    keys = [database_key(db) for db in memories]
    assert len(set(keys)) == 4 and all(key[0] == "memory" for key in keys)
    registry = per_database_registry()
    registry[keys[0]] = "cache of the first"
    del memories
    gc.collect()
    assert keys[0] not in registry  # a collected in-memory database leaves nothing behind
    monkeypatch.chdir(tmp_path)
    files = [GuardedSqliteDatabase(name) for name in ("a.db", str(tmp_path / "a.db"), "./sub/../a.db")]
    (tmp_path / "sub").mkdir()
    assert {database_key(db) for db in files} == {str((tmp_path / "a.db").resolve())}
    assert database_key(GuardedSqliteDatabase("b.db")) != database_key(files[0])


@pytest.mark.sqlite_only
def test_positional_options_reach_peewee(tmp_path):
    from hoc_drivers.commit_guard import GuardedSqliteDatabase

    db = GuardedSqliteDatabase(str(tmp_path / "x.db"), [("cache_size", -4096)])  # pragmas, positional
    assert db.execute_sql("PRAGMA cache_size").fetchone() == (-4096,)
    db.close()


@pytest.mark.sqlite_only
def test_the_cursor_a_hot_statement_returns_keeps_the_guard(hoc_db, hoc_coordinator):
    with hoc_coordinator.transaction() as tx:
        cursor = PreparedQuery(lambda: DecisionSetting.select(DecisionSetting.key)
                               .where(DecisionSetting.key == PLACEHOLDER)).execute(tx.db, ["k"])
        message = refusal(cursor.execute, "BEGIN IMMEDIATE")  # the coordinator's own, cached text
        assert message.startswith(f"raw SQL 'BEGIN IMMEDIATE' {CONTROL_WHY}")


@pytest.mark.sqlite_only
def test_control_text_never_seen_before_is_refused_on_the_hot_path_by_its_name(hoc_db, hoc_coordinator):
    with hoc_coordinator.transaction() as tx:
        message = refusal(tx.db.connection().execute_built, 'SAVEPOINT "never_seen_before"', ())
        assert message.startswith(f"""raw SQL 'SAVEPOINT "never_seen_before"' {CONTROL_WHY}""")


@pytest.mark.sqlite_only
def test_a_bare_cursors_write_after_a_hot_statement_is_still_refused(hoc_db, hoc_coordinator):
    with hoc_coordinator.transaction() as tx:
        PreparedQuery(lambda: DecisionSetting.insert(key=PLACEHOLDER, value=PLACEHOLDER)).execute(tx.db, ["k", "1"])
        bare = sqlite3.Cursor(tx.db.connection())  # its statements cannot be remembered by text
        with pytest.raises(sqlite3.DatabaseError, match="not authorized"):
            bare.execute("INSERT INTO decision_settings (key, value) VALUES ('bare', 'after a hot one')")
    assert [s.key for s in DecisionSetting.select().execute(hoc_db)] == ["k"]


@pytest.mark.sqlite_only
def test_after_a_commit_or_a_rollback_raw_transaction_control_is_refused_again(hoc_db, hoc_coordinator):
    with hoc_coordinator.transaction():
        pass
    assert refusal(hoc_db.connection().execute, "BEGIN").startswith(f"raw SQL 'BEGIN' {CONTROL_WHY}")
    with pytest.raises(RuntimeError, match="undo"), hoc_coordinator.transaction():
        raise RuntimeError("undo")
    assert refusal(hoc_db.connection().execute, "BEGIN").startswith(f"raw SQL 'BEGIN' {CONTROL_WHY}")
    assert not hoc_db.connection().in_transaction
