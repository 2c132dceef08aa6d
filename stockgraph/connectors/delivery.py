"""How a simulated WMS delivers one webhook: signed, retried until acknowledged.

A real WMS keeps a webhook until the receiver acknowledges it (any 2xx); a failed attempt
— the request lost on the way, the answer lost on the way back, the receiver unreachable
(refused while it restarts, reset, timed out) or answering 5xx or 429 — is tried again
after a capped, fully jittered exponential backoff, until the delivery's deadline would
pass. A 4xx other than 429 says the request itself is wrong: it is not retried.

Every attempt is kept in :attr:`WebhookSender.history`, by event id: when it started, how
it ended, and when (if ever) the event was acknowledged, so that whoever drives a
simulator can check what the receiver promised against what it holds.

Example::

    sender = WebhookSender(url=url, secret="whsec", client=client, faults=Faults(), rng=rng)
    if not await sender.deliver("wms-1-ab12", body):
        print(sender.history["wms-1-ab12"].reason)
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from stockgraph.connectors.signing import EVENT_ID_HEADER, SIGNATURE_HEADER, sign

log = logging.getLogger("stockgraph.simulation")


class Outcome(Enum):
    """How one attempt ended."""

    ACKNOWLEDGED = "acknowledged"
    LOST_ON_THE_WAY = "lost on the way"
    """The ``send_failure_rate`` fault: the request never reached the receiver."""
    ANSWER_LOST = "answer lost"
    """The ``send_failure_rate`` fault: the receiver got it, its answer never came back."""
    UNREACHABLE = "unreachable"
    """Connection refused, reset or timed out."""
    SERVER_ERROR = "server error"
    """A 5xx or a 429."""
    REJECTED = "rejected"
    """Any other status: the request itself is wrong, so it is not tried again."""

    @property
    def retried(self) -> bool:
        return self not in (Outcome.ACKNOWLEDGED, Outcome.REJECTED)


@dataclass(frozen=True, slots=True)
class Attempt:
    at: float
    """When the attempt started, on the sender's clock."""
    outcome: Outcome
    status: int | None = None
    """The receiver's HTTP status, when it answered (even if the answer was then lost)."""
    detail: str = ""


@dataclass
class DeliveryRecord:
    """Every attempt at one event id (duplicate sends of it included)."""

    event_id: str
    attempts: list[Attempt] = field(default_factory=list)
    acknowledged_at: float | None = None
    """When the first acknowledgement arrived; None while none has."""
    gave_up_at: float | None = None
    """When a delivery of this event stopped without an acknowledgement."""
    reason: str | None = None
    """Why it gave up."""

    @property
    def acknowledged(self) -> bool:
        return self.acknowledged_at is not None


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """When to try a delivery again: full jitter over ``min(cap_s, base_s * 2 ** (n - 1))``
    after failed attempt ``n``, and no wait that would end past ``deadline_s`` from the
    delivery's start."""

    deadline_s: float = 30.0
    base_s: float = 0.05
    cap_s: float = 2.0

    def __post_init__(self) -> None:
        for name in ("deadline_s", "base_s", "cap_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0, not {value!r}")

    def wait(self, failed_attempt: int, draw: float) -> float:
        return min(self.cap_s, self.base_s * 2.0 ** (failed_attempt - 1)) * draw


class SendFaults(Protocol):
    """The fault a sender reads (``simulation.Faults`` has it)."""

    @property
    def send_failure_rate(self) -> float:
        """The probability that an attempt fails in transit, either way."""


class _NotAcknowledged(Exception):
    def __init__(self, attempt: Attempt) -> None:
        super().__init__(attempt.outcome.value)
        self.attempt = attempt


class WebhookSender:
    """Posts signed webhooks to one URL, each until acknowledged or its deadline passes.

    ``faults`` is read at every attempt, so ``send_failure_rate`` can change mid-run;
    ``clock`` and ``sleep`` are injectable so tests run instantly.
    """

    def __init__(
        self,
        *,
        url: str,
        secret: str,
        client: httpx.AsyncClient,
        faults: SendFaults,
        rng: random.Random,
        schedule: RetrySchedule | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.url = url
        self.secret = secret
        self.client = client
        self.faults = faults
        self.rng = rng
        self.schedule = schedule or RetrySchedule()
        self._clock = clock
        self._sleep = sleep
        self.history: dict[str, DeliveryRecord] = {}

    async def deliver(self, event_id: str, body: bytes) -> bool:
        """Send ``body`` as event ``event_id`` until it is acknowledged (True), rejected or
        past the deadline (False, with a warning logged); ``history[event_id]`` records it.

        Deliveries of the same event id may run concurrently (a duplicate send): they share
        its record, and each answers for its own attempts.
        """
        record = self.history.setdefault(event_id, DeliveryRecord(event_id))
        deadline = self._clock() + self.schedule.deadline_s

        def wait(state: RetryCallState) -> float:
            return self.schedule.wait(state.attempt_number, self.rng.random())

        def stop(state: RetryCallState) -> bool:
            return self._clock() + state.upcoming_sleep > deadline

        retrying = AsyncRetrying(
            sleep=self._sleep,
            stop=stop,
            wait=wait,
            retry=retry_if_exception_type(_NotAcknowledged),
            reraise=True,
        )
        last: Attempt | None = None
        try:
            async for trial in retrying:
                with trial:
                    last = await self._attempt(event_id, body)
                    record.attempts.append(last)
                    if last.outcome.retried:
                        raise _NotAcknowledged(last)
        except _NotAcknowledged as failed:
            self._give_up(
                record,
                f"no acknowledgement within {self.schedule.deadline_s:g} s "
                f"(last attempt: {failed.attempt.outcome.value})",
            )
            return False
        if last is None or last.outcome is Outcome.REJECTED:
            detail = f"{last.status}: {last.detail}" if last else "no attempt"
            self._give_up(record, f"rejected with HTTP {detail}")
            return False
        if record.acknowledged_at is None:
            record.acknowledged_at = self._clock()
        return True

    def _give_up(self, record: DeliveryRecord, reason: str) -> None:
        record.gave_up_at = self._clock()
        record.reason = reason
        log.warning(
            "webhook %s to %s: giving up after %d attempt(s): %s",
            record.event_id,
            self.url,
            len(record.attempts),
            reason,
        )

    async def _attempt(self, event_id: str, body: bytes) -> Attempt:
        started = self._clock()
        rate = self.faults.send_failure_rate
        lost = bool(rate) and self.rng.random() < rate
        if lost and self.rng.random() < 0.5:
            return Attempt(started, Outcome.LOST_ON_THE_WAY)
        headers = {
            SIGNATURE_HEADER: sign(body, self.secret, timestamp=int(self._clock())),
            EVENT_ID_HEADER: event_id,
            "Content-Type": "application/json",
        }
        try:
            response = await self.client.post(self.url, content=body, headers=headers)
        except httpx.TransportError as exc:
            return Attempt(started, Outcome.UNREACHABLE, detail=type(exc).__name__)
        status = response.status_code
        if lost:
            return Attempt(started, Outcome.ANSWER_LOST, status)
        if 200 <= status < 300:
            return Attempt(started, Outcome.ACKNOWLEDGED, status)
        if status >= 500 or status == 429:
            return Attempt(started, Outcome.SERVER_ERROR, status, response.text[:200])
        return Attempt(started, Outcome.REJECTED, status, response.text[:200])


__all__ = [
    "Attempt",
    "DeliveryRecord",
    "Outcome",
    "RetrySchedule",
    "SendFaults",
    "WebhookSender",
]
