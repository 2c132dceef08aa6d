"""What the connector runtime counts, per instance.

Two views of the same events:

- :class:`ConnectorMetrics`: Prometheus series, registered on the
  ``prometheus_client.CollectorRegistry`` passed in (never the global default registry). The
  composition root builds one per registry and hands it to every instance's runtime.
- :class:`InstanceMetrics`: one instance's recorder. It keeps plain counts for
  :class:`RuntimeStats` (what the sync-health query reads) and forwards each event to the
  Prometheus series when there are any.

Series, each labelled by ``instance``:

=====================================================  =========================================
``stockgraph_connector_calls_total``                   requests sent to the WMS (every attempt)
``stockgraph_connector_failures_total{error}``         failed attempts, by class
``stockgraph_connector_retries_total``                 waits before another attempt
``stockgraph_connector_throttled_total``               answers saying slow down (429)
``stockgraph_connector_refused_total{reason}``         calls never sent (circuit open, budget)
``stockgraph_connector_breaker_opens_total``           times the breaker opened
``stockgraph_connector_request_duration_seconds``      latency of each attempt (histogram)
=====================================================  =========================================
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

from stockgraph.connectors.breaker import BreakerState

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True, slots=True)
class RuntimeStats:
    """A snapshot of one instance's health, as the sync-health query reports it."""

    calls: int
    """Requests sent to the WMS, retries included."""
    errors: int
    """Failed attempts plus calls refused before sending."""
    retries: int
    throttled: int
    """Answers that said slow down."""
    last_error: str | None
    circuit_state: BreakerState
    budget_remaining: float
    live_budget_remaining: float | None = None
    """What is left of the budget a live read spends, where it is not ``budget_remaining``
    (an x12 mailbox's inquiry limit, apart from its poll interval)."""


class ConnectorMetrics:
    """The Prometheus series of every connector instance, on one registry."""

    def __init__(self, *, registry: CollectorRegistry, namespace: str = "stockgraph") -> None:
        def name(short: str) -> str:
            return f"{namespace}_connector_{short}"

        self.calls = Counter(
            name("calls"), "Requests sent to the WMS", ["instance"], registry=registry
        )
        self.failures = Counter(
            name("failures"),
            "Failed WMS requests by class",
            ["instance", "error"],
            registry=registry,
        )
        self.retries = Counter(
            name("retries"), "Waits before another attempt", ["instance"], registry=registry
        )
        self.throttled = Counter(
            name("throttled"), "WMS answers saying slow down", ["instance"], registry=registry
        )
        self.refused = Counter(
            name("refused"),
            "Calls never sent to the WMS",
            ["instance", "reason"],
            registry=registry,
        )
        self.breaker_opens = Counter(
            name("breaker_opens"),
            "Times the circuit breaker opened",
            ["instance"],
            registry=registry,
        )
        self.latency = Histogram(
            name("request_duration_seconds"),
            "Latency of each WMS request",
            ["instance"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )


class InstanceMetrics:
    """One instance's counts, kept for :class:`RuntimeStats` and forwarded to ``series``."""

    def __init__(self, *, instance_id: str, series: ConnectorMetrics | None = None) -> None:
        self.instance_id = instance_id
        self._series = series
        self.calls = 0
        self.errors = 0
        self.retries = 0
        self.throttled = 0
        self.breaker_opens = 0
        self.last_error: str | None = None

    def call(self, seconds: float) -> None:
        """A request was sent and came back (or failed) after ``seconds``."""
        self.calls += 1
        if self._series is not None:
            self._series.calls.labels(self.instance_id).inc()
            self._series.latency.labels(self.instance_id).observe(max(0.0, seconds))

    def failure(self, kind: str, message: str) -> None:
        """A request failed; ``kind`` is its class (``retriable``, ``timeout``, ``fatal``...)."""
        self.errors += 1
        self.last_error = message
        if self._series is not None:
            self._series.failures.labels(self.instance_id, kind).inc()

    def throttle(self) -> None:
        self.throttled += 1
        if self._series is not None:
            self._series.throttled.labels(self.instance_id).inc()

    def retry(self) -> None:
        self.retries += 1
        if self._series is not None:
            self._series.retries.labels(self.instance_id).inc()

    def refusal(self, reason: str, message: str) -> None:
        """A call was never sent (``circuit_open``, ``budget``)."""
        self.errors += 1
        self.last_error = message
        if self._series is not None:
            self._series.refused.labels(self.instance_id, reason).inc()

    def breaker_opened(self) -> None:
        self.breaker_opens += 1
        if self._series is not None:
            self._series.breaker_opens.labels(self.instance_id).inc()
