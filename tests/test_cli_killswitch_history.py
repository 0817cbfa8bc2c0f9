"""CLI: kill switch history, list and timed freezes (issue 15), on real files, time by freezegun."""

import pytest
from conftest import as_json, dump, ok, one_line_error
from freezegun import freeze_time

SWITCH = ["--tenant", "acme", "--entity-type", "tenant", "--entity-id", "acme"]
KEY = ["--tenant", "acme", "--entity-type", "key", "--entity-id", "key-1"]


def test_who_froze_this_switch_when_why_and_when_it_ends(run_cli, db):
    """The operator's questions, answered without sqlite3."""
    with freeze_time("2026-03-01 12:00:00") as clock:
        frozen = as_json(run_cli(db, "killswitch", "freeze", *SWITCH, "--by", "alice",
                                 "--reason", "cost spike", "--for", "2h", "--json"))
        assert (frozen["is_frozen"], frozen["frozen_at"], frozen["frozen_until"]) == (
            True, "2026-03-01T12:00:00+00:00", "2026-03-01T14:00:00+00:00")
        clock.tick(60)
        status = as_json(run_cli(db, "killswitch", "status", *SWITCH, "--json"))
        assert (status["is_frozen"], status["frozen_by"], status["freeze_reason"],
                status["frozen_at"], status["frozen_until"]) == (
            True, "alice", "cost spike", "2026-03-01T12:00:00+00:00", "2026-03-01T14:00:00+00:00")
        assert "frozen_until     2026-03-01T14:00:00+00:00" in ok(
            run_cli(db, "killswitch", "status", *SWITCH)).stdout
        history = as_json(run_cli(db, "killswitch", "history", *SWITCH, "--json"))
        assert [(e["action"], e["actor"], e["reason"], e["created_at"], e["until"])
                for e in history] == [("freeze", "alice", "cost spike",
                                       "2026-03-01T12:00:00+00:00", "2026-03-01T14:00:00+00:00")]
        one_line_error(run_cli(db, "killswitch", "freeze", *SWITCH, "--by", "bob"), 1,
                       "already frozen (by alice at 2026-03-01T12:00:00+00:00 until "
                       "2026-03-01T14:00:00+00:00: cost spike)")


def test_a_timed_freeze_ends_by_itself_without_any_process(run_cli, db):
    with freeze_time("2026-03-01 12:00:00") as clock:
        ok(run_cli(db, "killswitch", "freeze", *SWITCH, "--by", "alice", "--for", "1h30m"))
        clock.tick(90 * 60 - 1)
        assert as_json(run_cli(db, "killswitch", "status", *SWITCH, "--json"))["is_frozen"] is True
        clock.tick(1)  # the end time: nothing ran in between
        status = as_json(run_cli(db, "killswitch", "status", *SWITCH, "--json"))
        assert (status["is_frozen"], status["frozen_until"]) == (False, "2026-03-01T13:30:00+00:00")
        guard = as_json(run_cli(db, "guard", "status", "--tenant", "acme", "--json"))
        assert guard["is_frozen"] is False  # the guard console's status too (its cache: test_guard_cache)
        assert as_json(run_cli(db, "killswitch", "list", "--tenant", "acme", "--frozen", "--json")) == []
        before = dump(db)
        one_line_error(run_cli(db, "killswitch", "unfreeze", *SWITCH, "--by", "bob"), 1,
                       "Tenant 'acme' is not frozen (its freeze ended at 2026-03-01T13:30:00+00:00)")
        assert dump(db) == before
        again = as_json(run_cli(db, "killswitch", "freeze", *SWITCH, "--by", "bob", "--json"))
        assert (again["is_frozen"], again["frozen_by"], again["frozen_until"]) == (True, "bob", None)


def test_the_unfreeze_reason_is_kept_and_history_is_newest_first(run_cli, db):
    with freeze_time("2026-03-01 12:00:00") as clock:
        ok(run_cli(db, "killswitch", "freeze", *SWITCH, "--by", "alice", "--reason", "spike"))
        clock.tick(60)
        unfrozen = as_json(run_cli(db, "killswitch", "unfreeze", *SWITCH, "--by", "bob",
                                   "--reason", "false alarm", "--json"))
        assert (unfrozen["unfrozen_by"], unfrozen["unfreeze_reason"]) == ("bob", "false alarm")
        status = as_json(run_cli(db, "killswitch", "status", *SWITCH, "--json"))
        assert (status["is_frozen"], status["unfreeze_reason"], status["unfrozen_at"]) == (
            False, "false alarm", "2026-03-01T12:01:00+00:00")
        clock.tick(60)
        ok(run_cli(db, "killswitch", "freeze", *SWITCH, "--by", "carol", "--for", "30m"))
        history = as_json(run_cli(db, "killswitch", "history", *SWITCH, "--json"))
        assert [(e["action"], e["actor"], e["reason"]) for e in history] == [
            ("freeze", "carol", "Manual freeze"), ("unfreeze", "bob", "false alarm"),
            ("freeze", "alice", "spike")]
        assert len(as_json(run_cli(db, "killswitch", "history", *SWITCH, "--limit", "1", "--json"))) == 1
        table = ok(run_cli(db, "killswitch", "history", *SWITCH)).stdout.splitlines()
        assert table[0].split() == ["CREATED_AT", "ACTION", "ACTOR", "REASON", "UNTIL", "TRIGGER_TYPE"]
        assert table[2].split()[:3] == ["2026-03-01T12:02:00+00:00", "freeze", "carol"]
        other = as_json(run_cli(db, "killswitch", "history", "--tenant", "beta", "--entity-type",
                                "tenant", "--entity-id", "acme", "--json"))
        assert other == []  # another tenant sees none of it


def test_list_a_tenants_switches_or_every_frozen_one(run_cli, db):
    with freeze_time("2026-03-01 12:00:00") as clock:
        ok(run_cli(db, "killswitch", "freeze", *SWITCH, "--by", "alice", "--for", "1h"))
        clock.tick(1)
        ok(run_cli(db, "killswitch", "freeze", *KEY, "--by", "alice"))
        ok(run_cli(db, "killswitch", "unfreeze", *KEY, "--by", "alice"))
        clock.tick(1)
        ok(run_cli(db, "killswitch", "freeze", "--tenant", "beta", "--entity-type", "key",
                   "--entity-id", "k-b", "--by", "bob"))
        rows = as_json(run_cli(db, "killswitch", "list", "--tenant", "acme", "--json"))
        assert [(r["entity_id"], r["is_frozen"]) for r in rows] == [("key-1", False), ("acme", True)]
        rows = as_json(run_cli(db, "killswitch", "list", "--tenant", "acme", "--frozen", "--json"))
        assert [(r["entity_id"], r["frozen_until"]) for r in rows] == [("acme", "2026-03-01T13:00:00+00:00")]
        rows = as_json(run_cli(db, "killswitch", "list", "--all-tenants", "--json"))
        assert [(r["tenant_id"], r["entity_id"]) for r in rows] == [("beta", "k-b"), ("acme", "acme")]
        table = ok(run_cli(db, "killswitch", "list", "--all-tenants")).stdout
        assert "FROZEN_UNTIL" in table and "2026-03-01T13:00:00+00:00" in table
        clock.tick(3600)
        rows = as_json(run_cli(db, "killswitch", "list", "--all-tenants", "--json"))
        assert [(r["tenant_id"], r["entity_id"]) for r in rows] == [("beta", "k-b")]


@pytest.mark.parametrize("args, message", [
    (["killswitch", "freeze", *SWITCH, "--by", "x", "--for", "0m"], "'0m' is not a positive duration"),
    (["killswitch", "freeze", *SWITCH, "--by", "x", "--for", "2 hours"], "is not a positive duration"),
    (["killswitch", "freeze", *SWITCH, "--by", "x", "--for", "-1h"], "is not a positive duration"),
    (["killswitch", "list"], "give --tenant T, or --all-tenants to look across tenants"),
    (["killswitch", "list", "--tenant", "acme", "--all-tenants"], "or --all-tenants to look across tenants"),
    (["killswitch", "history", "--tenant", "acme", "--entity-type", "tenant"], "--entity-id"),
])
def test_bad_input_is_one_line_and_writes_nothing(run_cli, db, args, message):
    before = dump(db)
    one_line_error(run_cli(db, *args), 2, message)
    assert dump(db) == before
