"""The response cache's bookkeeping and which documents it may keep."""

from __future__ import annotations

import pytest

from stockgraph.cache.response import ResponseCache, TenantVersions
from stockgraph.schema.cacheable import is_cacheable


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_entry_answers_only_for_the_version_it_was_made_from() -> None:
    cache = ResponseCache(max_entries=10, ttl_seconds=60)
    versions = TenantVersions()
    cache.put("k", versions.current("acme"), b"old")
    assert cache.get("k", versions.current("acme")) == b"old"
    versions.bump("acme")
    assert cache.get("k", versions.current("acme")) is None
    assert versions.current("globex") == 0


def test_entries_expire_after_the_ttl_and_the_least_recent_is_dropped() -> None:
    clock = Clock()
    cache = ResponseCache(max_entries=2, ttl_seconds=5, clock=clock)
    cache.put("a", 0, b"a")
    cache.put("b", 0, b"b")
    assert cache.get("a", 0) == b"a"
    cache.put("c", 0, b"c")
    assert cache.get("b", 0) is None
    assert cache.get("a", 0) == b"a"
    clock.now = 5.0
    assert cache.get("a", 0) is None
    assert cache.stats().hits == 2


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        ResponseCache(max_entries=0)
    with pytest.raises(ValueError):
        ResponseCache(ttl_seconds=0)


@pytest.mark.parametrize(
    ("query", "operation", "expected"),
    [
        ('{ availability(skus: ["A"]) { sku } }', None, True),
        (
            "query Q($s: [String!]!) { inventoryLevels(skus: $s) { sku }"
            " items { edges { cursor } } }",
            "Q",
            True,
        ),
        ('{ inventoryLevels(skus: ["A"], maxAge: 5) { sku } }', None, False),
        ('{ inventoryLevels(skus: ["A"], asOf: "2026-01-01T00:00:00Z") { sku } }', None, False),
        ("{ _service { sdl } }", None, False),
        ("{ __schema { types { name } } }", None, False),
        ("{ ...F } fragment F on Query { items { edges { cursor } } }", None, False),
        ("query A { items { edges { cursor } } } query B { _service { sdl } }", "B", False),
        ("query A { items { edges { cursor } } } query B { _service { sdl } }", None, False),
        ("{ items { ", None, False),
        ("subscription { items }", None, False),
    ],
)
def test_only_reads_of_current_data_are_cacheable(
    query: str, operation: str | None, expected: bool
) -> None:
    assert is_cacheable(query, operation, 4000) is expected
