"""The ``x12`` dialect's wire format: X12 interchanges and the transaction sets inside them.

``envelope`` reads and writes the ISA/GS/ST…SE/GE/IEA envelope and numbers what we send;
``sets`` maps the 846, 940, 945, 947 and 997 sets to and from typed documents. Anything
broken is a :class:`~stockgraph.connectors.errors.MalformedPayload` keeping the raw text.

>>> from datetime import UTC, datetime
>>> interchange = build_interchange(
...     sender=Party("STOCKGRAPH"), receiver=Party("3PLWEST"), control_number=7,
...     documents=[ShippingOrder("SO-1", cancel=True)],
...     prepared_at=datetime(2025, 3, 14, 9, 26, tzinfo=UTC),
... )
>>> raw = render_interchange(interchange)
>>> print(raw.decode().split("\\n")[2:4])
['ST*940*0001~', 'W05*F*SO-1~']
>>> [item.document for item in read_documents(parse_interchange(raw))]
[ShippingOrder(depositor_order='SO-1', lines=(), ship_to={}, cancel=True)]
"""

from stockgraph.connectors.x12.wire.envelope import (
    COMPONENT,
    ELEMENT,
    FUNCTIONAL_CODES,
    SEGMENT,
    ControlNumbers,
    FunctionalGroup,
    Interchange,
    Party,
    Segment,
    TransactionSet,
    parse_interchange,
    render_interchange,
)
from stockgraph.connectors.x12.wire.sets import (
    LEVEL_QUANTITIES,
    AdjustmentLine,
    Document,
    FunctionalAcknowledgment,
    InventoryAdjustment,
    InventoryAdvice,
    InventoryInquiry,
    OrderLine,
    Received,
    SetAcknowledgment,
    ShippedLine,
    ShippingAdvice,
    ShippingOrder,
    StockItem,
    build_interchange,
    decode,
    encode,
    read_documents,
)

__all__ = [
    "COMPONENT",
    "ELEMENT",
    "FUNCTIONAL_CODES",
    "LEVEL_QUANTITIES",
    "SEGMENT",
    "AdjustmentLine",
    "ControlNumbers",
    "Document",
    "FunctionalAcknowledgment",
    "FunctionalGroup",
    "Interchange",
    "InventoryAdjustment",
    "InventoryAdvice",
    "InventoryInquiry",
    "OrderLine",
    "Party",
    "Received",
    "Segment",
    "SetAcknowledgment",
    "ShippedLine",
    "ShippingAdvice",
    "ShippingOrder",
    "StockItem",
    "TransactionSet",
    "build_interchange",
    "decode",
    "encode",
    "parse_interchange",
    "read_documents",
    "render_interchange",
]
