"""The `triggers` command line."""
