"""DAG-based executor for PLang v2.0."""
ACCESS = "READ"
