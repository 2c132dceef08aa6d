"""The ``graphql`` dialect: a GraphQL WMS that prices every query from a credit bucket.

Batch lookups of up to 50 SKUs in one query, cursor pagination over every inventory item,
idempotent order mutations, and signed webhooks for everything that happens on the
warehouse floor (so it is never polled). Each call's cost comes back in
``extensions.cost``; a throttled call is an HTTP 200 with a ``THROTTLED`` error. ``spec``
declares it, ``wire`` is its documents and JSON, ``client`` speaks it, ``simulator`` serves
it. These modules import graphql-core by its absolute name, ``graphql``; this package is
only ever ``stockgraph.connectors.graphql``.
"""

from stockgraph.connectors.graphql.client import GraphqlConnector
from stockgraph.connectors.graphql.spec import SPEC, GraphqlConfig

__all__ = ["SPEC", "GraphqlConfig", "GraphqlConnector"]
