"""The ``rest`` dialect's connector: one configured REST WMS, spoken to in its own JSON."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from urllib.parse import quote

import httpx

from stockgraph.connectors.base import DialectSpec, WmsEvent, WmsLevel, WmsOrder
from stockgraph.connectors.errors import FatalError, MalformedPayload
from stockgraph.connectors.rest import wire
from stockgraph.connectors.rest.spec import SPEC, RestConfig
from stockgraph.connectors.runtime import InstanceRuntime

_JSON = "application/json"


class RestConnector:
    """A ``rest`` WMS instance behind ``runtime``, which it owns and closes.

    Levels come back in the WMS's codes and units (``EA``, or ``CS`` with possibly
    fractional quantities); mapping them is the caller's job. Events arrive as webhooks
    only, so :meth:`poll_events` has nothing to fetch.
    """

    spec: DialectSpec = SPEC

    def __init__(self, *, config: RestConfig, runtime: InstanceRuntime) -> None:
        self.config = config
        self._runtime = runtime
        self._headers = {
            "Authorization": f"ApiKey {config.api_key.get_secret_value()}",
            "Accept": _JSON,
        }

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        params: Mapping[str, str] | None = None,
    ) -> bytes:
        headers = dict(self._headers)
        if body is not None:
            headers["Content-Type"] = _JSON
        response = await self._runtime.request(
            method, path, headers=headers, content=body, params=params
        )
        self._report_budget(response)
        return response.content

    @contextmanager
    def _reading(self) -> Iterator[None]:
        try:
            yield
        except MalformedPayload as exc:
            exc.instance_id = self._runtime.instance_id
            raise

    def _report_budget(self, response: httpx.Response) -> None:
        remaining = response.headers.get("x-ratelimit-remaining")
        if remaining is None:
            return
        try:
            value = float(remaining)
        except ValueError:
            return
        self._runtime.report_budget(remaining=value)

    async def fetch_levels(self, wms_skus: Sequence[str]) -> Sequence[WmsLevel]:
        """Levels of up to ``spec.max_batch`` item codes at every location, in one call.

        Codes the WMS does not know are simply absent from the answer.
        """
        if len(wms_skus) > self.spec.max_batch:
            raise ValueError(
                f"{len(wms_skus)} item codes asked for; one lookup takes {self.spec.max_batch}"
            )
        if not wms_skus:
            return ()
        body = await self._call(
            "POST", "/v1/inventory/lookup", body=wire.render_lookup_request(wms_skus)
        )
        with self._reading():
            levels, _ = wire.parse_lookup(body)
        return levels

    async def list_levels(self, cursor: str | None) -> tuple[Sequence[WmsLevel], str | None]:
        """One page of the inventory listing; ``cursor`` is the WMS's page token."""
        params = {"page_size": str(self.config.page_size)}
        if cursor is not None:
            params["page_token"] = cursor
        body = await self._call("GET", "/v1/inventory", params=params)
        with self._reading():
            return wire.parse_inventory_page(body)

    async def poll_events(self, after: str | None) -> tuple[Sequence[WmsEvent], str | None]:
        """Nothing: this WMS pushes every event (``spec.push``), so the position stays put."""
        return (), after

    def parse_webhook(self, body: bytes) -> Sequence[WmsEvent]:
        """The one event in a webhook body whose signature has already been checked."""
        with self._reading():
            return (wire.parse_event(body),)

    async def submit_order(self, order: WmsOrder) -> str:
        """Send ``order``; sending the same ``external_id`` again returns the same reference."""
        body = await self._call("POST", "/v1/orders", body=wire.render_order_request(order))
        with self._reading():
            record = wire.parse_order(body)
        if record.external_id != order.external_id:
            raise MalformedPayload(
                f"rest: submitted {order.external_id!r}, answered for {record.external_id!r}",
                raw=body,
                instance_id=self._runtime.instance_id,
            )
        return record.order_ref

    async def fetch_order(self, order_ref: str) -> wire.OrderRecord:
        """The order as the WMS holds it now."""
        body = await self._call("GET", f"/v1/orders/{quote(order_ref, safe='')}")
        with self._reading():
            return wire.parse_order(body)

    async def cancel_order(self, order_ref: str) -> None:
        """Cancel an order; :class:`FatalError` once it has shipped (the WMS answers 409)."""
        body = await self._call("POST", f"/v1/orders/{quote(order_ref, safe='')}/cancel")
        with self._reading():
            record = wire.parse_order(body)
        if record.status != "CANCELLED":
            raise FatalError(
                f"rest: order {order_ref} is {record.status} after cancelling",
                instance_id=self._runtime.instance_id,
            )

    async def aclose(self) -> None:
        """Close the runtime and its connections."""
        await self._runtime.aclose()
