"""Shared test helpers (fixtures come from the hoc_drivers.testing plugin)."""
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
