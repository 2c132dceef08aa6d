"""Whole-response caching for hot storefront reads.

A storefront asks the same few documents again and again (``availability`` of the SKUs on
a page). Executing GraphQL for each costs far more than the answer is worth, so the HTTP
view keeps the encoded response of cacheable reads and serves repeats as bytes.

Correctness comes from versions, not from expiry: every key carries the tenant's
projection version, and every change to a tenant's projection or catalogue bumps it
(:meth:`TenantVersions.bump`), so an entry can never outlive the data it was made from
in this process. The TTL is only a safety net against writers in other processes, which
this in-process cache cannot hear about.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

V = TypeVar("V")


class TenantVersions:
    """A counter per tenant that moves on every change to its projection or catalogue."""

    def __init__(self) -> None:
        self._versions: dict[str, int] = {}

    def current(self, tenant_id: str) -> int:
        return self._versions.get(tenant_id, 0)

    def bump(self, tenant_id: str) -> None:
        self._versions[tenant_id] = self._versions.get(tenant_id, 0) + 1


@dataclass(frozen=True, slots=True)
class _Entry(Generic[V]):
    value: V
    version: int
    expires_at: float


@dataclass(frozen=True, slots=True)
class CacheStats:
    hits: int
    misses: int
    entries: int


class ResponseCache(Generic[V]):
    """A bounded LRU of answers (encoded responses), keyed by tenant, caller scopes and request.

    >>> cache: ResponseCache[bytes] = ResponseCache(max_entries=2, ttl_seconds=60)
    >>> cache.put(("acme", "q"), 1, b"{}")
    >>> cache.get(("acme", "q"), 1), cache.get(("acme", "q"), 2)
    (b'{}', None)
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
        self._max = max_entries
        self._ttl = ttl_seconds
        self._clock = clock
        self._hits = 0
        self._misses = 0

    def get(self, key: Hashable, version: int) -> V | None:
        entry = self._entries.get(key)
        if entry is None or entry.version != version or entry.expires_at <= self._clock():
            if entry is not None:
                del self._entries[key]
            self._misses += 1
            return None
        self._entries.move_to_end(key)
        self._hits += 1
        return entry.value

    def put(self, key: Hashable, version: int, value: V) -> None:
        self._entries[key] = _Entry(value, version, self._clock() + self._ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def stats(self) -> CacheStats:
        return CacheStats(self._hits, self._misses, len(self._entries))
