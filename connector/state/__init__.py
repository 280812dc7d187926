"""The state: the SQLite store, its models and its Alembic migrations."""
