"""An HTTP call searches for no module: httpcore's event-loop sniffing finds ``sniffio``.

Without it, httpcore tries ``import sniffio`` at every lock it takes, and every failed
import searches the whole ``sys.path``: several searches per request, on every WMS call and
every simulated webhook.
"""

from __future__ import annotations

import asyncio
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

import httpx


class _Watch(importlib.abc.MetaPathFinder):
    """Notes every module the import system had to look for."""

    def __init__(self) -> None:
        self.searched: list[str] = []

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        self.searched.append(fullname)
        return None


class _Answerer:
    """202 to every request (each has a two-byte body), until the client hangs up."""

    def __init__(self) -> None:
        self.hung_up = asyncio.Event()

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(2)
                writer.write(b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            await writer.wait_closed()
            self.hung_up.set()


async def test_http_requests_search_for_no_module() -> None:
    answerer = _Answerer()
    server = await asyncio.start_server(answerer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    watch = _Watch()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.post("/warm-up", content=b"{}")).status_code == 202
            sys.meta_path.insert(0, watch)
            try:
                for _ in range(10):
                    assert (await client.post("/hook", content=b"{}")).status_code == 202
            finally:
                sys.meta_path.remove(watch)
        await asyncio.wait_for(answerer.hung_up.wait(), 10)
    finally:
        server.close()
        await server.wait_closed()

    assert watch.searched == []
