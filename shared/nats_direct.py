"""Messages of chosen subscriptions taken straight from nats-py's protocol reader.

For each MSG/HMSG nats-py builds a `Msg`, parses its header block into a dict, puts it on the
subscription's asyncio.Queue and wakes a task to hand it over: at thousands of messages a
second that was a large part of a hot loop's CPU (the recorder's pulls, the prober's acks).
`route(nc, sid, handler)` has the messages of one subscription handed to `handler` as the
reader parses them, raw: `handler(sid, subject, reply, data, headers)`, all bytes, `headers`
the raw header block or None. The handler runs inside the reader, so it must be quick and
must not raise. Messages of every other subscription go through nats-py unchanged.

nats-py offers no public hook for this: `_process_msg(sid, subject, reply, data, headers)` is
what its parser calls (nats-py 2.x; the version is pinned and tests/integration pin the
behaviour). A routed subscription keeps its sid across reconnects, as nats-py resubscribes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from weakref import WeakKeyDictionary

from nats.aio.client import Client

DirectHandler = Callable[[int, bytes, bytes, bytes, "bytes | None"], None]
"""Called with sid, subject, reply, data and the raw header block (or None)."""

_routes: WeakKeyDictionary[Client, dict[int, DirectHandler]] = WeakKeyDictionary()


def route(nc: Client, sid: int, handler: DirectHandler) -> None:
    """Hand the messages of subscription `sid` to `handler` from now on."""
    routes = _routes.get(nc)
    if routes is None:
        routes = _routes[nc] = {}
        _install(nc, routes)
    routes[sid] = handler


def unroute(nc: Client, sid: int) -> None:
    """Stop routing `sid` (its later messages, if any, go to nats-py)."""
    routes = _routes.get(nc)
    if routes is not None:
        routes.pop(sid, None)


def _install(nc: Client, routes: dict[int, DirectHandler]) -> None:
    previous = nc._process_msg
    stats = nc.stats

    async def process_msg(
        sid: int, subject: bytes, reply: bytes, data: bytes, headers: Any
    ) -> None:  # headers: None for a MSG without them, whatever nats-py's annotation says
        handler = routes.get(sid)
        if handler is None:
            await previous(sid, subject, reply, data, headers)
            return
        stats["in_msgs"] += 1
        stats["in_bytes"] += len(data)
        handler(sid, subject, reply, data, headers)

    nc._process_msg = process_msg  # type: ignore[method-assign]
