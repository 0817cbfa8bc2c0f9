"""The design card's thin entry: `python cli.py ...` runs the `hoc-drivers` command line.

The commands live in the package (`hoc_drivers/cli.py`, COMMANDS there); the installed console
script and `python -m hoc_drivers` use it directly. This file is not installed.
"""
from hoc_drivers.cli import COMMANDS, NO_DATABASE, cli, main

__all__ = ["COMMANDS", "NO_DATABASE", "cli", "main"]

if __name__ == "__main__":
    main()
