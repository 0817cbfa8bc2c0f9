"""Listing that behaves the same everywhere: newest first, --since/--until/--offset, id
prefixes, numbers in JSON, --csv / --nl, and tables fitted to the terminal."""
import csv
import io
import json
from datetime import datetime, timezone
from decimal import Decimal

from freezegun import freeze_time

from tests.test_cli_guard_costs import ANOMALY

from hoc_drivers.commands.common import render, to_jsonable


def _json(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _seed_incidents(run_cli, db):
    """Three incidents a day apart via `anomaly record`, oldest first; "now" is 2026-03-03 13:00."""
    for day in (1, 2, 3):
        with freeze_time(f"2026-03-0{day}T12:00:00Z"):
            _json(run_cli(db, *ANOMALY[:5], f"an-{day}", *ANOMALY[6:], "--json"))


def test_lists_are_newest_first_with_a_window_and_an_offset(run_cli, db):
    _seed_incidents(run_cli, db)
    base = ["incidents", "list", "--tenant", "acme", "--json"]
    days = [r["created_at"][:10] for r in _json(run_cli(db, *base))]
    assert days == ["2026-03-03", "2026-03-02", "2026-03-01"]
    assert [r["created_at"][:10] for r in _json(run_cli(db, *base, "--limit", "1", "--offset", "1"))] \
        == ["2026-03-02"]
    window = _json(run_cli(db, *base, "--since", "2026-03-02T00:00", "--until", "2026-03-03T00:00"))
    assert [r["created_at"][:10] for r in window] == ["2026-03-02"]
    with freeze_time("2026-03-03T13:00:00Z"):
        assert [r["created_at"][:10] for r in _json(run_cli(db, *base, "--since", "1d"))] == ["2026-03-03"]


def test_incidents_show_takes_a_unique_prefix(run_cli, db):
    _seed_incidents(run_cli, db)
    ids = [r["id"] for r in _json(run_cli(db, "incidents", "list", "--tenant", "acme", "--json"))]
    shown = _json(run_cli(db, "incidents", "show", ids[0][:12], "--tenant", "acme", "--json"))
    assert shown["id"] == ids[0] and isinstance(shown["events"], list)
    missing = run_cli(db, "incidents", "show", "zzzz", "--tenant", "acme")
    assert missing.exit_code == 1 and "not found" in missing.stderr
    other = run_cli(db, "incidents", "show", ids[0][:12], "--tenant", "beta")
    assert other.exit_code == 1


def test_an_ambiguous_prefix_exits_2(run_cli, db):
    _seed_incidents(run_cli, db)
    assert run_cli(db, "incidents", "show", "", "--tenant", "acme").exit_code == 2
    ids = [r["id"] for r in _json(run_cli(db, "incidents", "list", "--tenant", "acme", "--json"))]
    common = next((a[:n] for n in range(3, 0, -1) for a in ids for b in ids
                   if a != b and a[:n] == b[:n]), None)
    if common is not None:  # uuid hex ids: a shared 1-character prefix is all but certain
        result = run_cli(db, "incidents", "show", common, "--tenant", "acme")
        assert result.exit_code == 2 and "ambiguous" in result.stderr


def test_csv_and_nl_carry_every_key(run_cli, db):
    _seed_incidents(run_cli, db)
    base = ["incidents", "list", "--tenant", "acme"]
    as_json = _json(run_cli(db, *base, "--json"))
    lines = run_cli(db, *base, "--nl").stdout.splitlines()
    assert [json.loads(line) for line in lines] == as_json
    rows = list(csv.DictReader(io.StringIO(run_cli(db, *base, "--csv").stdout)))
    assert [r["id"] for r in rows] == [r["id"] for r in as_json] and set(rows[0]) == set(as_json[0])


def test_decimals_are_json_numbers_keeping_exactness():
    assert to_jsonable({"a": Decimal("150.0000"), "b": Decimal("0.25"),
                        "c": Decimal("0.1000000000000000000001")}) == {
        "a": 150, "b": 0.25, "c": "0.1000000000000000000001"}


def test_tables_fit_the_terminal_and_show_seconds(monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    when = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
    text = render([{"id": "x" * 60, "at": when}], "table")
    assert all(len(line) <= 60 for line in text.splitlines())
    assert "\u2026" in text and "2026-03-01T12:00:00+00:00" in text and "123456" not in text


def test_an_operator_answers_the_daily_questions_without_sqlite3(run_cli, db):
    """Issue 15's walk: which alerts failed for tenant X and why; who froze this switch, when,
    why and until when; what changed since yesterday — with the CLI alone, on a real file."""
    from hoc_drivers.alert_driver import AlertQueueWriter
    from hoc_drivers.db import connect_database
    from hoc_drivers.transaction_coordinator import TransactionCoordinator

    switch = ["--tenant", "acme", "--entity-type", "tenant", "--entity-id", "acme"]
    signal = ["signals", "record", "--scope", "acme", "--type", "CI_STATUS", "--by", "CI", "--json"]
    with freeze_time("2026-03-01T09:00:00Z"):  # the day before
        _json(run_cli(db, *signal, "--decision", "WARN"))
        _json(run_cli(db, *ANOMALY[:5], "an-old", *ANOMALY[6:], "--json"))
    with freeze_time("2026-03-02T10:00:00Z"):  # today
        _json(run_cli(db, *signal, "--decision", "BLOCKED"))
        _json(run_cli(db, *ANOMALY[:5], "an-new", *ANOMALY[6:], "--json"))
        _json(run_cli(db, "killswitch", "freeze", *switch, "--by", "alice", "--reason", "cost spike",
                      "--for", "2h", "--json"))
        library = connect_database(str(db))
        with TransactionCoordinator(library).transaction() as tx:  # a receiver that is down
            AlertQueueWriter(tx).insert_alert("acme", {"event": "x"}, "threshold", channel="webhook",
                                              destination={"url": "http://127.0.0.1:9/hook"},
                                              max_attempts=1)
        library.close()
        assert run_cli(db, "alerts", "send", "--once", "--timeout", "2").exit_code == 0

    with freeze_time("2026-03-02T11:00:00Z"):
        failed = _json(run_cli(db, "alerts", "list", "--tenant", "acme", "--status", "failed", "--json"))
        assert len(failed) == 1 and failed[0]["last_error"]  # why: the delivery error is kept
        frozen = _json(run_cli(db, "killswitch", "history", *switch, "--json"))
        assert (frozen[0]["actor"], frozen[0]["reason"]) == ("alice", "cost spike")
        assert frozen[0]["until"].startswith("2026-03-02T12:00:00")
        since = ["--tenant", "acme", "--since", "1d", "--json"]
        assert [i["anomaly_id"] for i in _json(run_cli(db, "incidents", "list", *since))] == ["an-new"]
        recent = _json(run_cli(db, "signals", "list", "--scope", "acme", "--since", "1d", "--json"))
        assert [s["decision"] for s in recent] == ["BLOCKED"]


def test_alert_and_notification_commands_take_a_unique_id_prefix(run_cli, db):
    from hoc_drivers.alert_driver import AlertQueueWriter
    from hoc_drivers.db import connect_database
    from hoc_drivers.models.alerts import Notification
    from hoc_drivers.transaction_coordinator import TransactionCoordinator

    library = connect_database(str(db))
    with TransactionCoordinator(library).transaction() as tx:
        ids = [AlertQueueWriter(tx).insert_alert("acme", {"n": n}, "threshold").id for n in range(2)]
        for note_id in ("note-1234", "note-5678"):
            Notification.insert(id=note_id, tenant_id="acme", notification_type="near_threshold",
                                title="t").execute(tx.db)
    library.close()
    shown = _json(run_cli(db, "alerts", "show", ids[0][:12], "--tenant", "acme", "--json"))
    assert shown["id"] == ids[0]
    assert _json(run_cli(db, "alerts", "retry", ids[1][:12], "--tenant", "acme", "--json"))["id"] == ids[1]
    ambiguous = run_cli(db, "notifications", "ack", "note-", "--tenant", "acme")
    assert ambiguous.exit_code == 2 and "ambiguous" in ambiguous.stderr
    assert run_cli(db, "alerts", "show", "zz-none", "--tenant", "acme").exit_code == 1
    assert _json(run_cli(db, "notifications", "ack", "note-1", "--tenant", "acme", "--json"))["id"] == "note-1234"
    assert run_cli(db, "alerts", "delete", ids[0][:12], "--tenant", "acme").exit_code == 0
    assert run_cli(db, "alerts", "show", ids[0][:12], "--tenant", "other").exit_code == 1  # never another tenant's
