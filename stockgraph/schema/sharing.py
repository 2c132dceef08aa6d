"""One execution per distinct subscription, its results shared by every subscriber of it.

A thousand dashboards subscribed to the same ``stockChanged`` document would otherwise run
the same selection over the same event a thousand times. Subscribers whose operations are
the same - same tenant, same scopes, same document, operation and variables, and no
``after`` cursor of their own - join one *group*: the operation runs once, for the group,
and each result goes to every member through a bounded queue of the member's own.

A member that falls ``capacity`` results behind is not allowed to grow without bound nor to
skip: it gets ``THROTTLED`` with ``resumeAfter``, the cursor of the last change it was
given, and ends, exactly as an unshared subscription does (see
:mod:`stockgraph.resolvers.subscription`). A subscription with an ``after`` cursor replays
its own past first, so it runs on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

import orjson
from graphql import (
    FieldNode,
    GraphQLError,
    NullValueNode,
    OperationType,
    VariableNode,
)
from strawberry.types.execution import ExecutionResult

from stockgraph.schema.context import Context
from stockgraph.schema.documents import parsed_operation
from stockgraph.schema.errors import SubscriptionLagging
from stockgraph.schema.events import event_cursor

log = logging.getLogger("stockgraph.subscriptions")

Start = Callable[[Context], Awaitable[AsyncIterator[Any]]]
"""Runs the operation for a context and returns its stream of results."""


class SharedResult(ExecutionResult):
    """A result computed once for a group; its ``next`` payload is encoded once too, by the
    first transport that sends it, and reused for every other subscriber."""

    @cached_property
    def payload(self) -> str:
        """The graphql-transport-ws ``next`` payload, as strawberry would write it."""
        body: dict[str, Any] = {"data": self.data}
        if self.errors:
            body["errors"] = [error.formatted for error in self.errors]
        if self.extensions:
            body["extensions"] = self.extensions
        return orjson.dumps(body).decode()


def _shareable(result: Any) -> Any:
    if type(result) is ExecutionResult:
        return SharedResult(result.data, result.errors, result.extensions)
    return result


@dataclass(frozen=True, slots=True)
class _Entry:
    result: Any
    event_id: int | None
    """The outbox id of the change the result shows, when it shows one."""


_END = _Entry(None, None)


class _Member:
    def __init__(self, capacity: int) -> None:
        self.queue: asyncio.Queue[_Entry] = asyncio.Queue(maxsize=capacity)
        self.overflowed = False
        self.last: int | None = None
        """The outbox id of the last change this member was given."""
        self.first_queued: int | None = None
        self.ended = False

    def offer(self, entry: _Entry) -> None:
        if self.overflowed:
            return
        if self.last is None and self.first_queued is None:
            self.first_queued = entry.event_id
        try:
            self.queue.put_nowait(entry)
        except asyncio.QueueFull:
            # Full, so its reader is not waiting: it learns at its next read.
            self.overflowed = True

    def end(self) -> None:
        """No more results: wakes a waiting reader; a busy one sees it once it has read
        what is queued."""
        self.ended = True
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(_END)

    def resume_after(self) -> str | None:
        if self.last is not None:
            return event_cursor(self.last)
        if self.first_queued is not None:
            return event_cursor(self.first_queued - 1)
        return None


class _Group:
    """One running operation and the subscribers sharing its results."""

    def __init__(
        self, hub: SharedSubscriptions, key: Hashable, field: str, context: Context
    ) -> None:
        self.hub = hub
        self.key = key
        self.field = field
        """The root field's response key: where a lagging member's error points."""
        self.context = context
        self.members: set[_Member] = set()
        self.task: asyncio.Task[None] | None = None

    async def pump(self, start: Start) -> None:
        """Run the operation once and hand each result to every member, in order."""
        try:
            results = await start(self.context)
            try:
                async for result in results:
                    entry = _Entry(_shareable(result), self.context.event_id)
                    for member in tuple(self.members):
                        member.offer(entry)
            finally:
                aclose = getattr(results, "aclose", None)
                if aclose is not None:
                    await aclose()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("a shared subscription failed")
        finally:
            self.hub.retire(self)
            for member in tuple(self.members):
                member.end()

    def leave(self, member: _Member) -> None:
        self.members.discard(member)
        if not self.members:
            self.hub.retire(self)
            if self.task is not None:
                self.task.cancel()


@lru_cache(maxsize=1024)
def _subscription_root(query: str, operation_name: str | None) -> tuple[str, str | None] | None:
    """For a subscription that may be shared: its root field's response key and the name of
    the variable its ``after`` takes (None without one); None when it must run alone (not a
    subscription, several root selections, a literal cursor). One parse per document."""
    operation = parsed_operation(query, operation_name)
    if operation is None or operation.operation is not OperationType.SUBSCRIPTION:
        return None
    fields = operation.selection_set.selections
    if len(fields) != 1 or not isinstance(fields[0], FieldNode):
        return None
    root = fields[0]
    after: str | None = None
    for argument in root.arguments or ():
        if argument.name.value != "after":
            continue
        if isinstance(argument.value, VariableNode):
            after = argument.value.name.value
        elif not isinstance(argument.value, NullValueNode):
            return None
    return (root.alias or root.name).value, after


class SharedSubscriptions:
    """Groups identical subscriptions so each result is computed once (see module doc)."""

    def __init__(self, *, capacity: int = 1000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._groups: dict[Hashable, _Group] = {}

    def key(
        self,
        query: str | None,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        context: Context,
    ) -> tuple[Hashable, str] | None:
        """The group key of a subscription and its root field's response key, or None
        when it must run on its own (not a subscription, an ``after`` cursor, no scopes)."""
        if query is None or not context.principal.scopes:
            return None
        root = _subscription_root(query, operation_name)
        if root is None:
            return None
        name, after = root
        if after is not None and (variables or {}).get(after) is not None:
            return None
        try:
            encoded = orjson.dumps(variables or {}, option=orjson.OPT_SORT_KEYS).decode()
        except TypeError:
            return None
        principal = context.principal
        scopes = tuple(sorted(scope.value for scope in principal.scopes))
        return (principal.tenant_id, scopes, query, operation_name, encoded), name

    async def join(
        self, key: Hashable, field: str, context: Context, start: Start
    ) -> AsyncGenerator[Any, None]:
        """The results of the group ``key`` from now on, starting it if it is not running."""
        group = self._groups.get(key)
        if group is None:
            leader = Context(
                principal=context.principal, services=context.services, limits=context.limits
            )
            group = self._groups[key] = _Group(self, key, field, leader)
            group.task = asyncio.create_task(group.pump(start), name="shared-subscription")
        member = _Member(self._capacity)
        group.members.add(member)
        return self._follow(group, member)

    async def _follow(self, group: _Group, member: _Member) -> AsyncGenerator[Any, None]:
        try:
            while True:
                if member.overflowed:
                    yield _lagging(group.field, member.resume_after())
                    return
                if member.ended and member.queue.empty():
                    return
                entry = await member.queue.get()
                if entry is _END:
                    return
                if entry.event_id is not None:
                    member.last = entry.event_id
                yield entry.result
        finally:
            group.leave(member)

    def retire(self, group: _Group) -> None:
        if self._groups.get(group.key) is group:
            del self._groups[group.key]


def _lagging(field: str, resume_after: str | None) -> ExecutionResult:
    error = SubscriptionLagging.resume_after(resume_after)
    located = GraphQLError(
        error.message, path=[field], original_error=error, extensions=error.extensions
    )
    return ExecutionResult(data=None, errors=[located])


__all__ = ["SharedResult", "SharedSubscriptions"]
