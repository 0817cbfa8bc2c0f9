"""Shared test helpers (fixtures come from the hoc_drivers.testing plugin)."""
import json
import sqlite3

import pytest
from click.testing import CliRunner

import cli


@pytest.fixture
def run_cli():
    """Invoke the CLI in-process: run_cli(db_path, *args) -> click Result."""
    def invoke(db_path, *args):
        runner = CliRunner()
        return runner.invoke(cli.cli, ["--db", str(db_path), *args])
    return invoke


def dump(path):
    """Every row of the database file at `path` (SQL text), to compare before and after."""
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def alter(path, *statements):
    """Run `statements` on the file at `path` behind the library's back (drift, damage)."""
    conn = sqlite3.connect(path)
    for sql in statements:
        conn.execute(sql)
    conn.commit()
    conn.close()


@pytest.fixture
def db(tmp_path, run_cli):
    """An initialised database file (only init creates one)."""
    path = tmp_path / "hoc.db"
    ok(run_cli(path, "init"))
    return path


def ok(result):
    """`result` of a CLI call that must succeed quietly (exit 0, nothing on stderr)."""
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    return result


def as_json(result):
    """The JSON a successful `--json` CLI call printed."""
    return json.loads(ok(result).stdout)


def one_line_error(result, exit_code, message):
    """Assert a CLI failure: `exit_code`, one `error:` line containing `message`, no traceback."""
    assert result.exit_code == exit_code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.output


@pytest.fixture
def queue(hoc_coordinator):
    """Run `fn(driver)` in one coordinator transaction: queue(lambda d: ...)."""
    from hoc_drivers.alert_driver import AlertDriver

    def run(fn):
        with hoc_coordinator.transaction() as tx:
            return fn(AlertDriver(tx))
    return run


@pytest.fixture
def receiver():
    """A real HTTP server on 127.0.0.1 (tests/test_alert_sender.py's HttpReceiver)."""
    from tests.test_alert_sender import HttpReceiver

    server = HttpReceiver()
    yield server
    server.down()


@pytest.fixture
def smtp_server(request):
    """A real SMTP server on 127.0.0.1 (SmtpReceiver; its options by indirect parametrisation)."""
    from tests.test_alert_sender import SmtpReceiver

    server = SmtpReceiver(**getattr(request, "param", {}))
    yield server
    server.shutdown()
    server.server_close()

