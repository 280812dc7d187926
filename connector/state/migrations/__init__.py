"""Alembic migrations of the state database, applied at every start."""
