"""What operators need to see when syncing goes wrong."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from stockgraph.domain.ids import TenantId
from stockgraph.domain.model import SyncExceptionRecord
from stockgraph.services.ingestion import ConnectorInstance, SyncProgress


class OperationsReader(Protocol):
    async def sync_exceptions(
        self,
        tenant_id: TenantId,
        *,
        before_id: int | None,
        limit: int,
        connector_id: str | None,
        open_only: bool,
    ) -> Sequence[SyncExceptionRecord]: ...


@dataclass(frozen=True, slots=True)
class ConnectorHealth:
    """One WMS instance's sync health, for ops dashboards."""

    connector_id: str
    warehouse_code: str
    dialect: str
    circuit_state: str
    budget_remaining: float | None
    last_event_at: datetime | None
    lag_ms: float | None
    error_rate: float
    last_error: str | None
    risk_score: float


def risk(*, circuit_state: str, error_rate: float, lag_ms: float | None) -> float:
    """0 (all well) to 1 (this instance's data cannot be trusted now).

    An open breaker is the whole risk; otherwise failed calls and lag add up, lag counting
    fully from a minute behind.

    >>> risk(circuit_state="open", error_rate=0.0, lag_ms=0)
    1.0
    >>> risk(circuit_state="closed", error_rate=0.1, lag_ms=30_000)
    0.6
    """
    if circuit_state == "open":
        return 1.0
    lag = min(1.0, (lag_ms or 0.0) / 60_000)
    score = min(1.0, error_rate + lag)
    if circuit_state == "half_open":
        score = max(score, 0.5)
    return round(score, 3)


class OperationsService:
    def __init__(
        self,
        *,
        reader: OperationsReader,
        instances: Callable[[], Sequence[ConnectorInstance]] = list,
        progress: Mapping[str, SyncProgress] | None = None,
    ) -> None:
        self._reader = reader
        self._instances = instances
        self._progress = progress if progress is not None else {}

    def health(self, tenant_id: TenantId) -> list[ConnectorHealth]:
        """Every connected instance of the tenant, riskiest first."""
        found: list[ConnectorHealth] = []
        for instance in self._instances():
            if instance.tenant_id != tenant_id:
                continue
            stats = instance.health() if instance.health else None
            progress = self._progress.get(instance.connector_id, SyncProgress())
            calls = stats.calls if stats else 0
            error_rate = round(stats.errors / calls, 4) if stats and calls else 0.0
            state = stats.circuit_state if stats else "closed"
            found.append(
                ConnectorHealth(
                    connector_id=instance.connector_id,
                    warehouse_code=instance.warehouse_code,
                    dialect=instance.connector.spec.name,
                    circuit_state=state,
                    budget_remaining=stats.budget_remaining if stats else None,
                    last_event_at=progress.last_event_at,
                    lag_ms=progress.lag_ms,
                    error_rate=error_rate,
                    last_error=stats.last_error if stats else None,
                    risk_score=risk(
                        circuit_state=state, error_rate=error_rate, lag_ms=progress.lag_ms
                    ),
                )
            )
        return sorted(found, key=lambda h: (-h.risk_score, h.connector_id))

    async def sync_exceptions(
        self,
        tenant_id: TenantId,
        *,
        before_id: int | None,
        limit: int,
        connector_id: str | None = None,
        open_only: bool = True,
    ) -> tuple[Sequence[SyncExceptionRecord], bool]:
        """A page of the tenant's sync exceptions, newest first, and whether more follow."""
        rows = await self._reader.sync_exceptions(
            tenant_id,
            before_id=before_id,
            limit=limit + 1,
            connector_id=connector_id,
            open_only=open_only,
        )
        return rows[:limit], len(rows) > limit
