"""CLI: `notifications list|ack`, on a real database file."""
import json

ENQUEUE = ["alerts", "enqueue", "--policy", "budget", "--run", "run-42", "--metric", "cost",
           "--current", "85", "--threshold", "100"]


def test_list_a_tenants_notifications_and_acknowledge_one(run_cli, tmp_path):
    path = tmp_path / "hoc.db"
    missing = run_cli(path, "notifications", "list", "--tenant", "acme")
    assert missing.exit_code == 2 and "init" in missing.stderr and not path.exists()
    assert run_cli(path, "init").exit_code == 0
    for tenant, extra in (("acme", []), ("acme", ["--breach", "--action", "stop"]), ("globex", [])):
        assert run_cli(path, *ENQUEUE, "--tenant", tenant, *extra).exit_code == 0
    listed = json.loads(run_cli(path, "notifications", "list", "--tenant", "acme", "--json").stdout)
    assert [n["notification_type"] for n in listed] == ["breach", "near_threshold"]
    assert {n["tenant_id"] for n in listed} == {"acme"} and listed[0]["action_taken"] == "stop"
    near = listed[1]["id"]
    foreign = run_cli(path, "notifications", "ack", near, "--tenant", "globex")
    assert foreign.exit_code == 1 and "not found for tenant 'globex'" in foreign.stderr
    acked = json.loads(run_cli(path, "notifications", "ack", near, "--tenant", "acme", "--json").stdout)
    assert acked["read_at"] is not None
    again = json.loads(run_cli(path, "notifications", "ack", near, "--tenant", "acme", "--json").stdout)
    assert again["read_at"] == acked["read_at"]
    unread = run_cli(path, "notifications", "list", "--tenant", "acme", "--unread")
    assert "breach" in unread.stdout and near not in unread.stdout and "READ_AT" in unread.stdout
    assert run_cli(path, "notifications", "list").exit_code == 2  # --tenant is required
