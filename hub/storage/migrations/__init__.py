"""Alembic migrations of the hub schema (SQLite and PostgreSQL)."""
