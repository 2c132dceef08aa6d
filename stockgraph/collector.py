"""How long the garbage collector stops the process, as Prometheus series.

A full collection walks every tracked object; with a few hundred thousand of them it stops
the event loop for tens of milliseconds, which shows in the latency tail of every request
and subscription in flight. Start-up objects are frozen out of the collector (see
``stockgraph.cli``); these series show what is left:
``stockgraph_gc_pause_seconds{generation}`` (a histogram) and
``stockgraph_gc_pause_longest_seconds{generation}``.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class CollectorPauses:
    """Times every collection through ``gc.callbacks`` while installed."""

    def __init__(self, *, registry: CollectorRegistry) -> None:
        self._pauses = Histogram(
            "stockgraph_gc_pause_seconds",
            "Garbage collections by generation and how long each stopped the process",
            ["generation"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self._longest = Gauge(
            "stockgraph_gc_pause_longest_seconds",
            "The longest garbage collection pause so far, by generation",
            ["generation"],
            registry=registry,
        )
        self._most = [0.0, 0.0, 0.0]
        self._started = 0.0
        for generation in ("0", "1", "2"):
            self._pauses.labels(generation)
            self._longest.labels(generation)

    def _observe(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        generation = int(info.get("generation", 2))
        label = str(generation)
        self._pauses.labels(label).observe(pause)
        if pause > self._most[generation]:
            self._most[generation] = pause
            self._longest.labels(label).set(pause)

    def install(self) -> None:
        if self._observe not in gc.callbacks:
            gc.callbacks.append(self._observe)

    def remove(self) -> None:
        if self._observe in gc.callbacks:
            gc.callbacks.remove(self._observe)


__all__ = ["CollectorPauses"]
