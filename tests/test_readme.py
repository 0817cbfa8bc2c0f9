"""The README's embedding example runs as written."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def test_embedding_example_runs(tmp_path, monkeypatch, capsys):
    text = README.read_text(encoding="utf-8")
    example = re.search(r"## Embedding it.*?```python\n(.*?)```", text, re.S).group(1)
    assert len(example.strip().splitlines()) <= 25
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md", "exec"), {})
    output = capsys.readouterr().out
    assert "committed" in output
    assert (tmp_path / "my-app.db").exists()
    import sqlite3
    conn = sqlite3.connect(tmp_path / "my-app.db")
    assert conn.execute("SELECT count(*) FROM decision_records").fetchone()[0] == 1
    assert conn.execute("SELECT count(*) FROM notifications").fetchone()[0] == 1


def test_ci_runs_exactly_the_readme_test_command_on_both_backends():
    text = README.read_text(encoding="utf-8")
    command = re.search(r"Run the whole test suite.*?```sh\n(.*?)\n```", text, re.S).group(1)
    assert "HOC_TEST_BACKEND=postgresql" in command and "[test,pg]" in command
    ci_lines = (README.parent / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert ci_lines[-1] == command


def test_the_readme_starts_a_local_postgresql_and_the_demo_runs_on_it():
    pytest.importorskip("pgserver", reason="the pg extra is not installed")
    import shlex
    import shutil
    import subprocess
    import sys
    import tempfile

    # a short folder others may enter: run as root, pgserver runs PostgreSQL as another user,
    # which cannot pass pytest's private folders (and a Unix socket path has ~100 characters)
    tmp_path = Path(tempfile.mkdtemp(prefix="hoc-readme-"))
    tmp_path.chmod(0o755)

    text = README.read_text(encoding="utf-8")
    section = text[text.index("## PostgreSQL"):text.index("## Embedding it")]
    start = re.search(r"```sh\n.*?&& (\.venv/bin/python -c .*?)\n```", section, re.S).group(1)
    stop = re.search(r"Stop the server with `(.*?)`", section).group(1)
    python = [sys.executable] + shlex.split(start)[1:]
    url = subprocess.run(python, cwd=tmp_path, capture_output=True, text=True, check=True,
                         timeout=120).stdout.strip()
    try:
        assert url.startswith("postgresql://") and str(tmp_path / "pgdata") in url
        demo = subprocess.run([sys.executable, "-c", "import cli; cli.main()", "--db", url, "demo"],
                              cwd=README.parent, capture_output=True, text=True, timeout=300)
        assert demo.returncode == 0, demo.stdout + demo.stderr
    finally:
        subprocess.run([sys.executable] + shlex.split(stop)[1:], cwd=tmp_path, check=True, timeout=60)
        shutil.rmtree(tmp_path, ignore_errors=True)
    import psycopg
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=5).close()
