"""CLI: every setting with its value and where the value came from (secrets shown as ***)."""
import difflib

import click

from .. import settings as declared
from .common import CliError, emit, json_option


@click.command("settings")
@click.argument("names", nargs=-1)
@json_option
@click.pass_context
def settings(ctx, names, as_json):
    """Show each setting (all, or the NAMEs given): value, source (flag, env $VAR, file PATH or
    default), environment variable and description. Secrets are shown as ***.

    Example: hoc-drivers --config ./hoc-drivers.toml settings smtp.port database.path
    """
    for name in names:
        if name not in declared.SETTINGS:
            close = difflib.get_close_matches(name, declared.SETTINGS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise CliError(f"no setting {name!r}.{hint} (`hoc-drivers settings` lists them)")
    flags = {"database.path": ctx.find_root().meta.get("hoc.db_path")}
    rows = [row for row in declared.describe(flags) if not names or row["name"] in names]
    emit(rows, as_json, ["name", "value", "source", "env", "description"])
