"""Decision Records: the append-only decision sink, with no commit of its own."""
ACCESS = "READ+WRITE"
