"""The webhook sender: due deliveries POSTed, signed, each endpoint in a lane of its own.

Each endpoint gets at most ``max_in_flight`` attempts at once from this process; attempts
of different endpoints run concurrently and each is bounded by ``timeout_seconds``, so an
endpoint that hangs or is down only ever holds its own lane: the others keep flowing.

An attempt answered 2xx delivers. ``410 Gone`` disables the endpoint (and parks its
undelivered deliveries). Anything else, a network error or a timeout is retried on the
:class:`~stockgraph.domain.webhooks.RetrySchedule`, never before a ``Retry-After`` on 429 or
503 (capped at the schedule's longest delay); after the last scheduled attempt the delivery
is ``DEAD``. Every attempt is recorded.

Several processes may send from one database: a delivery is leased when taken (see
:class:`~stockgraph.persistence.webhook_queue.SqlWebhookQueue`), so no two send the same
attempt at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Protocol

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge

from stockgraph.domain.webhooks import DeliveryStatus, NextStep, Outcome, RetrySchedule, next_step
from stockgraph.events.dispatch import Clock
from stockgraph.events.signing import signed_headers
from stockgraph.persistence.webhook_queue import AttemptResult, Claim, Decide

log = logging.getLogger("stockgraph.webhooks")

MAX_ERROR_LENGTH = 200


class SendingQueue(Protocol):
    """Where the sender takes deliveries and records attempts (``SqlWebhookQueue``)."""

    async def due_endpoints(self, *, now: datetime, limit: int = 1000) -> list[int]: ...

    async def claim(
        self, endpoint_id: int, *, now: datetime, limit: int, lease_seconds: float
    ) -> list[Claim]: ...

    async def record(self, claim: Claim, result: AttemptResult, decide: Decide) -> NextStep: ...

    async def counts(self) -> dict[DeliveryStatus, int]: ...


class WebhookMetrics:
    """``stockgraph_webhook_attempts_total{outcome}`` (delivered, retry, dead, gone) and
    ``stockgraph_webhook_deliveries{status}``, the deliveries of every tenant by status as
    last counted by the sender."""

    def __init__(self, *, registry: CollectorRegistry) -> None:
        self.attempts = Counter(
            "stockgraph_webhook_attempts",
            "Outbound webhook attempts by what they led to",
            ["outcome"],
            registry=registry,
        )
        self.counts: dict[DeliveryStatus, int] = dict.fromkeys(DeliveryStatus, 0)
        deliveries = Gauge(
            "stockgraph_webhook_deliveries",
            "Outbound webhook deliveries by status",
            ["status"],
            registry=registry,
        )
        for status in DeliveryStatus:
            deliveries.labels(status.value).set_function(self._count(status))
        for outcome in Outcome:
            self.attempts.labels(outcome.value)

    def _count(self, status: DeliveryStatus) -> Callable[[], float]:
        return lambda: float(self.counts.get(status, 0))

    def attempted(self, outcome: Outcome) -> None:
        self.attempts.labels(outcome.value).inc()


class Sender:
    """Sends due deliveries until closed; :meth:`send_due` and :meth:`drain` drive it by hand."""

    def __init__(
        self,
        *,
        queue: SendingQueue,
        clock: Clock,
        schedule: RetrySchedule | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_seconds: float = 10.0,
        max_in_flight: int = 4,
        poll_seconds: float = 1.0,
        lease_seconds: float | None = None,
        jitter: Callable[[], float] = random.random,
        metrics: WebhookMetrics | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {max_in_flight}")
        if timeout_seconds <= 0:
            raise ValueError(f"timeout_seconds must be above zero, not {timeout_seconds}")
        self._queue = queue
        self._clock = clock
        self._schedule = schedule or RetrySchedule()
        self._timeout = timeout_seconds
        self._max_in_flight = max_in_flight
        self._poll = poll_seconds
        # Long enough for an attempt to finish and be recorded before anyone takes it again.
        self._lease = lease_seconds if lease_seconds is not None else 2 * timeout_seconds + 30
        self._jitter = jitter
        self._metrics = metrics
        self._client = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(timeout_seconds),
            follow_redirects=False,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=50),
        )
        self._lanes: dict[int, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._woken = asyncio.Event()

    @property
    def in_flight(self) -> int:
        """Attempts this process is making now."""
        return sum(self._lanes.values())

    def wake(self) -> None:
        """Deliveries were queued (or a lane freed): look for due ones now."""
        self._woken.set()

    async def run(self, *, count_every_seconds: float = 15.0) -> None:
        """Send until cancelled; counts deliveries by status for the metrics every
        ``count_every_seconds`` (a count of the whole table: never once per attempt)."""
        counted = -math.inf
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), self._poll)
            self._woken.clear()
            try:
                await self.send_due()
                now = time.monotonic()
                if self._metrics is not None and now - counted >= count_every_seconds:
                    counted = now
                    self._metrics.counts = await self._queue.counts()
            except Exception:
                log.exception("the webhook sender failed; retrying")

    async def send_due(self) -> int:
        """Start an attempt for every due delivery a free lane can take; how many started.

        Returns once they are started, not finished (see :meth:`drain`).
        """
        now = self._clock()
        started = 0
        for endpoint_id in await self._queue.due_endpoints(now=now):
            free = self._max_in_flight - self._lanes.get(endpoint_id, 0)
            if free <= 0:
                continue
            claims = await self._queue.claim(
                endpoint_id, now=now, limit=free, lease_seconds=self._lease
            )
            for claim in claims:
                self._lanes[endpoint_id] = self._lanes.get(endpoint_id, 0) + 1
                task = asyncio.create_task(self._attempt(claim), name=f"webhook {claim.url}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                started += 1
        return started

    async def drain(self) -> None:
        """Wait until every attempt started so far is finished and recorded."""
        while self._tasks:
            await asyncio.gather(*tuple(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        """Stop attempts in flight (their leases expire; they are retried) and the client."""
        for task in tuple(self._tasks):
            task.cancel()
        await asyncio.gather(*tuple(self._tasks), return_exceptions=True)
        await self._client.aclose()

    async def _attempt(self, claim: Claim) -> None:
        try:
            attempted_at = self._clock()
            status, headers, error, duration_ms = await self._post(claim, attempted_at)
            finished_at = self._clock()

            def decide(count: int) -> NextStep:
                return next_step(
                    status_code=status,
                    attempt_count=count,
                    schedule=self._schedule,
                    jitter=self._jitter(),
                    headers=headers,
                    now=finished_at,
                )

            result = AttemptResult(attempted_at, finished_at, status, duration_ms, error)
            step = await self._queue.record(claim, result, decide)
            if self._metrics is not None:
                self._metrics.attempted(step.outcome)
            if step.outcome is Outcome.GONE:
                log.warning("webhook endpoint %s answered 410 Gone: disabled", claim.url)
        except Exception:
            # The lease expires and the delivery is taken again: nothing is lost.
            log.exception("webhook attempt %s to %s was not recorded", claim.delivery_id, claim.url)
        finally:
            self._lanes[claim.endpoint_id] -= 1
            if not self._lanes[claim.endpoint_id]:
                del self._lanes[claim.endpoint_id]
            self.wake()

    async def _post(
        self, claim: Claim, at: datetime
    ) -> tuple[int | None, Mapping[str, str] | None, str | None, int]:
        """(status, headers, error, milliseconds) of one POST; status None when no answer."""
        headers = signed_headers(claim.secrets, claim.delivery_id, claim.body, at)
        request = self._client.build_request(
            "POST", claim.url, content=claim.body.encode(), headers=headers
        )
        started = time.monotonic()
        status: int | None = None
        answer: Mapping[str, str] | None = None
        error: str | None = None
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._client.send(request, stream=True)
                await response.aclose()
            status, answer = response.status_code, response.headers
            if not 200 <= status < 300:
                error = f"HTTP {status} {response.reason_phrase}".strip()
        except TimeoutError:
            error = f"no answer within {self._timeout:g} s"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        duration_ms = round((time.monotonic() - started) * 1000)
        return status, answer, error[:MAX_ERROR_LENGTH] if error else None, duration_ms


__all__ = ["Sender", "SendingQueue", "WebhookMetrics"]
