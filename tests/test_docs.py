"""docs/cli.md lists every command, and only commands that exist."""
from pathlib import Path

import click

import cli
from hoc_drivers.cli_docs import documented_but_absent, render, undocumented_commands

DOCS = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


def test_every_command_is_documented_and_every_documented_command_exists():
    markdown = DOCS.read_text(encoding="utf-8")
    assert undocumented_commands(markdown) == [], "run: python -m hoc_drivers.cli_docs > docs/cli.md"
    assert documented_but_absent(markdown) == []


def test_a_new_command_without_docs_is_caught():
    markdown = DOCS.read_text(encoding="utf-8")

    @click.command("frobnicate")
    def frobnicate():
        """Not documented anywhere."""

    group = click.Group("hoc-drivers", commands={name: cli.cli.get_command(None, name)
                                                  for name in cli.COMMANDS})
    group.add_command(frobnicate)
    assert undocumented_commands(markdown, group) == ["hoc-drivers frobnicate"]


def test_a_documented_command_that_is_gone_is_caught():
    markdown = DOCS.read_text(encoding="utf-8") + "\n## `hoc-drivers teleport`\n"
    assert documented_but_absent(markdown) == ["hoc-drivers teleport"]


def test_every_command_help_has_an_example():
    missing = [line for line in render().split("\n## ")[1:] if "Example" not in line]
    assert missing == []


def test_every_command_takes_json_and_db():
    from hoc_drivers.cli_docs import command_paths

    for path, command in command_paths():
        options = {option for param in command.params for option in param.opts}
        uses_db = path.removeprefix("hoc-drivers ") not in cli.NO_DATABASE
        assert {"--json", "--debug"} <= options and ("--db" in options) == uses_db, path


def test_the_settings_section_is_generated_from_the_declarations():
    from hoc_drivers.settings import SETTINGS, reference

    markdown = DOCS.read_text(encoding="utf-8")
    assert reference() in markdown, "run: python -m hoc_drivers.cli_docs > docs/cli.md"
    assert all(f"| `{s.name}` | `{s.env}` |" in markdown for s in SETTINGS.values())
