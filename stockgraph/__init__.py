"""Stockgraph: one GraphQL API in front of many warehouse management systems."""

__version__ = "0.1.0"
