"""The X12 envelope: ISA/GS/ST…SE/GE/IEA around our transaction sets, and control numbers.

Reading goes through the ``ansi-x12`` structural parser: it takes the separators from the
ISA, checks the nesting, the matching control numbers and the SE, GE and IEA counts.
Anything it refuses, or a set we do not know, is a :class:`MalformedPayload` that keeps the
raw document. Writing is ours: version 00401/004010, separators ``*`` ``>`` ``~``, one
segment a line.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import x12

from stockgraph.connectors.errors import MalformedPayload

ELEMENT, COMPONENT, SEGMENT = "*", ">", "~"
_SEPARATORS = re.compile(f"[{re.escape(COMPONENT + SEGMENT)}\\n\\r]")
"""What no element may hold besides ``ELEMENT`` (counted apart)."""
FUNCTIONAL_CODES = {"846": "IB", "940": "OW", "945": "SW", "947": "AW", "997": "FA"}
"""Each transaction set we know, and the functional group (GS01) it travels in."""
MAX_CONTROL = 999_999_999

Segment = tuple[str, ...]
"""A segment's tag followed by its elements, as text."""


@dataclass(frozen=True, slots=True)
class Party:
    """An interchange sender or receiver: its ISA id (at most 15 characters) and qualifier."""

    id: str
    qualifier: str = "ZZ"


@dataclass(frozen=True, slots=True)
class TransactionSet:
    code: str
    control_number: str
    body: tuple[Segment, ...]
    """The segments between ST and SE."""


@dataclass(frozen=True, slots=True)
class FunctionalGroup:
    functional_code: str
    control_number: int
    sets: tuple[TransactionSet, ...]


@dataclass(frozen=True, slots=True)
class Interchange:
    sender: Party
    receiver: Party
    control_number: int
    prepared_at: datetime
    groups: tuple[FunctionalGroup, ...]
    usage: str = "P"
    component: str = COMPONENT
    raw: bytes = b""


class ControlNumbers:
    """Interchange control numbers for one sender: nine digits, increasing, wrapping to 1.

    Seeded from the clock in tenths of a second, so a restarted process carries on above
    where it stopped.

    >>> numbers = ControlNumbers(start=999_999_999)
    >>> numbers.next(), numbers.next()
    (999999999, 1)
    """

    def __init__(self, *, start: int | None = None) -> None:
        seed = int(time.time() * 10) if start is None else start
        self._last = (seed - 1) % MAX_CONTROL

    def next(self) -> int:
        self._last = self._last % MAX_CONTROL + 1
        return self._last


def parse_interchange(raw: bytes) -> Interchange:
    """Read one interchange; :class:`MalformedPayload` (keeping ``raw``) if it is broken."""
    try:
        parsed = x12.parse_x12_interchange(x12.tokenize_x12(raw))
        isa = parsed.header
        groups = tuple(
            FunctionalGroup(
                functional_code=_text(group.functional_identifier_code),
                control_number=control_number(_text(group.control_number), "GS06"),
                sets=tuple(
                    TransactionSet(
                        code=_text(ts.transaction_set_code),
                        control_number=_text(ts.control_number),
                        body=tuple(_segment(s) for s in ts.segments),
                    )
                    for ts in group.transactions
                ),
            )
            for group in parsed.groups
        )
        for group in groups:
            for ts in group.sets:
                if ts.code not in FUNCTIONAL_CODES:
                    raise ValueError(f"unknown transaction set {ts.code!r}")
                if FUNCTIONAL_CODES[ts.code] != group.functional_code:
                    raise ValueError(f"set {ts.code} in a {group.functional_code!r} group")
        prepared = _text(isa.element(9)) + _text(isa.element(10))
        return Interchange(
            sender=Party(_text(isa.element(6)).strip(), _text(isa.element(5))),
            receiver=Party(_text(isa.element(8)).strip(), _text(isa.element(7))),
            control_number=control_number(_text(isa.element(13)), "ISA13"),
            prepared_at=datetime.strptime(prepared, "%y%m%d%H%M").replace(tzinfo=UTC),
            groups=groups,
            usage=_text(isa.element(15)),
            component=parsed.document.separators.component.decode("ascii"),
            raw=raw,
        )
    except (x12.X12Error, ValueError, IndexError) as exc:
        raise MalformedPayload(f"unreadable X12 interchange: {exc}", raw=raw) from exc


def render_interchange(interchange: Interchange) -> bytes:
    """The interchange as X12 text, one segment a line."""
    ic, sender, receiver = interchange, interchange.sender, interchange.receiver
    if not 1 <= ic.control_number <= MAX_CONTROL:
        raise ValueError(f"interchange control number {ic.control_number} out of range")
    for party in (sender, receiver):
        _line(("ISA", party.qualifier, party.id))
        if not party.id or len(party.id) > 15 or len(party.qualifier) != 2:
            raise ValueError(f"bad interchange id {party.qualifier}/{party.id!r}")
    at = ic.prepared_at.astimezone(UTC)
    icn = f"{ic.control_number:09d}"
    blank = " " * 10
    isa = [
        *("ISA", "00", blank, "00", blank, sender.qualifier, sender.id.ljust(15)),
        *(receiver.qualifier, receiver.id.ljust(15), f"{at:%y%m%d}", f"{at:%H%M}", "U"),
        *("00401", icn, "0", ic.usage, COMPONENT),
    ]
    lines = [ELEMENT.join(isa) + SEGMENT]
    for group in ic.groups:
        gcn = str(group.control_number)
        stamp = (f"{at:%Y%m%d}", f"{at:%H%M}")
        gs = ("GS", group.functional_code, sender.id, receiver.id, *stamp, gcn, "X", "004010")
        lines.append(_line(gs))
        for ts in group.sets:
            lines.append(_line(("ST", ts.code, ts.control_number)))
            lines.extend(_line(segment) for segment in ts.body)
            lines.append(_line(("SE", str(len(ts.body) + 2), ts.control_number)))
        lines.append(_line(("GE", str(len(group.sets)), gcn)))
    lines.append(_line(("IEA", str(len(ic.groups)), icn)))
    return ("\n".join(lines) + "\n").encode("ascii")


def control_number(value: str, name: str) -> int:
    """A control number's digits as an integer; ``ValueError`` naming ``name`` otherwise."""
    if not value.isdigit():
        raise ValueError(f"{name} {value!r} is not a control number")
    return int(value)


def _text(value: bytes | None) -> str:
    return (value or b"").decode("utf-8")


def _segment(segment: x12.X12Segment) -> Segment:
    return (segment.tag, *[e.decode("utf-8") if e else "" for e in segment.elements])


def _line(segment: Segment) -> str:
    elements = list(segment)
    while len(elements) > 1 and not elements[-1]:
        elements.pop()
    line = ELEMENT.join(elements)
    # One look at the whole line: an element holding a separator adds one to it.
    if line.count(ELEMENT) != len(elements) - 1 or _SEPARATORS.search(line):
        for element in segment:
            if _SEPARATORS.search(element) or ELEMENT in element:
                raise ValueError(f"{segment[0]}: {element!r} holds a separator")
    return line + SEGMENT
