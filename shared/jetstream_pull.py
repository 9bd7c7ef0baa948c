"""A lean JetStream pull loop for the checks consumers (the recorder's and aggregator's hot path).

nats-py's `fetch(n)` waits for each message with its own `wait_for` task, and its reader
parses every message's headers into a dict and queues it through an asyncio.Queue: together
about half of a recorder's CPU per result. Here one pull request
(`$JS.API.CONSUMER.MSG.NEXT`) asks for a whole batch on a private inbox, and the messages of
that inbox are taken from nats-py's protocol reader as they are parsed (shared.nats_direct,
for this loop's subscriptions only; every other subscription goes through nats-py
unchanged). Only what a pull consumer needs is decoded: a status line
(404/408/409 end a pull) and the subject and reply; `Msg.headers` stays None. Acks stay per
message (explicit), so replicas sharing the durable consumer never ack one another's work;
`ack_all` writes a batch's acks in one buffer. Several workers pull at once, so one batch is
decoded while another is being committed.

Errors: NATS trouble while pulling (disconnected, no responders, timeouts) is logged once
and retried after a pause; the handler settles every message itself (see batches.py).
`ack_all` raises what `Msg.ack` would (nats.errors.ConnectionClosedError and friends).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from nats import errors as nats_errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from shared import nats_direct
from shared.logs import get_log

log = get_log(__name__)

Handler = Callable[[Sequence[Msg]], Awaitable[None]]
# A status message's header block starts with a status line: "NATS/1.0 408 Request Timeout".
# A message with ordinary headers starts "NATS/1.0\r\n".
_STATUS_LINE = b"NATS/1.0 "
_QUIET_STATUSES = ("404", "408")  # no messages / the pull expired: the normal end of a pull


async def ensure_consumer(
    js: JetStreamContext, *, stream: str, durable: str, subjects: str, config: ConsumerConfig
) -> None:
    """Create the durable consumer unless it exists (an existing one is used as it is)."""
    try:
        await js.consumer_info(stream, durable)
        return
    except NotFoundError:
        pass
    config.durable_name = durable
    config.filter_subject = subjects
    config.deliver_policy = config.deliver_policy or DeliverPolicy.ALL
    config.ack_policy = AckPolicy.EXPLICIT
    await js.add_consumer(stream, config)


async def ack_all(msgs: Sequence[Msg]) -> None:
    """Ack the messages not acked yet, in one write: the same protocol as `Msg.ack` each."""
    by_client: dict[int, tuple[NatsClient, list[Msg]]] = {}
    for msg in msgs:
        if not msg._ackd:
            by_client.setdefault(id(msg._client), (msg._client, []))[1].append(msg)
    for nc, todo in by_client.values():
        # One "PUB <reply> 0" per message, as nc.publish(reply) writes it, sent as one command.
        command = b"".join(b"PUB %s 0\r\n\r\n" % m.reply.encode() for m in todo)
        if nc.is_closed:
            raise nats_errors.ConnectionClosedError
        if nc.is_draining_pubs:
            raise nats_errors.ConnectionDrainingError
        if not nc.is_connected and (
            nc._max_pending_size <= 0 or len(command) + nc._pending_data_size > nc._max_pending_size
        ):
            raise nats_errors.OutboundBufferLimitError  # publish's rule while reconnecting
        await nc._send_command(command)
        if nc._flush_queue is not None and nc._flush_queue.empty():
            await nc._flush_pending()  # as publish does: the flusher writes all that is pending
        nc.stats["out_msgs"] += len(todo)
        for m in todo:
            m._ackd = True


@dataclass(frozen=True)
class _Status:
    """A status message on a pull inbox (404 no messages, 408 expired, 409 and others)."""

    code: str
    description: str


def _status(headers: bytes) -> _Status:
    line = headers[len(_STATUS_LINE) :].split(b"\r\n", 1)[0].decode("utf-8", "replace")
    code, _, description = line.strip().partition(" ")
    return _Status(code, description.strip())


class _Inbox:
    """What JetStream delivered to one worker's inbox, in arrival order."""

    def __init__(self) -> None:
        self.items: deque[Msg | _Status] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def put(self, item: Msg | _Status) -> None:
        self.items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, seconds: float) -> bool:
        """Wait up to `seconds` for something to arrive; False when nothing did."""
        if self.items:
            return True
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(seconds):
                await self._waiter
        except TimeoutError:
            pass
        finally:
            self._waiter = None
        return bool(self.items)


class PullLoop:
    """Pulls batches of `batch` messages and hands each to `handler`, with `workers` at once."""

    def __init__(
        self,
        *,
        nc: NatsClient,
        stream: str,
        durable: str,
        handler: Handler,
        batch: int,
        expires: float = 0.25,
        linger: float = 0.005,
        workers: int = 2,
    ) -> None:
        self._nc = nc
        self._subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._handler = handler
        self._batch = batch
        self._expires = expires
        self._linger = linger
        self._workers = workers
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    def start(self) -> None:
        """Start the workers."""
        self._tasks = [
            asyncio.create_task(self._work(i), name=f"pull-{i}") for i in range(self._workers)
        ]

    async def stop(self) -> None:
        """Stop pulling; a batch being handled is finished first."""
        self._stopping.set()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _work(self, worker: int) -> None:
        inbox_subject = self._nc.new_inbox()
        sub = await self._nc.subscribe(inbox_subject)
        inbox = _Inbox()
        nc = self._nc

        def deliver(sid: int, subject: bytes, reply: bytes, data: bytes, headers: Any) -> None:
            if headers and headers.startswith(_STATUS_LINE):
                inbox.put(_status(headers))
                return
            inbox.put(
                Msg(
                    _client=nc,
                    subject=subject.decode(),
                    reply=reply.decode(),
                    data=data,
                    headers=None,
                    _sid=sid,
                )
            )

        nats_direct.route(nc, sub._id, deliver)
        failing = False
        try:
            while not self._stopping.is_set():
                try:
                    msgs = await self._pull(inbox, inbox_subject)
                    failing = False
                except Exception as exc:  # NATS away or slow: pause, then pull again
                    if not failing:
                        log.warning("pull_failed", worker=worker, error=type(exc).__name__)
                    failing = True
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), 1.0)
                    continue
                if msgs:
                    await self._handler(msgs)
        finally:
            nats_direct.unroute(nc, sub._id)
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _pull(self, inbox: _Inbox, inbox_subject: str) -> list[Msg]:
        """One pull request: the messages JetStream delivered before the batch filled or expired."""
        request = json.dumps({"batch": self._batch, "expires": int(self._expires * 1e9)}).encode()
        await self._nc.publish(self._subject, request, reply=inbox_subject)
        msgs: list[Msg] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._expires + 2.0
        items = inbox.items
        while len(msgs) < self._batch:
            if not items:
                # A short lull after the first message ends the batch: at low rates a result
                # is handled within milliseconds, not when the pull expires. What the pull
                # still delivers waits in the inbox for the next one.
                remaining = self._linger if msgs else deadline - loop.time()
                if remaining <= 0 or not await inbox.wait(remaining):
                    break
                continue
            item = items.popleft()
            if isinstance(item, _Status):  # 404/408/409: this pull is over
                if item.code not in _QUIET_STATUSES:
                    log.warning("pull_status", status=item.code, description=item.description)
                break
            msgs.append(item)
        return msgs
