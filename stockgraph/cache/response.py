"""Whole-response caching for hot storefront reads, invalidated by what changes.

A storefront asks the same few documents again and again (``availability`` of the SKUs on
a page). Executing GraphQL for each costs far more than the answer is worth, so the HTTP
view keeps the encoded answer of cacheable reads and serves repeats as bytes.

Correctness comes from invalidation, not from expiry. Every answer is kept with the SKUs it
covers (its *tags*; an answer that reads no stock, such as the catalogue, has none). Every
committed change to the projection names the SKUs it touched and drops the answers tagged
with any of them (:meth:`ResponseCache.invalidate`); a change to the catalogue drops all of
the tenant's answers. An answer computed while a change to its SKUs was being committed is
not kept: :meth:`ResponseCache.begin` notes where the tenant's changes stood before the
answer was computed, and :meth:`ResponseCache.put` refuses the answer if any change since
then touched its tags. So an answer is never older than the last change applied in this
process; other processes' changes arrive through :mod:`stockgraph.cache.invalidation`. The
TTL is only a safety net.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

V = TypeVar("V")

_LOG_LENGTH = 256
"""Changes remembered per tenant to judge answers computed meanwhile; older ones refuse."""


@dataclass(frozen=True, slots=True)
class Ticket:
    """Where a tenant's changes stood when an answer began to be computed."""

    tenant_id: str
    generation: int


@dataclass(frozen=True, slots=True)
class _Entry(Generic[V]):
    value: V
    tenant_id: str
    tags: frozenset[str]
    expires_at: float


@dataclass
class _Tenant:
    generation: int = 0
    changes: deque[tuple[int, frozenset[str] | None]] = field(
        default_factory=lambda: deque(maxlen=_LOG_LENGTH)
    )
    keys: set[Hashable] = field(default_factory=set)
    by_tag: dict[str, set[Hashable]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CacheStats:
    hits: int
    misses: int
    entries: int
    invalidated: int


class ResponseCache(Generic[V]):
    """A bounded LRU of answers, keyed by tenant, caller scopes and request, tagged by SKU.

    >>> cache: ResponseCache[bytes] = ResponseCache(max_entries=8, ttl_seconds=60)
    >>> ticket = cache.begin("acme")
    >>> cache.put("a", ticket, frozenset({"SKU-1"}), b"{...}")
    True
    >>> cache.invalidate("acme", {"SKU-2"}); cache.get("a")
    b'{...}'
    >>> cache.invalidate("acme", {"SKU-1"}); cache.get("a") is None
    True
    """

    def __init__(
        self,
        *,
        max_entries: int = 4096,
        ttl_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        self._entries: OrderedDict[Hashable, _Entry[V]] = OrderedDict()
        self._tenants: dict[str, _Tenant] = {}
        self._max = max_entries
        self._ttl = ttl_seconds
        self._clock = clock
        self._hits = 0
        self._misses = 0
        self._invalidated = 0

    def get(self, key: Hashable) -> V | None:
        entry = self._entries.get(key)
        if entry is None or entry.expires_at <= self._clock():
            if entry is not None:
                self._drop(key)
            self._misses += 1
            return None
        self._entries.move_to_end(key)
        self._hits += 1
        return entry.value

    def begin(self, tenant_id: str) -> Ticket:
        """Note where ``tenant_id``'s changes stand; call before computing an answer."""
        return Ticket(tenant_id, self._tenant(tenant_id).generation)

    def unchanged_since(self, ticket: Ticket, tags: Collection[str]) -> bool:
        """Whether no change since ``ticket`` touched any of ``tags``."""
        tenant = self._tenant(ticket.tenant_id)
        missed = tenant.generation - ticket.generation
        if missed == 0:
            return True
        if missed > len(tenant.changes):
            return False  # too many changes since to tell: do not risk it
        tags = frozenset(tags)
        return not any(
            touched is None or touched & tags for _g, touched in list(tenant.changes)[-missed:]
        )

    def put(self, key: Hashable, ticket: Ticket, tags: Collection[str], value: V) -> bool:
        """Keep ``value`` unless a change since ``ticket`` touched ``tags``; True if kept."""
        tags = frozenset(tags)
        if not self.unchanged_since(ticket, tags):
            return False
        tenant = self._tenant(ticket.tenant_id)
        if key in self._entries:
            self._drop(key)
        self._entries[key] = _Entry(value, ticket.tenant_id, tags, self._clock() + self._ttl)
        tenant.keys.add(key)
        for tag in tags:
            tenant.by_tag.setdefault(tag, set()).add(key)
        while len(self._entries) > self._max:
            self._drop(next(iter(self._entries)))
        return True

    def invalidate(self, tenant_id: str, skus: Collection[str] | None) -> None:
        """Drop the tenant's answers covering any of ``skus``; all of them when None."""
        tenant = self._tenant(tenant_id)
        touched = None if skus is None else frozenset(skus)
        tenant.generation += 1
        tenant.changes.append((tenant.generation, touched))
        if touched is None:
            doomed: set[Hashable] = set(tenant.keys)
        else:
            doomed = set()
            for sku in touched:
                doomed |= tenant.by_tag.get(sku, set())
        for key in doomed:
            self._drop(key)
        self._invalidated += len(doomed)

    def clear(self) -> None:
        """Forget every answer (when changes may have been missed); generations move on."""
        for tenant_id in list(self._tenants):
            self.invalidate(tenant_id, None)
        self._entries.clear()

    def stats(self) -> CacheStats:
        return CacheStats(self._hits, self._misses, len(self._entries), self._invalidated)

    def _tenant(self, tenant_id: str) -> _Tenant:
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            tenant = self._tenants[tenant_id] = _Tenant()
        return tenant

    def _drop(self, key: Hashable) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        tenant = self._tenants[entry.tenant_id]
        tenant.keys.discard(key)
        for tag in entry.tags:
            keys = tenant.by_tag.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del tenant.by_tag[tag]


__all__ = ["CacheStats", "ResponseCache", "Ticket"]
