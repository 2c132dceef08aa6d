"""The response cache's bookkeeping and which documents it may keep."""

from __future__ import annotations

import pytest

from stockgraph.cache.response import ResponseCache
from stockgraph.schema.cacheable import is_cacheable


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_change_drops_the_answers_covering_its_skus_and_no_others() -> None:
    cache: ResponseCache[bytes] = ResponseCache(max_entries=10, ttl_seconds=60)
    ticket = cache.begin("acme")
    cache.put("one", ticket, {"SKU-1"}, b"1")
    cache.put("both", ticket, {"SKU-1", "SKU-2"}, b"12")
    cache.put("catalogue", ticket, set(), b"c")
    cache.put("other-tenant", cache.begin("globex"), {"SKU-1"}, b"g")
    cache.invalidate("acme", {"SKU-2", "SKU-9"})
    assert [cache.get(k) for k in ("one", "both", "catalogue", "other-tenant")] == [
        b"1",
        None,
        b"c",
        b"g",
    ]
    cache.invalidate("acme", None)  # the catalogue changed: everything of the tenant goes
    assert [cache.get(k) for k in ("one", "catalogue", "other-tenant")] == [None, None, b"g"]
    assert cache.stats().invalidated == 3


def test_an_answer_computed_across_a_change_to_its_skus_is_not_kept() -> None:
    cache: ResponseCache[bytes] = ResponseCache(max_entries=10, ttl_seconds=60)
    ticket = cache.begin("acme")
    cache.invalidate("acme", {"SKU-2"})  # committed while the answer was being computed
    assert cache.put("unrelated", ticket, {"SKU-1"}, b"1")
    assert not cache.put("touched", ticket, {"SKU-2"}, b"2")
    cache.invalidate("acme", None)
    assert not cache.put("late", ticket, {"SKU-1"}, b"1")
    assert cache.get("touched") is None and cache.get("late") is None


def test_an_answer_older_than_the_remembered_changes_is_not_kept() -> None:
    cache: ResponseCache[bytes] = ResponseCache(max_entries=10, ttl_seconds=60)
    ticket = cache.begin("acme")
    for i in range(1000):
        cache.invalidate("acme", {f"SKU-X{i}"})
    assert not cache.put("k", ticket, {"SKU-1"}, b"1")
    assert cache.put("k", cache.begin("acme"), {"SKU-1"}, b"1")


def test_entries_expire_after_the_ttl_and_the_least_recent_is_dropped() -> None:
    clock = Clock()
    cache: ResponseCache[bytes] = ResponseCache(max_entries=2, ttl_seconds=5, clock=clock)
    ticket = cache.begin("acme")
    cache.put("a", ticket, {"A"}, b"a")
    cache.put("b", ticket, {"B"}, b"b")
    assert cache.get("a") == b"a"
    cache.put("c", ticket, {"C"}, b"c")
    assert cache.get("b") is None
    assert cache.get("a") == b"a"
    clock.now = 5.0
    assert cache.get("a") is None
    assert cache.stats().hits == 2
    cache.invalidate("acme", {"A", "B", "C"})  # the index holds no dropped entries
    assert cache.stats().entries == 0


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
