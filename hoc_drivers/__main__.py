"""`python -m hoc_drivers ...`: the `hoc-drivers` command line."""
from .cli import main

if __name__ == "__main__":
    main()
