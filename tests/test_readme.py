"""The README's embedding example runs as written."""
import re
from pathlib import Path

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
