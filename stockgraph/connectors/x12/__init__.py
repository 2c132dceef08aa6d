"""The ``x12`` dialect: an EDI 3PL exchanging ANSI X12 documents through an HTTP mailbox.

Nothing is pushed: the warehouse's 846 inventory advices, 947 adjustments and 945 shipping
advices wait in its outbound mailbox until polled, and each is acknowledged with a 997. We
post 940 shipping orders (and their cancellations) and 846 inquiries to its inbound
mailbox, and it answers each with its 997. ``spec`` declares it, ``wire`` is its X12,
``client`` speaks it, ``simulator`` serves it.
"""

from stockgraph.connectors.x12.client import X12Connector
from stockgraph.connectors.x12.spec import SPEC, X12Config

__all__ = ["SPEC", "X12Config", "X12Connector"]
