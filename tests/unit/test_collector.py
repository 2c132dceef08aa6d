"""Garbage-collector pauses are measured, per generation, while installed."""

from __future__ import annotations

import gc

from prometheus_client import CollectorRegistry

from stockgraph.collector import CollectorPauses


def _count(registry: CollectorRegistry, generation: str) -> float:
    found = registry.get_sample_value(
        "stockgraph_gc_pause_seconds_count", {"generation": generation}
    )
    return found or 0.0


def test_every_collection_is_timed_only_while_installed() -> None:
    registry = CollectorRegistry()
    pauses = CollectorPauses(registry=registry)
    gc.collect()
    assert _count(registry, "2") == 0
    pauses.install()
    try:
        gc.collect()
        gc.collect(0)
    finally:
        pauses.remove()
    assert _count(registry, "2") == 1
    assert _count(registry, "0") >= 1
    longest = registry.get_sample_value("stockgraph_gc_pause_longest_seconds", {"generation": "2"})
    assert longest is not None and longest > 0
    gc.collect()
    assert _count(registry, "2") == 1
