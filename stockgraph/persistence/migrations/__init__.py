"""Alembic environment and revisions for the Stockgraph schema (see ``env.py``)."""
