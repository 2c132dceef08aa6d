"""The ``rest`` dialect: a JSON REST WMS of the kind 3PLs expose.

API-key authentication, a paginated inventory listing, a batch lookup of up to 100 item
codes, idempotent order submission, and signed webhooks for everything that happens on
the warehouse floor (so it is never polled). Some items are reported in cases rather than
eaches. ``spec`` declares it, ``wire`` is its JSON, ``client`` speaks it, ``simulator``
serves it.
"""

from stockgraph.connectors.rest.client import RestConnector
from stockgraph.connectors.rest.spec import SPEC, RestConfig

__all__ = ["SPEC", "RestConfig", "RestConnector"]
