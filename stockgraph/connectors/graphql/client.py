"""The ``graphql`` dialect's connector: one configured GraphQL WMS."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import httpx

from stockgraph.connectors.base import DialectSpec, WmsEvent, WmsLevel, WmsOrder
from stockgraph.connectors.errors import FatalError, MalformedPayload, RateLimited
from stockgraph.connectors.graphql import wire
from stockgraph.connectors.graphql.spec import SPEC, GraphqlConfig
from stockgraph.connectors.runtime import InstanceRuntime

THROTTLED = "THROTTLED"


class GraphqlConnector:
    """A GraphQL WMS that prices each query from a credit bucket and pushes its events.

    Every call is one POST of a document to ``config.endpoint`` through ``runtime``, which
    is told the document's expected cost beforehand (``cost=``) and what the bucket holds
    afterwards (``report_budget``). A throttle error in the body becomes
    :class:`~stockgraph.connectors.errors.RateLimited` with the WMS's own wait; any other
    GraphQL or user error is a :class:`~stockgraph.connectors.errors.FatalError`.
    """

    def __init__(self, *, config: GraphqlConfig, runtime: InstanceRuntime) -> None:
        self.spec: DialectSpec = SPEC
        self._config = config
        self._runtime = runtime
        self._url = str(config.endpoint)

    @property
    def _instance_id(self) -> str:
        return self._runtime.instance_id

    async def _call(
        self, document: str, variables: Mapping[str, object], *, cost: float
    ) -> tuple[object, bytes]:
        """Send one document; return its ``data`` and the raw body it came in.

        The body is read inside the runtime's chain (``check``), so a ``THROTTLED`` answer
        pauses the instance and is retried like a 429.
        """
        answers: list[tuple[wire.Answer, bytes]] = []

        def check(response: httpx.Response) -> None:
            answers.append((self._read(response.content), response.content))

        await self._runtime.request(
            "POST",
            self._url,
            cost=cost,
            check=check,
            content=wire.request_body(document, variables),
            headers={
                "Content-Type": "application/json",
                "Accept": "application/json",
                "X-Access-Token": self._config.access_token.get_secret_value(),
            },
        )
        answer, body = answers[-1]
        if answer.data is None:
            raise MalformedPayload(
                f"{self._instance_id}: answer has neither data nor errors",
                raw=body,
                instance_id=self._instance_id,
            )
        return answer.data, body

    def _read(self, body: bytes) -> wire.Answer:
        """Parse an answer, tell the runtime what the bucket holds, raise what it reports."""
        answer = wire.read_answer(body, instance_id=self._instance_id)
        throttle = answer.extensions.cost.throttle_status
        self._runtime.report_budget(
            remaining=throttle.currently_available, restore_rate=throttle.restore_rate
        )
        self._raise_for_errors(answer)
        return answer

    def _raise_for_errors(self, answer: wire.Answer) -> None:
        if not answer.errors:
            return
        for error in answer.errors:
            if error.code == THROTTLED and error.extensions is not None:
                raise RateLimited(
                    f"{self._instance_id}: throttled: {error.message}",
                    retry_after=self._retry_after(error.extensions, answer),
                    instance_id=self._instance_id,
                )
        messages = "; ".join(
            f"{error.message} ({error.code})" if error.code else error.message
            for error in answer.errors
        )
        raise FatalError(f"{self._instance_id}: {messages}", instance_id=self._instance_id)

    @staticmethod
    def _retry_after(extensions: wire.ErrorExtensions, answer: wire.Answer) -> float:
        if extensions.retry_after_ms is not None:
            return extensions.retry_after_ms / 1000
        throttle = answer.extensions.cost.throttle_status
        needed = extensions.required_credits
        if needed is not None and throttle.restore_rate > 0:
            return max(0.0, needed - throttle.currently_available) / throttle.restore_rate
        return 1.0

    async def fetch_levels(self, wms_skus: Sequence[str]) -> Sequence[WmsLevel]:
        """Levels of at most ``spec.max_batch`` SKUs, in one ``inventoryLevels`` query."""
        skus = list(dict.fromkeys(wms_skus))
        if len(skus) > self.spec.max_batch:
            raise ValueError(f"at most {self.spec.max_batch} SKUs per call, got {len(skus)}")
        if not skus:
            return ()
        data, body = await self._call(
            wire.INVENTORY_LEVELS, {"skus": skus}, cost=wire.inventory_levels_cost(len(skus))
        )
        return wire.read_levels(data, raw=body, instance_id=self._instance_id)

    async def list_levels(self, cursor: str | None) -> tuple[Sequence[WmsLevel], str | None]:
        """One ``inventoryItems`` page of every level, and the cursor of the next."""
        first = self._config.page_size
        data, body = await self._call(
            wire.INVENTORY_ITEMS,
            {"first": first, "after": cursor},
            cost=wire.inventory_items_cost(first),
        )
        return wire.read_page(data, raw=body, instance_id=self._instance_id)

    async def poll_events(self, after: str | None) -> tuple[Sequence[WmsEvent], str | None]:
        """Nothing: this WMS pushes its events."""
        return (), after

    def parse_webhook(self, body: bytes) -> Sequence[WmsEvent]:
        return wire.parse_webhook(body, instance_id=self._instance_id)

    async def submit_order(self, order: WmsOrder) -> str:
        """``orderCreate``; the WMS returns the same order for the same external id."""
        data, body = await self._call(
            wire.ORDER_CREATE, {"input": wire.order_input(order)}, cost=wire.ORDER_CREATE_COST
        )
        payload = wire.read_order_payload(
            data, field="orderCreate", raw=body, instance_id=self._instance_id
        )
        return self._order_of(payload, body, action=f"create order {order.external_id}").ref

    async def cancel_order(self, order_ref: str) -> None:
        """``orderCancel``; cancelling a cancelled order is a no-op, a shipped one fails."""
        data, body = await self._call(
            wire.ORDER_CANCEL, {"ref": order_ref}, cost=wire.ORDER_CANCEL_COST
        )
        payload = wire.read_order_payload(
            data, field="orderCancel", raw=body, instance_id=self._instance_id
        )
        self._order_of(payload, body, action=f"cancel order {order_ref}")

    def _order_of(self, payload: wire.OrderPayload, body: bytes, *, action: str) -> wire.OrderNode:
        if payload.user_errors:
            reasons = "; ".join(
                f"{error.message} ({error.code})" if error.code else error.message
                for error in payload.user_errors
            )
            raise FatalError(
                f"{self._instance_id}: cannot {action}: {reasons}", instance_id=self._instance_id
            )
        if payload.order is None:
            raise MalformedPayload(
                f"{self._instance_id}: {action}: no order and no user errors",
                raw=body,
                instance_id=self._instance_id,
            )
        return payload.order

    async def aclose(self) -> None:
        await self._runtime.aclose()
