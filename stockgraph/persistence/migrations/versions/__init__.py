"""Alembic revisions, oldest first; each module is loaded by Alembic, not imported."""
