"""The command reference (docs/cli.md), generated from the click command tree itself and (its
last section) from the settings' declarations in hoc_drivers.settings.

`python -m hoc_drivers.cli_docs > docs/cli.md` regenerates it; `undocumented_commands` and
`documented_but_absent` are what the documentation test checks.
"""
import re

import click

HEADING = re.compile(r"^## `(hoc-drivers(?: [\w-]+)*)`$", re.MULTILINE)


def command_paths(group=None):
    """Every leaf command as (path, command), e.g. ('hoc-drivers signals record', cmd)."""
    from . import cli

    root = group or cli.cli
    found = []

    def walk(command, path):
        if isinstance(command, click.Group):
            ctx = click.Context(command, info_name=path.split()[-1])
            for name in command.list_commands(ctx):
                walk(command.get_command(ctx, name), f"{path} {name}")
        else:
            found.append((path, command))

    walk(root, "hoc-drivers")
    return found


def render(group=None):
    """The whole reference as Markdown: one section per command with its --help text, then the
    settings."""
    from .settings import reference

    lines = ["# hoc-drivers command reference", "",
             "Generated from the commands themselves (`python -m hoc_drivers.cli_docs > docs/cli.md`).",
             "Every command that opens a database takes `--db PATH` (else `HOC_DRIVERS_DB`, else",
             "./hoc.db); most take `--json`. Exit codes: 0 ok, 1 check failed / violation / error,",
             "2 bad input, 3 blocked.", ""]
    for path, command in command_paths(group):
        ctx = click.Context(command, info_name=path)
        lines += [f"## `{path}`", "", "```text", command.get_help(ctx), "```", ""]
    return "\n".join(lines + [reference()])


def documented_commands(markdown):
    """The command paths that have a section in `markdown`."""
    return set(HEADING.findall(markdown))


def undocumented_commands(markdown, group=None):
    """Commands that exist but have no section."""
    return sorted({path for path, _ in command_paths(group)} - documented_commands(markdown))


def documented_but_absent(markdown, group=None):
    """Sections for commands that do not exist."""
    return sorted(documented_commands(markdown) - {path for path, _ in command_paths(group)})


if __name__ == "__main__":
    print(render())
