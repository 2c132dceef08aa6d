"""Cached answers shared by every process through Redis, behind each process's own cache.

Each process answers repeats from its own memory (:mod:`stockgraph.cache.response`); what
one process computed, the others find here instead of executing it again, and a process
that starts (or restarts) is warm at once.

Staleness is ruled out by versions kept in Redis, moved by every committed change
(:meth:`SharedAnswers.bump`, called with the changes every process hears about):

- a version per tenant, moved by any change of the tenant;
- a version per tenant and SKU, moved by a change that wrote the SKU;
- a version per tenant for its catalogue, moved by a change that names no SKU.

An answer is stored only if its tenant's version did not move while it was computed (the
version is read before executing), together with the versions of its SKUs and catalogue as
they were; it is served only while they are all still the same. Both checks are one Lua
script each, so they cannot interleave with a change. Entries expire with the response
cache's TTL; version keys after a day without changes.

Redis being away never fails a request: a lookup is a miss, a store is skipped (see
:class:`~stockgraph.cache.failover.Failover`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Hashable

from redis.asyncio import Redis

from stockgraph.cache.failover import Failover

_PREFIX = "stockgraph:answers:"
_VERSION_TTL_MS = 86_400_000

_BUMP = """
-- KEYS[1] tenant version, KEYS[2] catalogue version, KEYS[3..] SKU versions
redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
if #KEYS == 2 then
  redis.call('INCR', KEYS[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[1])
end
for i = 3, #KEYS do
  redis.call('INCR', KEYS[i])
  redis.call('PEXPIRE', KEYS[i], ARGV[1])
end
return 1
"""

_PUT = """
-- KEYS[1] the entry, KEYS[2] tenant version, KEYS[3] catalogue version, KEYS[4..] SKUs
-- ARGV[1] the tenant version read before executing, ARGV[2] TTL ms, ARGV[3] the answer
local now = redis.call('GET', KEYS[2]) or '0'
if now ~= ARGV[1] then
  return 0
end
local names, versions = {}, {}
for i = 3, #KEYS do
  names[#names + 1] = KEYS[i]
  versions[#versions + 1] = redis.call('GET', KEYS[i]) or '0'
end
local entry = {names = names, versions = versions, answer = ARGV[3]}
redis.call('SET', KEYS[1], cjson.encode(entry), 'PX', ARGV[2])
return 1
"""

_GET = """
-- KEYS[1] the entry; the version keys it depends on are named in it (standalone Redis)
local raw = redis.call('GET', KEYS[1])
if not raw then
  return false
end
local entry = cjson.decode(raw)
for i, name in ipairs(entry.names) do
  if (redis.call('GET', name) or '0') ~= entry.versions[i] then
    redis.call('DEL', KEYS[1])
    return false
  end
end
return entry.answer
"""


class SharedAnswers:
    """Encoded answers in Redis, valid only while nothing they cover has changed."""

    def __init__(
        self,
        *,
        redis: Redis,
        ttl_seconds: float,
        failover: Failover | None = None,
        prefix: str = _PREFIX,
    ) -> None:
        self._ttl_ms = max(1, round(ttl_seconds * 1000))
        self._prefix = prefix
        self._bump = redis.register_script(_BUMP)
        self._put = redis.register_script(_PUT)
        self._get = redis.register_script(_GET)
        self._redis = redis
        self._failover = failover or Failover(name="shared answers")
        self.hits = 0
        self.misses = 0

    async def version(self, tenant_id: str) -> str | None:
        """The tenant's version now; read before computing an answer. None without Redis."""
        if not self._failover.use_primary():
            return None
        try:
            value = await self._redis.get(self._tenant_key(tenant_id))
        except Failover.ERRORS as error:
            self._failover.failed(error)
            return None
        self._failover.succeeded()
        if value is None:
            return "0"
        return value.decode() if isinstance(value, bytes) else str(value)

    async def get(self, key: Hashable, tenant_id: str) -> bytes | None:
        """The answer stored for ``key`` if every version it was stored with still holds."""
        if not self._failover.use_primary():
            return None
        try:
            found = await self._get(keys=[self.entry_key(key, tenant_id)])
        except Failover.ERRORS as error:
            self._failover.failed(error)
            return None
        self._failover.succeeded()
        if not isinstance(found, bytes | str):
            self.misses += 1
            return None
        self.hits += 1
        return found.encode() if isinstance(found, str) else found

    async def put(
        self,
        key: Hashable,
        tenant_id: str,
        tags: Collection[str],
        version: str,
        answer: bytes,
    ) -> bool:
        """Store ``answer`` unless the tenant changed since ``version`` was read."""
        if not self._failover.use_primary():
            return False
        keys = [self.entry_key(key, tenant_id), self._tenant_key(tenant_id)]
        keys.append(self._catalogue_key(tenant_id))
        keys += [self._sku_key(tenant_id, sku) for sku in sorted(tags)]
        try:
            stored = await self._put(keys=keys, args=[version, self._ttl_ms, answer])
        except Failover.ERRORS as error:
            self._failover.failed(error)
            return False
        self._failover.succeeded()
        return bool(stored)

    async def bump(self, tenant_id: str, skus: Collection[str] | None) -> None:
        """A change committed: move the versions it makes old (raises if Redis fails)."""
        keys = [self._tenant_key(tenant_id), self._catalogue_key(tenant_id)]
        keys += [self._sku_key(tenant_id, sku) for sku in sorted(skus or ())]
        await self._bump(keys=keys, args=[_VERSION_TTL_MS])

    def entry_key(self, key: Hashable, tenant_id: str) -> str:
        digest = hashlib.blake2b(repr(key).encode(), digest_size=16).hexdigest()
        return f"{self._prefix}a:{tenant_id}:{digest}"

    def _tenant_key(self, tenant_id: str) -> str:
        return f"{self._prefix}v:{tenant_id}"

    def _catalogue_key(self, tenant_id: str) -> str:
        return f"{self._prefix}c:{tenant_id}"

    def _sku_key(self, tenant_id: str, sku: str) -> str:
        return f"{self._prefix}s:{tenant_id}:{sku}"


__all__ = ["SharedAnswers"]
